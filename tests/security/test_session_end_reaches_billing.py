"""A session identity ends on its own — logout, or a refresh token presented twice — is refused
by billing too, at once, while the user's other sessions go on (S7, S12). Identity's real API
and billing's real API on the database under test; identity's outbox reaches billing through
billing's own idempotent consumer, as on the bus."""

# ruff: noqa: F811 - fixtures are imported and used by name

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from sqlalchemy import event, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import create_async_engine

from services.billing.api import create_api as create_billing_api
from services.billing.bootstrap import BillingParts, build
from services.billing.config import BillingSettings
from services.billing.models import EndedSession
from services.billing.models import messaging as billing_messaging
from services.billing.revocations import revocation_query
from services.billing.worker import handlers as billing_handlers
from services.identity.models import messaging as identity_messaging
from services.notifier.bootstrap import build as build_notifier
from services.notifier.config import NotifierSettings
from services.notifier.models import messaging as notifier_messaging
from services.notifier.worker import handlers as notifier_handlers
from services.onboarding.bootstrap import build as build_onboarding
from services.onboarding.config import OnboardingSettings
from services.onboarding.models import messaging as onboarding_messaging
from services.onboarding.worker import handlers as onboarding_handlers
from services.registry import SERVICES
from shared.clock import FrozenClock
from shared.db import Database, alembic_config, migrate
from shared.envelope import KafkaRecord, encode
from shared.events import IDENTITY_USERS, SessionEnded
from shared.messaging import ConsumedMessage, IdempotentConsumer, MessagingTables, by_topic
from tests.integration.billing_fixtures import billing_url  # noqa: F401 - fixture
from tests.integration.test_activation import envelope_of
from tests.integration.test_login import (  # noqa: F401 - fixtures
    active_admin,
    client,
    database_url,
    log_in,
    settings,
)
from tests.support.asgi import AppTransport
from tests.support.dead_letters import NoDeadLetters

PROBLEM = "application/problem+json"


def consumed(record: KafkaRecord) -> ConsumedMessage:
    return ConsumedMessage(topic=record.topic, key=record.key, value=record.value, headers=record.headers)


async def identity_users_events(db: Database) -> list[ConsumedMessage]:
    """What identity's outbox has queued on `identity.users`, as the consumers will receive it."""
    outbox = identity_messaging.outbox
    async with db.transaction() as session:
        rows = (
            await session.execute(
                select(outbox).where(outbox.c.topic == IDENTITY_USERS.name).order_by(outbox.c.seq)
            )
        ).mappings()
        return [
            ConsumedMessage(
                topic=row["topic"],
                key=row["key"].encode(),
                value=row["value"].encode(),
                headers=[(k, v.encode()) for k, v in json.loads(row["headers"])],
            )
            for row in rows
        ]


async def sessions_ended(db: Database) -> list[SessionEnded]:
    return [
        SessionEnded.model_validate_json(m.value or b"")
        for m in await identity_users_events(db)
        if dict(m.headers).get("ce_type") == SessionEnded.TYPE.encode()
    ]


def sid(tokens: dict) -> str:
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    return str(claims["sid"])


