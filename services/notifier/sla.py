"""The deadline watch: announces every delivery whose deadline passed undelivered (S2)."""

from __future__ import annotations

import logging

from sqlalchemy import select

from services.notifier.models import Delivery
from services.notifier.outcomes import outcome_fields, shown
from shared import correlation
from shared.clock import Clock, as_utc
from shared.db import Database
from shared.events import DeliverySlaBreached
from shared.messaging import Outbox
from shared.metrics import SLA_BREACHES

log = logging.getLogger(__name__)


class SlaWatch:
    """Announces every delivery whose deadline passed undelivered, once (S2: 2 hours).

    The mark lives in the database, so a restarted worker neither forgets nor repeats it.
    """

    def __init__(self, *, db: Database, outbox: Outbox, clock: Clock) -> None:
        self._db = db
        self._outbox = outbox
        self._clock = clock

    async def check(self) -> int:
        now = self._clock.now()
        async with self._db.transaction() as session:
            late = list(
                await session.scalars(
                    select(Delivery).where(
                        Delivery.status != "delivered",
                        Delivery.deliver_by.is_not(None),
                        Delivery.deliver_by < now,
                        Delivery.sla_breached_at.is_(None),
                    )
                )
            )
            for delivery in late:
                delivery.sla_breached_at = now
                assert delivery.deliver_by is not None
                with correlation.correlated(delivery.correlation_id):  # the letter's chain
                    await self._outbox.add(
                        session,
                        DeliverySlaBreached(
                            **outcome_fields(delivery),
                            deliver_by=as_utc(delivery.deliver_by),
                            detected_at=now,
                        ),
                    )
                    log.error(
                        "delivery deadline breached: %s to %s %s was due %s and is %s",
                        delivery.kind,
                        delivery.channel,
                        shown(delivery),
                        as_utc(delivery.deliver_by).isoformat(),
                        delivery.status,
                    )
        for delivery in late:  # counted once the mark is committed, so never twice
            SLA_BREACHES.labels(delivery.kind).inc()
        return len(late)
