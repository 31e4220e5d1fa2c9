"""Several workers of one service each run an outbox relay over the same database: one key's
events must still reach the bus in the order they were committed, once each, on both databases
(docs/operations.md, "Order per key")."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from sqlalchemy import MetaData, func, select
from sqlalchemy import event as sa_event

from shared.broker import EmbeddedBroker
from shared.clock import FrozenClock
from shared.db import Database, lock_for_transaction, sqlite_file
from shared.envelope import KafkaRecord
from shared.events import AccountRef, CustomerRegistered, MasterDataChanged
from shared.kafka import KafkaPublisher, ensure_topics
from shared.messaging import MessagingTables, Outbox, OutboxRelay
from tests.support.kafka import read_all
from tests.support.ports import free_ports
from tests.support.relay_process import relay_process
from tests.support.waiting import wait_until_async

AT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
CVR = "35657193"
# The few keys the writers interleave events for.
KEYS = ["35657193", "37826111", "41204559"]
STAFF = UUID("00000000-0000-4000-8000-000000000001")


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


@dataclass
class RefusingPublisher:
    """The broker refuses the batch after taking part of it (the relay cannot know which)."""

    bus: Bus
    taken: int = 1

    async def publish(self, records: list[KafkaRecord]) -> None:
        self.bus.arrived += [dict(r.headers)["ce_id"].decode() for r in records[: self.taken]]
        raise ConnectionError("the broker closed the connection")


@dataclass
class RelayDb:
    url: str
    db: Database
    tables: MessagingTables
    others: list[Database] = field(default_factory=list)

    def database(self) -> Database:
        """Another process's view of the database: an engine and connection pool of its own."""
        self.others.append(Database(self.url))
        return self.others[-1]


@pytest.fixture
async def relay_db(database_factory) -> AsyncIterator[RelayDb]:
    metadata = MetaData()
    tables = MessagingTables.define(metadata)
    url = database_factory("relay")
    db = Database(url)
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    relay_db = RelayDb(url, db, tables)
    try:
        yield relay_db
    finally:
        for database in [db, *relay_db.others]:
            await database.dispose()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An embedded broker of this module's own, with the catalogue's topics."""
    [port] = free_ports(1)
    with (tmp_path_factory.mktemp("broker") / "broker.log").open("ab") as log:
        embedded = EmbeddedBroker(port=port, log=log)
        embedded.start()
        try:
            asyncio.run(ensure_topics(embedded.bootstrap))
            yield embedded.bootstrap
        finally:
            embedded.stop()


def registered(n: int) -> CustomerRegistered:
    return CustomerRegistered(
        cvr=CVR,
        name=f"Firma {n}",
        accounts=[AccountRef(account_number="12345678", name="Hovedkonto")],
        registered_at=AT,
    )


def changed(cvr: str, version: int) -> MasterDataChanged:
    return MasterDataChanged(
        cvr=cvr,
        street=f"Vej {version}",
        postal_code="8000",
        city="Aarhus C",
        contact_name="Eva Jensen",
        contact_email="eva@example.dk",
        contact_phone="+4512345678",
        version=version,
        changed_by=STAFF,
        changed_at=AT,
    )


async def write(db: Database, tables: MessagingTables, events: list[MasterDataChanged]) -> None:
    """Each event in a transaction of its own; transactions of one key one after another (as
    the services' do, by the aggregate's row or `lock_for_transaction`), so per key, commit
    order is sequence order."""
    outbox = Outbox(tables, FrozenClock(AT))
    for event in events:
        async with db.transaction() as session:
            await lock_for_transaction(session, "relay-order-test", event.cvr)
            await outbox.add(session, event)


async def unpublished(relay_db: RelayDb) -> int:
    outbox = relay_db.tables.outbox
    async with relay_db.db.reading() as session:
        return int(await session.scalar(select(func.count()).where(outbox.c.published_at.is_(None))) or 0)


async def sequences_on_the_topic(
    bootstrap: str, relay_db: RelayDb
) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Per key: the outbox sequence numbers of the events as the topic holds them, and as
    they were committed. Only this test's events count (the broker is the module's)."""
    outbox = relay_db.tables.outbox
    async with relay_db.db.reading() as session:
        rows = (await session.execute(select(outbox.c.event_id, outbox.c.key, outbox.c.seq))).all()
    seq_of = {row.event_id: row.seq for row in rows}
    committed: dict[str, list[int]] = {}
    for row in sorted(rows, key=lambda r: r.seq):
        committed.setdefault(row.key, []).append(row.seq)
    on_topic: dict[str, list[int]] = {}
    for record in await read_all(bootstrap, [MasterDataChanged.TOPIC.name]):
        seq = seq_of.get(record.headers["ce_id"].decode())
        if seq is not None:
            on_topic.setdefault(record.key.decode() if record.key else "", []).append(seq)
    return on_topic, committed


