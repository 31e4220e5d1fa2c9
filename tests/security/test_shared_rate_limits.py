"""Rate limits hold across instances of an API (S1, S7; issue 13 item 5): the per-address limits
of identity (login, activation, password reset, cancel links) and onboarding (applications) are
counted in the service's database, so two instances on one database together accept exactly the
limit per address a minute, however the requests are spread over them and however many arrive
at once; the minute slides with the service's clock, `Retry-After` says when a place frees, an
IPv6 /64 is one party, and the table keeps only what still counts. The per-username lock holds
across instances too (it always was in the database).

Each instance is an app object with an engine of its own on the same database, as two processes
would be (on SQLite: separate write queues, so the database's own lock is what serialises them).
Kept in memory per process, as the limits were, each instance allowed the limit: the first test
fails there with 2 x the limit accepted."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, func, select

from services.identity.api import create_api as identity_api
from services.identity.config import IdentitySettings
from services.identity.models import rate_limit_hits
from services.onboarding.api import create_api as onboarding_api
from services.onboarding.config import OnboardingSettings
from shared import ratelimit
from shared.clock import FrozenClock
from shared.db import Database
from shared.metrics import REGISTRY
from shared.problems import TooManyRequests
from shared.ratelimit import RateLimit
from tests.support.asgi import AppTransport

LIMIT = 4
PROBLEM = "application/problem+json"


@pytest.fixture
def database_url(identity_url: str) -> str:
    return identity_url


@pytest.fixture
def another_identity_url(migrated_database: Callable[[str], str]) -> str:
    return migrated_database("identity")


@pytest.fixture
def instances(
    identity_settings: Callable[..., IdentitySettings], clock: FrozenClock, sealer, monkeypatch
) -> Callable[..., list[FastAPI]]:
    """Two instances of identity's API on the module's database, with the given rules."""
    monkeypatch.setattr(IdentitySettings, "sealer", lambda self: sealer)

    def make(**rules: object) -> list[FastAPI]:
        settings = identity_settings().model_copy(update={"login_rate_limit_per_minute": LIMIT, **rules})
        return [identity_api(settings, clock=clock), identity_api(settings, clock=clock)]

    return make


async def post(app: FastAPI, path: str, address: str, body: dict | None = None) -> httpx.Response:
    transport = AppTransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        return await client.post(path, json=body if body is not None else {})


def refused(answers: list[httpx.Response]) -> list[httpx.Response]:
    return [a for a in answers if a.status_code == 429]


def refusals_counted(limit: str) -> float:
    return REGISTRY.get_sample_value("adgang_rate_limited_total", {"limit": limit}) or 0.0


async def at_once(apps: list[FastAPI], path: str, addresses: list[str]) -> list[httpx.Response]:
    """One request from each address, all at once, spread over the instances in turn. An empty
    body, which the route refuses (422) once the limit has let it through: only the limit
    decides whether the answer is a 429."""
    return list(
        await asyncio.gather(*(post(apps[n % len(apps)], path, address) for n, address in enumerate(addresses)))
    )


async def test_two_instances_together_accept_exactly_the_limit_per_address(instances) -> None:
    apps = instances()
    before = refusals_counted("login")

    answers = await at_once(apps, "/v1/login", ["192.0.2.7"] * (2 * LIMIT + 2))

    assert Counter(a.status_code for a in answers) == {422: LIMIT, 429: LIMIT + 2}
    for answer in refused(answers):
        assert answer.headers["content-type"].startswith(PROBLEM)
        assert answer.json()["type"].endswith("/rate-limited")
        assert 1 <= int(answer.headers["Retry-After"]) <= 60
    assert refusals_counted("login") - before == LIMIT + 2
    # Every instance refuses the address now; another address has its own budget on both.
    assert [(await post(app, "/v1/login", "192.0.2.7")).status_code for app in apps] == [429, 429]
    assert [(await post(app, "/v1/login", "192.0.2.8")).status_code for app in apps] == [422, 422]


async def test_the_minute_slides_with_the_clock_and_retry_after_says_when_a_place_frees(
    instances, clock: FrozenClock
) -> None:
    first, second = instances()
    address = "198.51.100.20"
    assert [(await post(first, "/v1/login", address)).status_code for _ in range(LIMIT - 1)] == [422] * (LIMIT - 1)
    clock.advance(timedelta(seconds=30))
    assert (await post(second, "/v1/login", address)).status_code == 422  # the last place, at +30 s
    clock.advance(timedelta(seconds=10))

    full = await post(first, "/v1/login", address)  # at +40 s: the first requests free at +60 s
    assert full.status_code == 429 and full.headers["Retry-After"] == "20", full.headers

    clock.advance(timedelta(seconds=20))  # +60 s: the first LIMIT - 1 have aged out, the one at +30 s counts
    answers = [await post([first, second][n % 2], "/v1/login", address) for n in range(LIMIT)]
    assert [a.status_code for a in answers] == [422] * (LIMIT - 1) + [429]
    assert answers[-1].headers["Retry-After"] == "30"  # until the request at +30 s is a minute old


async def test_one_ipv6_network_is_one_party_across_instances(instances) -> None:
    apps = instances()
    household = [f"2001:db8:77:1::{n:x}" for n in range(1, 2 * LIMIT + 1)]  # one /64, every address new

    answers = await at_once(apps, "/v1/login", household)

    assert Counter(a.status_code for a in answers) == {422: LIMIT, 429: LIMIT}
    assert (await post(apps[0], "/v1/login", "2001:db8:77:2::1")).status_code == 422  # the next /64


@pytest.mark.parametrize(
    ("addresses", "another"),
    [
        # 6to4: one IPv4 address owns 2002:<address>::/48, 65,536 /64 networks.
        ([f"2002:c000:0207:{n:x}::1" for n in range(1, 2 * LIMIT + 1)], "2002:c000:0208::1"),
        # NAT64's well-known prefix: the IPv4 address is the last 32 bits, and each is one party.
        (["64:ff9b::c000:207"] * (LIMIT + 1) + ["::ffff:192.0.2.7"] * (LIMIT - 1), "64:ff9b::c000:208"),
    ],
    ids=["6to4", "nat64"],
)
async def test_an_ipv4_address_inside_an_ipv6_one_is_that_ipv4_party(
    instances, addresses: list[str], another: str
) -> None:
    """An IPv6 address that carries an IPv4 one counts as that IPv4 address: 6to4 gives one IPv4
    address 65,536 /64 networks (as many budgets), and NAT64 puts every IPv4 client in one /64
    (one budget for all of them)."""
    apps = instances()

    answers = await at_once(apps, "/v1/login", addresses)

    assert Counter(a.status_code for a in answers) == {422: LIMIT, 429: LIMIT}
    assert (await post(apps[0], "/v1/login", another)).status_code == 422  # another IPv4 address


async def test_every_limit_of_identity_holds_across_instances(instances) -> None:
    apps = instances(
        activation_rate_limit_per_minute=LIMIT,
        password_reset_rate_limit_per_minute=LIMIT,
        cancel_link_rate_limit_per_minute=LIMIT,
    )
    for n, path in enumerate(["/v1/activation", "/v1/password-reset", "/v1/takeovers/lookup"]):
        answers = await at_once(apps, path, [f"203.0.113.{n}"] * (2 * LIMIT))
        assert Counter(a.status_code == 429 for a in answers) == {False: LIMIT, True: LIMIT}, path


async def test_onboardings_application_limit_holds_across_instances(onboarding_url: str, clock: FrozenClock) -> None:
    settings = OnboardingSettings(database_url=onboarding_url, rate_limit_per_minute=LIMIT)
    apps = [onboarding_api(settings, clock=clock), onboarding_api(settings, clock=clock)]
    before = refusals_counted("applications")

    answers = await at_once(apps, "/v1/applications", ["192.0.2.50"] * (2 * LIMIT + 1))

    assert Counter(a.status_code for a in answers) == {422: LIMIT, 429: LIMIT + 1}
    assert refusals_counted("applications") - before == LIMIT + 1


async def test_a_username_locks_after_the_same_number_of_wrong_passwords_across_instances(
    instances, clock: FrozenClock
) -> None:
    """The per-username lock (S7) was always counted in the database; two instances do not
    double it either. No per-address limit here: only the username's counter decides."""
    apps = instances(login_rate_limit_per_minute=0, login_free_failures=LIMIT, login_lock_after_failures=LIMIT)
    body = {"username": "35657193-nobody", "password": "a wrong guess, twice over"}

    answers = await asyncio.gather(*(post(apps[n % 2], "/v1/login", f"192.0.2.{n}", body) for n in range(3 * LIMIT)))

    assert Counter(a.status_code for a in answers) == {401: LIMIT, 429: 2 * LIMIT}


