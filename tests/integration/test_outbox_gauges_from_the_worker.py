"""Who measures a service's outbox (docs/operations.md, "Metrics"): its worker, which relays the
outbox, refreshes `adgang_outbox_backlog_events` and `adgang_outbox_oldest_age_seconds` and
serves them on `worker_metrics_port`; its API runs no outbox query at all, so a service does not
read the same backlog twice every few seconds (once more per API instance).

Both run in this test's process on the database under test. The worker is onboarding's own
faust app, its start-up task run without faust; its broker address answers nothing, so its
start-up waits for the broker and its relay never runs: the rows the test writes stay in the
outbox, and only the gauges' refresh can make its /metrics show them. The refresh interval is
made short for the test (`REFRESH_INTERVAL_S`, read at each turn), for the API as well had it
one."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event
from sqlalchemy.engine import Engine

from services.onboarding.api import create_api
from services.onboarding.config import OnboardingSettings
from services.onboarding.models import messaging
from services.onboarding.worker import create_worker
from shared import observability
from shared.clock import SystemClock
from shared.db import Database
from shared.events.onboarding import ApplicationFailed
from shared.kafka import KafkaPublisher
from shared.messaging import Outbox
from tests.support.asgi import AppTransport
from tests.support.ports import free_ports
from tests.support.waiting import wait_until_async


@pytest.fixture
def settings(onboarding_url: str, tmp_path: Path) -> OnboardingSettings:
    metrics_port, silent_broker = free_ports(2)  # nothing listens on the broker's port
    return OnboardingSettings(
        database_url=onboarding_url,
        var_dir=tmp_path,
        worker_metrics_port=metrics_port,
        kafka_bootstrap_servers=f"127.0.0.1:{silent_broker}",
    )


@pytest.fixture
def statements() -> Iterator[list[tuple[Engine, str]]]:
    """Every SQL statement any engine of this process sends, with the engine that sent it."""
    seen: list[tuple[Engine, str]] = []

    def record(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append((conn.engine, statement))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


@contextlib.asynccontextmanager
async def worker_started(settings: OnboardingSettings) -> AsyncIterator[None]:
    """Onboarding's worker start-up task (metrics server, gauges, then waiting for the broker)."""
    app = create_worker(settings)
    [start] = app._app_tasks  # noqa: SLF001 - the worker's one start-up task
    task = asyncio.create_task(start.__wrapped__())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled(), "the worker's start-up ended by itself"


async def worker_backlog(http: httpx.AsyncClient) -> float | None:
    """The worker's `adgang_outbox_backlog_events` for onboarding, None before it has one."""
    try:
        text = (await http.get("/metrics")).text
    except httpx.ConnectError:
        return None  # its metrics server is starting
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "adgang_outbox_backlog_events" and sample.labels == {"service": "onboarding"}:
                return sample.value
    return None


async def add_outbox_row(db: Database) -> None:
    """One event queued as onboarding queues its events (`Outbox.add`): a failed application."""
    clock = SystemClock()
    failed = ApplicationFailed(
        application_id=uuid.uuid4(), cvr="35657193", reason="deadline-missed", failed_at=clock.now()
    )
    async with db.transaction() as session:
        await Outbox(messaging, clock).add(session, failed)


async def test_the_worker_measures_the_outbox_and_the_api_runs_no_outbox_query(
    settings: OnboardingSettings, statements: list[tuple[Engine, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(observability, "REFRESH_INTERVAL_S", 0.1)  # the test waits less for each turn
    api = create_api(settings)
    api_db: Database = api.state.parts.db
    readers = api_db._readers.kw.get("bind", api_db.engine)  # noqa: SLF001 - SQLite reads apart
    api_engines = {api_db.engine.sync_engine, readers.sync_engine}
    writer = Database(settings.database_url)
    metrics_url = f"http://127.0.0.1:{settings.worker_metrics_port}"
    async with (
        httpx.AsyncClient(transport=AppTransport(app=api), base_url="http://onboarding") as api_http,
        httpx.AsyncClient(base_url=metrics_url, timeout=10) as worker_http,
    ):
        assert (await api_http.get("/healthz")).status_code == 200  # the API has started
        async with worker_started(settings):

            async def backlog_is(expected: float) -> bool:
                return await worker_backlog(worker_http) == expected

            # The worker's gauge follows the outbox: one refresh after each row is written.
            async def measured() -> list[float] | None:
                backlog = await worker_backlog(worker_http)
                return None if backlog is None else [backlog]  # 0 rows is a measurement too

            [first] = await wait_until_async(
                measured, deadline_s=30, what="the worker's first outbox refresh"
            )
            for added in (1, 2):
                await add_outbox_row(writer)
                await wait_until_async(
                    lambda added=added: backlog_is(first + added),
                    deadline_s=30,
                    what=f"the worker's gauge to show {first + added:.0f} unpublished rows",
                )

            # Meanwhile the API, up all along, used its database (a readiness check) but never
            # read the outbox.
            assert (await api_http.get("/readyz")).json()["checks"]["database"] == "ok"
    await writer.dispose()
    by_api = [statement for engine, statement in statements if engine in api_engines]
    assert by_api, "the API's statements are seen"
    assert not [s for s in by_api if "outbox" in s.lower()], by_api
    by_others = [statement for engine, statement in statements if engine not in api_engines]
    assert [s for s in by_others if "outbox" in s.lower() and s.lstrip().lower().startswith("select")]


async def test_a_worker_whose_publisher_fails_to_stop_still_stops_its_gauges_and_metrics_server(
    settings: OnboardingSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shutting down (here: cancelled while waiting for the broker), a publisher that fails to
    stop must not leave the worker's gauge refreshers running and its metrics port open."""

    async def failing_stop(_: KafkaPublisher) -> None:
        raise RuntimeError("the producer could not be closed")

    monkeypatch.setattr(KafkaPublisher, "stop", failing_stop)
    app = create_worker(settings)
    [start] = app._app_tasks  # noqa: SLF001 - the worker's one start-up task
    task = asyncio.create_task(start.__wrapped__())
    metrics_url = f"http://127.0.0.1:{settings.worker_metrics_port}/healthz"
    async with httpx.AsyncClient(timeout=5) as http:

        async def serving() -> bool:
            with contextlib.suppress(httpx.ConnectError):
                return (await http.get(metrics_url)).status_code in (200, 503)
            return False

        await wait_until_async(serving, deadline_s=30, what="the worker's metrics server")
        task.cancel()
        with pytest.raises(RuntimeError, match="could not be closed"):
            await task
        with pytest.raises(httpx.ConnectError):
            await http.get(metrics_url)
    refreshers = [t for t in asyncio.all_tasks() if "refresh_forever" in repr(t.get_coro())]
    if refreshers:  # cancelled ones end at their next turn of the loop
        await asyncio.wait(refreshers, timeout=10)
    assert all(t.done() for t in refreshers), refreshers