# How often the test's relays (and the other process's) try for a turn, busy or not, so that
# every one of them keeps trying while another holds the turn: the contention of several
# workers' relays, which `run_forever` would hide by going straight on after a full turn.
POLL_S = 0.02


async def polling(relay: OutboxRelay) -> None:
    while True:
        with contextlib.suppress(Exception):  # as `run_forever`: a failed turn is tried again
            await relay.run_once()
        await asyncio.sleep(POLL_S)


@contextlib.asynccontextmanager
async def relaying(relays: list[OutboxRelay]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(polling(relay)) for relay in relays]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_second_relay_never_overtakes_the_first_with_a_later_event_of_the_same_key(
    relay_db: RelayDb,
) -> None:
    db, tables = relay_db.db, relay_db.tables
    clock = FrozenClock(AT)
    outbox = Outbox(tables, clock)
    async with db.transaction() as session:
        written = [await outbox.add(session, registered(n)) for n in range(4)]
    bus = Bus()
    held = HeldPublisher(bus)
    first = OutboxRelay(db, tables, held, clock, batch=2)
    second = OutboxRelay(relay_db.database(), tables, PromptPublisher(bus), clock, batch=2)

    first_run = asyncio.create_task(first.run_once())

    # The first relay has its batch and waits for the broker's acknowledgement.
    async def publishing() -> int | None:
        return held.calls or None

    await wait_until_async(publishing, deadline_s=10, what="the first relay publishing")
    # Every other relay runs while the first is still publishing (as the other workers' do):
    # it finds the turn taken and sends nothing, neither the later rows nor the first's again.
    others = await asyncio.gather(*(second.run_once() for _ in range(3)))
    held.release.set()
    await first_run
    while await second.run_once():
        pass

    assert others == [0, 0, 0]
    assert bus.arrived == written


async def test_a_relay_marks_only_the_rows_it_published(relay_db: RelayDb) -> None:
    """Rows committed while a batch is with the broker are the next batch's, not this one's."""
    db, tables = relay_db.db, relay_db.tables
    clock = FrozenClock(AT)
    outbox = Outbox(tables, clock)
    async with db.transaction() as session:
        early = [await outbox.add(session, registered(n)) for n in range(2)]
    bus = Bus()
    held = HeldPublisher(bus)
    relay = OutboxRelay(db, tables, held, clock)
    run = asyncio.create_task(relay.run_once())

    async def publishing() -> int | None:
        return held.calls or None

    await wait_until_async(publishing, deadline_s=10, what="the relay publishing")
    async with relay_db.database().transaction() as session:
        late = [await outbox.add(session, registered(n)) for n in range(2, 4)]
    held.release.set()

    assert await run == 2
    assert bus.arrived == early
    assert await unpublished(relay_db) == len(late)
    assert await OutboxRelay(db, tables, PromptPublisher(bus), clock).run_once() == 2
    assert bus.arrived == early + late


class SeenWake(asyncio.Event):
    """The relay's wake, counting the times the relay has waited for it."""

    waits = 0

    async def wait(self) -> Any:
        self.waits += 1
        return await super().wait()


class CountedRelay(OutboxRelay):
    """A relay that keeps how many rows each of its turns sent."""

    turns: list[int]

    async def run_once(self) -> int:
        sent = await super().run_once()
        self.turns.append(sent)
        return sent


