"""Scale-out, shown (issue 13 item 1): three instances of every worker and two of every API (the
APIs of a service share its port), applications with logins and orders among them, and one
instance of each worker killed with SIGKILL in turn and a new one started while they flow, so that
every consumer group rebalances under load. At the end every application is `credentials_sent`,
every company has exactly one letter (S2, S3), every order exactly one email (S9), and every
consumer group has committed every partition's last offset.

The applications are released in six equal parts: two at the start, and one more right after each
kill. So each kill finds applications still on their way (it is asserted), however fast or slow
the machine, and the groups rebalance while more arrive. A test run sends 300
(`ADGANG_SCALE_APPLICATIONS`); `make bench-scale` runs the same test with 2,000, the long version.

PostgreSQL only: that is what production runs several instances on; a SQLite file is one
process's database (docs/operations.md "Scaling each part")."""

from __future__ import annotations

import asyncio
import importlib
import itertools
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from services.billing.demo import GROUP_PARENT_CVR, generated_companies
from services.notifier.sinks import read_mail
from services.registry import SERVICES
from services.suite import Suite
from shared.db import Database
from shared.messaging import by_topic
from tests.conftest import BACKEND, start_suite
from tests.e2e.test_administration_flow import bearer, log_in
from tests.support.flows import activate_letter, application_body, read_letter, sinks_dir, wait_for_letters
from tests.support.kafka import group_lag
from tests.support.waiting import ConditionTimeout, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(
        BACKEND != "postgres",
        reason="several instances of a service share a PostgreSQL database; SQLite is one process's file",
    ),
    pytest.mark.timeout(900),
]
APPLICATIONS = int(os.environ.get("ADGANG_SCALE_APPLICATIONS", "300"))
WORKERS = 3
APIS = 2
ROUNDS = 5  # logins, each followed by an order, while the applications flow
ADMIN_MOBILE = "+4520999001"
ADMIN_EMAIL = "scale.admin@nordlys.example"
ORDER_ACCOUNT = "10000021"  # a subsidiary's account in the group the administrator holds
# The order in which each service loses a worker, and which instance it loses.
KILLS = [("identity", 1), ("notifier", 2), ("onboarding", 3), ("billing", 1)]
WORKER_SERVICES = [name for name, parts in SERVICES.items() if parts.has_worker]
HIGH_LIMIT = "1000000"  # per address per minute: every request of the test comes from 127.0.0.1


@pytest.fixture(scope="module")
def scaled_suite(tmp_path_factory: pytest.TempPathFactory, database_factory) -> Iterator[Suite]:
    suite = start_suite(
        tmp_path_factory.mktemp("scale"),
        database_factory,
        worker_instances=WORKERS,
        api_instances=APIS,
        # 22 processes start at once on two shared cores; billing registers the customers.
        start_deadline_s=300,
        ADGANG_BILLING_DEMO_EXTRA_CUSTOMERS=str(APPLICATIONS),
        ADGANG_ONBOARDING_RATE_LIMIT_PER_MINUTE=HIGH_LIMIT,
        ADGANG_IDENTITY_LOGIN_RATE_LIMIT_PER_MINUTE=HIGH_LIMIT,
        ADGANG_IDENTITY_ACTIVATION_RATE_LIMIT_PER_MINUTE=HIGH_LIMIT,
        ADGANG_BILLING_ORDER_FULFILMENT_INTERVAL_S="0.5",
    )
    yield suite
    suite.stop()


def all_letters(var_dir: Path) -> list[Path]:
    return sorted((var_dir / "eboks").glob("*/*.xml"))


def statuses(suite: Suite) -> Counter[str]:
    """Applications by status, read from onboarding's database."""

    async def read() -> Counter[str]:
        db = Database(suite.database_url("onboarding"))
        try:
            async with db.transaction() as session:
                rows = await session.execute(
                    text("SELECT status, count(*) FROM applications GROUP BY status")
                )
                return Counter({status: int(n) for status, n in rows})
        finally:
            await db.dispose()

    return asyncio.run(read())


def consumed_topics(suite: Suite, service: str) -> set[str]:
    """The topics a service's worker consumes, from the handlers it registers."""
    parts = SERVICES[service]
    settings = parts.settings_type()(var_dir=suite.config.var_dir, database_url=suite.database_url(service))
    built = importlib.import_module(f"services.{service}.bootstrap").build(settings)
    try:
        return {
            topic.name
            for topic in by_topic(importlib.import_module(f"services.{service}.worker").handlers(built))
        }
    finally:
        asyncio.run(built.db.dispose())


