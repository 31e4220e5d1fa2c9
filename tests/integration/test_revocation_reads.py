"""Billing's revocation check on every request (S12) reads by key (`Database.read_by_key`): on
SQLite on a read-only connection in the event loop's thread. It must see every revocation the
worker committed before it, never one that is not committed, and never wait for the writer."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from services.billing.models import EndedSession, UserAccess
from services.billing.revocations import Revocations
from shared.clock import FrozenClock
from shared.db import Database
from shared.tokens import AccessClaims

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def database_url(migrated_database: Callable[[str], str]) -> str:
    return migrated_database("billing")


def claims(user_id: str, session_id: str, *, issued: datetime = NOW) -> AccessClaims:
    return AccessClaims(
        sub=user_id,
        sid=session_id,
        tenant="35657193",
        role="user",
        grants=[],
        functions=["invoices"],
        iat=int(issued.timestamp()),
        exp=int((issued + timedelta(minutes=5)).timestamp()),
        jti=str(uuid.uuid4()),
        iss="https://adgang.dk/identity",
        aud="adgang",
    )


async def test_each_revocation_is_seen_by_the_next_check_in_parallel(database_url: str) -> None:
    """The worker (another connection, as another process) ends sessions and disables a user
    while checks run in parallel: once its commit is done, every check that starts refuses."""
    api, worker = Database(database_url), Database(database_url)
    revocations = Revocations(db=api, clock=FrozenClock(NOW), ended_sessions_kept=timedelta(minutes=30))
    try:
        users = [str(uuid.uuid4()) for _ in range(20)]
        sessions = [str(uuid.uuid4()) for _ in users]
        tokens = [claims(u, s) for u, s in zip(users, sessions, strict=True)]
        assert not any(await asyncio.gather(*(revocations.is_revoked(t) for t in tokens)))
        for i, (user, session) in enumerate(zip(users, sessions, strict=True)):
            async with worker.transaction() as db_session:
                if i % 2:
                    db_session.add(EndedSession(session_id=session, user_id=user, ended_at=NOW))
                else:
                    db_session.add(UserAccess(user_id=user, status="disabled", revoked_before=NOW, updated_at=NOW))
            checks = await asyncio.gather(*(revocations.is_revoked(t) for t in tokens))
            assert checks == [j <= i for j in range(len(tokens))], f"after revocation {i}"
        # Re-granted: tokens issued up to the change are refused, later ones pass.
        regranted = str(uuid.uuid4())
        async with worker.transaction() as db_session:
            db_session.add(UserAccess(user_id=regranted, status="active", revoked_before=NOW, updated_at=NOW))
        assert await revocations.is_revoked(claims(regranted, str(uuid.uuid4())))
        assert not await revocations.is_revoked(claims(regranted, str(uuid.uuid4()), issued=NOW + timedelta(seconds=1)))
    finally:
        await api.dispose()
        await worker.dispose()


async def test_a_check_neither_waits_for_nor_sees_an_uncommitted_revocation(database_url: str) -> None:
    api, worker = Database(database_url), Database(database_url)
    revocations = Revocations(db=api, clock=FrozenClock(NOW), ended_sessions_kept=timedelta(minutes=30))
    user, session = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        started, release = asyncio.Event(), asyncio.Event()

        async def slow_worker() -> None:
            async with worker.transaction() as db_session:
                db_session.add(EndedSession(session_id=session, user_id=user, ended_at=NOW))
                await db_session.flush()  # written, holding the write lock, not committed
                started.set()
                await release.wait()

        writing = asyncio.create_task(slow_worker())
        await started.wait()
        assert not await asyncio.wait_for(revocations.is_revoked(claims(user, session)), timeout=10)
        release.set()
        await writing
        assert await revocations.is_revoked(claims(user, session))
    finally:
        await api.dispose()
        await worker.dispose()


async def test_the_key_reader_only_reads(database_url: str) -> None:
    """The connection that reads in the event loop's thread can change nothing."""
    api = Database(database_url)
    try:
        if api.file is None:
            pytest.skip("SQLite's own read connection")
        with contextlib.suppress(Exception):  # refused (read-only), however the driver says it
            await api.read_by_key(
                text("INSERT INTO ended_sessions (session_id, user_id, ended_at) VALUES ('s', 'u', '2026-03-02')")
            )
        async with api.reading() as session:
            assert await session.scalar(text("SELECT count(*) FROM ended_sessions")) == 0
    finally:
        await api.dispose()


async def test_a_check_on_a_busy_file_goes_the_usual_way_and_sees_the_revocation(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When SQLite answers the key reader "database is locked" (another connection holds the
    file exclusively, as one recovering its WAL does), the check does not fail: it reads
    through the service's usual reader, which waits for the file, and sees what was committed."""
    api, worker = Database(database_url), Database(database_url)
    revocations = Revocations(db=api, clock=FrozenClock(NOW), ended_sessions_kept=timedelta(minutes=30))
    user, session = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        if api.file is None:
            pytest.skip("SQLite's own read connection")
        async with worker.transaction() as db_session:
            db_session.add(EndedSession(session_id=session, user_id=user, ended_at=NOW))
        await worker.dispose()  # its kept connection would keep the file from being taken
        holder = sqlite3.connect(api.file, isolation_level=None)
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("DELETE FROM ended_sessions WHERE session_id = 'none'")  # takes the file
        usual_way: list[bool] = []
        reading = api.reading

        def released_then_reading() -> contextlib.AbstractAsyncContextManager[Any]:
            usual_way.append(True)
            holder.execute("COMMIT")
            holder.close()  # gives the file back
            return reading()

        monkeypatch.setattr(api, "reading", released_then_reading)

        assert await revocations.is_revoked(claims(user, session))
        assert usual_way == [True]
    finally:
        await api.dispose()
        await worker.dispose()
