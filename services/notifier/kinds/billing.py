"""The kinds of message about billing's events: the confirmation of an order (S9), the email
that an invoice is issued (S8), and the invoice's document as the account chose (S10).

Billing's events name a company or a user id, not an address: their emails are addressed
through the recipient directory (`directory.py`) when they are recorded.

An issued invoice's document is delivered as the event's `delivery` says (S10): a PDF by
email, an OIOUBL or Peppol e-invoice, or a PDF to the print spool; one delivery per invoice
whatever its announcements say, its source id derived from the invoice id alone
(`invoice_document_id`).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from email.headerregistry import Address
from typing import Self

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier.directory import ACTIVE, find_orderer, invoice_recipients
from services.notifier.documents import BillingDocuments
from services.notifier.email import Attachment
from services.notifier.invoice_transports import EinvoiceTransport, PrintSpool
from services.notifier.kinds.base import (
    EmailTransport,
    Kind,
    Outlets,
    Planned,
    PortalEmail,
    Sender,
    TemplatedEmail,
    per_recipient_event_id,
)
from services.notifier.letters import DEFAULT_LANGUAGE, format_amount, format_day
from services.notifier.models import Delivery
from services.notifier.transport_base import PermanentDeliveryError
from shared.envelope import Envelope
from shared.events import Channel, InvoiceIssued, SubscriptionOrdered, SubscriptionUpgraded

log = logging.getLogger(__name__)

# Names the delivery of an invoice's document (S10): one per invoice and kind.
INVOICE_DOCUMENT_NAMESPACE = uuid.UUID("b0d7e3a4-51c2-4f96-8e1b-7a3c9d245f60")

# How an invoice's document travels, by the format the account chose (S10): kind and channel.
INVOICE_DOCUMENT_KINDS: dict[str, tuple[str, Channel]] = {
    "pdf_email": ("invoice_pdf_email", "email"),
    "oioubl": ("invoice_oioubl", "einvoice"),
    "peppol": ("invoice_peppol", "einvoice"),
    "paper": ("invoice_paper", "print"),
}


class OrderConfirmation(PortalEmail[SubscriptionOrdered | SubscriptionUpgraded]):
    """Confirms an order of a subscription, or an upgrade, to the person who placed it (S9).

    The address, name and language are the directory's when the order was recorded
    (`recipient`, `recipient_name`, `recipient_language`: the user's own choice in identity).
    """

    events = (SubscriptionOrdered, SubscriptionUpgraded)
    names = ("order_confirmation",)

    @classmethod
    async def plan(
        cls, session: AsyncSession, envelope: Envelope[SubscriptionOrdered | SubscriptionUpgraded]
    ) -> Sequence[Planned]:
        """The person who ordered, at the address the directory has for them now. An orderer the
        directory has not heard of yet raises `UnknownRecipient`, so the consumer tries the event
        again (and in the end dead-letters it); a disabled or deleted login is sent nothing."""
        event = envelope.event
        orderer = await find_orderer(session, event.ordered_by)
        if orderer.status != ACTIVE:
            log.info("order %s: its orderer's login is %s; no confirmation", event.order_id, orderer.status)
            return []
        return [
            Planned(
                kind="order_confirmation",
                channel="email",
                recipient=orderer.email,
                recipient_name=orderer.name,
                recipient_language=orderer.language,
            )
        ]

    async def send(self, delivery: Delivery) -> str:
        language = delivery.recipient_language or DEFAULT_LANGUAGE
        if delivery.source_event_type == SubscriptionUpgraded.TYPE:
            upgrade = SubscriptionUpgraded.model_validate_json(delivery.source_payload)
            change, product, identifier = "upgraded", upgrade.to_product_name, upgrade.identifier
            order_id, account_number, fee = upgrade.order_id, upgrade.account_number, upgrade.monthly_fee_ore
        else:
            order = SubscriptionOrdered.model_validate_json(delivery.source_payload)
            change, product, identifier = "ordered", order.product_name, ""
            order_id, account_number, fee = order.order_id, order.account_number, order.monthly_fee_ore
        return await self.send_email(
            delivery,
            template="order_confirmation",
            language=language,
            to=delivery.recipient,
            context={
                "name": delivery.recipient_name or "",
                "change": change,
                "product": product,
                "identifier": identifier,
                "account_number": account_number,
                "monthly_fee": format_amount(fee, language=language),
                "order_id": str(order_id),
                "portal_url": self._portal_url,
            },
        )


class InvoiceReady(PortalEmail[InvoiceIssued]):
    """Tells a user with the `invoices` function that an invoice for an account they may see
    is issued and can be seen in the portal (S8). In the recipient's language, like
    `OrderConfirmation`."""

    events = (InvoiceIssued,)
    names = ("invoice_ready",)

    @classmethod
    async def plan(cls, session: AsyncSession, envelope: Envelope[InvoiceIssued]) -> Sequence[Planned]:
        """One email to each active user with the `invoices` function whose grants cover the
        invoice's account. Each delivery's source id is derived from the event and the user, so
        a redelivered event finds its deliveries and adds none."""
        event = envelope.event
        return [
            Planned(
                source_event_id=per_recipient_event_id(envelope.id, recipient.user_id),
                kind="invoice_ready",
                channel="email",
                recipient=recipient.email,
                recipient_name=recipient.name,
                recipient_language=recipient.language,
            )
            for recipient in await invoice_recipients(
                session, cvr=event.cvr, account_number=event.account_number
            )
        ]

    async def send(self, delivery: Delivery) -> str:
        invoice = InvoiceIssued.model_validate_json(delivery.source_payload)
        language = delivery.recipient_language or DEFAULT_LANGUAGE
        return await self.send_email(
            delivery,
            template="invoice_ready",
            language=language,
            to=delivery.recipient,
            context={
                "name": delivery.recipient_name or "",
                **invoice_context(invoice, language=language, portal_url=self._portal_url),
            },
        )


def invoice_context(invoice: InvoiceIssued, *, language: str, portal_url: str) -> dict[str, str]:
    """What an email about an invoice says of it, written in `language`."""
    return {
        "company_name": invoice.company_name,
        "cvr": invoice.cvr,
        "account_number": invoice.account_number,
        "invoice_number": invoice.invoice_number,
        "period_start": format_day(invoice.period_start, language=language),
        "period_end": format_day(invoice.period_end, language=language),
        "amount": format_amount(invoice.amount_incl_vat_ore, language=language),
        "due": format_day(invoice.due_on, language=language),
        "portal_url": portal_url,
    }


def invoice_filename(invoice: InvoiceIssued) -> str:
    """The attached PDF's name: `faktura-<number>.pdf` (`invoice-…` in English)."""
    number = re.sub(r"[^A-Za-z0-9-]+", "-", invoice.invoice_number).strip("-") or str(invoice.invoice_id)
    return f"{'faktura' if invoice.language == 'da' else 'invoice'}-{number}.pdf"


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


async def plan_invoice_document(
    session: AsyncSession, envelope: Envelope[InvoiceIssued], names: tuple[str, ...]
) -> Sequence[Planned]:
    """The delivery of the invoice's document, if its kind is one of `names`: as the account
    chose when the invoice was issued (the event carries that choice, so a format changed later
    applies from the next invoice). Its source id is derived from the invoice id alone, so a
    redelivered event, or the same invoice announced again (with any delivery), adds none. An
    invoice without `delivery` (issued before documents were delivered) gets only the
    `invoice_ready` emails."""
    event = envelope.event
    if event.delivery is None:
        return []
    kind, channel = INVOICE_DOCUMENT_KINDS[event.delivery.format]
    if kind not in names:
        return []
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
        return []
    return [
        Planned(
            source_event_id=source_event_id,
            kind=kind,
            channel=channel,
            recipient=recipient,
            recipient_name=event.company_name,
            recipient_language=event.language,
        )
    ]


class InvoiceDocumentEmail(TemplatedEmail[InvoiceIssued]):
    """The invoice's PDF, attached to an email to the address the company chose for it
    (format `pdf_email`, S10), in the company's language. The PDF is billing's (`documents.py`)."""

    events = (InvoiceIssued,)
    names = ("invoice_pdf_email",)

    @classmethod
    async def plan(cls, session: AsyncSession, envelope: Envelope[InvoiceIssued]) -> Sequence[Planned]:
        return await plan_invoice_document(session, envelope, cls.names)

    @classmethod
    def of(cls, outlets: Outlets) -> Self:
        return cls(
            documents=outlets.documents,
            email=outlets.email,
            email_from=outlets.email_from,
            sender=outlets.sender,
        )

    def __init__(
        self,
        *,
        documents: BillingDocuments | None,
        email: EmailTransport | None,
        email_from: Address | None,
        sender: Sender,
    ) -> None:
        super().__init__(email=email, email_from=email_from)
        self._documents = documents
        self._sender = sender

    async def send(self, delivery: Delivery) -> str:
        invoice = InvoiceIssued.model_validate_json(delivery.source_payload)
        if invoice.delivery is None or not invoice.delivery.email:
            raise PermanentDeliveryError("the invoice's delivery names no email address for its PDF")
        if self._documents is None:
            raise PermanentDeliveryError("no billing to fetch invoice documents from is configured")
        pdf = await self._documents.fetch(invoice.invoice_id, "pdf")
        filename = invoice_filename(invoice)
        return await self.send_email(
            delivery,
            template="invoice_document",
            language=invoice.language,
            to=invoice.delivery.email,
            context={
                **invoice_context(invoice, language=invoice.language, portal_url=self._sender.portal_url),
                "seller": self._sender.name,
                "filename": filename,
            },
            attachments=(Attachment(filename=filename, content=pdf),),
        )


class InvoiceDocumentDelivery(Kind[InvoiceIssued]):
    """The invoice's document handed over as the company chose (S10): an OIOUBL or Peppol
    e-invoice to the buyer's endpoint through the e-invoice transport, or a PDF to the print
    spool for paper. The delivery's recipient is the endpoint (`<gln>`, `<scheme>:<id>`) or,
    for paper, the company's CVR number."""

    events = (InvoiceIssued,)
    names = ("invoice_oioubl", "invoice_peppol", "invoice_paper")

    @classmethod
    async def plan(cls, session: AsyncSession, envelope: Envelope[InvoiceIssued]) -> Sequence[Planned]:
        return await plan_invoice_document(session, envelope, cls.names)

    @classmethod
    def of(cls, outlets: Outlets) -> Self:
        return cls(documents=outlets.documents, einvoice=outlets.einvoice, printer=outlets.printer)

    def __init__(
        self,
        *,
        documents: BillingDocuments | None,
        einvoice: EinvoiceTransport | None,
        printer: PrintSpool | None,
    ) -> None:
        self._documents = documents
        self._einvoice = einvoice
        self._printer = printer

    async def send(self, delivery: Delivery) -> str:
        invoice = InvoiceIssued.model_validate_json(delivery.source_payload)
        if invoice.delivery is None:
            raise PermanentDeliveryError("the invoice names no way to deliver its document")
        if self._documents is None:
            raise PermanentDeliveryError("no billing to fetch invoice documents from is configured")
        chosen = invoice.delivery.format
        if chosen in ("oioubl", "peppol"):
            if self._einvoice is None:
                raise PermanentDeliveryError("no e-invoice transport is configured")
            document = await self._documents.fetch(invoice.invoice_id, chosen)
            receipt = await self._einvoice.deliver(
                format=chosen, endpoint=delivery.recipient, invoice_id=invoice.invoice_id, document=document
            )
        elif chosen == "paper":
            if self._printer is None:
                raise PermanentDeliveryError("no print spool is configured")
            document = await self._documents.fetch(invoice.invoice_id, "pdf")
            receipt = await self._printer.deliver(invoice_id=invoice.invoice_id, document=document)
        else:
            raise PermanentDeliveryError(f"invoices as {chosen} are not delivered by this kind")
        if receipt.already_delivered:
            log.info("invoice %s was already delivered as %s; not again", invoice.invoice_id, chosen)
        return receipt.location