def lagging(suite: Suite, topics: dict[str, set[str]]) -> dict[str, dict[tuple[str, int], int]]:
    """Per consumer group, the partitions whose committed offset is short of the end."""

    async def read() -> dict[str, dict[tuple[str, int], int]]:
        behind = {}
        for service, consumed in topics.items():
            lag = await group_lag(suite.config.bootstrap, f"adgang-{service}", consumed)
            if short := {tp: n for tp, n in lag.items() if n != 0}:
                behind[service] = short
        return behind

    return asyncio.run(read())


async def submit_all(
    suite: Suite, parts: list[list[str]], released: list[threading.Event], ids: dict[str, str]
) -> None:
    """One application per CVR into `ids`, 16 at a time, each part once it is released; a CVR
    onboarding has not learned yet (403) is tried again once it may have."""
    limit = asyncio.Semaphore(16)

    async def one(client: httpx.AsyncClient, cvr: str) -> None:
        async with limit:
            deadline = time.monotonic() + 300
            while True:
                response = await client.post("/v1/applications", json=application_body(cvr))
                if response.status_code == 202:
                    ids[cvr] = response.json()["id"]
                    return
                assert response.status_code == 403, response.text
                assert time.monotonic() < deadline, f"CVR {cvr} never became a known customer"
                await asyncio.sleep(0.2)

    async def part(client: httpx.AsyncClient, cvrs: list[str], release: threading.Event) -> None:
        assert await asyncio.to_thread(release.wait, 900), "a part of the applications was never released"
        await asyncio.gather(*(one(client, cvr) for cvr in cvrs))

    async with httpx.AsyncClient(base_url=suite.url("onboarding"), timeout=60) as client:
        await asyncio.gather(
            *(part(client, cvrs, release) for cvrs, release in zip(parts, released, strict=True))
        )


def place_order(suite: Suite, tokens: dict) -> str:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"account_number": ORDER_ACCOUNT, "product_code": "MOBIL-50", "options": {"sim": "esim"}}
    with httpx.Client(base_url=suite.url("billing"), timeout=30) as http:
        placed = http.post("/v1/orders", json=body, headers={**bearer(tokens), **key})
        assert placed.status_code == 201, placed.text
        again = http.post("/v1/orders", json=body, headers={**bearer(tokens), **key})  # a client's retry
        assert again.status_code == 200 and again.json()["id"] == placed.json()["id"], again.text
    return str(placed.json()["id"])


