"""The kinds of message the notifier delivers, each rendering and sending itself.

A kind reads its source event from the delivery (where it is kept as it came, codes sealed),
unseals what it must only now, renders the message for the delivery's channel and hands it
to that channel's transport. It answers where the message went, or raises a
`DeliveryError` (transient or permanent) for the dispatcher's bookkeeping.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Protocol

from services.notifier.codes import render_code_email, render_code_sms
from services.notifier.documents import BillingDocuments
from services.notifier.email import Attachment, EmailReceipt, build_email
from services.notifier.invoice_transports import EinvoiceTransport, PrintSpool
from services.notifier.letters import (
    DEFAULT_LANGUAGE,
    activation_link,
    cancel_link,
    format_amount,
    format_day,
    format_expiry,
    letter_label,
    render_credentials_letter,
    require_supported,
    templates,
)
from services.notifier.memo import build_memo_message
from services.notifier.models import Delivery
from services.notifier.sms import SmsReceipt
from services.notifier.transports import (
    DeliveryError,
    EboksTransport,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from shared.clock import as_utc
from shared.events import (
    CredentialChanged,
    CredentialsIssued,
    InvoiceIssued,
    LoginCreated,
    OtpRequested,
    SubscriptionOrdered,
    SubscriptionUpgraded,
    TakeoverCompleted,
    TakeoverNoticeIssued,
)
from shared.logs import forget_secret, mask_contact, register_secret
from shared.sealing import Sealer

log = logging.getLogger(__name__)

CODE_KINDS = {
    "login": "otp_login",
    "confirm_mobile": "otp_confirm_mobile",
    "confirm_email": "otp_confirm_email",
    "unlock_login": "otp_unlock_login",
    "reset_password": "otp_reset_password",
    "confirm_new_email": "otp_confirm_new_email",
    "confirm_new_mobile": "otp_confirm_new_mobile",
}


class DeliveryKind(Protocol):
    async def send(self, delivery: Delivery) -> str:
        """Render and send the delivery's message; where it went (a path, a URL, an id)."""
        ...


class EmailTransport(Protocol):
    async def send(self, message: EmailMessage) -> EmailReceipt: ...


class SmsTransport(Protocol):
    async def send(self, *, to: str, text: str, reference: str) -> SmsReceipt: ...


@dataclass(frozen=True)
class Sender:
    cvr: str
    name: str
    portal_url: str


class CredentialsLetter:
    """The letter with a company's first login, to its e-Boks (S2)."""

    def __init__(self, *, sealer: Sealer, eboks: EboksTransport, sender: Sender) -> None:
        self._sealer = sealer
        self._eboks = eboks
        self._sender = sender

    async def send(self, delivery: Delivery) -> str:
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
            applicant=event.applicant,
            takeover_usable_from=event.takeover_usable_from,
            takeover_notice_hours=event.takeover_notice_hours,
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


class OneTimeCodeMessage:
    """A one-time code by SMS or email, to log in, or to confirm a mobile number or an email (S7).

    The code is unsealed only here, just before sending, and is kept out of every log line and
    error message: a transport's error may quote the message it could not send.
    """

    def __init__(
        self,
        *,
        sealer: Sealer,
        email: EmailTransport | None,
        email_from: Address | None,
        sms: SmsTransport | None,
    ) -> None:
        self._sealer = sealer
        self._email = email
        self._email_from = email_from
        self._sms = sms

    async def send(self, delivery: Delivery) -> str:
        event = OtpRequested.model_validate_json(delivery.source_payload)
        code = self._sealer.unseal(event.code, context=OtpRequested.sealing_context(event.challenge_id))
        with _kept_out_of_logs(code):
            try:
                if delivery.channel == "sms":
                    return await self._send_sms(delivery, event, code)
                if delivery.channel == "email":
                    return await self._send_email(delivery, event, code)
            except DeliveryError as exc:
                raise type(exc)(str(exc).replace(code, "[code]"), status_code=exc.status_code) from None
            except Exception as exc:
                if code in str(exc):
                    raise TransientDeliveryError(
                        f"unexpected {type(exc).__name__} quoting the message"
                    ) from None
                raise
        raise PermanentDeliveryError(f"one-time codes are not sent by {delivery.channel}")

    async def _send_sms(self, delivery: Delivery, event: OtpRequested, code: str) -> str:
        if self._sms is None:
            raise PermanentDeliveryError("no SMS gateway is configured")
        text = render_code_sms(
            language=event.language, purpose=event.purpose, code=code, expires_at=event.expires_at
        )
        receipt = await self._sms.send(to=event.recipient, text=text, reference=delivery.message_id)
        return receipt.location

    async def _send_email(self, delivery: Delivery, event: OtpRequested, code: str) -> str:
        if self._email is None or self._email_from is None:
            raise PermanentDeliveryError("no mail server is configured")
        content = render_code_email(
            language=event.language, purpose=event.purpose, code=code, expires_at=event.expires_at
        )
        message = build_email(
            message_id=delivery.message_id,
            sender=self._email_from,
            to=event.recipient,
            subject=content.subject,
            text=content.text,
            date=as_utc(delivery.created_at),
            language=event.language,
        )
        receipt = await self._email.send(message)
        return receipt.location


