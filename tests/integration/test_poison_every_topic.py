"""Poison and bad data on every topic a worker consumes (issue 13, item 4): each kind of bad
record goes to the topic's `.dlq` with its reason kind, is counted in
`adgang_dead_letters_total`, and the consumer goes on to handle the next, valid event.

The (worker, topic) pairs are what the workers consume: derived from each worker's handlers as
its faust app derives its agents (`by_topic(handlers(parts))`), so a topic a worker starts to
consume is covered here without a line changed. Each consumer is the worker's real one (its
handlers, its database on the backend under test); only the broker is replaced by a sink that
builds the records a `KafkaPublisher` would send to `<topic>.dlq`.
"""

from __future__ import annotations

import importlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from services.registry import SERVICES
from shared.clock import FrozenClock
from shared.envelope import MAX_VALUE_BYTES, KafkaRecord, ReasonKind, encode, new_event_id
from shared.events import Event, SubscriptionOrdered, SubscriptionUpgraded, UserCreated
from shared.messaging import (
    ConsumedMessage,
    DeadLetter,
    IdempotentConsumer,
    MessagingTables,
    by_topic,
    dead_letter_record,
)
from shared.metrics import REGISTRY
from tests.unit.test_envelope import AT, BUILDERS

WORKERS = tuple(name for name, service in SERVICES.items() if service.has_worker)


def build_parts(worker: str, database_url: str, var_dir: Path, clock: FrozenClock | None = None) -> Any:
    """The worker's parts as `create_worker` builds them, on development settings."""
    settings = SERVICES[worker].settings_type()(database_url=database_url, var_dir=var_dir)  # type: ignore[call-arg]
    build = importlib.import_module(f"services.{worker}.bootstrap").build
    return build(settings, clock=clock)


def topic_handlers(worker: str, parts: Any) -> dict[str, dict[type[Event], Any]]:
    handlers = importlib.import_module(f"services.{worker}.worker").handlers
    return {topic.name: group for topic, group in by_topic(handlers(parts)).items()}


def messaging_tables(worker: str) -> MessagingTables:
    tables: MessagingTables = importlib.import_module(f"services.{worker}.models").messaging
    return tables


def consumed_pairs() -> list[tuple[str, str]]:
    """Every (worker, topic) a worker consumes, from the workers' own handlers."""
    pairs: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:  # development keys are written under var_dir
        for worker in WORKERS:
            parts = build_parts(worker, f"sqlite+aiosqlite:///{tmp}/{worker}.db", Path(tmp) / worker)
            pairs += [(worker, topic) for topic in topic_handlers(worker, parts)]
    return pairs


PAIRS = consumed_pairs()


def test_every_worker_consumes_something_and_each_topic_pair_is_covered() -> None:
    """The matrix is not empty by accident: every worker reads at least one topic."""
    assert {worker for worker, _ in PAIRS} == set(WORKERS)
    assert len(PAIRS) == len(set(PAIRS))


@dataclass
class RecordingDeadLetters:
    """Keeps the records a `KafkaPublisher` would send to `<topic>.dlq`."""

    clock: FrozenClock
    records: list[KafkaRecord] = field(default_factory=list)

    async def send(self, letter: DeadLetter) -> None:
        self.records.append(dead_letter_record(letter, at=self.clock.now()))


def valid_event(handled: dict[type[Event], Any]) -> Event:
    """A valid event the consumer handles: the first of its event classes with a sample."""
    for event_class in handled:
        if event_class in BUILDERS:
            return BUILDERS[event_class]()
    raise AssertionError(f"no sample event for any of {[c.__name__ for c in handled]}: add one to BUILDERS")


# What a worker must have learnt before it can handle a sample: the notifier emails an order's
# confirmation to the orderer, whom its directory knows from `UserCreated` (the samples share
# one user id).
PREREQUISITES: dict[type[Event], tuple[type[Event], ...]] = {
    SubscriptionOrdered: (UserCreated,),
    SubscriptionUpgraded: (UserCreated,),
}


def headers_without(record: KafkaRecord, name: str) -> list[tuple[str, bytes]]:
    return [(k, v) for k, v in record.headers if k != name]


def headers_with(record: KafkaRecord, name: str, value: bytes) -> list[tuple[str, bytes]]:
    return [*headers_without(record, name), (name, value)]


# Each bad record, made from a valid one of the topic: (its kind, how it is made).
Poison = Callable[[KafkaRecord], tuple[bytes | None, list[tuple[str, bytes]], bytes | None]]
POISONS: dict[ReasonKind, Poison] = {
    ReasonKind.INVALID_JSON: lambda r: (r.key, r.headers, b'{"this is": not JSON'),
    ReasonKind.UNKNOWN_TYPE: lambda r: (
        r.key,
        headers_with(r, "ce_type", f"dk.adgang.{r.topic.split('.')[0]}.NoSuchEvent.v1".encode()),
        r.value,
    ),
    ReasonKind.INVALID_PAYLOAD: lambda r: (r.key, r.headers, b'{"unexpected": true}'),
    ReasonKind.MISSING_HEADER: lambda r: (r.key, headers_without(r, "ce_source"), r.value),
    # Valid JSON of a valid event, padded: only the size check refuses it, before parsing.
    ReasonKind.OVERSIZED: lambda r: (r.key, r.headers, r.value + b" " * (MAX_VALUE_BYTES - len(r.value) + 1)),
    ReasonKind.BAD_KEY: lambda r: (b"\xff\xfe\xfd", r.headers, r.value),
}


