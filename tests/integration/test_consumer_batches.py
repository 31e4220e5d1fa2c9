"""A worker's consumer handles the messages of a partition fetched together in one transaction
(`IdempotentConsumer.process_batch`), on the backend under test (ADGANG_TEST_DATABASE): each
event's effects exactly once, in the partition's order, a poison message costing only itself,
and the database's outages waited for. `shared.worker` acks a batch's events only after it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, event, func, insert, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.clock import FrozenClock
from shared.db import Database
from shared.envelope import Envelope, ReasonKind, encode, new_event_id
from shared.events import AccountRef, CustomerRegistered
from shared.messaging import OUTBOX, ConsumedMessage, IdempotentConsumer, MessagingTables, Outbox
from shared.worker import _handle_events
from tests.support.dead_letters import KeptDeadLetters
from tests.support.waiting import wait_until_async

AT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
CONSUMER = "test-batches"
POISON = "Giftig ApS"  # a name its handler always fails on
_offsets = itertools.count(100)


def message(name: str, *, cvr: str = "35657193", event_id: str | None = None, partition: int = 0) -> ConsumedMessage:
    event = CustomerRegistered(
        cvr=cvr, name=name, accounts=[AccountRef(account_number="12345678", name="Hoved")], registered_at=AT
    )
    record = encode(event, event_id=event_id or new_event_id(), time=AT)
    return ConsumedMessage(
        topic=record.topic,
        key=record.key,
        value=record.value,
        headers=record.headers,
        partition=partition,
        offset=next(_offsets),
    )


@dataclass
class Bed:
    db: Database
    tables: MessagingTables
    effects: Table
    dead_letters: KeptDeadLetters = field(default_factory=KeptDeadLetters)
    # What each commit that handled something wrote (`shared.messaging.wrote`), in order.
    commits: list[set[str]] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def consumer(self, handler: Callable[..., Any] | None = None, *, retries: int = 2) -> IdempotentConsumer:
        return IdempotentConsumer(
            name=CONSUMER,
            db=self.db,
            tables=self.tables,
            handlers={CustomerRegistered: handler or self.record},
            dead_letters=self.dead_letters,
            clock=FrozenClock(AT),
            retries=retries,
            backoff=0,
            after_commit=lambda written: self.commits.append(set(written)),
        )

    async def record(self, session: AsyncSession, envelope: Envelope[CustomerRegistered]) -> None:
        """The handler: records the event's name as its effect, and fails on the poison one."""
        self.calls.append(envelope.event.name)
        await session.execute(insert(self.effects).values(name=envelope.event.name))
        if envelope.event.name == POISON:
            raise LookupError("cannot handle this one")

    async def applied(self) -> list[str]:
        """The effects committed, in the order they were made."""
        async with self.db.transaction() as session:
            return list((await session.scalars(select(self.effects.c.name).order_by(self.effects.c.id))).all())

    async def inbox_rows(self) -> int:
        async with self.db.transaction() as session:
            return int(await session.scalar(select(func.count()).select_from(self.tables.inbox)) or 0)

    def inbox_statements(self, verb: str) -> int:
        return sum(1 for sql in self.statements if sql.lstrip().upper().startswith(verb) and "inbox" in sql)


@pytest.fixture
async def bed(database_factory: Callable[[str], str]) -> AsyncIterator[Bed]:
    metadata = MetaData()
    tables = MessagingTables.define(metadata)
    effects = Table(
        "effects",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("name", String(100), nullable=False),
    )
    db = Database(database_factory("batches"))
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    test_bed = Bed(db=db, tables=tables, effects=effects)

    @event.listens_for(db.engine.sync_engine, "before_cursor_execute")
    def _seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        test_bed.statements.append(statement)

    try:
        yield test_bed
    finally:
        await db.dispose()


async def test_a_batch_is_one_inbox_statement_and_one_commit_and_skips_what_it_has_seen(bed: Bed) -> None:
    """The inbox rows of the batch's new messages are inserted by the statement that finds
    which were seen before (`ON CONFLICT DO NOTHING ... RETURNING`): no lookup of its own."""
    consumer = bed.consumer()
    seen_before = message("Set før ApS")
    bed.statements.clear()
    assert await consumer.process(seen_before) == "handled"
    assert (bed.inbox_statements("SELECT"), bed.inbox_statements("INSERT")) == (0, 1)
    first = message("Første ApS")
    batch = [first, message("Anden ApS"), message("Første ApS", event_id=_id(first)), seen_before]
    bed.statements.clear()
    bed.commits.clear()

    outcomes = await consumer.process_batch(batch)

    assert outcomes == ["handled", "handled", "duplicate", "duplicate"]
    assert (bed.inbox_statements("SELECT"), bed.inbox_statements("INSERT")) == (0, 1)
    assert await bed.applied() == ["Set før ApS", "Første ApS", "Anden ApS"]
    assert await bed.inbox_rows() == 3
    assert len(bed.commits) == 1  # the relay and the dispatchers are woken once