class TemplatedEmail:
    """An email rendered from `<name>.<language>.email.txt.j2`, whose top level sets `subject`."""

    def __init__(self, *, email: EmailTransport | None, email_from: Address | None) -> None:
        self._email = email
        self._email_from = email_from

    async def send_email(
        self,
        delivery: Delivery,
        *,
        template: str,
        language: str,
        to: str,
        context: dict[str, str],
        secret: str = "",
        attachments: tuple[Attachment, ...] = (),
    ) -> str:
        """Render and send; `secret` (a code in the text) is kept out of logs and error messages."""
        if self._email is None or self._email_from is None:
            raise PermanentDeliveryError("no mail server is configured")
        require_supported(language)
        module = templates.get_template(f"{template}.{language}.email.txt.j2").make_module(context)
        message = build_email(
            message_id=delivery.message_id,
            sender=self._email_from,
            to=to,
            subject=str(getattr(module, "subject")),  # noqa: B009 - set at the template's top level
            text=str(module).strip() + "\n",
            date=as_utc(delivery.created_at),
            language=language,
            attachments=attachments,
        )
        if not secret:
            return (await self._email.send(message)).location
        with _kept_out_of_logs(secret):
            try:
                return (await self._email.send(message)).location
            except DeliveryError as exc:
                raise type(exc)(str(exc).replace(secret, "[code]"), status_code=exc.status_code) from None


class LoginEmail(TemplatedEmail):
    """The email that tells a colleague an administrator created a login for them (S6)."""

    def __init__(
        self, *, sealer: Sealer, email: EmailTransport | None, email_from: Address | None, portal_url: str
    ) -> None:
        super().__init__(email=email, email_from=email_from)
        self._sealer = sealer
        self._portal_url = portal_url

    async def send(self, delivery: Delivery) -> str:
        event = LoginCreated.model_validate_json(delivery.source_payload)
        code = self._sealer.unseal(event.activation_code, context=LoginCreated.sealing_context(event.user_id))
        return await self.send_email(
            delivery,
            template="login_created",
            language=event.language,
            to=event.recipient_email,
            secret=code,
            context={
                "name": event.name,
                "created_by": event.created_by_name,
                "company_name": event.company_name,
                "username": event.username,
                "activation_code": code,
                "expires": format_expiry(event.expires_at, language=event.language),
                "activation_link": activation_link(self._portal_url, event.username),
            },
        )


class SecurityNotice(TemplatedEmail):
    """Tells a user by email that their password or second factor was set or changed (S7)."""

    async def send(self, delivery: Delivery) -> str:
        event = CredentialChanged.model_validate_json(delivery.source_payload)
        return await self.send_email(
            delivery,
            template="credential_changed",
            language=event.language,
            to=event.email,
            context={
                "name": event.name,
                "change": event.change,
                "when": format_expiry(event.changed_at, language=event.language),
            },
        )


class MobileChangedNotice:
    """Tells the mobile number a login had, by SMS, that the login's number was changed and what
    to do if that was not its owner (issue 10): the old email is told too (`SecurityNotice`),
    but whoever lost a phone number to someone else may read only that phone. The new number
    is shown masked as logs mask it (`mask_contact`), since the old number may no longer be
    the user's; with `*` for its dots, so the text stays in the GSM 7-bit alphabet and one SMS."""

    def __init__(self, *, sms: SmsTransport | None) -> None:
        self._sms = sms

    async def send(self, delivery: Delivery) -> str:
        event = CredentialChanged.model_validate_json(delivery.source_payload)
        if self._sms is None:
            raise PermanentDeliveryError("no SMS gateway is configured")
        if not event.old_mobile:
            raise PermanentDeliveryError("the notice names no mobile number the login had")
        require_supported(event.language)
        text = templates.get_template(f"mobile_changed.{event.language}.sms.txt.j2").render(
            new_mobile=mask_contact(event.new_mobile or "").replace("•", "*"),
            when=format_expiry(event.changed_at, language=event.language),
        )
        receipt = await self._sms.send(to=event.old_mobile, text=text.strip(), reference=delivery.message_id)
        return receipt.location