def dead_letters_counted(topic: str, consumer: str, kind: ReasonKind) -> float:
    return (
        REGISTRY.get_sample_value(
            "adgang_dead_letters_total", {"topic": topic, "consumer": consumer, "reason": kind.value}
        )
        or 0.0
    )


@pytest.fixture(scope="module")
def worker_databases(migrated_database: Callable[[str], str]) -> dict[str, str]:
    """One migrated database per worker for the module (migrating runs its own event loop, so
    it happens here, outside the tests' loop)."""
    return {worker: migrated_database(worker) for worker in WORKERS}


@pytest.fixture
async def consumer_of(
    worker_databases: dict[str, str], tmp_path: Path
) -> AsyncIterator[Callable[[str, str], tuple[IdempotentConsumer, RecordingDeadLetters, Any]]]:
    disposers: list[Any] = []
    clock = FrozenClock(AT)

    def make(worker: str, topic: str) -> tuple[IdempotentConsumer, RecordingDeadLetters, Any]:
        parts = build_parts(worker, worker_databases[worker], tmp_path / worker, clock)
        disposers.append(parts.db)
        sink = RecordingDeadLetters(clock)
        consumer = IdempotentConsumer(
            name=f"{worker}:{topic}",
            db=parts.db,
            tables=messaging_tables(worker),
            handlers=topic_handlers(worker, parts)[topic],
            dead_letters=sink,
            clock=clock,
            retries=1,
            backoff=0,
        )
        return consumer, sink, parts

    yield make
    for db in disposers:
        await db.dispose()


@pytest.mark.parametrize(("worker", "topic"), PAIRS, ids=[f"{w}:{t}" for w, t in PAIRS])
async def test_bad_records_go_to_the_topics_dlq_with_their_kind_are_counted_and_the_consumer_goes_on(
    worker: str, topic: str, consumer_of: Callable[..., Any]
) -> None:
    consumer, sink, parts = consumer_of(worker, topic)
    handlers = topic_handlers(worker, parts)
    sample = valid_event(handlers[topic])
    for needed in PREREQUISITES.get(type(sample), ()):
        known, _, _ = consumer_of(worker, needed.TOPIC.name)
        record = encode(BUILDERS[needed](), event_id=new_event_id(), time=AT)
        learnt = ConsumedMessage(topic=record.topic, key=record.key, value=record.value, headers=record.headers)
        assert await known.process(learnt) in ("handled", "duplicate")
    good = encode(sample, event_id=new_event_id(), time=AT)
    assert good.topic == topic
    before = {kind: dead_letters_counted(topic, consumer.name, kind) for kind in POISONS}

    bad_ids: list[str] = []
    for offset, (kind, poison) in enumerate(POISONS.items()):
        key, headers, value = poison(good)
        bad_id = str(uuid.uuid4())
        bad_ids.append(bad_id)
        headers = [(k, bad_id.encode() if k == "ce_id" else v) for k, v in headers]
        message = ConsumedMessage(
            topic=topic, key=key, value=value, headers=headers, partition=1, offset=100 + offset
        )
        assert await consumer.process(message) == "dead-lettered", kind

    # The consumer goes on: the next valid event is handled, and kept once in the inbox.
    outcome = await consumer.process(
        ConsumedMessage(topic=topic, key=good.key, value=good.value, headers=good.headers, partition=1, offset=200)
    )
    assert outcome == "handled", f"{worker} did not handle a valid {good.headers} after the bad records"

    assert [r.topic for r in sink.records] == [f"{topic}.dlq"] * len(POISONS)
    for record, (offset, kind) in zip(sink.records, enumerate(POISONS), strict=True):
        headers = dict(record.headers)
        assert headers["dlq_reason_kind"] == kind.value.encode()
        assert headers["dlq_reason"]  # the readable reason beside the kind
        assert headers["dlq_consumer"] == consumer.name.encode()
        assert headers["dlq_original_topic"] == topic.encode()
        assert (headers["dlq_original_partition"], headers["dlq_original_offset"]) == (b"1", str(100 + offset).encode())
        key, _, value = POISONS[kind](good)
        assert (record.key, record.value) == (key, value)  # kept as they came, for a replay
        after = dead_letters_counted(topic, consumer.name, kind)
        assert after - before[kind] == 1, f"{kind} counted {after - before[kind]} times"

    inbox = messaging_tables(worker).inbox
    async with parts.db.transaction() as session:
        kept = (await session.scalars(select(inbox.c.event_id).where(inbox.c.consumer == consumer.name))).all()
    good_id = dict(good.headers)["ce_id"].decode()
    assert kept.count(good_id) == 1
    assert not set(bad_ids) & set(kept)
