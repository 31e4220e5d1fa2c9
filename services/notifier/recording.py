"""Recording what to deliver: the worker's handler of every event a kind of message answers.

A delivery is recorded in the consumer's transaction (inbox), then attempted by the dispatcher
(`dispatch.py`), so a slow or failing mailbox never blocks the topic. Which deliveries an event
asks for is each kind's `plan` (`kinds/`); the recorder adds those it has not recorded before.

Each delivery's message id is derived from its source id (the source event's id, or one derived
from it per recipient): the spool writes a letter's messageUUID once, so a redelivered event or a
retry after a crash never puts a second letter in the company's e-Boks; a mail keeps the same
Message-ID and an SMS the same gateway reference.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier.kinds import KINDS, AnyKind, Planned
from services.notifier.memo import message_uuid_for
from services.notifier.models import Delivery
from shared import correlation
from shared.clock import Clock
from shared.db import upsert_statement
from shared.envelope import Envelope
from shared.events import Event
from shared.messaging import wrote

# What the recorder writes (`shared.messaging.wrote`): the worker wakes the dispatcher after a
# consumer's commit that recorded a delivery, and not after the others (the directory's).
DELIVERIES = "deliveries"


class Recorder:
    """Records the deliveries the kinds plan for an event (`record`, the handler of each event
    in `events`)."""

    def __init__(self, clock: Clock, kinds: Iterable[type[AnyKind]] = KINDS) -> None:
        self._clock = clock
        self._kinds: dict[type[Event], list[type[AnyKind]]] = {}
        for kind in kinds:
            for event in kind.events:
                self._kinds.setdefault(event, []).append(kind)

    @property
    def events(self) -> tuple[type[Event], ...]:
        """The events some kind answers: those `record` handles."""
        return tuple(self._kinds)

    async def record(self, session: AsyncSession, envelope: Envelope[Event]) -> None:
        """The handler of each of `events`: every delivery the event's kinds plan, pending, in the
        consumer's transaction; one whose source id is already recorded is not added again."""
        for kind in self._kinds[type(envelope.event)]:
            for planned in await kind.plan(session, envelope):
                await self._add(session, envelope, planned)

    async def _add(self, session: AsyncSession, envelope: Envelope[Event], planned: Planned) -> None:
        """One statement: a source id already recorded (a redelivered event) adds nothing."""
        source_event_id = planned.source_event_id or envelope.id
        now = self._clock.now()
        await session.execute(
            upsert_statement(session, Delivery.__table__)
            .values(
                id=str(uuid.uuid4()),
                source_event_id=source_event_id,
                source_event_type=envelope.type,
                source_payload=envelope.event.model_dump_json(),
                message_id=str(message_uuid_for(source_event_id)),
                kind=planned.kind,
                channel=planned.channel,
                recipient=planned.recipient,
                recipient_name=planned.recipient_name,
                recipient_language=planned.recipient_language,
                application_id=planned.application_id,
                deliver_by=planned.deliver_by,
                expires_at=planned.expires_at,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                source_event_time=envelope.time,
                correlation_id=correlation.current(),
            )
            .on_conflict_do_nothing(index_elements=["source_event_id"])
        )
        wrote(session, DELIVERIES)
