"""A service's worker process: a faust-streaming app with one agent per consumed topic,
all going through the idempotent consumer, plus the outbox relay and any periodic jobs."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any, ClassVar

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from shared.clock import Clock, SystemClock
from shared.db import Database, database_unavailable
from shared.events import Topic
from shared.kafka import KafkaPublisher, ensure_topics
from shared.logs import install_scrubbing, logging_config
from shared.messaging import (
    OUTAGE_BACKOFF_MAX_S,
    OUTBOX,
    ConsumedMessage,
    Handlers,
    IdempotentConsumer,
    MessagingTables,
    OutboxNudge,
    OutboxRelay,
    by_topic,
    headers_list,
)
from shared.observability import (
    ConsumerLag,
    CountingPublisher,
    OutboxGauges,
    WorkerMetricsServer,
    refresh_forever,
)
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)


@dataclass
class Background:
    """A coroutine the worker runs for its whole life (a periodic job, a dispatcher)."""

    name: str
    run: Callable[[], Awaitable[None]]


def periodic(name: str, interval_s: float, job: Callable[[], Awaitable[object]]) -> Background:
    """A job run every `interval_s` seconds for the worker's whole life (deadline watches)."""

    async def run() -> None:
        while True:
            await job()
            await asyncio.sleep(interval_s)

    return Background(name, run)


@dataclass
class WorkerSpec:
    settings: ServiceSettings
    db: Database
    tables: MessagingTables
    # Keyed by event class; the worker runs one consumer per topic of those events.
    handlers: Handlers
    clock: Clock = field(default_factory=SystemClock)
    background: list[Background] = field(default_factory=list)
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Woken after a consumer's commit that wrote that kind of row (`shared.messaging.wrote`),
    # as the relay is after one that added an event to the outbox.
    wake_after_commit: Mapping[str, asyncio.Event] = field(default_factory=dict)


def build_faust_app(spec: WorkerSpec) -> faust.App:
    settings = spec.settings
    # One per process: instances of a worker on one host must not share faust's directory.
    datadir = settings.var_dir / "faust" / settings.process_name("worker")
    datadir.parent.mkdir(parents=True, exist_ok=True)  # faust makes only the last level
    app = faust.App(
        f"adgang-{settings.service}",
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        web_enabled=False,
        topic_allow_declare=False,  # topics are created by ensure_topics (the broker makes none)
        topic_disable_leader=True,
        store="memory://",
        datadir=str(datadir),
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        broker_commit_every=100,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        producer_acks=-1,
        logging_config=logging_config(
            service=settings.service, level=settings.log_level, fmt=settings.log_format
        ),
    )
    # Before anything asks the app for its transport (`app.topic` does): faust's own would fetch
    # with its fixed 1.5 s wait.
    app.transport = fetch_wait_transport(settings.kafka_fetch_max_wait_ms)(app.conf.broker_consumer, app)
    publisher = KafkaPublisher(settings.kafka_bootstrap_servers, spec.clock)
    outbox_wake = asyncio.Event()
    wakes = {OUTBOX: outbox_wake, **spec.wake_after_commit}

    def after_commit(written: Set[str]) -> None:
        # Only what has work: a relay woken after a commit that added no event would read the
        # outbox for nothing (its poll finds what another process added).
        for what in written:
            wake = wakes.get(what)
            if wake is not None:
                wake.set()

    consumer_names: dict[str, str] = {}
    for topic, handlers in by_topic(spec.handlers).items():
        consumer_names[topic.name] = name = f"{settings.service}:{topic.name}"
        consumer = IdempotentConsumer(
            name=name,
            db=spec.db,
            tables=spec.tables,
            handlers=handlers,
            dead_letters=publisher,
            clock=spec.clock,
            after_commit=after_commit,
        )
        _register_agent(app, topic, consumer, settings.consumer_batch_max)

    relay = OutboxRelay(spec.db, spec.tables, CountingPublisher(publisher, settings.service), spec.clock)
    ready = asyncio.Event()
    # /metrics and /healthz on `worker_metrics_port` (docs/operations.md, "Metrics").
    metrics_server = WorkerMetricsServer(settings, alive=ready.is_set)
    outbox_gauges = OutboxGauges(spec.db, spec.tables.outbox, settings.service, spec.clock)
    lag = ConsumerLag(app, consumer_names)

    @app.task
    async def start_background() -> None:
        # The worker alone measures its service's outbox (the API does not): the relay runs
        # here, and one query every few seconds per worker instance is enough.
        await metrics_server.start()
        refreshers = [
            asyncio.create_task(refresh_forever("outbox", outbox_gauges.refresh)),
            asyncio.create_task(refresh_forever("consumer lag", lag.refresh)),
        ]
        tasks: list[asyncio.Task[None]] = []
        try:
            await ensure_topics(settings.kafka_bootstrap_servers)
            for hook in spec.on_start:
                await hook()
            # A commit of outbox rows in another process (the API's) nudges the relay too.
            nudged = asyncio.Event()
            tasks.append(asyncio.create_task(OutboxNudge.listen(spec.db, nudged)))
            tasks.append(
                asyncio.create_task(relay.run_forever(settings.outbox_poll_interval_s, outbox_wake, nudged))
            )
            tasks += [asyncio.create_task(_supervised(job)) for job in spec.background]
            marker = settings.ready_marker("worker")
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(os.getpid()))  # read by the supervisor (`adgang run`, tests)
            log.info("%s ready", settings.process_name("worker"))
            ready.set()  # /healthz answers ok from now on
            await asyncio.gather(*tasks)
        finally:
            # Also when starting fails (the broker never answered): nothing is left running.
            for task in [*tasks, *refreshers]:
                task.cancel()
            try:
                await publisher.stop()
            finally:
                await metrics_server.stop()

    return app


