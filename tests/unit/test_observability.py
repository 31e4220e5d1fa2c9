"""A worker's metrics server and its gauges, the consumer's outcome counter and the correlation id
from a consumed event to the events and log lines its handler makes (docs/operations.md)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import MetaData, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.onboarding.config import OnboardingSettings
from shared import correlation
from shared.clock import FrozenClock
from shared.db import Database
from shared.envelope import Envelope, encode, new_event_id
from shared.events import AccountRef, CustomerRegistered
from shared.logs import JsonFormatter
from shared.messaging import ConsumedMessage, IdempotentConsumer, MessagingTables, Outbox
from shared.metrics import CONSUMER_LAG, REGISTRY
from shared.observability import ConsumerLag, WorkerMetricsServer
from tests.support.dead_letters import NoDeadLetters
from tests.support.ports import free_ports

AT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
TOKEN = "a-long-metrics-token-for-the-scraper"


# --- the worker's /metrics and /healthz ---------------------------------------------------------


@pytest.fixture
def worker_settings(tmp_path: Path):
    def make(**overrides: Any) -> OnboardingSettings:
        values: dict[str, Any] = {
            "var_dir": tmp_path,
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'o.db'}",
            "worker_metrics_port": free_ports(1)[0],
        }
        return OnboardingSettings(**{**values, **overrides})

    return make


async def served(settings: OnboardingSettings, *requests: tuple[str, dict[str, str]], alive: bool = True):
    server = WorkerMetricsServer(settings, alive=lambda: alive)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.worker_metrics_port}") as http:
            return [await http.get(path, headers=headers) for path, headers in requests]
    finally:
        await server.stop()


async def test_a_worker_serves_the_domain_metrics_and_its_health_on_its_metrics_port(worker_settings) -> None:
    metrics, health = await served(worker_settings(), ("/metrics", {}), ("/healthz", {}))
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE adgang_consumer_lag_messages gauge" in metrics.text
    assert "process_open_fds" in metrics.text
    assert health.status_code == 200 and health.json() == {"status": "ok", "service": "onboarding"}


async def test_a_starting_worker_is_not_healthy_yet(worker_settings) -> None:
    [health] = await served(worker_settings(), ("/healthz", {}), alive=False)
    assert health.status_code == 503 and health.json()["status"] == "starting"


@pytest.mark.parametrize("environment", ["development", "production"])
async def test_with_a_token_a_workers_metrics_answer_only_the_right_bearer(worker_settings, environment) -> None:
    settings = worker_settings(environment=environment, metrics_token=SecretStr(TOKEN))
    answers = await served(
        settings,
        ("/metrics", {}),
        ("/metrics", {"Authorization": "Bearer wrong-token"}),
        ("/metrics", {"Authorization": f"Bearer {TOKEN}x"}),
        ("/metrics", {"Authorization": f"Basic {TOKEN}"}),
        ("/metrics", {"Authorization": f"Bearer {TOKEN}"}),
        ("/healthz", {}),
    )
    assert [a.status_code for a in answers] == [401, 401, 401, 401, 200, 200]
    refused = answers[0]
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["status"] == 401 and "Bearer" in refused.json()["detail"]
    assert refused.headers["www-authenticate"].startswith("Bearer")


async def test_in_production_without_a_token_a_worker_serves_no_metrics(worker_settings) -> None:
    metrics, health = await served(worker_settings(environment="production"), ("/metrics", {}), ("/healthz", {}))
    assert metrics.status_code == 404
    assert health.status_code == 200


async def test_a_workers_own_errors_are_problem_json_like_the_apis(worker_settings) -> None:
    """No such path, a path without metrics in production, a method the path does not take:
    problem+json naming the status and the path, as every API answers (they were plain text)."""
    server = WorkerMetricsServer(worker_settings(environment="production"))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server._settings.worker_metrics_port}") as http:  # noqa: SLF001
            answers = [
                await http.get("/no-such-path"),
                await http.get("/metrics"),
                await http.post("/healthz"),
            ]
    finally:
        await server.stop()
    kinds = ["not-found", "not-found", "method-not-allowed"]
    for answer, status, kind in zip(answers, [404, 404, 405], kinds, strict=True):
        assert answer.status_code == status
        assert answer.headers["content-type"].startswith("application/problem+json"), answer.text
        body = answer.json()
        assert body["status"] == status and body["type"].endswith("/" + kind)
        assert body["instance"] == answer.request.url.path
    assert "GET" in answers[2].headers["allow"]


async def test_without_a_metrics_port_a_worker_listens_nowhere(worker_settings) -> None:
    server = WorkerMetricsServer(worker_settings(worker_metrics_port=None))
    await server.start()
    assert server._runner is None  # noqa: SLF001 - nothing was started
    await server.stop()


# --- consumer lag -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


class ConsumerStandIn:
    """What `ConsumerLag` reads of faust's consumer: its assignment, the partitions' high
    watermarks, the committed offsets (faust's `_committed_offset`) and positions."""

    def __init__(self) -> None:
        self.assigned: set[TP] = set()
        self.ends: dict[TP, int] = {}
        self._committed_offset: dict[TP, int | None] = {}
        self.positions: dict[TP, int] = {}

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    async def highwaters(self, *partitions: TP) -> dict[TP, int]:
        return {tp: self.ends[tp] for tp in partitions}

    async def position(self, tp: TP) -> int | None:
        return self.positions.get(tp)


def lag_of(consumer: str, topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value(
        "adgang_consumer_lag_messages", {"consumer": consumer, "topic": topic, "partition": str(partition)}
    )


async def test_consumer_lag_is_the_high_watermark_minus_the_committed_offset_per_assigned_partition() -> None:
    stand_in = ConsumerStandIn()
    app = type("App", (), {"consumer": stand_in})()
    lag = ConsumerLag(app, {"lagtest.a": "svc:lagtest.a"})
    a0, a1, other = TP("lagtest.a", 0), TP("lagtest.a", 1), TP("lagtest.unconsumed", 0)
    stand_in.assigned = {a0, a1, other}
    stand_in.ends = {a0: 120, a1: 7, other: 99}
    stand_in._committed_offset = {a0: 100, a1: None}
    stand_in.positions = {a1: 5}  # nothing committed yet on a1: its position stands in

    assert await lag.refresh() == {("lagtest.a", 0): 20, ("lagtest.a", 1): 2}
    assert lag_of("svc:lagtest.a", "lagtest.a", 0) == 20
    assert lag_of("svc:lagtest.a", "lagtest.a", 1) == 2

    # A rebalance takes partition 1 away: another instance reports it now.
    stand_in.assigned = {a0}
    stand_in._committed_offset[a0] = 120
    await lag.refresh()
    assert lag_of("svc:lagtest.a", "lagtest.a", 0) == 0
    assert lag_of("svc:lagtest.a", "lagtest.a", 1) is None
    CONSUMER_LAG.remove("svc:lagtest.a", "lagtest.a", "0")


# --- the consumer's outcomes and the correlation id ---------------------------------------------


@pytest.fixture
async def messaging_db(tmp_path: Path) -> AsyncIterator[tuple[Database, MessagingTables]]:
    metadata = MetaData()
    tables = MessagingTables.define(metadata)
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield db, tables
    await db.dispose()


def customer_message(headers: tuple[tuple[str, bytes], ...] = ()) -> tuple[str, ConsumedMessage]:
    event = CustomerRegistered(
        cvr="35657193", name="Eksempel ApS", accounts=[AccountRef(account_number="12345678", name="K")], registered_at=AT
    )
    event_id = new_event_id()
    record = encode(event, event_id=event_id, time=AT)
    message = ConsumedMessage(
        topic=record.topic, key=record.key, value=record.value, headers=[*record.headers, *headers]
    )
    return event_id, message


def consumed(consumer: str, outcome: str) -> float:
    return REGISTRY.get_sample_value(
        "adgang_consumed_messages_total", {"consumer": consumer, "outcome": outcome}
    ) or 0.0


async def test_an_event_a_handler_adds_carries_the_consumed_events_correlation_id_and_names_it_as_cause(
    messaging_db: tuple[Database, MessagingTables],
) -> None:
    db, tables = messaging_db
    clock = FrozenClock(AT)
    outbox = Outbox(tables, clock)
    buffer = io.StringIO()
    handler_log = logging.getLogger("tests.observability.handler")
    stream = logging.StreamHandler(buffer)
    stream.setFormatter(JsonFormatter())
    handler_log.addHandler(stream)
    handler_log.setLevel(logging.INFO)

    async def handle(session: AsyncSession, envelope: Envelope[CustomerRegistered]) -> None:
        handler_log.info("handling %s", envelope.event.cvr)
        await outbox.add(session, envelope.event)

    name = "obs-test:billing.customers"
    consumer = IdempotentConsumer(
        name=name,
        db=db,
        tables=tables,
        handlers={CustomerRegistered: handle},
        dead_letters=NoDeadLetters(),
        clock=clock,
    )
    handled_before, duplicate_before = consumed(name, "handled"), consumed(name, "duplicate")
    chained_id, chained = customer_message(((correlation.CORRELATION_HEADER, b"request-42"),))
    unchained_id, unchained = customer_message()
    try:
        assert await consumer.process(chained) == "handled"
        assert await consumer.process(chained) == "duplicate"
        assert await consumer.process(unchained) == "handled"
    finally:
        handler_log.removeHandler(stream)

    assert consumed(name, "handled") - handled_before == 2
    assert consumed(name, "duplicate") - duplicate_before == 1
    async with db.transaction() as session:
        rows = (await session.execute(select(tables.outbox.c.headers).order_by(tables.outbox.c.seq))).scalars()
        added = [dict(json.loads(headers)) for headers in rows]
    assert [(h["ce_correlationid"], h["ce_causationid"]) for h in added] == [
        ("request-42", chained_id),
        (unchained_id, unchained_id),  # no chain yet: the consumed event starts one
    ]
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert [line["correlation_id"] for line in lines] == ["request-42", unchained_id]
    assert correlation.current() is None  # nothing leaks past the handler


async def test_an_event_added_outside_any_request_or_handler_starts_its_own_chain(
    messaging_db: tuple[Database, MessagingTables],
) -> None:
    db, tables = messaging_db
    event = CustomerRegistered(cvr="35657193", name="E", accounts=[], registered_at=AT)
    async with db.transaction() as session:
        event_id = await Outbox(tables, FrozenClock(AT)).add(session, event)
        with correlation.correlated("a-request"):
            in_request = await Outbox(tables, FrozenClock(AT)).add(session, event)
    async with db.transaction() as session:
        rows = (await session.execute(select(tables.outbox.c.event_id, tables.outbox.c.headers))).all()
    headers = {row.event_id: dict(json.loads(row.headers)) for row in rows}
    assert headers[event_id]["ce_correlationid"] == event_id and "ce_causationid" not in headers[event_id]
    assert headers[in_request]["ce_correlationid"] == "a-request"


def test_a_log_line_outside_any_chain_says_so() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "started", None, None)
    assert json.loads(JsonFormatter().format(record))["correlation_id"] is None
    with correlation.correlated("abc-1"):
        assert json.loads(JsonFormatter().format(record))["correlation_id"] == "abc-1"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("7c9e6679-7425-40de-944b-e07fc1f90ae7", True),
        ("req:42.a_b", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("", False),
        ("two words", False),
        ("-leading-dash", False),
        ("line\nbreak", False),
        ("quote\"", False),
    ],
)
def test_only_a_short_plain_correlation_id_is_taken_from_outside(given: str, kept: bool) -> None:
    assert (correlation.well_formed(given) == given) is kept
    headers = [("ce_id", b"evt-1"), (correlation.CORRELATION_HEADER, given.encode())]
    assert correlation.from_headers(headers) == ((given if kept else "evt-1"), "evt-1")


def test_the_portal_passes_its_requests_correlation_id_on_to_the_services() -> None:
    from services.portal.clients.http import Caller

    assert correlation.HEADER not in Caller(address="192.0.2.1").headers()
    with correlation.correlated("browser-request-1"):
        assert Caller(address="192.0.2.1").headers()[correlation.HEADER] == "browser-request-1"


async def test_a_metrics_port_already_taken_stops_the_worker_with_a_clear_error(worker_settings) -> None:
    settings = worker_settings()
    first = WorkerMetricsServer(settings)
    await first.start()
    try:
        with pytest.raises(OSError, match=f"cannot serve /metrics on 127.0.0.1:{settings.worker_metrics_port}"):
            await WorkerMetricsServer(settings).start()
    finally:
        await first.stop()
