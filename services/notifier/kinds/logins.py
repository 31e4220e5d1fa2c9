"""The kinds of message about a login (identity's events): the credentials letter to the
company's e-Boks (S2), one-time codes (S7), the email to a colleague with a new login (S6), and
the notices that a login's credentials or contact details changed (S7, issue 10)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from email.headerregistry import Address
from typing import Self

from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier.codes import render_code_email, render_code_sms
from services.notifier.eboks import EboksTransport
from services.notifier.email import build_email
from services.notifier.kinds.base import (
    EmailTransport,
    Kind,
    Outlets,
    Planned,
    Sender,
    SmsTransport,
    TemplatedEmail,
    kept_out_of_logs,
    per_recipient_event_id,
)
from services.notifier.letters import (
    activation_link,
    format_expiry,
    letter_label,
    render_credentials_letter,
    require_supported,
    templates,
)
from services.notifier.memo import build_memo_message
from services.notifier.models import Delivery
from services.notifier.transport_base import (
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from shared.clock import as_utc
from shared.envelope import Envelope
from shared.events import CredentialChanged, CredentialsIssued, LoginCreated, OtpRequested
from shared.logs import mask_contact
from shared.sealing import Sealer

log = logging.getLogger(__name__)

# The delivery kind of a one-time code, by the code's purpose.
CODE_KINDS = {
    "login": "otp_login",
    "confirm_mobile": "otp_confirm_mobile",
    "confirm_email": "otp_confirm_email",
    "unlock_login": "otp_unlock_login",
    "reset_password": "otp_reset_password",
    "confirm_new_email": "otp_confirm_new_email",
    "confirm_new_mobile": "otp_confirm_new_mobile",
}


class CredentialsLetter(Kind[CredentialsIssued]):
    """The letter with a company's first login, to its e-Boks (S2): one per event, due by the
    event's `deliver_by`."""

    events = (CredentialsIssued,)
    names = ("credentials_letter",)

    @classmethod
    async def plan(cls, session: AsyncSession, envelope: Envelope[CredentialsIssued]) -> Sequence[Planned]:
        event = envelope.event
        return [
            Planned(
                kind="credentials_letter",
                channel="eboks",
                recipient=event.recipient_cvr,
                application_id=str(event.application_id) if event.application_id else None,
                deliver_by=event.deliver_by,
            )
        ]

    @classmethod
    def of(cls, outlets: Outlets) -> Self:
        return cls(sealer=outlets.sealer, eboks=outlets.eboks, sender=outlets.sender)

    def __init__(self, *, sealer: Sealer, eboks: EboksTransport | None, sender: Sender) -> None:
        self._sealer = sealer
        self._eboks = eboks
        self._sender = sender

    async def send(self, delivery: Delivery) -> str:
        if self._eboks is None:
            raise PermanentDeliveryError("no e-Boks transport is configured")
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


class OneTimeCodeMessage(Kind[OtpRequested]):
    """A one-time code by SMS or email, to log in, or to confirm a mobile number or an email (S7).

    One delivery per event, until the code expires: there is no `deliver_by`, a code is late
    exactly when it has expired. The code is unsealed only here, just before sending, and is
    kept out of every log line and error message: a transport's error may quote the message it
    could not send.
    """

    events = (OtpRequested,)
    names = tuple(CODE_KINDS.values())

    @classmethod
    async def plan(cls, session: AsyncSession, envelope: Envelope[OtpRequested]) -> Sequence[Planned]:
        event = envelope.event
        return [
            Planned(
                kind=CODE_KINDS[event.purpose],
                channel=event.channel,
                recipient=event.recipient,
                expires_at=event.expires_at,
            )
        ]

    @classmethod
    def of(cls, outlets: Outlets) -> Self:
        return cls(sealer=outlets.sealer, email=outlets.email, email_from=outlets.email_from, sms=outlets.sms)

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
        with kept_out_of_logs(code):
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


class LoginEmail(TemplatedEmail[LoginCreated]):
    """The email that tells a colleague an administrator created a login for them (S6)."""

    events = (LoginCreated,)
    names = ("login_email",)

    @classmethod
    async def plan(cls, session: AsyncSession, envelope: Envelope[LoginCreated]) -> Sequence[Planned]:
        return [Planned(kind="login_email", channel="email", recipient=envelope.event.recipient_email)]

    @classmethod
    def of(cls, outlets: Outlets) -> Self:
        return cls(
            sealer=outlets.sealer,
            email=outlets.email,
            email_from=outlets.email_from,
            portal_url=outlets.sender.portal_url,
        )

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


class SecurityNotice(TemplatedEmail[CredentialChanged]):
    """Tells a user by email that their password or second factor was set or changed (S7)."""

    events = (CredentialChanged,)
    names = ("security_notice",)

    @classmethod
    async def plan(cls, session: AsyncSession, envelope: Envelope[CredentialChanged]) -> Sequence[Planned]:
        return [Planned(kind="security_notice", channel="email", recipient=envelope.event.email)]

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


class MobileChangedNotice(Kind[CredentialChanged]):
    """Tells the mobile number a login had, by SMS, that the login's number was changed and what
    to do if that was not its owner (issue 10): the old email is told too (`SecurityNotice`),
    but whoever lost a phone number to someone else may read only that phone. The new number
    is shown masked as logs mask it (`mask_contact`), since the old number may no longer be
    the user's; with `*` for its dots, so the text stays in the GSM 7-bit alphabet and one SMS.

    Its source id is its own (derived from the event's), so a redelivered event adds neither
    the email nor the SMS twice."""

    events = (CredentialChanged,)
    names = ("mobile_changed_sms",)

    @classmethod
    async def plan(cls, session: AsyncSession, envelope: Envelope[CredentialChanged]) -> Sequence[Planned]:
        event = envelope.event
        if event.change != "contact_details_changed" or not event.old_mobile:
            return []
        return [
            Planned(
                source_event_id=per_recipient_event_id(envelope.id, "old-mobile"),
                kind="mobile_changed_sms",
                channel="sms",
                recipient=event.old_mobile,
                recipient_name=event.name,
            )
        ]

    @classmethod
    def of(cls, outlets: Outlets) -> Self:
        return cls(sms=outlets.sms)

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
