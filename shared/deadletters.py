"""What is on a dead-letter topic, and moving it back after a fix (`adgang dlq list|replay`).

A consumer sends what it cannot take to `<topic>.dlq` (shared/messaging.py): the record as it
came, plus `dlq_*` headers saying why (`dlq_reason_kind`, `dlq_reason`), which consumer, when,
and where it was read. Listing shows those headers and never the value, which may carry
personal data. Replaying republishes the records to the original topic with the `dlq_*`
headers taken off and a `dlq_replayed_from` header added (`<dlq topic>:<partition>:<offset>`),
then commits the replay's consumer group offset on the `.dlq`, so the next replay starts after
them. Each filter (reason kind, consumer) keeps its own progress (`replay_group`).

A replayed record reaches every consumer of the topic. The inbox makes that safe: a consumer
that handled the event before skips it as a duplicate, one whose handler now succeeds handles
it once, and one that still cannot take it dead-letters it again (a new record, after the
replay's committed offset, for the next replay). A crash between publishing and committing
replays those records again on the next run; the inbox absorbs that too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from shared.clock import Clock
from shared.envelope import KafkaRecord, ReasonKind
from shared.events import TOPICS, Topic
from shared.kafka import KafkaPublisher
from shared.messaging import (
    DLQ_AT,
    DLQ_CONSUMER,
    DLQ_HEADERS_DROPPED,
    DLQ_KEY_DROPPED,
    DLQ_ORIGINAL_OFFSET,
    DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_TOPIC,
    DLQ_REASON,
    DLQ_REASON_KIND,
    DLQ_VALUE_DROPPED,
)

REPLAYED_FROM = "dlq_replayed_from"
GROUP_PREFIX = "adgang-dlq-replay"


class DeadLetterError(ValueError):
    """A request the dead-letter tools cannot carry out (an unknown topic, say)."""


def topic_of(name: str) -> Topic:
    """The catalogue's topic named `name` or whose dead-letter topic is `name`."""
    for topic in TOPICS:
        if name in (topic.name, topic.dlq):
            return topic
    raise DeadLetterError(f"unknown topic {name!r}; one of {', '.join(t.name for t in TOPICS)}")


def check_reason_kind(kind: str | None) -> None:
    if kind is not None and kind not in set(ReasonKind):
        raise DeadLetterError(f"unknown reason kind {kind!r}; one of {', '.join(ReasonKind)}")


def replay_group(topic: Topic, *, reason_kind: str | None = None, consumer: str | None = None) -> str:
    """The consumer group whose committed offset on `<topic>.dlq` is a replay's progress: one
    per filter, so a replay of one kind does not pass over the records of another."""
    group = f"{GROUP_PREFIX}.{topic.dlq}"
    if reason_kind:
        group += f".kind={reason_kind}"
    if consumer:
        group += f".consumer={consumer}"
    return group


@dataclass(frozen=True)
class StoredDeadLetter:
    """One record as it is stored on a `.dlq`: where it is and the `dlq_*` headers, never its
    value (what a consumer hands over to be stored there is a `shared.messaging.DeadLetter`)."""

    partition: int
    offset: int
    kind: str
    reason: str
    consumer: str
    at: str
    original_topic: str
    original_partition: int | None
    original_offset: int | None
    event_type: str
    value_dropped: bool
    record: KafkaRecord = field(repr=False)
    headers_dropped: bool = False  # its headers were too large to keep: not the record it was
    key_dropped: bool = False  # its key was too large to keep: not the record it was either

    @property
    def where(self) -> str:
        return f"{self.record.topic}:{self.partition}:{self.offset}"

    @property
    def original(self) -> tuple[str, int, int] | None:
        if self.original_partition is None or self.original_offset is None:
            return None
        return (self.original_topic, self.original_partition, self.original_offset)


# The most of one header a dead letter shows (the reason a consumer writes is at most 4000).
SHOWN_HEADER_CHARS = 4000


def _text(headers: dict[str, bytes | None], name: str) -> str:
    """A header as text that is safe to print: whoever produced the record chose it, so control
    characters (terminal escapes, line breaks) are escaped and a huge one is cut short."""
    value = headers.get(name)
    if value is None:
        return ""
    text = value.decode(errors="replace")[:SHOWN_HEADER_CHARS]
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _number(headers: dict[str, bytes | None], name: str) -> int | None:
    text = _text(headers, name)
    return int(text) if text.isdigit() else None


def _dead_letter(
    topic: Topic,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    raw: Sequence[tuple[str, bytes | None]],
) -> StoredDeadLetter:
    headers = dict(raw)
    return StoredDeadLetter(
        partition=partition,
        offset=offset,
        # Records dead-lettered before kinds existed have a reason only: all from handlers
        # said "handler failed: ...", everything else was the envelope's refusal.
        kind=_text(headers, DLQ_REASON_KIND)
        or (ReasonKind.HANDLER_FAILED if _text(headers, DLQ_REASON).startswith("handler failed") else "unknown"),
        reason=_text(headers, DLQ_REASON),
        consumer=_text(headers, DLQ_CONSUMER),
        at=_text(headers, DLQ_AT),
        original_topic=_text(headers, DLQ_ORIGINAL_TOPIC) or topic.name,
        original_partition=_number(headers, DLQ_ORIGINAL_PARTITION),
        original_offset=_number(headers, DLQ_ORIGINAL_OFFSET),
        event_type=_text(headers, "ce_type"),
        value_dropped=DLQ_VALUE_DROPPED in headers,
        record=KafkaRecord(topic=topic.dlq, key=key or b"", value=value or b"", headers=list(raw)),  # type: ignore[arg-type]
        headers_dropped=DLQ_HEADERS_DROPPED in headers,
        key_dropped=DLQ_KEY_DROPPED in headers,
    )