async def test_a_commit_names_the_outbox_to_wake_the_relay_only_when_a_handler_added_an_event(bed: Bed) -> None:
    """The worker wakes its relay after a consumer's commit only if the outbox has something
    new (`shared.worker`): a wake after every message cost a read of the outbox each."""
    outbox = Outbox(bed.tables, FrozenClock(AT))

    async def announcing(session: AsyncSession, envelope: Envelope[CustomerRegistered]) -> None:
        await bed.record(session, envelope)
        if envelope.event.name.startswith("Ny"):
            await outbox.add(session, envelope.event)

    consumer = bed.consumer(announcing, retries=2)
    assert await consumer.process(message("Stille ApS")) == "handled"
    assert await consumer.process(message("Ny ApS")) == "handled"
    assert await consumer.process_batch([message("Stille 2 ApS"), message("Stille 3 ApS")]) == ["handled"] * 2
    assert await consumer.process_batch([message("Stille 4 ApS"), message("Ny 2 ApS")]) == ["handled"] * 2
    # A batch that failed is handled one by one: what each committed, the poison's nothing.
    outcomes = await consumer.process_batch([message("Ny 3 ApS"), message(POISON), message("Stille 5 ApS")])
    assert outcomes == ["handled", "dead-lettered", "handled"]

    assert bed.commits == [set(), {OUTBOX}, set(), {OUTBOX}, {OUTBOX}, set()]


async def test_a_poison_message_in_the_middle_of_a_batch_is_dead_lettered_and_the_others_applied_once_in_order(
    bed: Bed,
) -> None:
    consumer = bed.consumer(retries=2)
    batch = [message("A ApS"), message("B ApS"), message(POISON), message("C ApS")]

    outcomes = await consumer.process_batch(batch)

    assert outcomes == ["handled", "handled", "dead-lettered", "handled"]
    assert await bed.applied() == ["A ApS", "B ApS", "C ApS"]
    assert await bed.inbox_rows() == 3
    [letter] = bed.dead_letters.sent
    assert letter.kind == ReasonKind.HANDLER_FAILED
    assert (letter.record.value, letter.offset) == (batch[2].value, batch[2].offset)
    # Once in the batch, then its own budget of retries alone; the others once more each.
    assert bed.calls == ["A ApS", "B ApS", POISON, "A ApS", "B ApS", POISON, POISON, "C ApS"]


async def test_a_batch_that_fails_once_is_rolled_back_and_handled_one_by_one_without_double_effects(
    bed: Bed,
) -> None:
    failed: list[str] = []

    async def fails_once(session: AsyncSession, envelope: Envelope[CustomerRegistered]) -> None:
        await bed.record(session, envelope)
        if envelope.event.name == "B ApS" and not failed:
            failed.append(envelope.id)
            raise LookupError("transient")

    consumer = bed.consumer(fails_once)

    outcomes = await consumer.process_batch([message("A ApS"), message("B ApS"), message("C ApS")])

    assert outcomes == ["handled", "handled", "handled"]
    assert await bed.applied() == ["A ApS", "B ApS", "C ApS"]
    assert await bed.inbox_rows() == 3
    assert bed.dead_letters.sent == []


async def test_a_whole_batch_delivered_again_after_its_commit_does_nothing(bed: Bed) -> None:
    consumer = bed.consumer()
    batch = [message("A ApS"), message("B ApS"), message("C ApS")]
    assert await consumer.process_batch(batch) == ["handled"] * 3
    bed.commits.clear()
    bed.calls.clear()

    assert await consumer.process_batch(batch) == ["duplicate"] * 3

    assert bed.calls == []
    assert bed.commits == []
    assert await bed.applied() == ["A ApS", "B ApS", "C ApS"]
    assert await bed.inbox_rows() == 3


async def test_a_keys_events_are_applied_in_order_across_batches_a_failed_batch_and_redeliveries(bed: Bed) -> None:
    consumer = bed.consumer(retries=1)
    events = [message(f"Trin {n}") for n in range(9)]
    poison = message(POISON)

    await consumer.process_batch(events[0:3])
    await consumer.process_batch([events[3], poison, events[4]])  # falls back to one at a time
    await consumer.process_batch(events[2:7])  # the broker sends some again from an older offset
    await consumer.process_batch(events[7:9])

    assert await bed.applied() == [f"Trin {n}" for n in range(9)]
    assert [letter.record.value for letter in bed.dead_letters.sent] == [poison.value]


