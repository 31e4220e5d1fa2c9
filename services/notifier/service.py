"""Notifier's use cases: record what to deliver, deliver it with retries, watch the deadline.

A delivery is recorded in the consumer's transaction (inbox), then attempted by the dispatcher,
so a slow or failing mailbox never blocks the topic. The letter's messageUUID is derived from
the source event, and the spool writes a messageUUID once, so a redelivered event or a retry
after a crash never puts a second letter in the company's e-Boks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier.letters import letter_label, render_credentials_letter
from services.notifier.memo import build_memo_message, message_uuid_for
from services.notifier.models import Delivery
from services.notifier.transports import (
    DeliveryError,
    EboksTransport,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from shared.clock import Clock, as_utc
from shared.db import Database
from shared.envelope import Envelope
from shared.events import CredentialsIssued, DeliveryFailed, DeliverySlaBreached, DeliverySucceeded
from shared.messaging import Outbox
from shared.sealing import Sealer, SealingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_s: float
    max_s: float

    def delay(self, attempts: int) -> timedelta:
        """Exponential backoff with full jitter after `attempts` failed attempts."""
        ceiling = min(self.max_s, self.base_s * 2 ** (attempts - 1))
        return timedelta(seconds=random.uniform(ceiling / 2, ceiling))


@dataclass(frozen=True)
class Sender:
    cvr: str
    name: str
    portal_url: str


async def record_credentials(session: AsyncSession, envelope: Envelope, clock: Clock) -> None:
    """Handler for `CredentialsIssued`: one pending e-Boks delivery per event (S2)."""
    event = envelope.event
    assert isinstance(event, CredentialsIssued)
    if await session.scalar(select(Delivery.id).where(Delivery.source_event_id == envelope.id)) is not None:
        return
    now = clock.now()
    session.add(
        Delivery(
            id=str(uuid.uuid4()),
            source_event_id=envelope.id,
            source_event_type=envelope.type,
            source_payload=event.model_dump_json(),
            application_id=str(event.application_id) if event.application_id else None,
            channel="eboks",
            recipient=event.recipient_cvr,
            kind="credentials_letter",
            message_id=str(message_uuid_for(envelope.id)),
            status="pending",
            attempts=0,
            next_attempt_at=now,
            deliver_by=event.deliver_by,
            created_at=now,
        )
    )


class Dispatcher:
    def __init__(
        self,
        *,
        db: Database,
        outbox: Outbox,
        clock: Clock,
        sealer: Sealer,
        eboks: EboksTransport,
        sender: Sender,
        retry: RetryPolicy,
        lease: timedelta,
        concurrency: int = 8,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self._clock = clock
        self._sealer = sealer
        self._eboks = eboks
        self._sender = sender
        self._retry = retry
        self._lease = lease
        self._concurrency = concurrency
        self.wake = asyncio.Event()

    async def run_forever(self, interval: float) -> None:
        while True:
            handled = await self.dispatch_due()
            if handled == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=interval)
                self.wake.clear()

    async def dispatch_due(self) -> int:
        # Claim no more than can be sent at once, so a lease never runs out while a claimed
        # letter waits its turn.
        claimed = await self._claim(self._concurrency)
        await asyncio.gather(*(self._attempt(delivery) for delivery in claimed))
        return len(claimed)

    async def _claim(self, batch: int) -> list[Delivery]:
        now = self._clock.now()
        async with self._db.transaction() as session:
            query = (
                select(Delivery)
                .where(
                    Delivery.status == "pending",
                    Delivery.next_attempt_at <= now,
                    or_(Delivery.lease_until.is_(None), Delivery.lease_until < now),
                )
                .order_by(Delivery.next_attempt_at)
                .limit(batch)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            deliveries = list(await session.scalars(query))
            for delivery in deliveries:
                delivery.lease_until = now + self._lease
            return deliveries

    async def _attempt(self, delivery: Delivery) -> None:
        try:
            location = await self._send(delivery)
        except TransientDeliveryError as exc:
            await self._failed_attempt(delivery, str(exc), permanent=False)
        except (PermanentDeliveryError, SealingError, ValueError) as exc:
            await self._failed_attempt(delivery, f"{type(exc).__name__}: {exc}", permanent=True)
        except DeliveryError as exc:
            await self._failed_attempt(delivery, str(exc), permanent=False)
        except Exception as exc:  # a bug or an outage must still count as an attempt
            log.exception("delivery %s attempt failed unexpectedly", delivery.id)
            await self._failed_attempt(delivery, f"unexpected {type(exc).__name__}", permanent=False)
        else:
            await self._succeeded(delivery, location)

    async def _send(self, delivery: Delivery) -> str:
        event = CredentialsIssued.model_validate_json(delivery.source_payload)
        code = self._sealer.unseal(
            event.activation_code, context=CredentialsIssued.sealing_context(event.user_id)
        )
        letter = render_credentials_letter(
            language=event.language,
            company_name=event.company_name,
            cvr=event.recipient_cvr,
            username=event.username,
            activation_code=code,
            expires_at=event.expires_at,
            portal_url=self._sender.portal_url,
        )
        message_uuid = uuid.UUID(delivery.message_id)
        document = build_memo_message(
            message_uuid=message_uuid,
            label=letter_label(event.language),
            sender_cvr=self._sender.cvr,
            sender_label=self._sender.name,
            recipient_cvr=event.recipient_cvr,
            created_at=as_utc(delivery.created_at),
            document_label=letter_label(event.language),
            filename=f"adgang-{event.username}.txt",
            language=event.language,
            content=letter.encode(),
        )
        receipt = await self._eboks.deliver(
            recipient_cvr=event.recipient_cvr, message_uuid=message_uuid, document=document
        )
        if receipt.already_delivered:
            log.info("letter %s was already in e-Boks; not written again", message_uuid)
        return receipt.location

    async def _succeeded(self, delivery: Delivery, location: str) -> None:
        now = self._clock.now()
        async with self._db.transaction() as session:
            current = await session.get(Delivery, delivery.id, with_for_update=True)
            assert current is not None
            if current.status == "delivered":
                return
            current.status = "delivered"
            current.attempts += 1
            current.delivered_at = now
            current.location = location
            current.lease_until = None
            current.last_error = None
            await self._outbox.add(
                session,
                DeliverySucceeded(
                    **_outcome_fields(current),
                    delivered_at=now,
                ),
            )
        log.info(
            "delivered %s to %s %s (attempt %d)",
            current.kind,
            current.channel,
            current.recipient,
            current.attempts,
        )

    async def _failed_attempt(self, delivery: Delivery, reason: str, *, permanent: bool) -> None:
        now = self._clock.now()
        async with self._db.transaction() as session:
            current = await session.get(Delivery, delivery.id, with_for_update=True)
            assert current is not None
            if current.status != "pending":
                return
            current.attempts += 1
            current.last_error = reason[:1000]
            current.lease_until = None
            if permanent or current.attempts >= self._retry.max_attempts:
                current.status = "failed"
                current.failed_at = now
                await self._outbox.add(
                    session,
                    DeliveryFailed(**_outcome_fields(current), reason=reason[:500], failed_at=now),
                )
                log.error(
                    "delivery %s failed for good after %d attempts: %s",
                    current.id,
                    current.attempts,
                    reason,
                )
            else:
                current.next_attempt_at = now + self._retry.delay(current.attempts)
                log.warning(
                    "delivery %s attempt %d failed, next at %s: %s",
                    current.id,
                    current.attempts,
                    current.next_attempt_at.isoformat(),
                    reason,
                )


def _outcome_fields(delivery: Delivery) -> dict[str, object]:
    return {
        "delivery_id": uuid.UUID(delivery.id),
        "source_event_id": delivery.source_event_id,
        "source_event_type": delivery.source_event_type,
        "application_id": uuid.UUID(delivery.application_id) if delivery.application_id else None,
        "channel": delivery.channel,
        "recipient": delivery.recipient,
        "message_id": delivery.message_id,
        "attempts": delivery.attempts,
    }


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
                await self._outbox.add(
                    session,
                    DeliverySlaBreached(
                        **_outcome_fields(delivery),
                        deliver_by=as_utc(delivery.deliver_by),
                        detected_at=now,
                    ),
                )
                log.error(
                    "delivery deadline breached: %s to %s %s was due %s and is %s",
                    delivery.kind,
                    delivery.channel,
                    delivery.recipient,
                    as_utc(delivery.deliver_by).isoformat(),
                    delivery.status,
                )
        return len(late)
