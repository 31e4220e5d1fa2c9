"""Reading and writing topics of the running suite directly, as a downstream subscriber would."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.events import TOPICS


@dataclass(frozen=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


async def read_all(bootstrap: str, topics: list[str], *, deadline_s: float = 20) -> list[Record]:
    """Every record on the topics from the beginning up to their current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in (consumer.partitions_for_topic(topic) or set())
        ]
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - first call has no metadata yet
            partitions = [
                TopicPartition(topic, p)
                for topic in topics
                for p in (consumer.partitions_for_topic(topic) or set())
            ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        records: list[Record] = []
        remaining = {tp for tp in partitions if end[tp] > 0}
        async with asyncio.timeout(deadline_s):
            while remaining:
                batch = await consumer.getmany(timeout_ms=500)
                for tp, messages in batch.items():
                    for m in messages:
                        records.append(Record(tp.topic, m.key, m.value, {k: v for k, v in m.headers}))
                        if m.offset + 1 >= end[tp]:
                            remaining.discard(tp)
        return records
    finally:
        await consumer.stop()


async def produce(
    bootstrap: str, topic: str, *, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=key, value=value, headers=headers)
    finally:
        await producer.stop()


async def group_lag(bootstrap: str, group: str, topics: set[str]) -> dict[tuple[str, int], int]:
    """Per partition of `topics`: the partition's end offset less the group's committed offset,
    read from the broker itself (a partition the group never committed counts from 0)."""
    partitions = [
        TopicPartition(topic.name, p)
        for topic in TOPICS
        if topic.name in topics
        for p in range(topic.partitions)
    ]
    assert len({tp.topic for tp in partitions}) == len(topics), f"unknown topics in {sorted(topics)}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
        end = await end_offsets(consumer, partitions)
    finally:
        await consumer.stop()
        await admin.close()
    lag: dict[tuple[str, int], int] = {}
    for tp in partitions:
        done = committed.get(tp)
        offset = done.offset if done is not None and done.offset >= 0 else 0
        lag[(tp.topic, tp.partition)] = end[tp] - offset
    return lag


async def end_offsets(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """The offset after each partition's last record. The embedded broker (Tansu) answers
    ListOffsets with its last batch's first offset + 1, short of the end by the rest of that
    batch, so the last batch is read to find the end (Kafka's answer is the end already, and
    reading from one before it finds the same)."""
    reported = await consumer.end_offsets(partitions)
    consumer.assign(partitions)
    for tp in partitions:
        consumer.seek(tp, max(0, reported[tp] - 1))
    end = dict(reported)
    while batch := await consumer.getmany(timeout_ms=1000):
        for tp, records in batch.items():
            end[tp] = max(end[tp], records[-1].offset + 1)
    return end
