"""At-least-once messaging: the outbox relay and the idempotent consumer, on a real SQLite file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.clock import FrozenClock
from shared.db import Database
from shared.envelope import Envelope, KafkaRecord, ReasonKind, encode, new_event_id
from shared.events import AccountRef, CustomerRegistered
from shared.messaging import (
    ConsumedMessage,
    DeadLetter,
    Handler,
    IdempotentConsumer,
    MessagingTables,
    Outbox,
    OutboxRelay,
    dead_letter_record,
)
from shared.problems import Unauthenticated
from tests.support.dead_letters import KeptDeadLetters
from tests.support.ports import free_ports

AT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
CONSUMER = "test-consumer"


def customer(cvr: str = "35657193", name: str = "Eksempel ApS") -> CustomerRegistered:
    return CustomerRegistered(
        cvr=cvr,
        name=name,
        accounts=[AccountRef(account_number="12345678", name="Hovedkonto")],
        registered_at=AT,
    )


def consumed(event: CustomerRegistered, event_id: str | None = None) -> ConsumedMessage:
    record = encode(event, event_id=event_id or new_event_id(), time=AT)
    return ConsumedMessage(
        topic=record.topic, key=record.key, value=record.value, headers=record.headers, partition=0, offset=7
    )


@dataclass
class FakePublisher:
    published: list[KafkaRecord] = field(default_factory=list)
    fail_with: Exception | None = None

    async def publish(self, records: list[KafkaRecord]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.published.extend(records)


@dataclass
class Harness:
    db: Database
    tables: MessagingTables
    effects: Table
    clock: FrozenClock

    async def count(self, table: Table) -> int:
        async with self.db.transaction() as session:
            return int(await session.scalar(select(func.count()).select_from(table)) or 0)

    def consumer(self, handler: Handler, dead_letters: KeptDeadLetters, **kwargs: Any) -> IdempotentConsumer:
        return IdempotentConsumer(
            name=CONSUMER,
            db=self.db,
            tables=self.tables,
            handlers={CustomerRegistered: handler},
            dead_letters=dead_letters,
            clock=self.clock,
            retries=kwargs.pop("retries", 2),
            backoff=kwargs.pop("backoff", 0),
            **kwargs,
        )


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    metadata = MetaData()
    tables = MessagingTables.define(metadata)
    effects = Table(
        "effects",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("cvr", String(8), nullable=False),
    )
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield Harness(db=db, tables=tables, effects=effects, clock=FrozenClock(AT))
    finally:
        await db.dispose()


async def record_effect(session: AsyncSession, envelope: Envelope[CustomerRegistered], effects: Table) -> None:
    await session.execute(insert(effects).values(cvr=envelope.event.cvr))


# --- a refusal that keeps what it recorded ----------------------------------------------------


async def test_a_refusal_raised_committing_keeps_what_its_transaction_recorded(harness: Harness) -> None:
    """A failed try is counted, then refused: the count must survive the refusal."""
    with pytest.raises(Unauthenticated, match="wrong password") as refused:
        async with harness.db.transaction() as session:
            await session.execute(insert(harness.effects).values(cvr="10000000"))
            raise Unauthenticated("wrong password").committing()

    assert refused.value.status == 401
    assert await harness.count(harness.effects) == 1


async def test_a_plain_refusal_rolls_back_what_its_transaction_recorded(harness: Harness) -> None:
    with pytest.raises(Unauthenticated):
        async with harness.db.transaction() as session:
            await session.execute(insert(harness.effects).values(cvr="10000000"))
            raise Unauthenticated("wrong password")

    assert await harness.count(harness.effects) == 0


async def test_refusals_committing_in_parallel_each_keep_their_own_record(harness: Harness) -> None:
    async def refuse(n: int) -> None:
        async with harness.db.transaction() as session:
            await session.execute(insert(harness.effects).values(cvr=f"{n:08d}"))
            raise Unauthenticated(f"try {n}").committing()

    outcomes = await asyncio.gather(*(refuse(n) for n in range(20)), return_exceptions=True)

    assert all(isinstance(outcome, Unauthenticated) for outcome in outcomes)
    assert await harness.count(harness.effects) == 20


# --- the outbox -------------------------------------------------------------------------------


async def test_an_event_added_in_a_transaction_that_rolls_back_is_never_queued(harness: Harness) -> None:
    outbox = Outbox(harness.tables, harness.clock)

    with pytest.raises(RuntimeError, match="state change failed"):
        async with harness.db.transaction() as session:
            await outbox.add(session, customer())
            raise RuntimeError("state change failed")

    assert await harness.count(harness.tables.outbox) == 0


async def test_an_event_added_in_a_committed_transaction_is_queued_encoded_and_unpublished(
    harness: Harness,
) -> None:
    outbox = Outbox(harness.tables, harness.clock)
    async with harness.db.transaction() as session:
        event_id = await outbox.add(session, customer())

    async with harness.db.transaction() as session:
        row = (await session.execute(select(harness.tables.outbox))).mappings().one()
    assert row["event_id"] == event_id
    assert row["topic"] == "billing.customers"
    assert row["key"] == "35657193"
    assert row["published_at"] is None
    assert dict(json.loads(row["headers"]))["ce_id"] == event_id


async def test_the_relay_publishes_queued_events_in_order_and_only_once(harness: Harness) -> None:
    outbox = Outbox(harness.tables, harness.clock)
    publisher = FakePublisher()
    relay = OutboxRelay(harness.db, harness.tables, publisher, harness.clock)
    names = [f"Firma {i}" for i in range(5)]
    async with harness.db.transaction() as session:
        ids = [await outbox.add(session, customer(name=name)) for name in names[:3]]
    async with harness.db.transaction() as session:
        ids += [await outbox.add(session, customer(name=name)) for name in names[3:]]

    first = await relay.run_once()
    second = await relay.run_once()

    assert (first, second) == (5, 0)
    assert [dict(r.headers)["ce_id"].decode() for r in publisher.published] == ids
    assert [json.loads(r.value)["name"] for r in publisher.published] == names
    assert {(r.topic, r.key) for r in publisher.published} == {("billing.customers", b"35657193")}
    async with harness.db.transaction() as session:
        unpublished = await session.scalar(
            select(func.count()).where(harness.tables.outbox.c.published_at.is_(None))
        )
    assert unpublished == 0


async def test_the_relay_publishes_at_most_one_batch_per_run(harness: Harness) -> None:
    outbox = Outbox(harness.tables, harness.clock)
    publisher = FakePublisher()
    relay = OutboxRelay(harness.db, harness.tables, publisher, harness.clock, batch=2)
    async with harness.db.transaction() as session:
        for i in range(3):
            await outbox.add(session, customer(name=f"Firma {i}"))

    assert [await relay.run_once() for _ in range(3)] == [2, 1, 0]
    assert [json.loads(r.value)["name"] for r in publisher.published] == ["Firma 0", "Firma 1", "Firma 2"]


async def test_when_publishing_fails_nothing_is_marked_published_and_the_next_run_sends_it(
    harness: Harness,
) -> None:
    """At least once: a failed publish leaves the rows for the next run."""
    outbox = Outbox(harness.tables, harness.clock)
    publisher = FakePublisher(fail_with=ConnectionError("broker unavailable"))
    relay = OutboxRelay(harness.db, harness.tables, publisher, harness.clock)
    async with harness.db.transaction() as session:
        event_id = await outbox.add(session, customer())

    with pytest.raises(ConnectionError):
        await relay.run_once()

    async with harness.db.transaction() as session:
        published_at = await session.scalar(select(harness.tables.outbox.c.published_at))
    assert published_at is None
    publisher.fail_with = None
    assert await relay.run_once() == 1
    assert [dict(r.headers)["ce_id"].decode() for r in publisher.published] == [event_id]


async def test_the_relay_with_nothing_queued_publishes_nothing(harness: Harness) -> None:
    publisher = FakePublisher()

    assert await OutboxRelay(harness.db, harness.tables, publisher, harness.clock).run_once() == 0
    assert publisher.published == []


# --- the idempotent consumer ------------------------------------------------------------------


async def test_the_same_message_delivered_twice_is_handled_once(harness: Harness) -> None:
    calls: list[str] = []

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        calls.append(envelope.id)
        await record_effect(session, envelope, harness.effects)

    consumer = harness.consumer(handler, KeptDeadLetters())
    message = consumed(customer())

    outcomes = [await consumer.process(message), await consumer.process(message)]

    assert outcomes == ["handled", "duplicate"]
    assert len(calls) == 1
    assert await harness.count(harness.effects) == 1
    assert await harness.count(harness.tables.inbox) == 1


async def test_two_messages_with_different_ids_are_both_handled(harness: Harness) -> None:
    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        await record_effect(session, envelope, harness.effects)

    consumer = harness.consumer(handler, KeptDeadLetters())

    assert await consumer.process(consumed(customer())) == "handled"
    assert await consumer.process(consumed(customer())) == "handled"
    assert await harness.count(harness.effects) == 2


async def test_a_message_of_a_type_without_a_handler_is_ignored(harness: Harness) -> None:
    dead_letters = KeptDeadLetters()
    consumer = IdempotentConsumer(
        name=CONSUMER,
        db=harness.db,
        tables=harness.tables,
        handlers={},
        dead_letters=dead_letters,
        clock=harness.clock,
    )

    assert await consumer.process(consumed(customer())) == "ignored"
    assert dead_letters.sent == []
    assert await harness.count(harness.tables.inbox) == 0


async def test_a_message_that_is_not_json_is_dead_lettered_with_the_reason_and_not_handled(
    harness: Harness,
) -> None:
    calls: list[str] = []

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        calls.append(envelope.id)

    dead_letters = KeptDeadLetters()
    consumer = harness.consumer(handler, dead_letters)
    good = consumed(customer())
    broken = ConsumedMessage(
        topic=good.topic, key=good.key, value=b"{not json", headers=good.headers, partition=0, offset=7
    )

    assert await consumer.process(broken) == "dead-lettered"

    assert calls == []
    [letter] = dead_letters.sent
    assert letter.reason.startswith("not valid JSON")
    assert letter.kind == ReasonKind.INVALID_JSON
    assert (letter.partition, letter.offset) == (0, 7)
    assert letter.consumer == CONSUMER
    assert letter.record == KafkaRecord(
        topic=good.topic, key=good.key or b"", value=b"{not json", headers=good.headers
    )
    assert await harness.count(harness.tables.inbox) == 0


async def test_a_handler_that_keeps_failing_is_retried_then_dead_lettered(harness: Harness) -> None:
    attempts: list[str] = []

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        attempts.append(envelope.id)
        raise LookupError("customer table unavailable")

    dead_letters = KeptDeadLetters()
    consumer = harness.consumer(handler, dead_letters, retries=2, backoff=0)
    message = consumed(customer())

    assert await consumer.process(message) == "dead-lettered"

    assert len(attempts) == 2
    [letter] = dead_letters.sent
    assert letter.reason == "handler failed: LookupError"  # the type only: messages may carry personal data
    assert letter.kind == ReasonKind.HANDLER_FAILED
    assert letter.record.value == message.value


async def test_a_failing_handlers_writes_and_its_inbox_row_are_rolled_back(harness: Harness) -> None:
    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        await record_effect(session, envelope, harness.effects)
        raise LookupError("fails after writing")

    consumer = harness.consumer(handler, KeptDeadLetters(), retries=1)

    assert await consumer.process(consumed(customer())) == "dead-lettered"

    assert await harness.count(harness.effects) == 0
    assert await harness.count(harness.tables.inbox) == 0


async def test_a_handlers_refusal_raised_committing_keeps_nothing_and_is_not_taken_for_a_duplicate(
    harness: Harness,
) -> None:
    """`.committing()` is for an API's refusal that keeps a failed try; in a consumer's
    transaction it would commit the inbox row with half the handler's work, and the retry would
    then skip the event as a duplicate: it is rolled back like any other failure."""
    attempts: list[str] = []

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        attempts.append(envelope.id)
        await record_effect(session, envelope, harness.effects)
        raise Unauthenticated("a use case's refusal, raised committing").committing()

    dead_letters = KeptDeadLetters()
    consumer = harness.consumer(handler, dead_letters, retries=2)

    assert await consumer.process(consumed(customer())) == "dead-lettered"

    assert len(attempts) == 2
    assert await harness.count(harness.effects) == 0
    assert await harness.count(harness.tables.inbox) == 0


async def test_a_retry_after_a_failure_is_handled_not_taken_for_a_duplicate(harness: Harness) -> None:
    attempts: list[str] = []

    async def flaky_handler(session: AsyncSession, envelope: Envelope) -> None:
        attempts.append(envelope.id)
        await record_effect(session, envelope, harness.effects)
        if len(attempts) == 1:
            raise LookupError("transient")

    after_commit_calls: list[None] = []
    dead_letters = KeptDeadLetters()
    consumer = harness.consumer(
        flaky_handler, dead_letters, retries=2, after_commit=lambda written: after_commit_calls.append(None)
    )

    assert await consumer.process(consumed(customer())) == "handled"

    assert len(attempts) == 2
    assert dead_letters.sent == []
    assert await harness.count(harness.effects) == 1
    assert await harness.count(harness.tables.inbox) == 1
    assert len(after_commit_calls) == 1


async def test_a_message_redelivered_after_being_dead_lettered_by_its_handler_is_tried_again(
    harness: Harness,
) -> None:
    fail = True

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        if fail:
            raise LookupError("down")
        await record_effect(session, envelope, harness.effects)

    consumer = harness.consumer(handler, KeptDeadLetters(), retries=1)
    message = consumed(customer())
    assert await consumer.process(message) == "dead-lettered"

    fail = False

    assert await consumer.process(message) == "handled"
    assert await harness.count(harness.effects) == 1


def test_a_dead_letter_record_goes_to_the_dlq_topic_with_the_reason_in_its_headers() -> None:
    record = encode(customer(), event_id="e-1", time=AT)

    letter = DeadLetter(
        record, reason="not valid JSON: x", kind=ReasonKind.INVALID_JSON, consumer=CONSUMER, partition=2, offset=41
    )

    dead = dead_letter_record(letter, at=AT)

    assert dead.topic == "billing.customers.dlq"
    assert (dead.key, dead.value) == (record.key, record.value)
    headers = dict(dead.headers)
    assert headers["ce_id"] == b"e-1"
    assert headers["dlq_reason"] == b"not valid JSON: x"
    assert headers["dlq_reason_kind"] == b"invalid-json"
    assert headers["dlq_consumer"] == CONSUMER.encode()
    assert headers["dlq_original_topic"] == b"billing.customers"
    assert (headers["dlq_original_partition"], headers["dlq_original_offset"]) == (b"2", b"41")
    assert headers["dlq_at"] == AT.isoformat().encode()


def test_a_dead_letter_of_a_dead_letter_carries_one_set_of_dlq_headers_and_keeps_where_it_was_replayed_from() -> None:
    record = encode(customer(), event_id="e-1", time=AT)
    first = dead_letter_record(DeadLetter(record, "r1", ReasonKind.HANDLER_FAILED, CONSUMER), at=AT)
    replayed = KafkaRecord(
        topic=record.topic,
        key=record.key,
        value=record.value,
        headers=[*first.headers, ("dlq_replayed_from", b"billing.customers.dlq:0:3")],
    )

    again = dead_letter_record(DeadLetter(replayed, "r2", ReasonKind.INVALID_PAYLOAD, CONSUMER), at=AT)

    names = [name for name, _ in again.headers]
    assert names.count("dlq_reason") == names.count("dlq_reason_kind") == names.count("dlq_at") == 1
    headers = dict(again.headers)
    assert (headers["dlq_reason"], headers["dlq_reason_kind"]) == (b"r2", b"invalid-payload")
    assert headers["dlq_replayed_from"] == b"billing.customers.dlq:0:3"


def test_a_dead_letter_sends_any_header_the_broker_delivered_and_drops_a_value_too_large_to_send() -> None:
    """Header names as text and values as bytes or null, so the producer can send them; a value
    the producer could not send is dropped with its size noted, rather than failing the send."""
    from shared.messaging import MAX_DEAD_LETTER_VALUE_BYTES

    record = KafkaRecord(
        topic="billing.customers",
        key=b"\xff\xfe",
        value=b" " * (MAX_DEAD_LETTER_VALUE_BYTES + 1),
        headers=[(b"raw-name", b"v"), ("null", None), ("text", "t"), ("odd",)],  # type: ignore[list-item]
    )

    dead = dead_letter_record(DeadLetter(record, "x", ReasonKind.OVERSIZED, CONSUMER), at=AT)

    assert dead.key == b"\xff\xfe" and dead.value == b""
    headers = dict(dead.headers)
    assert headers["raw-name"] == b"v" and headers["null"] is None and headers["text"] == b"t"
    assert "odd" not in headers
    assert headers["dlq_value_dropped"] == str(MAX_DEAD_LETTER_VALUE_BYTES + 1).encode()


async def test_an_unreachable_database_is_waited_for_not_dead_lettered(harness: Harness) -> None:
    """A valid event must not be lost to the DLQ because the database was briefly away."""
    from sqlalchemy.exc import OperationalError

    failures = {"left": 4}  # more than `retries`: these must not count as the handler's failures
    handled: list[str] = []

    async def flaky(session: AsyncSession, envelope: Envelope) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("SELECT 1", {}, Exception("database is locked"))
        handled.append(envelope.id)

    dead_letters = KeptDeadLetters()
    consumer = harness.consumer(flaky, dead_letters, retries=2, backoff=0)
    assert await consumer.process(consumed(customer())) == "handled"
    assert len(handled) == 1 and dead_letters.sent == []


async def test_a_connection_cut_by_a_server_shutting_down_is_waited_for_and_does_not_spend_the_retries(
    harness: Harness,
) -> None:
    """PostgreSQL stopping cuts the live connection: SQLAlchemy raises its generic DBAPIError
    (marked invalidated), then the reconnects are refused. Both are the database being away; the
    handler's own failure after them still has its whole budget of retries."""
    from asyncpg.exceptions import AdminShutdownError
    from sqlalchemy.exc import DBAPIError

    cut = AdminShutdownError("terminating connection due to administrator command")
    faults: list[BaseException] = [
        DBAPIError("SELECT 1", {}, cut, connection_invalidated=True),
        ConnectionRefusedError(111, "Connect call failed"),
        ConnectionRefusedError(111, "Connect call failed"),
        LookupError("the handler's own failure, once"),
    ]
    handled: list[str] = []

    async def flaky(session: AsyncSession, envelope: Envelope) -> None:
        if faults:
            raise faults.pop(0)
        handled.append(envelope.id)

    dead_letters = KeptDeadLetters()
    consumer = harness.consumer(flaky, dead_letters, retries=2, backoff=0)
    assert await consumer.process(consumed(customer())) == "handled"
    assert len(handled) == 1 and dead_letters.sent == []