async def _start_consumer(bootstrap: str, group: str | None) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=15000,
    )
    await consumer.start()
    return consumer


async def _partitions(consumer: AIOKafkaConsumer, name: str) -> list[TopicPartition]:
    numbers = consumer.partitions_for_topic(name)
    if not numbers:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - a fresh client has no metadata yet
        numbers = consumer.partitions_for_topic(name)
    if not numbers:
        raise DeadLetterError(f"topic {name} does not exist on the broker (`adgang topics` creates it)")
    return [TopicPartition(name, p) for p in sorted(numbers)]


async def _read(
    consumer: AIOKafkaConsumer, topic: Topic, start: dict[TopicPartition, int], end: dict[TopicPartition, int]
) -> list[StoredDeadLetter]:
    """The records of each partition from `start` up to (not including) `end`."""
    letters: list[StoredDeadLetter] = []
    remaining = {tp for tp in start if start[tp] < end[tp]}
    for tp in remaining:
        consumer.seek(tp, start[tp])
    async with asyncio.timeout(60):
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, messages in batch.items():
                for m in messages:
                    if m.offset < end[tp]:
                        letters.append(_dead_letter(topic, tp.partition, m.offset, m.key, m.value, m.headers))
                    if m.offset + 1 >= end[tp]:
                        remaining.discard(tp)
            for tp in list(remaining):
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    return sorted(letters, key=lambda d: (d.partition, d.offset))


async def list_dead_letters(bootstrap: str, topic: Topic) -> list[StoredDeadLetter]:
    """Everything on `<topic>.dlq` now, replayed or not, oldest first."""
    consumer = await _start_consumer(bootstrap, None)
    try:
        partitions = await _partitions(consumer, topic.dlq)
        consumer.assign(partitions)
        start = await consumer.beginning_offsets(partitions)
        end = await consumer.end_offsets(partitions)
        return await _read(consumer, topic, start, end)
    finally:
        await consumer.stop()


@dataclass
class Replay:
    """What a replay did (or, dry, would do)."""

    group: str
    moved: list[StoredDeadLetter] = field(default_factory=list)
    # The records it passed over, and why (another kind or consumer is not "why": those are
    # left for a replay of their own filter and not reported).
    skipped: list[tuple[StoredDeadLetter, str]] = field(default_factory=list)
    committed: dict[int, int] = field(default_factory=dict)  # partition -> next offset


def replayed_record(letter: StoredDeadLetter) -> KafkaRecord:
    """The dead letter as it goes back: to its topic, without `dlq_*` headers, saying whence."""
    headers = [(k, v) for k, v in letter.record.headers if not k.startswith("dlq_")]
    headers.append((REPLAYED_FROM, letter.where.encode()))
    return KafkaRecord(
        topic=letter.original_topic, key=letter.record.key, value=letter.record.value, headers=headers
    )


async def replay(
    bootstrap: str,
    topic: Topic,
    clock: Clock,
    *,
    reason_kind: str | None = None,
    consumer: str | None = None,
    dry_run: bool = False,
) -> Replay:
    """Republish the dead letters of `topic` not replayed before (by this filter) to `topic`,
    then commit the progress. A dry run reads the same records and changes nothing."""
    check_reason_kind(reason_kind)
    result = Replay(group=replay_group(topic, reason_kind=reason_kind, consumer=consumer))
    reader = await _start_consumer(bootstrap, result.group)
    try:
        partitions = await _partitions(reader, topic.dlq)
        reader.assign(partitions)
        beginning = await reader.beginning_offsets(partitions)
        # The end now: what is dead-lettered while the replay runs (a replayed record that
        # fails again, say) is left for the next one.
        end = await reader.end_offsets(partitions)
        start = {}
        for tp in partitions:
            committed = await reader.committed(tp)
            start[tp] = max(committed if committed is not None else 0, beginning[tp])
        seen: set[tuple[str, int, int]] = set()
        for letter in await _read(reader, topic, start, end):
            if reason_kind is not None and letter.kind != reason_kind:
                continue
            if consumer is not None and letter.consumer != consumer:
                continue
            if letter.original_topic != topic.name:
                result.skipped.append((letter, f"from another topic ({letter.original_topic})"))
            elif letter.value_dropped:
                result.skipped.append((letter, "its value was too large to keep"))
            elif letter.headers_dropped:
                result.skipped.append((letter, "its headers were too large to keep"))
            elif letter.key_dropped:
                result.skipped.append((letter, "its key was too large to keep"))
            elif letter.original is not None and letter.original in seen:
                # Two consumers of the topic dead-lettered the same record: it goes back once,
                # and reaches both.
                result.skipped.append((letter, "the same record is moved from an earlier offset"))
            else:
                if letter.original is not None:
                    seen.add(letter.original)
                result.moved.append(letter)
        if dry_run:
            return result
        if result.moved:
            publisher = KafkaPublisher(bootstrap, clock)
            try:
                await publisher.publish([replayed_record(letter) for letter in result.moved])
            finally:
                await publisher.stop()
        progress = {tp: end[tp] for tp in partitions if end[tp] > start[tp]}
        if progress:
            await reader.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in progress.items()})
        result.committed = {tp.partition: offset for tp, offset in progress.items()}
        return result
    finally:
        await reader.stop()
