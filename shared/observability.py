"""What every process measures about itself and how its metrics are read (docs/operations.md,
"Metrics").

- `metrics_text`: the Prometheus text of a process, its own registries plus the domain metrics
  of `shared.metrics.REGISTRY`, behind the metrics token rule of docs/security.md.
- `OutboxGauges`: the outbox backlog and its oldest age, from one cheap query on the indexed
  `published_at` column, refreshed periodically by the worker of a service (which relays the
  outbox), not by its API: one query per worker instance, not one more per API instance.
- `ConsumerLag`: a worker's consumer lag per partition (the high watermark minus the committed
  offset), refreshed periodically from the faust consumer.
- `WorkerMetricsServer`: a worker's `/metrics` and `/healthz` on `worker_metrics_port`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import Table, func, select

from shared.clock import Clock, as_utc
from shared.db import Database
from shared.metrics import CONSUMER_LAG, OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE, OUTBOX_PUBLISHED, REGISTRY
from shared.problems import MEDIA_TYPE, Problem, Unauthenticated, http_problem
from shared.settings import ServiceSettings

if TYPE_CHECKING:  # aiohttp only in a worker that serves its metrics: not in an API (~7 MB)
    from aiohttp import web

log = logging.getLogger(__name__)

# How often the gauges that need a query (outbox, consumer lag) are refreshed. Prometheus scrapes
# every 15 s by default; a fresher value would not be seen, and the queries stay rare.
REFRESH_INTERVAL_S = 5.0
HOW_TO_AUTHENTICATE = (
    "Send the metrics token as 'Authorization: Bearer <token>' (the service's METRICS_TOKEN setting)."
)


def metrics_text(*registries: CollectorRegistry) -> bytes:
    """The exposition text of `registries` followed by the domain metrics (`REGISTRY`)."""
    return b"".join(generate_latest(registry) for registry in (*registries, REGISTRY))


def bearer_matches(authorization: str | None, expected: str) -> bool:
    """`Authorization: Bearer <expected>`, compared in constant time."""
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


class OutboxGauges:
    """`adgang_outbox_backlog_events` and `adgang_outbox_oldest_age_seconds` of one service.

    One query: the count and the oldest `created_at` of the rows whose `published_at` is null,
    which the index on `published_at` finds without reading the published rows."""

    def __init__(self, db: Database, outbox: Table, service: str, clock: Clock) -> None:
        self._db = db
        self._outbox = outbox
        self._service = service
        self._clock = clock

    async def refresh(self) -> tuple[int, float]:
        table = self._outbox
        async with self._db.reading() as session:  # on SQLite it takes no write lock
            backlog, oldest = (
                await session.execute(
                    select(func.count(), func.min(table.c.created_at)).where(table.c.published_at.is_(None))
                )
            ).one()
        age = max(0.0, (self._clock.now() - as_utc(oldest)).total_seconds()) if oldest is not None else 0.0
        OUTBOX_BACKLOG.labels(self._service).set(backlog)
        OUTBOX_OLDEST_AGE.labels(self._service).set(age)
        return int(backlog), age


class CountingPublisher:
    """The relay's publisher, counting the outbox rows that reached the broker
    (`adgang_outbox_published_total`): a batch counts once the broker acknowledged it."""

    def __init__(self, publisher: Any, service: str) -> None:
        self._publisher = publisher
        self._published = OUTBOX_PUBLISHED.labels(service)

    async def publish(self, records: list[Any]) -> None:
        await self._publisher.publish(records)
        self._published.inc(len(records))


class ConsumerLag:
    """`adgang_consumer_lag_messages{consumer,topic,partition}` of a faust worker's consumer.

    Lag is the partition's high watermark (the offset the next message will get) minus the
    consumer group's committed offset (the next message it will process after a restart):
    what this worker still has to do. The committed offset is faust's own record of it (read
    from the broker when the partition is assigned, moved at every commit); before anything was
    committed, the consumer's position stands in. Partitions this worker no longer holds after
    a rebalance are removed, so the instance that took them over reports them."""

    def __init__(self, app: Any, consumer_names: dict[str, str]) -> None:
        self._app = app
        self._names = consumer_names  # topic -> the idempotent consumer's name (<service>:<topic>)
        self._reported: set[tuple[str, str, str]] = set()

    async def refresh(self) -> dict[tuple[str, int], int]:
        from faust.exceptions import ConsumerNotStarted  # only workers measure lag

        consumer = self._app.consumer
        try:
            assignment = consumer.assignment()
        except ConsumerNotStarted:
            assignment = set()  # the worker is starting: nothing is assigned yet
        assigned = [tp for tp in assignment if tp.topic in self._names]
        lags: dict[tuple[str, int], int] = {}
        if assigned:
            highwaters = await consumer.highwaters(*assigned)
            committed = getattr(consumer, "_committed_offset", {})
            for tp in assigned:
                done = committed.get(tp)
                if done is None:
                    done = await consumer.position(tp)
                end = highwaters.get(tp)
                if end is None or done is None:
                    continue
                lags[(tp.topic, tp.partition)] = max(0, int(end) - int(done))
        reported = set()
        for (topic, partition), lag in lags.items():
            labels = (self._names[topic], topic, str(partition))
            CONSUMER_LAG.labels(*labels).set(lag)
            reported.add(labels)
        for gone in self._reported - reported:
            CONSUMER_LAG.remove(*gone)
        self._reported = reported
        return lags


async def refresh_forever(
    name: str, refresh: Callable[[], Awaitable[object]], interval_s: float | None = None
) -> None:
    """Refresh a gauge every `interval_s` (by default `REFRESH_INTERVAL_S`, read at each turn);
    a failure (the database away, a rebalance under way) is logged and the gauge keeps its last
    value until the next refresh succeeds."""
    failing = False
    while True:
        try:
            await refresh()
            failing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not failing:  # once per outage, not every few seconds
                log.warning("refreshing the %s metrics failed: %s", name, type(exc).__name__)
            failing = True
        await asyncio.sleep(REFRESH_INTERVAL_S if interval_s is None else interval_s)


async def _problems(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own errors (no such path, a method not taken) as problem+json, like the APIs'
    (a new-style middleware: `WorkerMetricsServer.application` marks it so)."""
    from aiohttp import web

    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return _problem_response(http_problem(exc.status, exc.reason, headers), request)