async def test_a_database_outage_during_a_batch_is_waited_for_and_nothing_is_dead_lettered(bed: Bed) -> None:
    outage = {"left": 4}  # more than the retries: an outage must not spend them

    async def database_away(session: AsyncSession, envelope: Envelope[CustomerRegistered]) -> None:
        if outage["left"]:
            outage["left"] -= 1
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError(111, "Connect call failed"))
        await bed.record(session, envelope)

    consumer = bed.consumer(database_away, retries=2)

    outcomes = await consumer.process_batch([message("A ApS"), message("B ApS")])

    assert outcomes == ["handled", "handled"]
    assert await bed.applied() == ["A ApS", "B ApS"]
    assert bed.dead_letters.sent == []


async def test_an_undecodable_message_in_a_batch_is_dead_lettered_and_the_others_handled_together(bed: Bed) -> None:
    consumer = bed.consumer()
    good = message("A ApS")
    broken = ConsumedMessage(
        topic=good.topic, key=good.key, value=b"{not json", headers=good.headers, partition=0, offset=next(_offsets)
    )
    bed.statements.clear()

    outcomes = await consumer.process_batch([good, broken, message("B ApS")])

    assert outcomes == ["handled", "dead-lettered", "handled"]
    assert await bed.applied() == ["A ApS", "B ApS"]
    assert [letter.kind for letter in bed.dead_letters.sent] == [ReasonKind.INVALID_JSON]
    assert bed.inbox_statements("INSERT") == 1


# --- the worker's side: a batch per partition, acked only after it --------------------------


@dataclass
class FakeMessage:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int
    offset: int


@dataclass
class FakeEvent:
    message: FakeMessage


@dataclass
class AckingStream:
    acked: list[int] = field(default_factory=list)

    async def ack(self, event: FakeEvent) -> bool:
        self.acked.append(event.message.offset)
        return True


def fake_event(consumed: ConsumedMessage) -> FakeEvent:
    return FakeEvent(FakeMessage(**{name: getattr(consumed, name) for name in FakeMessage.__dataclass_fields__}))


async def test_the_worker_hands_each_partition_its_own_batch_in_order_and_acks_after_it(bed: Bed) -> None:
    batches: list[list[int]] = []
    consumer = bed.consumer()
    process_batch = consumer.process_batch

    async def recording(messages: list[ConsumedMessage]) -> list[str]:
        batches.append([m.offset for m in messages])
        return await process_batch(messages)

    consumer.process_batch = recording  # type: ignore[method-assign]
    stream = AckingStream()
    read = [message(f"P{p} {n}", partition=p) for n in range(3) for p in (0, 1)]  # interleaved

    await _handle_events(consumer, stream, [fake_event(m) for m in read])  # type: ignore[arg-type]

    by_partition = {p: [m.offset for m in read if m.partition == p] for p in (0, 1)}
    assert batches == [by_partition[0], by_partition[1]]
    assert stream.acked == by_partition[0] + by_partition[1]
    assert sorted(await bed.applied()) == sorted(f"P{p} {n}" for n in range(3) for p in (0, 1))


async def test_the_worker_acks_nothing_of_a_batch_that_did_not_finish(bed: Bed) -> None:
    """A batch that raises (its dead letter could not be sent, say) leaves its offsets
    uncommitted: the messages come again, and the inbox drops what had been applied."""

    class Unsendable(KeptDeadLetters):
        async def send(self, letter: Any) -> None:
            raise ConnectionError("the broker is away")

    bed.dead_letters = Unsendable()
    consumer = bed.consumer(retries=1)
    stream = AckingStream()
    done = message("A ApS", partition=0)
    failing = [message("B ApS", partition=1), message(POISON, partition=1)]

    with pytest.raises(ConnectionError):
        await _handle_events(consumer, stream, [fake_event(m) for m in [done, *failing]])  # type: ignore[arg-type]

    assert stream.acked == [done.offset]


def _id(consumed: ConsumedMessage) -> str:
    return dict(consumed.headers)["ce_id"].decode()


# --- the fetch wait -------------------------------------------------------------------------


