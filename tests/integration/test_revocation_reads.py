"""Billing's revocation check on every request (S12) reads by key (`Database.read_by_key`): on
SQLite on a read-only connection in the event loop's thread, on PostgreSQL in one trip on
read-only asyncpg connections of its own (`shared.pg_key_reads`). It must see every revocation
the worker committed before it, never one that is not committed, and never wait for the writer;
a database that is away makes the API answer 503, and once it is back the checks go on."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import bindparam, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from services.billing.api import create_api
from services.billing.models import EndedSession, UserAccess
from services.billing.revocations import Revocations
from shared.clock import FrozenClock
from shared.db import Database, database_unavailable
from shared.tokens import AccessClaims
from tests.conftest import BACKEND
from tests.integration.billing_fixtures import NOW as BILLING_NOW
from tests.integration.billing_fixtures import Caller, Tokens, billing_settings
from tests.support.asgi import AppTransport

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
GRANTS = [{"cvr": "35657193", "accounts": "all"}]


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
    """The connections that read by key can change nothing: SQLite's in the event loop's
    thread (`query_only`), PostgreSQL's own (`default_transaction_read_only`)."""
    api = Database(database_url)
    try:
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


async def test_checks_cancelled_midway_leave_no_connection_behind(database_url: str) -> None:
    """Requests that go away while their check runs (a client that hangs up) are cancelled at
    every point of the read, many at once: the checks after them still get a connection, and
    each sees the revocation committed just before it."""
    api, worker = Database(database_url), Database(database_url)
    revocations = Revocations(db=api, clock=FrozenClock(NOW), ended_sessions_kept=timedelta(minutes=30))
    users = [str(uuid.uuid4()) for _ in range(12)]
    tokens = [claims(user, str(uuid.uuid4())) for user in users]
    try:
        for turns in range(8):  # cancelled after 0, 1, ... turns of the event loop
            checks = [asyncio.create_task(revocations.is_revoked(t)) for t in tokens * 2]
            for _ in range(turns):
                await asyncio.sleep(0)
            for check in checks:
                check.cancel()
            await asyncio.gather(*checks, return_exceptions=True)
            async with worker.transaction() as db_session:
                db_session.add(UserAccess(user_id=users[turns], status="disabled", revoked_before=NOW, updated_at=NOW))
            after = await asyncio.wait_for(asyncio.gather(*(revocations.is_revoked(t) for t in tokens)), timeout=20)
            assert after == [j <= turns for j in range(len(tokens))], f"after {turns} turns"
    finally:
        await api.dispose()
        await worker.dispose()


async def test_a_wrong_statement_is_an_error_not_an_outage(database_url: str) -> None:
    """A statement the database refuses fails as SQLAlchemy's error, which the API's 503
    handler does not take for an outage (a 500 with its trace), and the reads after it go on."""
    api = Database(database_url)
    try:
        with pytest.raises(DBAPIError) as refused:
            await api.read_by_key(text("SELECT no_such_column FROM user_access"))
        assert not database_unavailable(refused.value)
        assert await api.read_by_key(text("SELECT count(*) FROM user_access")) == [(0,)]
    finally:
        await api.dispose()


async def test_a_statement_expanded_per_call_is_read_too(database_url: str) -> None:
    """`IN` of a list is expanded for each call: on PostgreSQL it goes through the engine."""
    api, worker = Database(database_url), Database(database_url)
    users = sorted(str(uuid.uuid4()) for _ in range(3))
    try:
        async with worker.transaction() as db_session:
            db_session.add_all(UserAccess(user_id=u, status="active", revoked_before=None, updated_at=NOW) for u in users)
        statement = select(UserAccess.user_id, UserAccess.status).where(
            UserAccess.user_id.in_(bindparam("users", expanding=True))
        )
        rows = await api.read_by_key(statement, {"users": users[:2]})
        assert sorted(rows) == [(users[0], "active"), (users[1], "active")]
    finally:
        await api.dispose()
        await worker.dispose()


