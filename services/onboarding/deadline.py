"""The deadline watch: applications nobody progressed fail at their deadline (S2), so the
company may apply again. The worker runs it every `deadline_check_interval_s`."""

from __future__ import annotations

import logging

from sqlalchemy import select

from services.onboarding.domain import IN_FLIGHT, ApplicationStatus
from services.onboarding.models import Application
from services.onboarding.projections import application_failed
from shared.clock import Clock, as_utc
from shared.db import Database
from shared.messaging import Outbox

log = logging.getLogger(__name__)


class ApplicationDeadlineWatch:
    """Fails applications still in flight after `deliver_by` (S2: 2 hours), once.

    Identity never provisioned them (its worker was down for hours, or the event was
    dead-lettered), so no letter is on its way. Failing them says so, and lets the company
    apply again instead of being told forever that an application is in flight.
    """

    def __init__(self, *, db: Database, outbox: Outbox, clock: Clock) -> None:
        self._db = db
        self._outbox = outbox
        self._clock = clock

    async def check(self) -> int:
        now = self._clock.now()
        async with self._db.transaction() as session:
            overdue = list(
                await session.scalars(
                    select(Application).where(
                        Application.status.in_(list(IN_FLIGHT)), Application.deliver_by < now
                    )
                )
            )
            for application in overdue:
                application.status = ApplicationStatus.failed
                application.status_detail = (
                    "No login was issued before the deadline. Support has been alerted; the company "
                    "can apply again."
                )
                application.updated_at = now
                await self._outbox.add(session, application_failed(application, "deadline-missed", now))
                log.error(
                    "application %s for CVR %s missed its deadline %s without a letter",
                    application.id,
                    application.cvr,
                    as_utc(application.deliver_by).isoformat(),
                )
        return len(overdue)
