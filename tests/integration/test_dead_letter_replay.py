"""`adgang dlq list|replay` against the embedded broker (issue 13, item 4): an event whose handler
failed is dead-lettered as `handler-failed`; after the fix a replay moves it back and it is
handled exactly once; a second replay moves nothing; a replay of something already handled is
taken for a duplicate by the inbox. The consumer is the idempotent consumer over the backend
under test, reading the topic through the broker and dead-lettering through `KafkaPublisher`,
as a worker's agent does."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.cli import main
from shared.broker import EmbeddedBroker
from shared.clock import SystemClock
from shared.db import Database
from shared.deadletters import replay
from shared.envelope import Envelope, ReasonKind, encode, new_event_id
from shared.events import BillingAuditRecorded
from shared.kafka import KafkaPublisher, ensure_topics
from shared.messaging import (
    ConsumedMessage,
    DeadLetter,
    IdempotentConsumer,
    MessagingTables,
    dead_letter_record,
    headers_list,
)
from tests.support.kafka import produce, read_all
from tests.support.ports import free_ports
from tests.support.waiting import wait_until_async
from tests.unit.test_envelope import billing_audit_recorded

TOPIC = BillingAuditRecorded.TOPIC
CONSUMER = "identity:billing.audit"


@pytest.fixture
def broker() -> Iterator[str]:
    server = EmbeddedBroker(port=free_ports(1)[0], log=None)
    server.start()
    try:
        asyncio.run(ensure_topics(server.bootstrap))
        yield server.bootstrap
    finally:
        server.stop()


@dataclass
class Worker:
    """An idempotent consumer of `billing.audit` whose handler can be broken and fixed."""

    db: Database
    tables: MessagingTables
    effects: Table
    broken: bool = True
    outcomes: list[tuple[str, str]] = field(default_factory=list)  # (ce_id or "?", outcome)

    async def handle(self, session: AsyncSession, envelope: Envelope[BillingAuditRecorded]) -> None:
        if self.broken:
            raise RuntimeError("a bug, fixed in the next release")
        await session.execute(insert(self.effects).values(event_id=envelope.id))

    async def effects_of(self, event_id: str) -> int:
        async with self.db.transaction() as session:
            count = await session.scalar(
                select(func.count()).select_from(self.effects).where(self.effects.c.event_id == event_id)
            )
        return int(count or 0)

    def outcome_of(self, event_id: str) -> list[str]:
        return [outcome for ce_id, outcome in self.outcomes if ce_id == event_id]


@pytest.fixture
async def worker(database_factory: Callable[[str], str], broker: str) -> AsyncIterator[Worker]:
    metadata = MetaData()
    tables = MessagingTables.define(metadata)
    effects = Table(
        "effects",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False),
    )
    db = Database(database_factory("replay"))
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    state = Worker(db=db, tables=tables, effects=effects)
    publisher = KafkaPublisher(broker, SystemClock())
    consumer = IdempotentConsumer(
        name=CONSUMER,
        db=db,
        tables=tables,
        handlers={BillingAuditRecorded: state.handle},
        dead_letters=publisher,
        clock=SystemClock(),
        retries=2,
        backoff=0,
    )
    reader = AIOKafkaConsumer(
        TOPIC.name,
        bootstrap_servers=broker,
        group_id=f"test-{uuid.uuid4()}",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
    )
    await reader.start()

    async def consume() -> None:
        async for m in reader:
            headers = headers_list(m.headers)
            outcome = await consumer.process(
                ConsumedMessage(
                    topic=m.topic,
                    key=m.key,
                    value=m.value,
                    headers=headers,
                    partition=m.partition,
                    offset=m.offset,
                )
            )
            ce_id = dict(headers).get("ce_id")
            state.outcomes.append((ce_id.decode() if ce_id else "?", outcome))

    task = asyncio.create_task(consume())
    try:
        yield state
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await reader.stop()
        await publisher.stop()
        await db.dispose()


async def adgang(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the `adgang` command (it runs its own event loop, so in a thread); its output."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(args))
    out = capsys.readouterr().out
    assert code == 0, out
    return out


async def dead_letters(bootstrap: str, count: int) -> list[dict[str, bytes]]:
    async def enough() -> list[dict[str, bytes]] | None:
        records = [r.headers for r in await read_all(bootstrap, [TOPIC.dlq])]
        return records if len(records) >= count else None

    return await wait_until_async(enough, deadline_s=30, what=f"{count} record(s) on {TOPIC.dlq}")


async def test_a_dead_lettered_event_is_replayed_after_the_fix_handled_once_and_not_replayed_again(
    broker: str, worker: Worker, capsys: pytest.CaptureFixture[str]
) -> None:
    event = billing_audit_recorded()
    event_id = new_event_id()
    record = encode(event, event_id=event_id, time=event.at)
    secret_detail = str(event.audit_id)  # in the value only: listing must not show it
    not_json_id = new_event_id()
    not_json = [(k, not_json_id.encode() if k == "ce_id" else v) for k, v in record.headers]

    # The handler fails on every try: dead-lettered as handler-failed. A record that is not
    # JSON is dead-lettered too, as invalid-json.
    await KafkaPublisher(broker, SystemClock()).publish([record])
    await produce(broker, TOPIC.name, key=record.key, value=b"{not json", headers=not_json)
    [failed, invalid] = await dead_letters(broker, 2)
    assert (failed["ce_id"], failed["dlq_reason_kind"]) == (event_id.encode(), b"handler-failed")
    assert (invalid["ce_id"], invalid["dlq_reason_kind"]) == (not_json_id.encode(), b"invalid-json")
    assert failed["dlq_consumer"] == CONSUMER.encode()

    listed = await adgang(capsys, "dlq", "list", TOPIC.name, "--bootstrap", broker)
    assert f"{TOPIC.dlq}: 2 dead letter(s)" in listed
    assert "0:0" in listed and "handler-failed" in listed and "invalid-json" in listed
    assert "handler failed: RuntimeError" in listed and CONSUMER in listed
    assert secret_detail not in listed and "not json" not in listed  # never the value

    worker.broken = False  # the fix is deployed

    dry = await adgang(
        capsys, "dlq", "replay", TOPIC.name, "--reason-kind", "handler-failed", "--dry-run", "--bootstrap", broker
    )
    assert f"would move {TOPIC.dlq}:0:0 -> {TOPIC.name} (handler-failed, {CONSUMER}" in dry
    assert "would move 1," in dry
    assert await worker.effects_of(event_id) == 0

    moved = await adgang(
        capsys, "dlq", "replay", TOPIC.dlq, "--reason-kind", "handler-failed", "--bootstrap", broker
    )
    assert f"moved {TOPIC.dlq}:0:0 -> {TOPIC.name}" in moved and "moved 1," in moved
    await wait_until_async(
        lambda: worker.effects_of(event_id), deadline_s=30, what="the replayed event handled"
    )
    assert worker.outcome_of(event_id) == ["dead-lettered", "handled"]

    again = await adgang(
        capsys, "dlq", "replay", TOPIC.name, "--reason-kind", "handler-failed", "--bootstrap", broker
    )
    assert "moved 0," in again

    # A replay of everything (its own progress) moves both: the handled event is a duplicate
    # for the inbox, and the record that is still not JSON is dead-lettered again, saying
    # where it was replayed from.
    everything = await adgang(capsys, "dlq", "replay", TOPIC.name, "--bootstrap", broker)
    assert "moved 2," in everything
    [*_, bounced] = await dead_letters(broker, 3)
    assert bounced["ce_id"] == not_json_id.encode() and bounced["dlq_reason_kind"] == b"invalid-json"
    assert bounced["dlq_replayed_from"] == f"{TOPIC.dlq}:0:1".encode()

    async def duplicate() -> bool:
        return worker.outcome_of(event_id) == ["dead-lettered", "handled", "duplicate"]

    await wait_until_async(duplicate, deadline_s=30, what="the second replay of the event taken for a duplicate")
    assert await worker.effects_of(event_id) == 1

    replayed = [r for r in await read_all(broker, [TOPIC.name]) if r.headers.get("ce_id") == event_id.encode()]
    assert len(replayed) == 3  # published once, replayed twice
    assert {name for r in replayed for name in r.headers if name.startswith("dlq_")} == {"dlq_replayed_from"}
    whence = f"{TOPIC.dlq}:0:0".encode()
    assert [r.headers.get("dlq_replayed_from") for r in replayed] == [None, whence, whence]


async def test_the_dlq_commands_refuse_an_unknown_topic_or_reason_kind_saying_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["dlq", "list", "no.such.topic", "--bootstrap", "127.0.0.1:1"]) == 2
    assert "unknown topic 'no.such.topic'; one of billing.customers" in capsys.readouterr().err
    code = main(["dlq", "replay", "billing.audit", "--reason-kind", "mystery", "--bootstrap", "127.0.0.1:1"])
    assert code == 2
    assert "unknown reason kind 'mystery'; one of oversized, missing-header" in capsys.readouterr().err


async def test_a_replay_leaves_dead_letters_that_lost_their_key_value_or_headers_where_they_are(
    broker: str,
) -> None:
    """A dead letter that had to drop its key, its value or its headers to fit is not the record
    it was: a replay passes over it, saying why, and puts nothing on the live topic."""
    event = billing_audit_recorded()
    record = encode(event, event_id=new_event_id(), time=event.at)
    big = 1024 * 1024
    shapes = {
        "its key was too large to keep": replace(record, key=b"k" * big),
        "its value was too large to keep": replace(record, value=b"{" * big),
        "its headers were too large to keep": replace(
            record, headers=[*record.headers, *((f"x{n}", b"x" * 50 * 1024) for n in range(22))]
        ),
    }
    clock = SystemClock()
    publisher = KafkaPublisher(broker, clock)
    try:
        for shape in shapes.values():
            letter = DeadLetter(shape, "handler failed: ValueError", ReasonKind.HANDLER_FAILED, CONSUMER, 0, 0)
            await publisher.publish([dead_letter_record(letter, at=clock.now())])
    finally:
        await publisher.stop()
    await dead_letters(broker, len(shapes))

    result = await replay(broker, TOPIC, clock)

    assert result.moved == []
    assert sorted(why for _, why in result.skipped) == sorted(shapes)
    assert await read_all(broker, [TOPIC.name]) == []