async def test_a_relay_goes_straight_on_after_a_full_turn_and_waits_for_a_wake_after_one_that_was_not(
    relay_db: RelayDb,
) -> None:
    """A turn that was not full left nothing in the outbox when it read it: reading again at
    once would find nothing (each wake of a consumer's commit cost one such read)."""
    db, tables = relay_db.db, relay_db.tables
    clock = FrozenClock(AT)
    outbox = Outbox(tables, clock)
    async with db.transaction() as session:
        for n in range(3):
            await outbox.add(session, registered(n))
    bus = Bus()
    relay = CountedRelay(db, tables, PromptPublisher(bus), clock, batch=2)
    relay.turns = []
    wake = SeenWake()
    running = asyncio.create_task(relay.run_forever(3600.0, wake))  # no poll within the test

    async def waiting(after: int) -> bool:
        return wake.waits > after

    try:
        await wait_until_async(lambda: waiting(0), deadline_s=10, what="the relay waiting for a wake")
        assert relay.turns == [2, 1]
        async with db.transaction() as session:
            await outbox.add(session, registered(3))
        wake.set()
        await wait_until_async(lambda: waiting(1), deadline_s=10, what="the relay waiting again")
        assert relay.turns == [2, 1, 1]
        assert len(bus.arrived) == 4
        assert await unpublished(relay_db) == 0
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_relay_stopped_while_it_marks_its_batch_stops_having_sent_it_once(relay_db: RelayDb) -> None:
    """The worker stops its relay (cancels its task) while the mark of a published batch waits
    for a lock: the relay stops, and sent the batch once. The rows stay unmarked, so the next
    turn sends them again: at least once, never a second send by the stopped relay."""
    db, tables = relay_db.db, relay_db.tables
    async with db.transaction() as session:
        written = await Outbox(tables, FrozenClock(AT)).add(session, registered(1))
    bus = Bus()
    relay = OutboxRelay(db, tables, PromptPublisher(bus), FrozenClock(AT))
    marks: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("UPDATE"):
            marks.append(statement)

    sa_event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        # Another transaction holds the rows (PostgreSQL) or the write lock (SQLite): the mark waits.
        async with relay_db.database().transaction() as holder:
            await holder.execute(select(tables.outbox.c.seq).with_for_update())
            task = asyncio.create_task(relay.run_forever(POLL_S, asyncio.Event()))
            await until_true(lambda: bool(marks), "the mark sent")
            task.cancel()
        await asyncio.wait({task}, timeout=10)
        assert task.cancelled()
    finally:
        sa_event.remove(db.engine.sync_engine, "before_cursor_execute", seen)
    assert bus.arrived == [written]
    assert await unpublished(relay_db) == 1


@dataclass
class StoppedMidSend:
    """A broker client that, stopped while it waits for the broker's acknowledgement, reports
    a closed connection instead of the cancellation."""

    bus: Bus
    sending: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish(self, records: list[KafkaRecord]) -> None:
        self.bus.arrived += [dict(r.headers)["ce_id"].decode() for r in records]
        self.sending.set()
        try:
            await asyncio.Event().wait()  # no acknowledgement comes
        except asyncio.CancelledError:
            raise ConnectionError("the producer was closed") from None


async def test_a_relay_stopped_while_it_publishes_stops_whatever_error_the_client_makes_of_it(
    relay_db: RelayDb,
) -> None:
    db, tables = relay_db.db, relay_db.tables
    async with db.transaction() as session:
        written = await Outbox(tables, FrozenClock(AT)).add(session, registered(1))
    publisher = StoppedMidSend(Bus())
    task = asyncio.create_task(OutboxRelay(db, tables, publisher, FrozenClock(AT)).run_forever(POLL_S))
    await until_true(publisher.sending.is_set, "the batch sent")
    task.cancel()
    await asyncio.wait({task}, timeout=10)
    assert task.cancelled()
    assert publisher.bus.arrived == [written]
    assert await unpublished(relay_db) == 1


async def until_true(check: Callable[[], bool], what: str) -> None:
    async def checked() -> bool:
        return check()

    await wait_until_async(checked, deadline_s=10, what=what, poll_s=0.01)


async def test_a_failed_publish_marks_nothing_and_the_next_turn_sends_the_whole_batch(
    relay_db: RelayDb,
) -> None:
    db, tables = relay_db.db, relay_db.tables
    clock = FrozenClock(AT)
    outbox = Outbox(tables, clock)
    async with db.transaction() as session:
        written = [await outbox.add(session, registered(n)) for n in range(3)]
    bus = Bus()

    with pytest.raises(ConnectionError):
        await OutboxRelay(db, tables, RefusingPublisher(bus), clock).run_once()

    assert await unpublished(relay_db) == 3
    # The turn is free again (the lock went with the transaction, or the file's descriptor).
    assert await OutboxRelay(relay_db.database(), tables, PromptPublisher(bus), clock).run_once() == 3
    assert bus.arrived == written[:1] + written
    assert await unpublished(relay_db) == 0