async def test_a_workers_consumer_fetches_with_the_configured_wait_not_faust_s_fixed_one(tmp_path: Any) -> None:
    """faust would give aiokafka 1500 ms; the worker's consumer gets `kafka_fetch_max_wait_ms`
    before it starts, which is when aiokafka hands it to its fetcher."""
    from services.identity.config import IdentitySettings
    from shared.worker import WorkerSpec, build_faust_app

    settings = IdentitySettings(var_dir=tmp_path, kafka_fetch_max_wait_ms=77)
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'worker.db'}")
    try:
        app = build_faust_app(
            WorkerSpec(settings=settings, db=db, tables=MessagingTables.define(MetaData()), handlers={})
        )
        kafka_consumer = app.consumer._thread._create_worker_consumer(app.transport)  # type: ignore[attr-defined]
        try:
            assert kafka_consumer._fetch_max_wait_ms == 77
        finally:
            await kafka_consumer.stop()
    finally:
        await db.dispose()


def test_the_fetch_wait_and_the_batch_size_refuse_values_out_of_range() -> None:
    from pydantic import ValidationError

    from services.identity.config import IdentitySettings

    for wrong in ({"kafka_fetch_max_wait_ms": 0}, {"consumer_batch_max": 0}, {"outbox_poll_interval_s": 0}):
        with pytest.raises(ValidationError):
            IdentitySettings(**wrong)  # type: ignore[arg-type]


def second_instance(bed: Bed, db: Database) -> IdempotentConsumer:
    """Another worker of the same service: the bed's consumer and handler, its own connections."""
    return IdempotentConsumer(
        name=CONSUMER,
        db=db,
        tables=bed.tables,
        handlers={CustomerRegistered: bed.record},
        dead_letters=bed.dead_letters,
        clock=FrozenClock(AT),
        retries=2,
        backoff=0,
    )


async def test_two_instances_handling_the_same_messages_at_once_apply_each_exactly_once(bed: Bed) -> None:
    """Two workers of one service (a rebalance hands a partition over while the old owner is
    still at it): each with its own connections, both take overlapping batches at the same
    moment. The inbox's unique key decides; the loser's batch falls back one message at a time
    and finds them done."""
    other_db = Database(bed.db.url)
    try:
        other = second_instance(bed, other_db)
        events = [message(f"Samtidig {n} ApS") for n in range(12)]
        rounds = await asyncio.gather(
            *(
                consumer.process_batch(part)
                for consumer, part in (
                    (bed.consumer(), events[0:8]),
                    (other, events[4:12]),
                    (bed.consumer(), events[2:10]),
                    (other, events[0:12]),
                )
            )
        )
    finally:
        await other_db.dispose()

    assert sorted(await bed.applied()) == sorted(f"Samtidig {n} ApS" for n in range(12))
    assert await bed.inbox_rows() == 12
    assert bed.dead_letters.sent == []
    handled = [outcome for outcomes in rounds for outcome in outcomes if outcome == "handled"]
    assert len(handled) == 12  # every other copy was a duplicate


async def test_a_batch_that_fails_while_another_instance_waits_on_its_inbox_rows_leaves_them_to_it(bed: Bed) -> None:
    """One instance has written the inbox rows of a batch and its handler then fails; another
    instance takes the same messages meanwhile and waits on those rows. The failed batch's rows
    roll back with it, so the other instance handles the messages, and the failed one finds
    them done when it handles them one by one: each effect once."""
    events = [message("Først ApS"), message("Bagefter ApS")]
    gate = asyncio.Event()
    failed = False

    async def failing_once(session: AsyncSession, envelope: Envelope[CustomerRegistered]) -> None:
        nonlocal failed
        await bed.record(session, envelope)
        if not failed:
            failed = True
            await gate.wait()
            raise LookupError("the first try fails after the other instance started")

    other_db = Database(bed.db.url)
    other_statements: list[str] = []

    @event.listens_for(other_db.engine.sync_engine, "before_cursor_execute")
    def _seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        other_statements.append(statement)

    try:
        other = second_instance(bed, other_db)
        first = asyncio.create_task(bed.consumer(failing_once).process_batch(events))
        await wait_for(lambda: failed, "the first instance inside its handler")
        second = asyncio.create_task(other.process_batch(events))
        await wait_for(
            lambda: any("inbox" in sql and sql.lstrip().upper().startswith("INSERT") for sql in other_statements),
            "the second instance writing the inbox rows",
        )
        gate.set()
        outcomes = await asyncio.gather(first, second)
    finally:
        await other_db.dispose()

    assert sorted(await bed.applied()) == ["Bagefter ApS", "Først ApS"]
    assert await bed.inbox_rows() == 2
    assert bed.dead_letters.sent == []
    assert sorted(o for outcome in outcomes for o in outcome) == ["duplicate", "duplicate", "handled", "handled"]


async def wait_for(check: Callable[[], bool], what: str) -> None:
    async def checked() -> bool:
        return check()

    await wait_until_async(checked, deadline_s=10, what=what, poll_s=0.005)