def dead_letters_counted(kind: str, topic: str = "billing.customers") -> float:
    from shared.metrics import REGISTRY

    labels = {"topic": topic, "consumer": CONSUMER, "reason": kind}
    return REGISTRY.get_sample_value("adgang_dead_letters_total", labels) or 0.0


async def test_a_handler_failure_is_counted_by_its_kind(harness: Harness) -> None:
    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        raise LookupError("down")

    before = dead_letters_counted("handler-failed")
    consumer = harness.consumer(handler, KeptDeadLetters(), retries=1)

    assert await consumer.process(consumed(customer())) == "dead-lettered"
    assert dead_letters_counted("handler-failed") - before == 1


@pytest.mark.parametrize(
    "odd",
    [
        pytest.param([(b"\xff\xfe", b"x")], id="a header name that is not UTF-8"),
        pytest.param([("ce_type", b"\xff")], id="an envelope header that is not UTF-8"),
        pytest.param([("lonely",)], id="a header that is no pair"),
        pytest.param([("ce_id", b"another id")], id="ce_id twice, differently"),
    ],
)
async def test_headers_in_odd_shapes_are_dead_lettered_as_bad_headers_in_a_record_that_can_be_sent(
    harness: Harness, odd: list
) -> None:
    calls: list[str] = []

    async def handler(session: AsyncSession, envelope: Envelope) -> None:
        calls.append(envelope.id)

    dead_letters = KeptDeadLetters()
    consumer = harness.consumer(handler, dead_letters)
    good = consumed(customer())
    message = ConsumedMessage(
        topic=good.topic, key=good.key, value=good.value, headers=[*good.headers, *odd], partition=0, offset=9
    )
    before = dead_letters_counted("bad-header")

    assert await consumer.process(message) == "dead-lettered"

    assert calls == []
    [letter] = dead_letters.sent
    assert letter.kind == ReasonKind.BAD_HEADER
    assert dead_letters_counted("bad-header") - before == 1
    dead = dead_letter_record(letter, at=AT)
    assert all(isinstance(name, str) and isinstance(value, bytes | None) for name, value in dead.headers)


