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
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

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


class Claims(Protocol):
    """The dispatcher's slots, as the recorder claims a delivery in the transaction that
    records it (`services.notifier.dispatch.Dispatcher.reserve` and `release`)."""

    def reserve(self, channel: str) -> timedelta | None: ...

    def release(self, reserved: int, claimed: Iterable[Delivery] = ()) -> None: ...


@dataclass
class _Claimed:
    """What one transaction of the recorder claimed: the slots it reserved, and the deliveries
    it recorded with a lease. Its end gives them to the dispatcher: the deliveries only if it
    committed."""

    claims: Claims
    transaction: SessionTransaction
    reserved: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    committed: bool = False
    ended: bool = False

    def on_commit(self, _session: Session) -> None:
        self.committed = True

    def on_end(self, _session: Session, transaction: SessionTransaction) -> None:
        if transaction is not self.transaction or self.ended:
            return
        self.ended = True
        self.claims.release(self.reserved, self.deliveries if self.committed else ())

_CLAIMED = "notifier.claimed"


class Recorder:
    """Records the deliveries the kinds plan for an event (`record`, the handler of each event
    in `events`)."""

    def __init__(
        self, clock: Clock, kinds: Iterable[type[AnyKind]] = KINDS, *, claims: Claims | None = None
    ) -> None:
        self._clock = clock
        # The worker's dispatcher: a delivery recorded while it has a free slot is claimed in the
        # recording transaction and attempted after its commit, with no claim of its own.
        self._claims = claims
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
        """One statement: a source id already recorded (a redelivered event) adds nothing. With a
        slot of the dispatcher free, the delivery is recorded claimed (its lease set) and handed
        to the dispatcher once the transaction has committed; otherwise the commit wakes the
        dispatcher, which claims it."""
        source_event_id = planned.source_event_id or envelope.id
        now = self._clock.now()
        values: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "source_event_id": source_event_id,
            "source_event_type": envelope.type,
            "source_payload": envelope.event.model_dump_json(),
            "message_id": str(message_uuid_for(source_event_id)),
            "kind": planned.kind,
            "channel": planned.channel,
            "recipient": planned.recipient,
            "recipient_name": planned.recipient_name,
            "recipient_language": planned.recipient_language,
            "application_id": planned.application_id,
            "deliver_by": planned.deliver_by,
            "expires_at": planned.expires_at,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "source_event_time": envelope.time,
            "correlation_id": correlation.current(),
        }
        # Reserved last, right before the statement whose failure gives it back: nothing
        # in between can fail and keep the slot from the dispatcher for good.
        lease = self._claims.reserve(planned.channel) if self._claims is not None else None
        values["lease_until"] = None if lease is None else now + lease
        try:
            inserted = await session.scalar(
                upsert_statement(session, Delivery.__table__)
                .values(**values)
                .on_conflict_do_nothing(index_elements=["source_event_id"])
                .returning(Delivery.__table__.c.id)
            )
        except BaseException:
            if lease is not None and self._claims is not None:
                self._claims.release(1)
            raise
        if lease is None:
            if inserted is not None:
                wrote(session, DELIVERIES)
            return
        assert self._claims is not None
        if inserted is None:
            self._claims.release(1)  # recorded before: nothing to claim
            return
        claimed = self._claimed(session, self._claims)
        claimed.reserved += 1
        claimed.deliveries.append(Delivery(**values))

    @staticmethod
    def _claimed(session: AsyncSession, claims: Claims) -> _Claimed:
        """The claims of the session's transaction, given to the dispatcher when it ends."""
        sync_session = session.sync_session
        transaction = sync_session.get_transaction()
        assert transaction is not None  # a handler runs in the consumer's transaction
        while transaction.parent is not None:
            transaction = transaction.parent
        claimed: _Claimed | None = sync_session.info.get(_CLAIMED)
        if claimed is None or claimed.transaction is not transaction:
            claimed = _Claimed(claims, transaction)
            sync_session.info[_CLAIMED] = claimed
            sa_event.listen(sync_session, "after_commit", claimed.on_commit)
            sa_event.listen(sync_session, "after_transaction_end", claimed.on_end)
        return claimed
