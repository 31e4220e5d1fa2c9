"""Several workers of one service each run an outbox relay over the same database: one key's
events must still reach the bus in the order they were written (docs/architecture.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from sqlalchemy import MetaData

from shared.clock import FrozenClock
from shared.db import Database
from shared.envelope import KafkaRecord
from shared.events import AccountRef, CustomerRegistered
from shared.messaging import MessagingTables, Outbox, OutboxRelay
from tests.support.waiting import wait_until_async

AT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
CVR = "35657193"


@dataclass
class Bus:
    """What reached the broker, in arrival order."""

    arrived: list[str] = field(default_factory=list)


@dataclass
class HeldPublisher:
    """A publisher whose broker does not acknowledge until released: the relay holding it
    is in the middle of publishing its batch."""

    bus: Bus
    release: asyncio.Event = field(default_factory=asyncio.Event)
    calls: int = 0

    async def publish(self, records: list[KafkaRecord]) -> None:
        self.calls += 1
        await self.release.wait()
        self.bus.arrived += [dict(r.headers)["ce_id"].decode() for r in records]


@dataclass
class PromptPublisher:
    bus: Bus

    async def publish(self, records: list[KafkaRecord]) -> None:
        self.bus.arrived += [dict(r.headers)["ce_id"].decode() for r in records]


@pytest.fixture
async def relay_db(database_factory) -> AsyncIterator[tuple[Database, MessagingTables]]:
    metadata = MetaData()
    tables = MessagingTables.define(metadata)
    db = Database(database_factory("relay"))
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield db, tables
    finally:
        await db.dispose()


def registered(n: int) -> CustomerRegistered:
    return CustomerRegistered(
        cvr=CVR,
        name=f"Firma {n}",
        accounts=[AccountRef(account_number="12345678", name="Hovedkonto")],
        registered_at=AT,
    )


async def test_a_second_relay_never_overtakes_the_first_with_a_later_event_of_the_same_key(
    relay_db: tuple[Database, MessagingTables],
) -> None:
    db, tables = relay_db
    clock = FrozenClock(AT)
    outbox = Outbox(tables, clock)
    async with db.transaction() as session:
        written = [await outbox.add(session, registered(n)) for n in range(4)]
    bus = Bus()
    held = HeldPublisher(bus)
    first = OutboxRelay(db, tables, held, clock, batch=2)
    second = OutboxRelay(db, tables, PromptPublisher(bus), clock, batch=2)

    first_run = asyncio.create_task(first.run_once())
    # The first relay has its batch and waits for the broker's acknowledgement.
    async def publishing() -> int | None:
        return held.calls or None

    await wait_until_async(publishing, deadline_s=10, what="the first relay publishing")
    # Every other relay runs while the first is still publishing (as the other workers' do).
    others = await asyncio.gather(*(second.run_once() for _ in range(3)))
    held.release.set()
    await first_run
    while await second.run_once():
        pass

    first_arrivals = list(dict.fromkeys(bus.arrived))
    assert first_arrivals == written, (others, bus.arrived)