@pytest.mark.parametrize(
    ("value_bytes", "header_bytes"),
    [(900 * 1024, 200 * 1024), (1024, 1100 * 1024)],
    ids=["value-and-headers-together-too-large", "headers-alone-too-large"],
)
def test_a_dead_letter_always_fits_in_a_record_the_producer_sends(value_bytes: int, header_bytes: int) -> None:
    """A poison record whose headers are large (a value under the limit beside them, or headers
    filling the record alone) still makes a dead letter the producer can send: else the send
    fails and the consumer cannot move past the record."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    from shared.kafka import MAX_REQUEST_SIZE

    chunk = 50 * 1024
    record = KafkaRecord(
        topic="billing.customers",
        key=b"k",
        value=b"{" * value_bytes,
        headers=[(f"h{n}", b"x" * chunk) for n in range(header_bytes // chunk)],
    )

    dead = dead_letter_record(DeadLetter(record, "x", ReasonKind.OVERSIZED, CONSUMER), at=AT)

    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(dead.key, dead.value, dead.headers)
    assert size <= MAX_REQUEST_SIZE
    headers = dict(dead.headers)
    assert headers["dlq_original_topic"] == b"billing.customers"
    assert headers["dlq_reason_kind"] == b"oversized"
    if header_bytes < MAX_REQUEST_SIZE:  # the value goes, the headers stay
        assert dead.value == b"" and headers["dlq_value_dropped"] == str(value_bytes).encode()
        assert len([name for name in headers if name.startswith("h")]) == header_bytes // chunk
    else:  # headers that could never be sent go, counted; the value stays
        assert dead.value == record.value and "dlq_value_dropped" not in headers
        assert headers["dlq_headers_dropped"] == str(header_bytes // chunk).encode()
        assert not [name for name in headers if name.startswith("h")]


def test_a_dead_letter_of_a_record_whose_key_alone_fills_a_record_drops_the_key_and_says_so() -> None:
    """A key near the producer's limit (a topic allowing larger records) still makes a dead letter
    the producer can send: the key goes, `dlq_key_dropped` gives its size, and a replay leaves
    it where it is (without its key it is not the record it was)."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    from shared.kafka import MAX_REQUEST_SIZE

    record = KafkaRecord(topic="billing.customers", key=b"k" * (1024 * 1024), value=b"{}", headers=[("h", b"x")])

    dead = dead_letter_record(DeadLetter(record, "x", ReasonKind.BAD_KEY, CONSUMER), at=AT)

    assert DefaultRecordBatchBuilder.estimate_size_in_bytes(dead.key, dead.value, dead.headers) <= MAX_REQUEST_SIZE
    headers = dict(dead.headers)
    assert dead.key == b"" and headers["dlq_key_dropped"] == str(1024 * 1024).encode()
    assert dead.value == b"{}" and headers["h"] == b"x" and "dlq_value_dropped" not in headers


