"""A password try and the identity worker's purge of old counters at the same moment (S7): the
try must still be counted and answered (401), not fail with a server error because the counter
it found a moment ago was purged before it could lock it.

`reserve_try` makes the username's counter with `INSERT … ON CONFLICT DO NOTHING` and then
locks it with `SELECT … FOR UPDATE`; on PostgreSQL the conflicting insert takes no lock, so the
worker's `DELETE` of a counter that counts nothing any more can commit in between. The test
puts the purge exactly there. SQLite runs one write transaction at a time, so there the purge
cannot come in between: the test is for PostgreSQL."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.lockout import forget_old_failures
from services.identity.models import LoginThrottle
from shared.db import Database
from tests.conftest import BACKEND
from tests.integration.test_login import client, database_url, settings  # noqa: F401 - fixtures

pytestmark = pytest.mark.skipif(BACKEND != "postgres", reason="SQLite serialises write transactions")

USERNAMES = [f"35657193-purged{n}" for n in range(5)]
WRONG = "not the password, a guess"


async def test_a_try_counted_while_the_worker_purges_its_old_counter_is_answered_and_counted(
    db, clock, settings, client, monkeypatch
) -> None:
    await asyncio.gather(
        *(client.post("/v1/login", json={"username": u, "password": WRONG}) for u in USERNAMES)
    )
    clock.advance(settings.login_lock_duration + timedelta(seconds=1))  # the counters count nothing now
    worker = Database(db.url)

    @event.listens_for(worker.engine.sync_engine, "connect")
    def _give_up_on_locks(dbapi_connection, _record) -> None:  # noqa: ANN001
        # The real worker waits for a counter a try has locked, then finds it counting again
        # and leaves it; here, where the try waits for the worker, it gives up instead.
        cursor = dbapi_connection.cursor()
        cursor.execute("SET lock_timeout = '100ms'")
        cursor.close()

    get = AsyncSession.get

    async def purge_first(self, entity, ident, **kwargs):  # noqa: ANN001, ANN202
        if entity is LoginThrottle and kwargs.get("with_for_update"):
            with contextlib.suppress(DBAPIError):
                await forget_old_failures(worker, clock, settings.login_lock_duration)
        return await get(self, entity, ident, **kwargs)

    monkeypatch.setattr(AsyncSession, "get", purge_first)
    try:
        answers = await asyncio.gather(
            *(client.post("/v1/login", json={"username": u, "password": WRONG}) for u in USERNAMES),
            return_exceptions=True,
        )
    finally:
        monkeypatch.setattr(AsyncSession, "get", get)
        await worker.dispose()

    assert [getattr(a, "status_code", repr(a)) for a in answers] == [401] * len(USERNAMES)
    async with db.transaction() as session:
        counters = [await session.get(LoginThrottle, u) for u in USERNAMES]
    assert [c.failures if c else None for c in counters] == [1] * len(USERNAMES)
