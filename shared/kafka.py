"""Kafka plumbing shared by every worker: topic creation, publishing, dead letters, readiness."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    TopicAlreadyExistsError,
)
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from shared.clock import Clock
from shared.envelope import KafkaRecord
from shared.events import TOPICS, Topic
from shared.messaging import DeadLetter, dead_letter_record

log = logging.getLogger(__name__)


def all_topic_names(topics: Iterable[Topic] = TOPICS) -> list[tuple[str, int]]:
    names: list[tuple[str, int]] = []
    for topic in topics:
        names.append((topic.name, topic.partitions))
        names.append((topic.dlq, 1))
    return names


def _configs(name: str) -> dict[str, str]:
    """Registries are compacted, so a projection rebuilt from offset 0 still finds every key."""
    compacted = any(t.compacted and t.name == name for t in TOPICS)
    return {"cleanup.policy": "compact"} if compacted else {}


async def ensure_topics(
    bootstrap: str, *, replication_factor: int = 1, deadline_s: float = 60.0
) -> list[str]:
    """Create every topic of the catalogue and its dead-letter topic; existing ones are kept.

    The embedded broker creates no topics by itself, so every process calls this at start.
    Returns the names it created.
    """
    admin = await _connect_admin(bootstrap, deadline_s)
    try:
        existing = set(await admin.list_topics())
        wanted = [(name, parts) for name, parts in all_topic_names() if name not in existing]
        created: list[str] = []
        for name, partitions in wanted:
            try:
                await admin.create_topics(
                    [NewTopic(name, partitions, replication_factor, topic_configs=_configs(name))]
                )
                created.append(name)
            except TopicAlreadyExistsError:
                pass  # another process won the race
        if created:
            log.info("created topics: %s", ", ".join(created))
        return created
    finally:
        await admin.close()


async def _connect_admin(bootstrap: str, deadline_s: float) -> AIOKafkaAdminClient:
    deadline = time.monotonic() + deadline_s
    delay = 0.2
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
        try:
            await admin.start()
            return admin
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            await admin.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kafka broker at {bootstrap} not reachable: {exc}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def broker_reachable(bootstrap: str, wait_s: float = 1.0) -> bool:
    """Whether a broker of `bootstrap` answers a Kafka request (ApiVersions) within `wait_s`.

    An open TCP port is not enough: the kernel completes the handshake for a process that is
    stopped (SIGSTOP), hung or swapping, so only an answer shows that the broker is working.
    Each address of `bootstrap` is asked in turn; one answer is enough."""
    deadline = asyncio.get_running_loop().time() + wait_s
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return False
        conn = None
        try:
            # create_conn asks the broker for its API versions before it returns.
            async with asyncio.timeout(remaining):
                conn = await create_conn(
                    host or "127.0.0.1",
                    int(port),
                    client_id="adgang-readiness",
                    request_timeout_ms=max(1, int(remaining * 1000)),
                )
            return True
        except Exception as exc:  # refused, timed out, a malformed address or answer: not this one
            log.debug("broker %s did not answer: %s", address, type(exc).__name__)
        finally:
            if conn is not None:
                conn.close()
    return False


# The largest record the publisher sends: the producer's `max_request_size` (its default, 1 MiB).
MAX_REQUEST_SIZE = 1024 * 1024
# The producer's own default (murmur2 of the key, as the Java client), so keys keep their partitions.
_PARTITIONER = DefaultPartitioner()


async def _publish_run(
    producer: AIOKafkaProducer, topic: str, partition: int, records: list[KafkaRecord]
) -> None:
    """One partition's records in order, a batch at a time: the next batch is handed to the
    producer only once the broker has acknowledged the one before."""
    rest = records
    while rest:
        batch = producer.create_batch()
        taken = 0
        for record in rest:  # the first record always fits; the batch is full when one does not
            appended = batch.append(
                timestamp=None, key=record.key, value=record.value, headers=record.headers
            )
            if appended is None:
                break
            taken += 1
        batch.close()
        await (await producer.send_batch(batch, topic, partition=partition))
        rest = rest[taken:]


class KafkaPublisher:
    """Publishes records with acks from all in-sync replicas; used by the relay and the DLQ."""

    def __init__(self, bootstrap: str, clock: Clock) -> None:
        self._bootstrap = bootstrap
        self._clock = clock
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> AIOKafkaProducer:
        if self._producer is None:  # created inside the running loop, as aiokafka requires
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                acks="all",
                enable_idempotence=False,  # the embedded broker has no idempotent producer
                linger_ms=2,
                request_timeout_ms=15000,
                max_request_size=MAX_REQUEST_SIZE,
            )
            await producer.start()
            self._producer = producer
        return self._producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, records: list[KafkaRecord]) -> None:
        """Publish `records`, each partition's in the order given; raises if any failed.

        The outbox relay needs more than aiokafka's own order. Without idempotence aiokafka
        keeps one batch per partition in flight and puts a batch it retries back at the head of
        the partition's queue (`Sender._muted_partitions`, `MessageAccumulator.reenqueue` in
        aiokafka 0.14), so what succeeds arrives in order. But a batch that fails for good (it
        expired while the partition had no leader or the broker did not answer, or the broker
        refused it) is dropped while the partition's later batches are still sent: a key's
        later event would be on the bus before the earlier one the relay sends again next
        turn. So each partition's records go in explicit batches, one at a time, and a
        partition stops at its first failure: of one call, what reaches the bus is, per
        partition, a prefix of that partition's records (a batch that timed out may still have
        been written, but nothing after it is sent).
        """
        for record in records:  # as `AIOKafkaProducer.send` checks, before anything is sent
            size = DefaultRecordBatchBuilder.estimate_size_in_bytes(record.key, record.value, record.headers)
            if size > MAX_REQUEST_SIZE:
                raise MessageSizeTooLargeError(
                    f"a record for {record.topic} is {size} bytes, more than {MAX_REQUEST_SIZE}"
                )
        producer = await self.start()
        partitions: dict[str, list[int]] = {}
        runs: dict[tuple[str, int], list[KafkaRecord]] = {}
        for record in records:
            if record.topic not in partitions:
                partitions[record.topic] = sorted(await producer.partitions_for(record.topic))
            partition = _PARTITIONER(record.key, partitions[record.topic], partitions[record.topic])
            runs.setdefault((record.topic, partition), []).append(record)
        outcomes = await asyncio.gather(
            *(_publish_run(producer, topic, partition, run) for (topic, partition), run in runs.items()),
            return_exceptions=True,  # every partition's batch in flight ends before this returns
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def send(self, letter: DeadLetter) -> None:
        """Dead-letter a record to `<topic>.dlq` with the reason and its kind in headers."""
        await self.publish([dead_letter_record(letter, at=self._clock.now())])