async def test_rows_that_no_longer_count_are_purged(instances, clock: FrozenClock, database_url: str) -> None:
    first, second = instances()
    await at_once([first, second], "/v1/login", [f"192.0.2.{n}" for n in range(10)])
    db = Database(database_url)
    try:
        assert await _rows(db) == 10
        clock.advance(timedelta(minutes=2))
        # A new instance purges at its first request; the others within a minute of their last purge.
        assert (await post(instances()[0], "/v1/login", "192.0.2.200")).status_code == 422
        assert await _rows(db) == 1
    finally:
        await db.dispose()


async def test_a_purge_that_fills_its_batch_runs_again_at_the_next_request(
    database_url: str, clock: FrozenClock, monkeypatch
) -> None:
    """A flood of addresses leaves more expired rows than one purge deletes: the next requests
    go on purging, a batch each, until none is left; then purges wait a minute again."""
    monkeypatch.setattr(ratelimit, "PURGE_BATCH", 4)
    db = Database(database_url)
    try:
        limit = RateLimit("login", LIMIT, db=db, table=rate_limit_hits, clock=clock)
        for n in range(10):
            await limit.check(f"192.0.2.{n}")
        clock.advance(timedelta(minutes=2))
        rows = []
        for n in range(4):
            await limit.check(f"198.51.100.{n}")
            rows.append(await _rows(db))
        assert rows == [11 - 4, 8 - 4, 5 - 2, 4]  # 10 expired: 4, 4, 2, then no purge within the minute
    finally:
        await db.dispose()


