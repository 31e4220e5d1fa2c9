"""A commit of outbox rows nudges its database's relay across processes (`OutboxNudge`): an
API writes the rows, the relay runs in the worker. A nudged relay publishes at once; one that
heard nothing still publishes at its next poll. On both databases: NOTIFY/LISTEN on PostgreSQL,
a datagram on SQLite (docs/architecture.md, "Outbox relay")."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from sqlalchemy import MetaData

from shared.clock import FrozenClock
from shared.db import Database
from shared.envelope import KafkaRecord
from shared.events import AccountRef, CustomerRegistered
from shared.messaging import MessagingTables, Outbox, OutboxNudge, OutboxRelay
from tests.support.waiting import wait_until_async

AT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
# A poll this long never comes within a test: what the relay publishes, a nudge made it.
NEVER_S = 3600.0
NOBODY = 65534  # a user of the host other than the relay's


@dataclass
class Bus:
    arrived: list[str] = field(default_factory=list)

    async def publish(self, records: list[KafkaRecord]) -> None:
        self.arrived += [dict(r.headers)["ce_id"].decode() for r in records]


@dataclass
class Setup:
    url: str
    relay_db: Database  # the worker's
    writer_db: Database  # the API's: an engine and pool of its own
    tables: MessagingTables


@pytest.fixture
async def setup(database_factory) -> AsyncIterator[Setup]:
    metadata = MetaData()
    tables = MessagingTables.define(metadata)
    url = database_factory("nudge")
    relay_db, writer_db = Database(url), Database(url)
    async with relay_db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield Setup(url, relay_db, writer_db, tables)
    finally:
        await relay_db.dispose()
        await writer_db.dispose()


def registered(n: int) -> CustomerRegistered:
    return CustomerRegistered(
        cvr="35657193",
        name=f"Firma {n}",
        accounts=[AccountRef(account_number="12345678", name="Hovedkonto")],
        registered_at=AT,
    )


async def write(setup: Setup, n: int) -> str:
    async with setup.writer_db.transaction() as session:
        return await Outbox(setup.tables, FrozenClock(AT)).add(session, registered(n))


async def until(check: Callable[[], bool], what: str) -> None:
    async def checked() -> bool:
        return check()

    await wait_until_async(checked, deadline_s=10, what=what, poll_s=0.01)


@contextlib.asynccontextmanager
async def running(*coroutines) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c) for c in coroutines]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass
class Listening:
    bus: Bus
    nudge: asyncio.Event  # set by a nudge, cleared by the relay's turn


@contextlib.asynccontextmanager
async def nudged_relay(setup: Setup) -> AsyncIterator[Listening]:
    """The worker's relay, publishing only when nudged (its poll never comes), listening."""
    bus = Bus()
    relay = OutboxRelay(setup.relay_db, setup.tables, bus, FrozenClock(AT))
    nudge, listening = asyncio.Event(), asyncio.Event()
    async with running(
        OutboxNudge.listen(setup.relay_db, nudge, listening=listening),
        relay.run_forever(NEVER_S, asyncio.Event(), nudge),
    ):
        await until(listening.is_set, "the relay listening")
        yield Listening(bus, nudge)


async def test_a_commit_nudges_the_waiting_relay(setup: Setup) -> None:
    async with nudged_relay(setup) as relay:
        bus, nudge = relay.bus, relay.nudge
        # Whatever turn the start of listening gave has been taken: the relay now waits.
        await until(lambda: not nudge.is_set(), "the relay waiting")
        first = await write(setup, 1)
        await until(lambda: first in bus.arrived, "the event on the bus")
        # On SQLite the relay follows a nudge soon after a turn that published only once
        # `OutboxNudge.SQLITE_GAP_S` has passed; it follows it all the same.
        second = await write(setup, 2)
        await until(lambda: second in bus.arrived, "the second event on the bus")
    assert bus.arrived == [first, second]


async def test_a_rolled_back_transaction_publishes_nothing(setup: Setup) -> None:
    async with nudged_relay(setup) as relay:
        bus = relay.bus
        with pytest.raises(RuntimeError):
            async with setup.writer_db.transaction() as session:
                await Outbox(setup.tables, FrozenClock(AT)).add(session, registered(1))
                raise RuntimeError("the use case failed")
        kept = await write(setup, 2)
        await until(lambda: kept in bus.arrived, "the event on the bus")
    assert bus.arrived == [kept]


async def test_a_relay_that_hears_no_nudge_publishes_at_its_next_poll(setup: Setup) -> None:
    bus = Bus()
    relay = OutboxRelay(setup.relay_db, setup.tables, bus, FrozenClock(AT))
    # Nobody listens: the commit's nudge goes nowhere, and the poll finds the row.
    async with running(relay.run_forever(0.05, asyncio.Event())):
        written = await write(setup, 1)
        await until(lambda: written in bus.arrived, "the event on the bus")
    assert bus.arrived == [written]


async def test_another_relay_hears_the_nudges_once_the_first_stops(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: one relay of the host binds the database's address, the other tries again until
    it is free. PostgreSQL: every relay LISTENs, so both hear them from the start."""
    monkeypatch.setattr(OutboxNudge, "REBIND_S", 0.05)
    bus = Bus()
    relay = OutboxRelay(setup.relay_db, setup.tables, bus, FrozenClock(AT))
    first_wake, first_listening = asyncio.Event(), asyncio.Event()
    second_wake, second_listening = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(OutboxNudge.listen(setup.relay_db, first_wake, listening=first_listening))
    try:
        await until(first_listening.is_set, "the first relay listening")
        async with running(
            OutboxNudge.listen(setup.writer_db, second_wake, listening=second_listening),
            relay.run_forever(NEVER_S, asyncio.Event(), second_wake),
        ):
            if setup.relay_db.engine.dialect.name == "sqlite":
                assert not second_listening.is_set()
                first.cancel()
            await until(second_listening.is_set, "the second relay listening")
            written = await write(setup, 1)
            await until(lambda: written in bus.arrived, "the event on the bus")
    finally:
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first


def _sent_as_another_user(address: bytes) -> int:
    """One datagram to `address` from a child process running as NOBODY; its exit status."""
    child = os.fork()
    if child == 0:  # the child: nothing but the datagram
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"1", address)
        finally:
            os._exit(0 if os.getuid() == NOBODY else 1)
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(os.geteuid() != 0, reason="sending as another user needs root")
async def test_a_datagram_from_another_user_of_the_host_is_no_nudge(setup: Setup) -> None:
    """SQLite: the address is in the abstract namespace, which any local process can send to;
    only the relay's own user (or root, or the database file's owner) nudges it."""
    address = OutboxNudge.address(setup.url)
    if address is None:
        pytest.skip("PostgreSQL: a nudge is a NOTIFY, which needs the database's credentials")
    nudge, listening = asyncio.Event(), asyncio.Event()
    dropped = OutboxNudge.foreign_dropped
    async with running(OutboxNudge.listen(setup.relay_db, nudge, listening=listening)):
        await until(listening.is_set, "the relay listening")
        for _ in range(3):
            assert _sent_as_another_user(address) == 0
        await until(lambda: OutboxNudge.foreign_dropped == dropped + 3, "the foreign datagrams dropped")
        assert not nudge.is_set()
        OutboxNudge.send(address)  # this process's user
        await until(nudge.is_set, "the relay nudged")