class OrderConfirmation(TemplatedEmail):
    """Confirms an order of a subscription, or an upgrade, to the person who placed it (S9).

    The address, name and language are the directory's when the order was recorded
    (`recipient`, `recipient_name`, `recipient_language`: the user's own choice in identity).
    """

    def __init__(self, *, email: EmailTransport | None, email_from: Address | None, portal_url: str) -> None:
        super().__init__(email=email, email_from=email_from)
        self._portal_url = portal_url

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


class InvoiceReady(TemplatedEmail):
    """Tells a user with the `invoices` function that an invoice for an account they may see
    is issued and can be seen in the portal (S8). In the recipient's language, like
    `OrderConfirmation`."""

    def __init__(self, *, email: EmailTransport | None, email_from: Address | None, portal_url: str) -> None:
        super().__init__(email=email, email_from=email_from)
        self._portal_url = portal_url

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


class InvoiceDocumentEmail(TemplatedEmail):
    """The invoice's PDF, attached to an email to the address the company chose for it
    (format `pdf_email`, S10), in the company's language. The PDF is billing's (`documents.py`)."""

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


class InvoiceDocumentDelivery:
    """The invoice's document handed over as the company chose (S10): an OIOUBL or Peppol
    e-invoice to the buyer's endpoint through the e-invoice transport, or a PDF to the print
    spool for paper. The delivery's recipient is the endpoint (`<gln>`, `<scheme>:<id>`) or,
    for paper, the company's CVR number."""

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


class TakeoverNotice(TemplatedEmail):
    """Tells one of a company's administrators, by email and by SMS, that a takeover of its
    administration was asked for through the company's e-Boks, when the letter's code can be
    used, and the link that cancels it (its token unsealed only here, kept out of logs)."""

    def __init__(
        self,
        *,
        sealer: Sealer,
        email: EmailTransport | None,
        email_from: Address | None,
        sms: SmsTransport | None,
        portal_url: str,
    ) -> None:
        super().__init__(email=email, email_from=email_from)
        self._sealer = sealer
        self._sms = sms
        self._portal_url = portal_url

    async def send(self, delivery: Delivery) -> str:
        event = TakeoverNoticeIssued.model_validate_json(delivery.source_payload)
        token = self._sealer.unseal(
            event.cancel_token, context=TakeoverNoticeIssued.sealing_context(event.notice_id)
        )
        context = {
            "name": event.name,
            "company_name": event.company_name,
            "cvr": event.cvr,
            "requested": format_expiry(event.requested_at, language=event.language),
            "usable_from": format_expiry(event.usable_from, language=event.language),
            "applicant": event.applicant.name if event.applicant else "",
            "cancel_link": cancel_link(self._portal_url, token),
        }
        if delivery.channel == "email":
            return await self.send_email(
                delivery,
                template="takeover_notice",
                language=event.language,
                to=event.email,
                context=context,
                secret=token,
            )
        if self._sms is None:
            raise PermanentDeliveryError("no SMS gateway is configured")
        require_supported(event.language)
        text = templates.get_template(f"takeover_notice.{event.language}.sms.txt.j2").render(context).strip()
        with _kept_out_of_logs(token):
            try:
                receipt = await self._sms.send(to=event.mobile, text=text, reference=delivery.message_id)
            except DeliveryError as exc:
                raise type(exc)(str(exc).replace(token, "[link]"), status_code=exc.status_code) from None
        return receipt.location


class TakeoverCompletedNotice(TemplatedEmail):
    """Tells a former administrator, by email, that the company's administration was taken
    over through its e-Boks and their login is disabled."""

    async def send(self, delivery: Delivery) -> str:
        event = TakeoverCompleted.model_validate_json(delivery.source_payload)
        former = next(d for d in event.disabled if d.email == delivery.recipient)
        return await self.send_email(
            delivery,
            template="takeover_completed",
            language=former.language,
            to=former.email,
            context={
                "name": former.name,
                "company_name": event.company_name,
                "cvr": event.cvr,
                "new_administrator": event.new_administrator_name,
                "when": format_expiry(event.completed_at, language=former.language),
            },
        )


@contextlib.contextmanager
def _kept_out_of_logs(code: str) -> Iterator[None]:
    # The second line of defence (shared.logs masks it in any record made meanwhile); the first
    # is that nothing here logs the message it sends.
    register_secret(code)
    try:
        yield
    finally:
        forget_secret(code)
