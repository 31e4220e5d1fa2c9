"""A billing database with the demo data, and callers with tokens of chosen grants."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from services.billing.api import create_api
from services.billing.bootstrap import BillingParts, build
from services.billing.catalogue import sync_catalogue
from services.billing.config import BillingSettings
from services.billing.models import Subscription, messaging
from services.registry import SERVICES
from shared.clock import FrozenClock
from shared.db import Database, migrate
from shared.events import Event
from shared.tokens import TokenSigner, generate_signing_key, parse_signing_keys
from tests.support.asgi import AppTransport

# Demo data is loaded "now": the newest closed month is October 2026.
NOW = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)
GROUP = ["35657193", "37826111", "41204559", "33112874"]
ALL_FUNCTIONS = ["invoices", "orders", "master_data", "telephony", "user_admin"]


@dataclass
class Caller:
    user_id: str
    headers: dict[str, str]


class Tokens:
    def __init__(self, clock: FrozenClock) -> None:
        self.signer = TokenSigner(parse_signing_keys(f"b1:{generate_signing_key()}"), "b1")
        self.clock = clock

    def caller(
        self, grants: list[dict[str, Any]], functions: list[str] | None = None, *, user_id: str | None = None
    ) -> Caller:
        user_id = user_id or str(uuid.uuid4())
        token = self.signer.sign(
            subject=user_id,
            session_id=str(uuid.uuid4()),
            tenant=grants[0]["cvr"] if grants else None,
            role="user",
            grants=grants,
            functions=ALL_FUNCTIONS if functions is None else functions,
            now=self.clock.now(),
            lifetime=timedelta(minutes=5),
        )
        return Caller(user_id, {"Authorization": f"Bearer {token}"})

    def group_admin(self) -> Caller:
        return self.caller([{"cvr": cvr, "accounts": "all"} for cvr in GROUP])

    def jwks_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.MockTransport(lambda _: httpx.Response(200, json=self.signer.jwks()))
        )


def billing_settings(url: str, var_dir: Path | None = None) -> BillingSettings:
    return BillingSettings(
        database_url=url,
        identity_jwks_url="http://identity.test/.well-known/jwks.json",
        **({"var_dir": var_dir} if var_dir is not None else {}),
    )


def seeded_billing_database(url: str, clock: FrozenClock, *, size: str = "small") -> None:
    migrate(SERVICES["billing"].migrations, url)

    async def seed() -> None:
        parts = build(billing_settings(url), clock=clock)
        try:
            async with parts.db.transaction() as session:
                await sync_catalogue(session)
                await parts.demo.seed(session, size=size)
        finally:
            await parts.db.dispose()

    asyncio.run(seed())


@pytest.fixture(scope="module")
def billing_url(database_factory) -> str:
    url: str = database_factory("billing")
    seeded_billing_database(url, FrozenClock(NOW))
    return url


@pytest.fixture
def billing_clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
def tokens(billing_clock: FrozenClock) -> Tokens:
    return Tokens(billing_clock)


@pytest.fixture
async def billing_parts(
    billing_url: str, tokens: Tokens, billing_clock: FrozenClock, tmp_path: Path
) -> AsyncIterator[BillingParts]:
    """Billing's parts as its API and worker build them, on the test's clock and tokens."""
    parts = build(
        billing_settings(billing_url, tmp_path), clock=billing_clock, jwks_client=tokens.jwks_client()
    )
    yield parts
    await parts.db.dispose()


@pytest.fixture
async def billing_db(billing_url: str) -> AsyncIterator[Database]:
    db = Database(billing_url)
    yield db
    await db.dispose()


@pytest.fixture
async def billing(
    billing_url: str, tokens: Tokens, billing_clock: FrozenClock, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    settings = billing_settings(billing_url, tmp_path)
    app = create_api(settings, clock=billing_clock, jwks_client=tokens.jwks_client())
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://billing.test") as http:
        yield http


async def events_since(db: Database, seq: int, event_type: type[Event]) -> list[Any]:
    """The `event_type` events billing's outbox took after sequence number `seq`."""
    async with db.transaction() as session:
        rows = await session.execute(
            select(messaging.outbox.c.headers, messaging.outbox.c.value)
            .where(messaging.outbox.c.seq > seq)
            .order_by(messaging.outbox.c.seq)
        )
        return [
            event_type.model_validate_json(value)
            for headers, value in rows
            if dict(json.loads(headers)).get("ce_type") == event_type.TYPE
        ]


async def outbox_position(db: Database) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.coalesce(func.max(messaging.outbox.c.seq), 0))) or 0)


async def active_subscription(db: Database, account: str, product_prefix: str) -> Subscription:
    """The first active subscription of `account` whose product code starts with the prefix."""
    async with db.transaction() as session:
        found = await session.scalar(
            select(Subscription)
            .where(
                Subscription.account_number == account,
                Subscription.product_code.startswith(product_prefix),
                Subscription.status == "active",
            )
            .order_by(Subscription.id)
        )
    assert found is not None, f"no active {product_prefix}* subscription on {account}"
    return found


def idempotency_key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}