async def _refused_http_call() -> httpx.HTTPError:
    """What an outbound HTTP call to a port nobody listens on raises (its causes include the
    socket's ConnectionRefusedError)."""
    (port,) = free_ports(1)
    async with httpx.AsyncClient() as client:
        try:
            await client.get(f"http://127.0.0.1:{port}/")
        except httpx.HTTPError as error:
            return error
    raise AssertionError("nothing should listen on a free port")


async def test_a_failed_outbound_call_is_not_the_database_being_away() -> None:
    """An HTTP or SMTP peer that does not answer is not a database outage, however the error
    was wrapped: the consumer would otherwise wait for ever, logging the database as away."""
    import aiosmtplib
    import httpcore

    from shared.db import database_unavailable

    refused = await _refused_http_call()
    assert not database_unavailable(refused)
    # A connect timeout, chained as httpcore and httpx chain it, down to the builtin TimeoutError.
    try:
        try:
            try:
                raise TimeoutError
            except TimeoutError as timeout:
                raise httpcore.ConnectTimeout("timed out") from timeout
        except httpcore.ConnectTimeout as core:
            raise httpx.ConnectTimeout("timed out") from core
    except httpx.ConnectTimeout as timed_out:
        assert not database_unavailable(timed_out)
    try:
        raise RuntimeError("billing did not answer") from refused
    except RuntimeError as wrapped:
        assert not database_unavailable(wrapped)
    assert not database_unavailable(aiosmtplib.SMTPConnectError("mail server refused"))
    assert not database_unavailable(aiosmtplib.SMTPTimeoutError("mail server timed out"))
    assert database_unavailable(ConnectionRefusedError(111, "Connect call failed"))  # asyncpg connecting


async def test_a_handler_whose_outbound_call_fails_spends_its_retries(harness: Harness) -> None:
    import aiosmtplib

    refused = aiosmtplib.SMTPConnectError("mail server refused")
    calls = {"n": 0}

    async def calls_out(session: AsyncSession, envelope: Envelope) -> None:
        calls["n"] += 1
        if calls["n"] <= 3:  # more than the retries: its failures must count
            raise RuntimeError("the peer did not answer") from refused

    dead_letters = KeptDeadLetters()
    consumer = harness.consumer(calls_out, dead_letters, retries=2, backoff=0)
    assert await consumer.process(consumed(customer())) == "dead-lettered"
    assert len(dead_letters.sent) == 1