def bearer(tokens: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


@pytest.fixture
async def billing_parts(billing_url: str, clock: FrozenClock, tmp_path: Path) -> AsyncIterator[BillingParts]:
    """Billing's parts, as its worker builds them."""
    settings = BillingSettings(
        database_url=billing_url,
        var_dir=tmp_path,
        identity_jwks_url="http://identity.test/.well-known/jwks.json",
    )
    parts = build(settings, clock=clock)
    yield parts
    await parts.db.dispose()


@pytest.fixture
def billing_db(billing_parts: BillingParts) -> Database:
    return billing_parts.db


@pytest.fixture
async def billing(
    billing_url: str, client: httpx.AsyncClient, clock: FrozenClock, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """Billing's API, verifying identity's tokens against identity's own JWKS."""
    jwks = (await client.get("/.well-known/jwks.json")).json()
    settings = BillingSettings(
        database_url=billing_url,
        var_dir=tmp_path,
        identity_jwks_url="http://identity.test/.well-known/jwks.json",
    )
    app = create_billing_api(
        settings,
        clock=clock,
        jwks_client=httpx.AsyncClient(
            transport=httpx.MockTransport(lambda _: httpx.Response(200, json=jwks))
        ),
    )
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://billing.test") as http:
        yield http


@pytest.fixture
def billing_consumer(billing_parts: BillingParts, clock: FrozenClock) -> IdempotentConsumer:
    """Billing's worker's consumer of `identity.users`."""
    return IdempotentConsumer(
        name="billing:identity.users",
        db=billing_parts.db,
        tables=billing_messaging,
        handlers=billing_handlers(billing_parts),
        dead_letters=NoDeadLetters(),
        clock=clock,
    )


async def deliver(identity_db: Database, consumer: IdempotentConsumer) -> list[str]:
    """Hand billing every `identity.users` event identity has queued (redeliveries included)."""
    return [await consumer.process(m) for m in await identity_users_events(identity_db)]


async def statuses(billing: httpx.AsyncClient, tokens: dict, times: int = 4) -> set[int]:
    """Billing's answers to `times` reads with the token, fired in parallel."""
    answers = await asyncio.gather(
        *(billing.get("/v1/invoices", params={"limit": 1}, headers=bearer(tokens)) for _ in range(times))
    )
    return {a.status_code for a in answers}


async def test_after_a_logout_billing_refuses_that_sessions_token_and_accepts_the_users_other_session(
    db, clock, sealer, client, billing, billing_consumer
) -> None:
    username = await active_admin(db, clock, sealer, client)
    leaving, staying = await log_in(client, db, sealer, username), await log_in(client, db, sealer, username)
    assert await statuses(billing, leaving) == await statuses(billing, staying) == {200}

    assert (await client.post("/v1/logout", headers=bearer(leaving))).status_code == 204
    [ended] = await sessions_ended(db)
    assert ended.session_id == uuid.UUID(sid(leaving)) and ended.reason == "logout"
    assert ended.ended_at == clock.now()
    assert "handled" in await deliver(db, billing_consumer)

    refused = await billing.get("/v1/invoices", headers=bearer(leaving))
    assert refused.status_code == 401 and refused.headers["content-type"] == PROBLEM
    assert "session of this token has ended" in refused.json()["detail"]
    assert await statuses(billing, leaving) == {401}
    assert await statuses(billing, staying) == {200}
    assert (await client.get("/v1/me", headers=bearer(staying))).status_code == 200


async def test_after_a_refresh_token_is_reused_billing_refuses_every_token_of_that_session(
    db, clock, sealer, client, billing, billing_consumer
) -> None:
    username = await active_admin(db, clock, sealer, client)
    first, other = await log_in(client, db, sealer, username), await log_in(client, db, sealer, username)
    rotated = await client.post("/v1/token/refresh", json={"refresh_token": first["refresh_token"]})
    assert rotated.status_code == 200
    newest = rotated.json()
    assert await statuses(billing, newest) == {200}

    reuse = await client.post("/v1/token/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401
    [ended] = await sessions_ended(db)
    assert ended.session_id == uuid.UUID(sid(first)) == uuid.UUID(sid(newest))
    assert ended.reason == "refresh-token-reuse"
    await deliver(db, billing_consumer)

    assert await statuses(billing, newest) == {401}
    assert await statuses(billing, first) == {401}
    assert await statuses(billing, other) == {200}


async def test_a_reset_second_factor_and_a_wrong_code_for_a_new_authenticator_reach_billing(
    db, clock, sealer, client, billing, billing_consumer
) -> None:
    """Two ways a session ends with no other event that billing would hear of: the second factor
    reset by an administrator (every session of the user), and a wrong current code offered to
    set up a new authenticator with an old session (that session)."""
    username = await active_admin(db, clock, sealer, client)
    first, second = await log_in(client, db, sealer, username), await log_in(client, db, sealer, username)
    me = (await client.get("/v1/me", headers=bearer(first))).json()
    reset = await client.post(f"/v1/users/{me['user_id']}/reset-2fa", headers=bearer(first))
    assert reset.status_code == 200, reset.text
    ended = await sessions_ended(db)
    assert sorted(str(e.session_id) for e in ended) == sorted([sid(first), sid(second)])
    assert {e.reason for e in ended} == {"second-factor-reset"}
    await deliver(db, billing_consumer)
    assert await statuses(billing, first) == await statuses(billing, second) == {401}

    old = await log_in(client, db, sealer, username)
    clock.advance(timedelta(minutes=16))
    refreshed = (await client.post("/v1/token/refresh", json={"refresh_token": old["refresh_token"]})).json()
    assert await statuses(billing, refreshed) == {200}
    guess = await client.post("/v1/me/totp", headers=bearer(refreshed), json={"current_code": "123456"})
    assert guess.status_code == 403
    await deliver(db, billing_consumer)
    assert (await sessions_ended(db))[-1].reason == "reauthentication-failed"
    assert await statuses(billing, refreshed) == {401}


async def test_a_session_ended_by_many_requests_at_once_is_announced_once_and_recorded_once(
    db, clock, sealer, client, billing_db, billing_consumer
) -> None:
    username = await active_admin(db, clock, sealer, client)
    tokens = await log_in(client, db, sealer, username)
    logouts = await asyncio.gather(*(client.post("/v1/logout", headers=bearer(tokens)) for _ in range(6)))
    assert 204 in {r.status_code for r in logouts} and {r.status_code for r in logouts} <= {204, 401}

    stolen = await log_in(client, db, sealer, username)
    assert (
        await client.post("/v1/token/refresh", json={"refresh_token": stolen["refresh_token"]})
    ).status_code == 200
    reuses = await asyncio.gather(
        *(client.post("/v1/token/refresh", json={"refresh_token": stolen["refresh_token"]}) for _ in range(6))
    )
    assert {r.status_code for r in reuses} == {401}

    announced = await sessions_ended(db)
    assert sorted((str(e.session_id), e.reason) for e in announced) == sorted(
        [(sid(tokens), "logout"), (sid(stolen), "refresh-token-reuse")]
    )

    # Delivered twice, and announced twice under two event ids: still one row per session.
    await deliver(db, billing_consumer)
    assert "handled" not in await deliver(db, billing_consumer)
    again = SessionEnded(
        user_id=announced[0].user_id,
        session_id=announced[0].session_id,
        reason="logout",
        ended_at=clock.now(),
    )
    assert (
        await billing_consumer.process(consumed(encode(again, event_id=str(uuid.uuid4()), time=clock.now())))
        == "handled"
    )
    async with billing_db.reading() as session:
        rows = (
            await session.scalars(
                select(EndedSession.session_id).where(EndedSession.user_id == str(announced[0].user_id))
            )
        ).all()
    assert sorted(rows) == sorted([sid(tokens), sid(stolen)])


async def test_billing_forgets_an_ended_session_once_its_tokens_can_no_longer_be_valid(
    billing_db: Database, clock: FrozenClock, billing_parts: BillingParts
) -> None:
    handlers = billing_handlers(billing_parts)
    revocations = billing_parts.revocations
    user = uuid.uuid4()
    ended_long_ago, ended_lately = uuid.uuid4(), uuid.uuid4()
    for session_id, ended_at in (
        (ended_long_ago, clock.now() - timedelta(hours=1, seconds=1)),
        (ended_lately, clock.now() - timedelta(minutes=59)),
    ):
        envelope = envelope_of(
            SessionEnded(user_id=user, session_id=session_id, reason="logout", ended_at=ended_at), clock
        )
        async with billing_db.transaction() as session:
            await handlers[SessionEnded](session, envelope)

    assert revocations.ended_sessions_kept == timedelta(hours=1)  # the default
    assert await revocations.purge_ended_sessions() == 1

    async def remembered(session_id: uuid.UUID) -> bool:
        async with billing_db.reading() as session:
            return await session.get(EndedSession, str(session_id)) is not None

    assert not await remembered(ended_long_ago) and await remembered(ended_lately)
    clock.advance(timedelta(minutes=1, seconds=1))
    assert await revocations.purge_ended_sessions() == 1
    assert not await remembered(ended_lately)
    assert await revocations.purge_ended_sessions() == 0


async def test_the_revocation_check_is_one_statement_that_reads_both_tables_by_primary_key(
    db, clock, sealer, client, billing, billing_db, monkeypatch: pytest.MonkeyPatch
) -> None:
    username = await active_admin(db, clock, sealer, client)
    tokens = await log_in(client, db, sealer, username)
    statements: list[str] = []

    def seen(_conn, _cursor, statement: str, *_args) -> None:
        statements.append(statement)

    # What SQLAlchemy's engines run, and on PostgreSQL what goes to the server on the
    # connections the check opens for itself (`shared.pg_key_reads`, asyncpg's query log).
    connect = asyncpg.connect

    async def logged(*args: Any, **kwargs: Any) -> asyncpg.Connection:
        connection = await connect(*args, **kwargs)
        connection.add_query_logger(lambda query: statements.append(query.query))
        return connection

    monkeypatch.setattr(asyncpg, "connect", logged)
    event.listen(Engine, "before_cursor_execute", seen)
    try:
        assert (
            await billing.get("/v1/invoices", params={"limit": 1}, headers=bearer(tokens))
        ).status_code == 200
    finally:
        event.remove(Engine, "before_cursor_execute", seen)
    checks = [s for s in statements if "user_access" in s or "ended_sessions" in s]
    assert len(checks) == 1 and "user_access" in checks[0] and "ended_sessions" in checks[0]

    query = revocation_query(str(uuid.uuid4()), str(uuid.uuid4()))
    async with billing_db.transaction() as session:
        compiled = query.compile(session.get_bind(), compile_kwargs={"literal_binds": True})
        if session.get_bind().dialect.name == "sqlite":
            plan = " ".join(str(r[-1]) for r in await session.execute(text(f"EXPLAIN QUERY PLAN {compiled}")))
            assert "SCAN" not in plan
            assert "user_access USING INDEX" in plan and "ended_sessions USING" in plan, plan
        else:
            # A tiny table is cheaper to scan; without that choice both lookups use the keys.
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            plan = " ".join(str(r[0]) for r in await session.execute(text(f"EXPLAIN {compiled}")))
            assert "Seq Scan" not in plan
            assert "pk_user_access" in plan and "pk_ended_sessions" in plan, plan


@pytest.mark.parametrize("service", ["notifier", "onboarding"])
async def test_the_other_consumers_of_identity_users_ignore_a_session_end(
    service: str, database_factory, clock: FrozenClock, tmp_path: Path
) -> None:
    url = database_factory(service)
    await asyncio.to_thread(migrate, SERVICES[service].migrations, url)
    tables: MessagingTables = notifier_messaging if service == "notifier" else onboarding_messaging
    handlers = by_topic(
        notifier_handlers(build_notifier(NotifierSettings(database_url=url, var_dir=tmp_path), clock=clock))
        if service == "notifier"
        else onboarding_handlers(build_onboarding(OnboardingSettings(database_url=url), clock=clock))
    )[IDENTITY_USERS]
    database = Database(url)
    try:
        consumer = IdempotentConsumer(
            name=f"{service}:identity.users",
            db=database,
            tables=tables,
            handlers=handlers,
            dead_letters=NoDeadLetters(),
            clock=clock,
        )
        ended = SessionEnded(
            user_id=uuid.uuid4(), session_id=uuid.uuid4(), reason="logout", ended_at=clock.now()
        )
        assert (
            await consumer.process(consumed(encode(ended, event_id=str(uuid.uuid4()), time=clock.now())))
            == "ignored"
        )
        async with database.reading() as session:
            assert (await session.execute(select(tables.inbox))).all() == []
    finally:
        await database.dispose()


def test_billing_migration_0003_adds_the_ended_sessions_and_its_downgrade_removes_them(
    database_factory,
) -> None:
    from alembic import command

    url = database_factory("billing")
    location = SERVICES["billing"].migrations
    migrate(location, url)

    async def tables() -> set[str]:
        engine = create_async_engine(url)
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        await engine.dispose()
        return names

    assert "ended_sessions" in asyncio.run(tables())
    command.downgrade(alembic_config(location, url), "0002")
    assert "ended_sessions" not in asyncio.run(tables()) and "user_access" in asyncio.run(tables())
    migrate(location, url)
    assert "ended_sessions" in asyncio.run(tables())


async def test_logout_answers_204_with_no_body_at_all(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    tokens = await log_in(client, db, sealer, username)
    response = await client.post("/v1/logout", headers=bearer(tokens))
    assert response.status_code == 204
    assert response.content == b""
    assert int(response.headers.get("content-length", "0")) == 0
    assert "content-type" not in response.headers
