"""Notifier's use cases: record what to deliver, deliver it with retries, watch the deadline.

A delivery is recorded in the consumer's transaction (inbox), then attempted by the dispatcher,
so a slow or failing mailbox never blocks the topic. Its message id is derived from the source
event: the spool writes a letter's messageUUID once, so a redelivered event or a retry after a
crash never puts a second letter in the company's e-Boks; a mail keeps the same Message-ID and
an SMS the same gateway reference.

Letters have a deadline (`deliver_by`, S2), watched by `SlaWatch`. One-time codes have an
expiry instead: a code not delivered by then is useless, so its delivery fails.

Billing's events name a company or a user id, not an address: their emails (S8, S9) are
addressed through the recipient directory (`directory.py`) when they are recorded.

An issued invoice's document is delivered as the event's `delivery` says (S10): a PDF by
email, an OIOUBL or Peppol e-invoice, or a PDF to the print spool; one delivery per invoice
whatever its announcements say, its source id derived from the invoice id alone
(`invoice_document_id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.headerregistry import Address
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier.directory import ACTIVE, find_orderer, invoice_recipients
from services.notifier.documents import BillingDocuments
from services.notifier.invoice_transports import EinvoiceTransport, PrintSpool
from services.notifier.kinds import (
    CODE_KINDS,
    CredentialsLetter,
    DeliveryKind,
    EmailTransport,
    InvoiceDocumentDelivery,
    InvoiceDocumentEmail,
    InvoiceReady,
    LoginEmail,
    MobileChangedNotice,
    OneTimeCodeMessage,
    OrderConfirmation,
    SecurityNotice,
    Sender,
    SmsTransport,
    TakeoverCompletedNotice,
    TakeoverNotice,
)
from services.notifier.memo import message_uuid_for
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
from shared.events import (
    CredentialChanged,
    CredentialsIssued,
    DeliveryFailed,
    DeliverySlaBreached,
    DeliverySucceeded,
    InvoiceIssued,
    LoginCreated,
    OtpRequested,
    SubscriptionOrdered,
    SubscriptionUpgraded,
    TakeoverCompleted,
    TakeoverNoticeIssued,
)
from shared.logs import mask_contact
from shared.messaging import Outbox
from shared.sealing import Sealer, SealingError

__all__ = [
    "Dispatcher",
    "RetryPolicy",
    "Sender",
    "SlaWatch",
    "record_code",
    "record_credentials",
    "record_invoice_document",
    "record_invoice_issued",
    "record_invoice_ready",
    "record_order_confirmation",
]

log = logging.getLogger(__name__)

EXPIRED = "expired before delivery"

# Names the delivery of one event to one of several people (an invoice, S8).
PER_RECIPIENT_NAMESPACE = uuid.UUID("6f1c3a52-8d0e-4b7a-9c55-2e4f8a7d1b93")
# Names the delivery of an invoice's document (S10): one per invoice and kind.
INVOICE_DOCUMENT_NAMESPACE = uuid.UUID("b0d7e3a4-51c2-4f96-8e1b-7a3c9d245f60")

# How an invoice's document travels, by the format the account chose (S10): kind and channel.
INVOICE_DOCUMENT_KINDS: dict[str, tuple[str, str]] = {
    "pdf_email": ("invoice_pdf_email", "email"),
    "oioubl": ("invoice_oioubl", "einvoice"),
    "peppol": ("invoice_peppol", "einvoice"),
    "paper": ("invoice_paper", "print"),
}


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_s: float
    max_s: float

    def delay(self, attempts: int) -> timedelta:
        """Exponential backoff with full jitter after `attempts` failed attempts."""
        ceiling = min(self.max_s, self.base_s * 2 ** (attempts - 1))
        return timedelta(seconds=random.uniform(ceiling / 2, ceiling))


async def record_credentials(session: AsyncSession, envelope: Envelope, clock: Clock) -> None:
    """Handler for `CredentialsIssued`: one pending e-Boks delivery per event (S2)."""
    event = envelope.event
    assert isinstance(event, CredentialsIssued)
    await _record(
        session,
        envelope,
        clock,
        kind="credentials_letter",
        channel="eboks",
        recipient=event.recipient_cvr,
        application_id=str(event.application_id) if event.application_id else None,
        deliver_by=event.deliver_by,
    )


async def record_login_created(session: AsyncSession, envelope: Envelope, clock: Clock) -> None:
    """Handler for `LoginCreated`: email the colleague their username and code (S6)."""
    event = envelope.event
    assert isinstance(event, LoginCreated)
    await _record(
        session, envelope, clock, kind="login_email", channel="email", recipient=event.recipient_email
    )


async def record_credential_changed(session: AsyncSession, envelope: Envelope, clock: Clock) -> None:
    """Handler for `CredentialChanged`: an email notice to the user (S7); when the mobile number
    changed, an SMS to the number the login had as well (its own source id, so a redelivered
    event adds neither twice)."""
    event = envelope.event
    assert isinstance(event, CredentialChanged)
    await _record(session, envelope, clock, kind="security_notice", channel="email", recipient=event.email)
    if event.change == "contact_details_changed" and event.old_mobile:
        await _record(
            session,
            envelope,
            clock,
            source_event_id=per_recipient_event_id(envelope.id, "old-mobile"),
            kind="mobile_changed_sms",
            channel="sms",
            recipient=event.old_mobile,
            recipient_name=event.name,
        )


async def record_code(session: AsyncSession, envelope: Envelope, clock: Clock) -> None:
    """Handler for `OtpRequested`: one pending SMS or email delivery per event, until the code
    expires (S7). There is no `deliver_by`: a code is late exactly when it has expired."""
    event = envelope.event
    assert isinstance(event, OtpRequested)
    await _record(
        session,
        envelope,
        clock,
        kind=CODE_KINDS[event.purpose],
        channel=event.channel,
        recipient=event.recipient,
        expires_at=event.expires_at,
    )


async def record_order_confirmation(session: AsyncSession, envelope: Envelope, clock: Clock) -> None:
    """Handler for `SubscriptionOrdered` and `SubscriptionUpgraded`: email the person who
    ordered a confirmation (S9), at the address the directory has for them now.

    An orderer the directory has not heard of yet raises `UnknownRecipient`, so the consumer
    tries the event again (and in the end dead-letters it); a disabled or deleted login is
    sent nothing."""
    event = envelope.event
    assert isinstance(event, (SubscriptionOrdered, SubscriptionUpgraded))
    orderer = await find_orderer(session, event.ordered_by)
    if orderer.status != ACTIVE:
        log.info("order %s: its orderer's login is %s; no confirmation", event.order_id, orderer.status)
        return
    await _record(
        session,
        envelope,
        clock,
        kind="order_confirmation",
        channel="email",
        recipient=orderer.email,
        recipient_name=orderer.name,
        recipient_language=orderer.language,
    )


async def record_invoice_ready(session: AsyncSession, envelope: Envelope, clock: Clock) -> None:
    """Handler for `InvoiceIssued`: one email to each active user with the `invoices` function
    whose grants cover the invoice's account (S8). Each delivery's source id is derived from
    the event and the user, so a redelivered event finds its deliveries and adds none."""
    event = envelope.event
    assert isinstance(event, InvoiceIssued)
    for recipient in await invoice_recipients(session, cvr=event.cvr, account_number=event.account_number):
        await _record(
            session,
            envelope,
            clock,
            source_event_id=per_recipient_event_id(envelope.id, recipient.user_id),
            kind="invoice_ready",
            channel="email",
            recipient=recipient.email,
            recipient_name=recipient.name,
            recipient_language=recipient.language,
        )


async def record_invoice_document(session: AsyncSession, envelope: Envelope, clock: Clock) -> None:
    """Handler for `InvoiceIssued` with a `delivery`: one delivery of the invoice's document
    as the account chose when the invoice was issued (S10; the event carries that choice, so a
    format changed later applies from the next invoice). Its source id is derived from the
    invoice id alone, so a redelivered event, or the same invoice announced again (with any
    delivery), adds none. An invoice without `delivery` (issued before documents were delivered) gets
    only the `invoice_ready` emails."""
    event = envelope.event
    assert isinstance(event, InvoiceIssued)
    if event.delivery is None:
        return
    kind, channel = INVOICE_DOCUMENT_KINDS[event.delivery.format]
    recipient = invoice_document_recipient(event)
    source_event_id = invoice_document_id(event.invoice_id)
    # An issued invoice's delivery never changes (billing keeps it in the invoice's snapshot):
    # an announcement of it with another one is a mistake or a forgery, and following it would
    # send the company's invoice to whoever it names. Its first delivery stands.
    first = (
        await session.execute(
            select(Delivery.kind, Delivery.recipient).where(Delivery.source_event_id == source_event_id)
        )
    ).first()
    if first is not None and tuple(first) != (kind, recipient):
        log.warning(
            "invoice %s was announced again with another delivery (%s to %s); its document is "
            "delivered once, as first announced (%s to %s)",
            event.invoice_id,
            kind,
            recipient,
            first.kind,
            first.recipient,
        )
        return
    await _record(
        session,
        envelope,
        clock,
        source_event_id=source_event_id,
        kind=kind,
        channel=channel,
        recipient=recipient,
        recipient_name=event.company_name,
        recipient_language=event.language,
    )


async def record_invoice_issued(session: AsyncSession, envelope: Envelope, clock: Clock) -> None:
    """Handler for `InvoiceIssued`: the emails to the users who may see it (S8) and the
    document as the account chose (S10), in one transaction."""
    await record_invoice_ready(session, envelope, clock)
    await record_invoice_document(session, envelope, clock)


def invoice_document_id(invoice_id: uuid.UUID) -> str:
    """The source id of the delivery of an invoice's document: one per invoice, however it is
    announced (the database's unique source id keeps racing announcements to one)."""
    return str(uuid.uuid5(INVOICE_DOCUMENT_NAMESPACE, f"{invoice_id}/document"))


def invoice_document_recipient(event: InvoiceIssued) -> str:
    """Where the document goes: the email address, the GLN, the Peppol participant
    `<scheme>:<id>`, or for paper the company's CVR number. The company's CVR number when the
    delivery lacks what its format needs; the delivery then fails with the reason."""
    delivery = event.delivery
    assert delivery is not None
    if delivery.format == "pdf_email" and delivery.email:
        return delivery.email
    if delivery.format == "oioubl" and delivery.gln:
        return delivery.gln
    if delivery.format == "peppol" and delivery.peppol_scheme and delivery.peppol_id:
        return f"{delivery.peppol_scheme}:{delivery.peppol_id}"
    return event.cvr


async def record_takeover_notice(session: AsyncSession, envelope: Envelope, clock: Clock) -> None:
    """Handler for `TakeoverNoticeIssued`: an email and an SMS to the administrator, each with
    the link that cancels the takeover."""
    event = envelope.event
    assert isinstance(event, TakeoverNoticeIssued)
    for channel, recipient in (("email", event.email), ("sms", event.mobile)):
        await _record(
            session,
            envelope,
            clock,
            source_event_id=per_recipient_event_id(envelope.id, channel),
            kind="takeover_notice",
            channel=channel,
            recipient=recipient,
            recipient_name=event.name,
        )


async def record_takeover_completed(session: AsyncSession, envelope: Envelope, clock: Clock) -> None:
    """Handler for `TakeoverCompleted`: an email to each former administrator it disabled."""
    event = envelope.event
    assert isinstance(event, TakeoverCompleted)
    for former in event.disabled:
        await _record(
            session,
            envelope,
            clock,
            source_event_id=per_recipient_event_id(envelope.id, str(former.user_id)),
            kind="takeover_completed",
            channel="email",
            recipient=former.email,
            recipient_name=former.name,
        )


def per_recipient_event_id(event_id: str, user_id: str) -> str:
    """The source id of the delivery of one event to one user: the same for a redelivery."""
    return str(uuid.uuid5(PER_RECIPIENT_NAMESPACE, f"{event_id}/{user_id}"))


async def _record(
    session: AsyncSession,
    envelope: Envelope,
    clock: Clock,
    *,
    source_event_id: str | None = None,
    **fields: Any,
) -> None:
    """A pending delivery of the event, unless one with its source id exists: by default the
    event's own id, one delivery per event."""
    source_event_id = source_event_id or envelope.id
    existing = select(Delivery.id).where(Delivery.source_event_id == source_event_id)
    if await session.scalar(existing) is not None:
        return
    now = clock.now()
    session.add(
        Delivery(
            id=str(uuid.uuid4()),
            source_event_id=source_event_id,
            source_event_type=envelope.type,
            source_payload=envelope.event.model_dump_json(),
            message_id=str(message_uuid_for(source_event_id)),
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            **fields,
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
        lease: timedelta | Mapping[str, timedelta],
        email: EmailTransport | None = None,
        email_from: Address | None = None,
        sms: SmsTransport | None = None,
        documents: BillingDocuments | None = None,
        einvoice: EinvoiceTransport | None = None,
        printer: PrintSpool | None = None,
        concurrency: int = 8,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self._clock = clock
        codes = OneTimeCodeMessage(sealer=sealer, email=email, email_from=email_from, sms=sms)
        self._kinds: dict[str, DeliveryKind] = {
            "credentials_letter": CredentialsLetter(sealer=sealer, eboks=eboks, sender=sender),
            **{kind: codes for kind in CODE_KINDS.values()},
            "security_notice": SecurityNotice(email=email, email_from=email_from),
            "mobile_changed_sms": MobileChangedNotice(sms=sms),
            "login_email": LoginEmail(
                sealer=sealer, email=email, email_from=email_from, portal_url=sender.portal_url
            ),
            "order_confirmation": OrderConfirmation(
                email=email, email_from=email_from, portal_url=sender.portal_url
            ),
            "invoice_ready": InvoiceReady(email=email, email_from=email_from, portal_url=sender.portal_url),
            "takeover_notice": TakeoverNotice(
                sealer=sealer, email=email, email_from=email_from, sms=sms, portal_url=sender.portal_url
            ),
            "takeover_completed": TakeoverCompletedNotice(email=email, email_from=email_from),
            "invoice_pdf_email": InvoiceDocumentEmail(
                documents=documents, email=email, email_from=email_from, sender=sender
            ),
            **dict.fromkeys(
                ("invoice_oioubl", "invoice_peppol", "invoice_paper"),
                InvoiceDocumentDelivery(documents=documents, einvoice=einvoice, printer=printer),
            ),
        }
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
        """Give up the codes that expired undelivered, then attempt what is due; how many of
        either there were."""
        # Claim no more than can be sent at once, so a lease never runs out while a claimed
        # message waits its turn.
        expired, claimed = await self._claim(self._concurrency)
        await asyncio.gather(*(self._attempt(delivery) for delivery in claimed))
        return expired + len(claimed)

    async def _claim(self, batch: int) -> tuple[int, list[Delivery]]:
        now = self._clock.now()
        not_leased = or_(Delivery.lease_until.is_(None), Delivery.lease_until < now)
        async with self._db.transaction() as session:
            # On PostgreSQL several workers claim at once; each skips the rows another holds.
            lock = session.get_bind().dialect.name == "postgresql"
            expired_query = select(Delivery).where(
                Delivery.status == "pending",
                Delivery.expires_at.is_not(None),
                Delivery.expires_at <= now,
                not_leased,  # one being attempted right now is settled by its attempt
            )
            if lock:
                expired_query = expired_query.with_for_update(skip_locked=True)
            expired = list(await session.scalars(expired_query))
            for delivery in expired:
                await self._give_up(session, delivery, EXPIRED, now)
            query = (
                select(Delivery)
                .where(Delivery.status == "pending", Delivery.next_attempt_at <= now, not_leased)
                .order_by(Delivery.next_attempt_at)
                .limit(batch)
            )
            if lock:
                query = query.with_for_update(skip_locked=True)
            deliveries = list(await session.scalars(query))
            for delivery in deliveries:
                lease = self._lease if isinstance(self._lease, timedelta) else self._lease[delivery.channel]
                delivery.lease_until = now + lease
            return len(expired), deliveries

    async def _attempt(self, delivery: Delivery) -> None:
        if delivery.expires_at is not None and as_utc(delivery.expires_at) <= self._clock.now():
            await self._failed_attempt(delivery, EXPIRED, permanent=True, attempted=False)
            return
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
        kind = self._kinds.get(delivery.kind)
        if kind is None:
            raise PermanentDeliveryError(f"no way to send a {delivery.kind!r}")
        return await kind.send(delivery)

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
            _shown(current),
            current.attempts,
        )

    async def _failed_attempt(
        self, delivery: Delivery, reason: str, *, permanent: bool, attempted: bool = True
    ) -> None:
        now = self._clock.now()
        async with self._db.transaction() as session:
            current = await session.get(Delivery, delivery.id, with_for_update=True)
            assert current is not None
            if current.status != "pending":
                return
            if attempted:
                current.attempts += 1
            if permanent or current.attempts >= self._retry.max_attempts:
                await self._give_up(session, current, reason, now)
            else:
                current.last_error = reason[:1000]
                current.lease_until = None
                current.next_attempt_at = now + self._retry.delay(current.attempts)
                log.warning(
                    "delivery %s attempt %d failed, next at %s: %s",
                    current.id,
                    current.attempts,
                    current.next_attempt_at.isoformat(),
                    _masked_in(current, reason),
                )

    async def _give_up(self, session: AsyncSession, delivery: Delivery, reason: str, now: datetime) -> None:
        delivery.status = "failed"
        delivery.failed_at = now
        delivery.last_error = reason[:1000]
        delivery.lease_until = None
        await self._outbox.add(
            session,
            DeliveryFailed(**_outcome_fields(delivery), reason=reason[:500], failed_at=now),
        )
        log.error(
            "delivery %s (%s by %s) failed for good after %d attempts: %s",
            delivery.id,
            delivery.kind,
            delivery.channel,
            delivery.attempts,
            _masked_in(delivery, reason),
        )


# Whose recipients are public (a CVR number in the CVR register; a GLN or Peppol participant
# in the e-invoicing registries), and so are logged as they are, so an operator can follow them.
_PUBLIC_RECIPIENTS = frozenset({"eboks", "einvoice", "print"})


def _shown(delivery: Delivery) -> str:
    """The recipient as logs show it: an email address or a mobile number masked
    (`shared.logs.mask_contact`); a company's CVR number or e-invoice endpoint as it is."""
    return delivery.recipient if delivery.channel in _PUBLIC_RECIPIENTS else mask_contact(delivery.recipient)


def _masked_in(delivery: Delivery, text: str) -> str:
    """`text`, a reason for a failure, with the recipient masked: mail servers and gateways
    quote the address or number they refused, the gateway without the `+`."""
    if delivery.channel in _PUBLIC_RECIPIENTS:
        return text
    shown = mask_contact(delivery.recipient)
    for written in dict.fromkeys((delivery.recipient, delivery.recipient.removeprefix("+"))):
        text = re.sub(re.escape(written), shown, text, flags=re.IGNORECASE)
    return text


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
                    _shown(delivery),
                    as_utc(delivery.deliver_by).isoformat(),
                    delivery.status,
                )
        return len(late)