def _problem_response(problem: Problem, request: web.Request) -> web.Response:
    from aiohttp import web

    return web.json_response(
        problem.body(instance=request.path),
        status=problem.status,
        content_type=MEDIA_TYPE,
        headers=problem.headers,
    )


class WorkerMetricsServer:
    """A worker's `/metrics` (the domain metrics) and `/healthz` on `worker_metrics_port`.

    aiohttp, started inside the faust worker's own event loop: faust's web server is disabled
    (it would serve faust's own pages and settings), uvicorn installs signal handlers of its own
    that would take SIGTERM from faust's shutdown, and prometheus_client's server runs in a
    thread without the token check. aiohttp's runner is made for exactly this (no signal
    handling) and is already installed with faust. The token rule is the APIs' (docs/security.md):
    in production /metrics is served only with a metrics token, then only to a request bearing it.
    """

    def __init__(self, settings: ServiceSettings, *, alive: Callable[[], bool] | None = None) -> None:
        self._settings = settings
        self._alive = alive or (lambda: True)
        self._runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        from aiohttp import web

        app = web.Application(middlewares=[web.middleware(_problems)])
        app.router.add_get("/healthz", self._healthz)
        if self._settings.serves_metrics:
            app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self) -> None:
        port = self._settings.worker_metrics_port
        if port is None:
            return
        from aiohttp import web

        self._runner = web.AppRunner(self.application(), handle_signals=False, access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self._settings.http_host, port).start()
        except OSError as exc:
            await self.stop()
            raise OSError(
                exc.errno,
                f"the worker cannot serve /metrics on {self._settings.http_host}:{port} "
                f"(worker_metrics_port): {exc.strerror}",
            ) from exc
        log.info("%s worker serves /metrics on %s:%d", self._settings.service, self._settings.http_host, port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _: web.Request) -> web.Response:
        from aiohttp import web

        alive = self._alive()
        return web.json_response(
            {"status": "ok" if alive else "starting", "service": self._settings.service},
            status=200 if alive else 503,
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        token = self._settings.metrics_token
        if token is not None and not bearer_matches(request.headers.get("Authorization"), token.get_secret_value()):
            return _problem_response(Unauthenticated(HOW_TO_AUTHENTICATE), request)
        from aiohttp import web

        return web.Response(body=metrics_text(), headers={"Content-Type": CONTENT_TYPE_LATEST})