async def test_relays_of_several_processes_put_each_keys_events_on_the_topic_in_commit_order_once(
    relay_db: RelayDb, broker: str, tmp_path: Path
) -> None:
    """Three relays in this process, each with its own engine, and one in another process, all
    running while four writers interleave events for the same three keys. Small batches make
    many turns, so the relays contend for nearly every one."""
    clock = FrozenClock(AT)
    publishers = [KafkaPublisher(broker, clock) for _ in range(3)]
    databases = [relay_db.database() for _ in range(3)]
    relays = [
        OutboxRelay(db, relay_db.tables, p, clock, batch=5)
        for db, p in zip(databases, publishers, strict=True)
    ]
    versions = itertools.count(1)
    try:
        with relay_process(relay_db.url, broker, tmp_path / "other", batch=5) as other:

            async def other_running() -> str | None:
                return other.reported()

            await wait_until_async(other_running, deadline_s=60, what="the other process's relay running")
            async with relaying(relays):
                # Rounds of interleaved writes, at least 120 events, and on until the other
                # process's relay has had turns of its own.
                for rounds in itertools.count(1):
                    await asyncio.gather(
                        *(
                            write(
                                db,
                                relay_db.tables,
                                [changed(KEYS[(w + i) % len(KEYS)], next(versions)) for i in range(10)],
                            )
                            for w, db in enumerate([relay_db.db, *databases])
                        )
                    )
                    if rounds >= 3 and other.sent() > 0:
                        break
                    assert rounds < 100, "the other process's relay never had a turn"

                async def drained() -> bool:
                    return await unpublished(relay_db) == 0

                await wait_until_async(drained, deadline_s=60, what="every event published")
    finally:
        for p in publishers:
            await p.stop()

    on_topic, committed = await sequences_on_the_topic(broker, relay_db)
    assert sum(map(len, committed.values())) >= 120
    # Per key, the topic holds the events in commit order, each once: no batch went twice
    # and none overtook another.
    assert on_topic == committed


async def test_a_relay_killed_while_it_holds_the_turn_holds_up_no_one_and_loses_nothing(
    relay_db: RelayDb, broker: str, tmp_path: Path
) -> None:
    """The other process's relay has sent part of its batch when its broker stops answering;
    it holds the turn until it is killed (SIGKILL: no clean-up of any kind). Then the others
    take over from the first unmarked row."""
    clock = FrozenClock(AT)
    versions = itertools.count(1)
    await write(
        relay_db.db, relay_db.tables, [changed(KEYS[i % len(KEYS)], next(versions)) for i in range(30)]
    )
    publishers = [KafkaPublisher(broker, clock) for _ in range(3)]
    databases = [relay_db.database() for _ in range(3)]
    relays = [
        OutboxRelay(db, relay_db.tables, p, clock, batch=10)
        for db, p in zip(databases, publishers, strict=True)
    ]
    try:
        with relay_process(relay_db.url, broker, tmp_path / "stuck", batch=20, stall_after=8) as stuck:

            async def stalled() -> bool:
                return stuck.reported() == "stalled"

            await wait_until_async(stalled, deadline_s=60, what="the other relay stalled mid-batch")
            # While it lives it has the turn: the others stand by, and writers go on.
            assert [await relay.run_once() for relay in relays] == [0, 0, 0]
            await write(
                relay_db.db,
                relay_db.tables,
                [changed(KEYS[i % len(KEYS)], next(versions)) for i in range(15)],
            )
            assert await unpublished(relay_db) == 45
            stuck.kill()

        async with relaying(relays):

            async def drained() -> bool:
                return await unpublished(relay_db) == 0

            await wait_until_async(drained, deadline_s=60, what="the others publishing everything")
    finally:
        for p in publishers:
            await p.stop()

    on_topic, committed = await sequences_on_the_topic(broker, relay_db)
    first_eight = sorted(itertools.chain.from_iterable(committed.values()))[:8]
    for key, seqs in on_topic.items():
        firsts = list(dict.fromkeys(seqs))
        assert firsts == committed[key], key  # nothing lost, the first arrivals in commit order
        again = sorted(seq for n, seq in enumerate(seqs) if seq in seqs[:n])
        # What the killed relay had sent comes again (the inbox drops it), and nothing else.
        assert again == [seq for seq in first_eight if seq in committed[key]], key
    assert sorted(itertools.chain.from_iterable(on_topic.values())) == sorted(
        first_eight + list(itertools.chain.from_iterable(committed.values()))
    )


