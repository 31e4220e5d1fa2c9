"""Kafka plumbing shared by every worker: topic creation, publishing, dead letters, readiness."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from shared.clock import Clock
from shared.envelope import KafkaRecord, ReasonKind
from shared.events import TOPICS, Topic
from shared.messaging import dead_letter_record

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
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host or "127.0.0.1", int(port)), wait_s)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


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
            )
            await producer.start()
            self._producer = producer
        return self._producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, records: list[KafkaRecord]) -> None:
        producer = await self.start()
        futures = [await producer.send(r.topic, key=r.key, value=r.value, headers=r.headers) for r in records]
        await asyncio.gather(*futures)

    async def send(
        self,
        record: KafkaRecord,
        *,
        reason: str,
        kind: ReasonKind,
        consumer: str,
        partition: int = -1,
        offset: int = -1,
    ) -> None:
        """Dead-letter a record to `<topic>.dlq` with the reason and its kind in headers."""
        letter = dead_letter_record(
            record,
            reason=reason,
            kind=kind,
            consumer=consumer,
            at=self._clock.now(),
            partition=partition,
            offset=offset,
        )
        await self.publish([letter])
