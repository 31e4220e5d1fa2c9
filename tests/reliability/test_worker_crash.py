"""Killing a worker with SIGKILL while 200 applications flow loses none and duplicates no
letter: at-least-once delivery, the outbox, the inbox and the spool's one-file-per-messageUUID."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from services.billing.demo import generated_companies
from services.suite import Suite
from shared.db import Database
from tests.conftest import start_suite
from tests.support.flows import application_body, read_letter
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
APPLICATIONS = 200


@pytest.fixture(scope="module")
def crash_suite(tmp_path_factory: pytest.TempPathFactory, database_factory) -> Iterator[Suite]:
    suite = start_suite(
        tmp_path_factory.mktemp("crash"),
        database_factory,
        ADGANG_BILLING_DEMO_EXTRA_CUSTOMERS=str(APPLICATIONS),
    )
    yield suite
    suite.stop()


def count_rows(suite: Suite, service: str, table: str) -> int:
    """Rows in a service's own table, read the way the service reads it."""

    async def count() -> int:
        db = Database(suite.database_url(service))
        try:
            async with db.transaction() as session:
                return int(await session.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
        finally:
            await db.dispose()

    return asyncio.run(count())


def all_letters(var_dir: Path) -> list[Path]:
    return sorted((var_dir / "eboks").glob("*/*.xml"))


async def submit_all(suite: Suite, cvrs: list[str]) -> dict[str, str]:
    """Submits one application per CVR; a CVR not yet learned (403) is tried again."""
    ids: dict[str, str] = {}
    limit = asyncio.Semaphore(8)

    async def one(client: httpx.AsyncClient, cvr: str) -> None:
        async with limit:
            for _ in range(600):
                response = await client.post("/v1/applications", json=application_body(cvr))
                if response.status_code == 202:
                    ids[cvr] = response.json()["id"]
                    return
                assert response.status_code == 403, response.text
                await asyncio.sleep(0.1)
            raise AssertionError(f"CVR {cvr} never became a known customer")

    async with httpx.AsyncClient(base_url=suite.url("onboarding"), timeout=30) as client:
        await asyncio.gather(*(one(client, cvr) for cvr in cvrs))
    return ids


def test_killing_workers_mid_flow_loses_no_application_and_duplicates_no_letter(crash_suite: Suite) -> None:
    suite = crash_suite
    cvrs = [c.cvr for c in generated_companies(APPLICATIONS)]
    result: dict[str, dict[str, str]] = {}
    failure: list[BaseException] = []

    def submitter() -> None:
        try:
            result["ids"] = asyncio.run(submit_all(suite, cvrs))
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    thread = threading.Thread(target=submitter)
    thread.start()
    try:
        wait_until(
            lambda: len(all_letters(suite.config.var_dir)) >= 10, deadline_s=120, what="the first letters"
        )
        suite.kill("identity-worker")
        provisioned_at_kill = count_rows(suite, "identity", "users")
        suite.start_again("identity-worker")

        wait_until(
            lambda: (
                len(all_letters(suite.config.var_dir)) >= min(APPLICATIONS - 20, provisioned_at_kill + 40)
            ),
            deadline_s=180,
            what="letters to flow again after the identity worker restarted",
        )
        suite.kill("notifier-worker")
        killed_notifier_at = len(all_letters(suite.config.var_dir))
        suite.start_again("notifier-worker")
    finally:
        thread.join(timeout=300)
    assert not failure, failure
    ids = result["ids"]
    assert len(ids) == APPLICATIONS
    # Each kill must have interrupted work still to do, or the test would prove nothing.
    assert provisioned_at_kill < APPLICATIONS, "identity had provisioned everything before it was killed"
    assert killed_notifier_at < APPLICATIONS, "the notifier had delivered everything before it was killed"

    wait_until(
        lambda: len(all_letters(suite.config.var_dir)) >= APPLICATIONS,
        deadline_s=240,
        what=f"{APPLICATIONS} letters",
    )

    def all_sent() -> bool:
        with httpx.Client(base_url=suite.url("onboarding"), timeout=10) as client:
            statuses = Counter(client.get(f"/v1/applications/{i}").json()["status"] for i in ids.values())
        return statuses == Counter({"credentials_sent": APPLICATIONS}) or None  # type: ignore[return-value]

    wait_until(all_sent, deadline_s=120, what="every application to reach credentials_sent", poll_s=1)

    letters = [read_letter(path) for path in all_letters(suite.config.var_dir)]
    per_company = Counter(letter.memo.recipient_cvr for letter in letters)
    assert all(per_company[cvr] == 1 for cvr in cvrs), [c for c in cvrs if per_company[c] != 1]
    assert len({letter.username for letter in letters}) == len(letters)
    assert len({letter.memo.message_uuid for letter in letters}) == len(letters)