def end_other_connections(url: str) -> None:
    """Every other connection to the database of `url` ended by the server
    (`pg_terminate_backend`), and gone from `pg_stat_activity`; run in a thread of its own, so
    that the caller's event loop has not yet read that its connections were closed."""

    async def end() -> None:
        connection = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
        try:
            others = "datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            await connection.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {others}")
            deadline = asyncio.get_running_loop().time() + 20
            while await connection.fetchval(f"SELECT count(*) FROM pg_stat_activity WHERE {others}"):
                assert asyncio.get_running_loop().time() < deadline, "the connections did not end"
        finally:
            await connection.close()

    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, end()).result()


async def test_connections_the_server_ended_are_replaced_and_the_checks_see_the_revocation(
    database_url: str,
) -> None:
    """PostgreSQL ends the kept connections (`pg_terminate_backend`, as a failover or a pooler
    does) while the event loop does not look: the checks after it neither fail nor answer from
    before, they run on new connections and see the revocation committed meanwhile, in parallel."""
    if BACKEND != "postgres":
        pytest.skip("PostgreSQL's connections")
    api, worker = Database(database_url), Database(database_url)
    revocations = Revocations(db=api, clock=FrozenClock(NOW), ended_sessions_kept=timedelta(minutes=30))
    users = [str(uuid.uuid4()) for _ in range(8)]
    tokens = [claims(user, str(uuid.uuid4())) for user in users]
    try:
        for round_ in range(3):
            assert await asyncio.gather(*(revocations.is_revoked(t) for t in tokens)) == [
                j < round_ for j in range(len(tokens))
            ]
            async with worker.transaction() as db_session:
                db_session.add(UserAccess(user_id=users[round_], status="disabled", revoked_before=NOW, updated_at=NOW))
            await worker.dispose()  # its connections are ended too; none is left to the next round
            end_other_connections(database_url)  # blocks the loop: nothing reads the connections' end
            checks = await asyncio.gather(*(revocations.is_revoked(t) for t in tokens))
            assert checks == [j <= round_ for j in range(len(tokens))], f"round {round_}"
    finally:
        await api.dispose()
        await worker.dispose()


async def test_billing_answers_503_while_the_server_is_stopped_and_refuses_revoked_tokens_once_back(
    database_url: str, postgres: Any, tmp_path: Path
) -> None:
    """PostgreSQL stopped as an operator does (`pg_ctl stop -m fast`) under billing's API: each
    request with a token answers 503 problem+json with Retry-After, not a 500; started again,
    the same API (no restart) accepts the token, and refuses it once the user is disabled."""
    if BACKEND != "postgres":
        pytest.skip("a PostgreSQL server to stop")
    clock = FrozenClock(BILLING_NOW)
    tokens = Tokens(clock)
    app = create_api(billing_settings(database_url, tmp_path), clock=clock, jwks_client=tokens.jwks_client())
    caller, other = tokens.caller(GRANTS), tokens.caller(GRANTS)

    async def answers(http: httpx.AsyncClient, who: Caller) -> list[httpx.Response]:
        return await asyncio.gather(*(http.get("/v1/products", headers=who.headers) for _ in range(8)))

    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://billing.test") as http:
        assert {a.status_code for a in await answers(http, caller)} == {200}
        await asyncio.to_thread(postgres.stop_server)
        try:
            for answer in await answers(http, caller):
                assert answer.status_code == 503, answer.text
                assert answer.headers["content-type"] == "application/problem+json"
                assert answer.headers["retry-after"] == "5"
                assert "database" in answer.json()["detail"]
        finally:
            await asyncio.to_thread(postgres.start_server)
        assert {a.status_code for a in await answers(http, caller)} == {200}
        worker = Database(database_url)
        try:
            async with worker.transaction() as db_session:
                db_session.add(
                    UserAccess(user_id=caller.user_id, status="disabled", revoked_before=clock.now(), updated_at=clock.now())
                )
        finally:
            await worker.dispose()
        assert {a.status_code for a in await answers(http, caller)} == {401}
        assert {a.status_code for a in await answers(http, other)} == {200}