def in_background(work: Callable[[], object], failures: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            work()
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_three_workers_and_two_apis_per_service_lose_nothing_and_double_nothing_through_kills_and_rebalances(
    scaled_suite: Suite,
) -> None:
    suite = scaled_suite
    var_dir = suite.config.var_dir
    timings: dict[str, float] = {}
    started = time.monotonic()
    assert all(len(suite.instances(name, "worker")) == WORKERS for name in WORKER_SERVICES)
    assert all(len(suite.instances(name, "api")) == APIS for name in SERVICES)

    # The group's administrator, who logs in and orders while the applications flow.
    with httpx.Client(base_url=suite.url("onboarding"), timeout=30) as http:
        body = application_body(GROUP_PARENT_CVR, mobile=ADMIN_MOBILE, email=ADMIN_EMAIL)
        applied = wait_until(  # 403 until onboarding has learned the customer from billing
            lambda: r if (r := http.post("/v1/applications", json=body)).status_code != 403 else None,
            deadline_s=120,
            what=f"onboarding to learn customer {GROUP_PARENT_CVR}",
            poll_s=0.5,
        )
        assert applied.status_code == 202, applied.text
    [letter] = wait_for_letters(suite, GROUP_PARENT_CVR, deadline_s=120)
    confirmed = activate_letter(suite, letter, mobile=ADMIN_MOBILE, email=ADMIN_EMAIL)
    assert confirmed.status_code == 200, confirmed.text
    timings["administrator active"] = time.monotonic() - started

    cvrs = [c.cvr for c in generated_companies(APPLICATIONS)]
    # Two parts at the start, one more after each kill: kill n waits for the letters of the
    # first n parts, while part n + 1 is still on its way.
    bounds = [(n * APPLICATIONS) // (len(KILLS) + 2) for n in range(len(KILLS) + 3)]
    parts = [cvrs[start:end] for start, end in itertools.pairwise(bounds)]
    released = [threading.Event() for _ in parts]
    released[0].set()
    released[1].set()
    failures: list[BaseException] = []
    ids: dict[str, str] = {}  # CVR: application id, as onboarding accepts them
    orders: list[str] = []

    def customer() -> None:
        for _ in range(ROUNDS):
            # A code the killed notifier worker had claimed waits for its lease to end (64 s for SMS).
            tokens = log_in(suite, letter.username, method="sms", recipient=ADMIN_MOBILE, deadline_s=180)
            orders.append(place_order(suite, tokens))

    load_started = time.monotonic()
    submitter = in_background(lambda: asyncio.run(submit_all(suite, parts, released, ids)), failures)
    orderer = in_background(customer, failures)
    killed_at: dict[str, tuple[int, int]] = {}  # victim: (letters, applications accepted) at the kill
    try:
        for n, (service, instance) in enumerate(KILLS, start=1):
            wait_until(
                lambda target=bounds[n]: failures or len(all_letters(var_dir)) >= target,  # type: ignore[misc]
                deadline_s=300,
                what=f"{bounds[n]} letters before {service} loses a worker",
            )
            assert not failures, failures
            if len(all_letters(var_dir)) > bounds[n + 1]:
                # Every application released so far has its letter (the last worker took its time
                # to join): the next part goes first, so that the kill meets work still to do.
                released[n + 1].set()
                wait_until(
                    lambda accepted=bounds[n + 1]: failures or len(ids) > accepted,  # type: ignore[misc]
                    deadline_s=300,
                    what="an application of the next part accepted",
                )
                assert not failures, failures
            victim = suite.instances(service, "worker")[instance - 1]
            suite.kill(victim)  # SIGKILL: no goodbye to the group; the broker notices the silence
            killed_at[victim] = (len(all_letters(var_dir)), len(ids))
            released[n + 1].set()  # more applications while the group rebalances
            suite.add_instance(service, "worker", deadline_s=120)  # joins: the group rebalances again
            timings[f"{victim} killed and replaced"] = time.monotonic() - load_started
    finally:
        for release in released:
            release.set()
        submitter.join(timeout=600)
        orderer.join(timeout=600)
    assert not failures, failures
    timings["applications submitted, logins and orders done"] = time.monotonic() - load_started
    assert len(ids) == APPLICATIONS and len(orders) == ROUNDS
    # Each kill must have interrupted work still to do (fewer letters than applications accepted
    # so far, the administrator's letter aside), or it would prove nothing.
    assert all(letters <= accepted for letters, accepted in killed_at.values()), killed_at

    wait_until(
        lambda: statuses(suite) == Counter({"credentials_sent": APPLICATIONS + 1}) or None,
        deadline_s=300,
        what="every application to reach credentials_sent",
        poll_s=1,
    )
    timings["every application credentials_sent"] = time.monotonic() - load_started

    def mails_for(order_id: str) -> int:
        return sum(order_id in m.text for m in read_mail(sinks_dir(suite), ADMIN_EMAIL))

    wait_until(
        lambda: all(mails_for(order) >= 1 for order in orders),
        deadline_s=120,
        what="an email for every order",
    )
    topics = {service: consumed_topics(suite, service) for service in WORKER_SERVICES}
    behind: dict[str, dict[tuple[str, int], int]] = {}

    def caught_up() -> bool:
        behind.clear()
        behind.update(lagging(suite, topics))
        return not behind

    try:
        wait_until(caught_up, deadline_s=120, what="every consumer group to commit every partition's end")
    except ConditionTimeout as timeout:
        raise AssertionError(f"{timeout}; still behind (partition: messages): {behind}") from None
    timings["consumer groups caught up"] = time.monotonic() - load_started

    letters = [read_letter(path) for path in all_letters(var_dir)]
    per_company = Counter(letter.memo.recipient_cvr for letter in letters)
    assert per_company == Counter({cvr: 1 for cvr in [*cvrs, GROUP_PARENT_CVR]}), {
        cvr: n for cvr, n in per_company.items() if n != 1
    }
    assert len({letter.username for letter in letters}) == len(letters)
    assert len({letter.memo.message_uuid for letter in letters}) == len(letters)
    assert {order: mails_for(order) for order in orders} == dict.fromkeys(orders, 1)
    assert statuses(suite) == Counter({"credentials_sent": APPLICATIONS + 1})
    print(
        "\nscale-out timings (s): "
        + ", ".join(f"{what} {at:.0f}" for what, at in timings.items())
        + f"; kills at letters {killed_at}"
    )