@dataclass
class ExpiringBatches:
    """Wraps a started producer's `send_batch`: counts the batches handed to it per partition
    and, while `failing`, makes the `nth` batch of partition `partition` fail for good as an
    expired batch does (its future raises; the broker never gets it). The rest go to the broker."""

    producer: AIOKafkaProducer
    partition: int
    nth: int = 2
    failing: bool = True
    handed: dict[int, list[int]] = field(default_factory=dict)  # partition: record count per batch

    def __post_init__(self) -> None:
        self._send_batch = self.producer.send_batch

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future[Any]:
        counts = self.handed.setdefault(partition, [])
        counts.append(batch.record_count())
        if self.failing and partition == self.partition and len(counts) == self.nth:
            expired: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            expired.set_exception(KafkaTimeoutError("batch expired: the partition had no leader"))
            return expired
        return cast("asyncio.Future[Any]", await self._send_batch(batch, topic, partition=partition))


async def test_a_failed_batch_stops_its_partition_while_the_others_go_and_the_outbox_keeps_every_row(
    relay_db: RelayDb, broker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`KafkaPublisher.publish` sends each partition's records a batch at a time. When a batch
    fails for good, none of that partition's later records of the call is sent (a key's later
    event never reaches the bus before an earlier one), the other partitions' batches all go,
    and the call fails, so the relay marks no row: the next turn sends the whole batch again
    and the inbox drops what had arrived (docs/operations.md, "Order per key")."""
    topic = MasterDataChanged.TOPIC
    partitions = list(range(topic.partitions))
    key_of: dict[int, str] = {}
    for key in KEYS:
        key_of.setdefault(DefaultPartitioner()(key.encode(), partitions, partitions), key)
    assert len(key_of) >= 2, "the keys must lie in two partitions at least"
    stopped, going = list(key_of)[:2]
    per_key = 80  # several batches of a partition (16 KiB each, the producer's default)
    clock = FrozenClock(AT)
    outbox = Outbox(relay_db.tables, clock)
    versions = itertools.count(1)
    async with relay_db.db.transaction() as session:
        for _ in range(per_key):
            for partition in (stopped, going):
                await outbox.add(session, changed(key_of[partition], next(versions)))
    publisher = KafkaPublisher(broker, clock)
    fault = ExpiringBatches(await publisher.start(), partition=stopped)
    monkeypatch.setattr(fault.producer, "send_batch", fault.send_batch)
    relay = OutboxRelay(relay_db.db, relay_db.tables, publisher, clock)
    try:
        with pytest.raises(KafkaTimeoutError):
            await relay.run_once()
        handed = {partition: list(counts) for partition, counts in fault.handed.items()}
        on_topic, committed = await sequences_on_the_topic(broker, relay_db)
        stopped_key, going_key = key_of[stopped], key_of[going]

        first = handed[stopped][0]
        assert 0 < first < per_key  # the stopped partition had a later batch to keep back
        assert len(handed[stopped]) == 2  # its first batch, the failed one, and nothing after
        assert sum(handed[going]) == per_key and len(handed[going]) > 1
        assert on_topic[stopped_key] == committed[stopped_key][:first]
        assert on_topic[going_key] == committed[going_key]
        assert await unpublished(relay_db) == 2 * per_key

        fault.failing = False
        assert await relay.run_once() == 2 * per_key
    finally:
        await publisher.stop()

    on_topic, committed = await sequences_on_the_topic(broker, relay_db)
    assert on_topic[stopped_key] == committed[stopped_key][:first] + committed[stopped_key]
    assert on_topic[going_key] == committed[going_key] * 2
    assert await unpublished(relay_db) == 0


def test_the_relay_lock_file_sits_beside_the_sqlite_file_and_in_memory_needs_none(tmp_path: Path) -> None:
    assert (
        sqlite_file(f"sqlite+aiosqlite:///{tmp_path}/a/../identity.db") == tmp_path.resolve() / "identity.db"
    )
    assert sqlite_file("sqlite+aiosqlite:///:memory:") is None
    assert sqlite_file("sqlite+aiosqlite://") is None
    assert sqlite_file("sqlite+aiosqlite:///file:shared?mode=memory&uri=true") is None
    assert sqlite_file("postgresql+asyncpg://adgang@localhost/identity") is None