def fetch_wait_transport(fetch_max_wait_ms: int) -> type[faust_aiokafka.Transport]:
    """faust's aiokafka transport, its worker's consumer fetching with `fetch_max_wait_ms`
    (`kafka_fetch_max_wait_ms`) instead of faust's fixed 1500 ms.

    The wait is how long the broker may hold a fetch that has nothing to return. Kafka answers
    such a fetch as soon as a record arrives, so its length costs nothing there; the embedded
    broker holds a fetch of several partitions for the whole wait, so on it each hop of an idle
    suite waits half of it on average. faust passes the 1500 to aiokafka's constructor, which
    keeps it until `start()` hands it to its fetcher: the consumer faust made gets ours before
    it is started."""

    class FetchWaitConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

    class FetchWaitConsumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
            return FetchWaitConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class FetchWaitTransport(faust_aiokafka.Transport):
        Consumer: ClassVar[type[Any]] = FetchWaitConsumer

    return FetchWaitTransport


def _register_agent(app: faust.App, topic: Topic, consumer: IdempotentConsumer, batch_max: int) -> None:
    """One agent per topic. Its stream reads events into a queue of at most `batch_max`; a
    second task takes whatever has arrived (at least one event, at most `batch_max`), hands
    each partition's events, in offset order, to `consumer.process_batch` (one transaction),
    and acks them only once it has returned: faust commits an offset only when every event up
    to it is acked, so an offset is committed only after its message's transaction. Reading
    and handling apart means a batch is never held back waiting for one more event, and the
    events read stay acked in order while a rebalance waits for them."""
    channel = app.topic(
        topic.name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    async def agent(stream: faust.StreamT) -> None:
        stream.enable_acks = False  # acked below, once handled (as faust's own `take` does)
        arrived: asyncio.Queue[faust.EventT] = asyncio.Queue(maxsize=batch_max)
        reader = asyncio.current_task()
        failed: list[BaseException] = []

        async def handle() -> None:
            try:
                while True:
                    events = [await arrived.get()]
                    while len(events) < batch_max and not arrived.empty():
                        events.append(arrived.get_nowait())
                    await _handle_events(consumer, stream, events)
            except Exception as exc:
                failed.append(exc)
                if reader is not None:
                    reader.cancel()  # the agent fails with the handler's error, as it did inline
                raise

        handler = asyncio.create_task(handle(), name=f"{agent.__name__}.handle")
        try:
            async for event in stream.events():
                await arrived.put(event)
        except asyncio.CancelledError:
            if failed:
                raise failed[0] from None
            raise
        finally:
            handler.cancel()

    agent.__name__ = f"consume_{topic.name.replace('.', '_')}"
    agent.__qualname__ = agent.__name__
    app.agent(channel, name=f"{app.conf.id}.{agent.__name__}", concurrency=1)(agent)


async def _handle_events(consumer: IdempotentConsumer, stream: faust.StreamT, events: list[faust.EventT]) -> None:
    """Each partition's events in one batch, in the order read (the partition's offset order);
    acked once their batch is done."""
    by_partition: dict[int, list[faust.EventT]] = {}
    for event in events:
        by_partition.setdefault(event.message.partition, []).append(event)
    for partition_events in by_partition.values():
        await consumer.process_batch([_consumed(event.message) for event in partition_events])
        for event in partition_events:
            await stream.ack(event)


def _consumed(message: Any) -> ConsumedMessage:
    return ConsumedMessage(
        topic=message.topic,
        key=message.key,
        value=message.value,
        headers=headers_list(message.headers),
        partition=message.partition,
        offset=message.offset,
    )


async def _supervised(job: Background) -> None:
    """Keep a background job alive: log a crash and start it again. While the database is
    away the job waits for it, a little longer each time (at most `OUTAGE_BACKOFF_MAX_S`),
    with a warning rather than a trace every second."""
    outages = 0
    while True:
        try:
            await job.run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not database_unavailable(exc):
                outages = 0
                log.exception("background job %s crashed; restarting", job.name)
                await asyncio.sleep(1.0)
                continue
            outages += 1
            delay = min(OUTAGE_BACKOFF_MAX_S, 0.5 * 2 ** min(outages - 1, 6))
            log.warning(
                "background job %s: database unavailable (%s); starting again in %.1fs",
                job.name,
                type(exc).__name__,
                delay,
            )
            await asyncio.sleep(delay)


def run_worker(app: faust.App, *, log_level: str = "info") -> None:
    """Run the faust worker in this process (blocks until stopped)."""
    install_scrubbing()
    sys.argv = [f"{app.conf.id}-worker", "--quiet", "worker", "--without-web", "-l", log_level.lower()]
    app.main()