async def test_a_party_found_full_is_refused_from_reads_and_forgiven_once_its_rows_go(
    database_url: str, clock: FrozenClock, monkeypatch
) -> None:
    """Once a party is found full, its requests are refused from a read that takes no lock: a
    flood of them, all at once, runs no write transaction. The read decides, not what the
    process remembers: rows deleted by hand forgive the party at once (docs/operations.md)."""
    db = Database(database_url)
    try:
        limit = RateLimit("login", LIMIT, db=db, table=rate_limit_hits, clock=clock)
        for _ in range(LIMIT):
            await limit.check("192.0.2.60")
        with pytest.raises(TooManyRequests):
            await limit.check("192.0.2.60")
        transaction = Database.transaction
        writes: list[Database] = []

        def counting(self: Database):  # noqa: ANN202
            writes.append(self)
            return transaction(self)

        monkeypatch.setattr(Database, "transaction", counting)
        flood = await asyncio.gather(*(limit.check("192.0.2.60") for _ in range(3 * LIMIT)), return_exceptions=True)
        assert [getattr(answer, "headers", answer) for answer in flood] == [{"Retry-After": "60"}] * (3 * LIMIT)
        assert writes == []
        monkeypatch.setattr(Database, "transaction", transaction)

        async with db.transaction() as session:
            await session.execute(delete(rate_limit_hits))
        await limit.check("192.0.2.60")  # nothing counts any more: accepted, and counted
        assert await _rows(db) == 1
    finally:
        await db.dispose()


async def test_two_apps_on_different_databases_do_not_share_a_budget(
    identity_settings: Callable[..., IdentitySettings],
    another_identity_url: str,
    clock: FrozenClock,
    sealer,
    monkeypatch,
) -> None:
    monkeypatch.setattr(IdentitySettings, "sealer", lambda self: sealer)
    settings = identity_settings().model_copy(update={"login_rate_limit_per_minute": LIMIT})
    first = identity_api(settings, clock=clock)
    elsewhere = identity_api(settings.model_copy(update={"database_url": another_identity_url}), clock=clock)
    statuses = [(await post(first, "/v1/login", "192.0.2.99")).status_code for _ in range(LIMIT + 1)]
    assert statuses[-1] == 429, statuses
    assert (await post(elsewhere, "/v1/login", "192.0.2.99")).status_code == 422


async def _rows(db: Database) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(rate_limit_hits)) or 0)
