"""The notifier's delivery metrics (latency per channel from the event's time, outcomes, SLA
breaches), the outbox gauges and the relay's published counter, on the database under test; and
the letter's correlation id carried from the event that asked for it to its outcome event."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from services.notifier.eboks import SpoolTransport
from services.notifier.models import messaging
from services.notifier.sla import SlaWatch
from shared import correlation
from shared.clock import FrozenClock
from shared.db import Database
from shared.messaging import Outbox, OutboxRelay
from shared.metrics import REGISTRY
from shared.observability import CountingPublisher, OutboxGauges
from tests.integration.test_notifier_dispatch import FlakyEboks, credentials_envelope, dispatcher, record


@pytest.fixture
def database_url(notifier_url: str) -> str:
    return notifier_url


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def outcome_headers(db: Database) -> list[dict[str, str]]:
    async with db.transaction() as session:
        rows = (await session.execute(select(messaging.outbox.c.headers).order_by(messaging.outbox.c.seq))).scalars()
        return [dict(json.loads(headers)) for headers in rows]


async def test_a_delivery_counts_its_retry_and_its_success_and_its_latency_from_the_events_time(
    db: Database, clock: FrozenClock, sealer, tmp_path: Path
) -> None:
    before = {
        outcome: sample("adgang_deliveries_total", channel="eboks", outcome=outcome)
        for outcome in ("retry", "delivered")
    }
    latency_count = sample("adgang_delivery_latency_seconds_count", channel="eboks")
    latency_sum = sample("adgang_delivery_latency_seconds_sum", channel="eboks")
    envelope = credentials_envelope(sealer, clock)  # the event's time is now
    clock.advance(timedelta(seconds=3))  # it reached the notifier 3 s later
    with correlation.correlated("application-7", envelope.id):  # as the consumer runs the recorder
        await record(db, clock, envelope)
    sender = dispatcher(db, clock, sealer, FlakyEboks(SpoolTransport(tmp_path), failures=1))

    assert await sender.dispatch_due() == 1
    clock.advance(timedelta(seconds=2))
    assert await sender.dispatch_due() == 1

    assert sample("adgang_deliveries_total", channel="eboks", outcome="retry") - before["retry"] == 1
    assert sample("adgang_deliveries_total", channel="eboks", outcome="delivered") - before["delivered"] == 1
    assert sample("adgang_delivery_latency_seconds_count", channel="eboks") - latency_count == 1
    assert sample("adgang_delivery_latency_seconds_sum", channel="eboks") - latency_sum == pytest.approx(5.0)
    [succeeded] = await outcome_headers(db)
    assert succeeded["ce_type"].endswith(".DeliverySucceeded.v1")
    assert succeeded["ce_correlationid"] == "application-7"  # the application's chain goes on


async def test_a_delivery_given_up_counts_as_failed_and_a_missed_deadline_once(
    db: Database, clock: FrozenClock, sealer, tmp_path: Path
) -> None:
    failed = sample("adgang_deliveries_total", channel="eboks", outcome="failed")
    breaches = sample("adgang_sla_breaches_total", kind="credentials_letter")
    with correlation.correlated("application-8"):
        await record(db, clock, credentials_envelope(sealer, clock))
    sender = dispatcher(db, clock, sealer, FlakyEboks(SpoolTransport(tmp_path), failures=100), max_attempts=2)
    await sender.dispatch_due()
    clock.advance(timedelta(hours=2, minutes=1))
    watch = SlaWatch(db=db, outbox=Outbox(messaging, clock), clock=clock)
    assert await watch.check() == 1
    assert await watch.check() == 0
    await sender.dispatch_due()

    assert sample("adgang_sla_breaches_total", kind="credentials_letter") - breaches == 1
    assert sample("adgang_deliveries_total", channel="eboks", outcome="failed") - failed == 1
    headers = await outcome_headers(db)
    assert [h["ce_type"].split(".")[-2] for h in headers] == ["DeliverySlaBreached", "DeliveryFailed"]
    assert {h["ce_correlationid"] for h in headers} == {"application-8"}


class Broker:
    def __init__(self) -> None:
        self.published: list[object] = []

    async def publish(self, records: list[object]) -> None:
        self.published.extend(records)


async def test_the_outbox_gauges_show_the_backlog_and_its_oldest_age_until_the_relay_publishes_it(
    db: Database, clock: FrozenClock, sealer
) -> None:
    gauges = OutboxGauges(db, messaging.outbox, "notifier-test", clock)
    assert await gauges.refresh() == (0, 0.0)
    outbox = Outbox(messaging, clock)
    envelope = credentials_envelope(sealer, clock)
    async with db.transaction() as session:
        await outbox.add(session, envelope.event)
    clock.advance(timedelta(seconds=30))
    async with db.transaction() as session:
        await outbox.add(session, envelope.event)
    clock.advance(timedelta(seconds=12))

    assert await gauges.refresh() == (2, 42.0)
    assert sample("adgang_outbox_backlog_events", service="notifier-test") == 2
    assert sample("adgang_outbox_oldest_age_seconds", service="notifier-test") == 42.0

    published = sample("adgang_outbox_published_total", service="notifier-test")
    broker = Broker()
    relay = OutboxRelay(db, messaging, CountingPublisher(broker, "notifier-test"), clock)
    assert await relay.run_once() == 2
    assert len(broker.published) == 2
    assert sample("adgang_outbox_published_total", service="notifier-test") - published == 2
    assert await gauges.refresh() == (0, 0.0)
    assert sample("adgang_outbox_oldest_age_seconds", service="notifier-test") == 0.0
