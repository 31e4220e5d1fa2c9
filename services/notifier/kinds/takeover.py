"""The kinds of message about a takeover of a company's administration through its e-Boks:
the notice to each administrator, by email and SMS, with the link that cancels it, and the
email to each former administrator once it is completed."""

from __future__ import annotations

from collections.abc import Sequence
from email.headerregistry import Address
from typing import Self

from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier.kinds.base import (
    EmailTransport,
    Outlets,
    Planned,
    SmsTransport,
    TemplatedEmail,
    kept_out_of_logs,
    per_recipient_event_id,
)
from services.notifier.letters import cancel_link, format_expiry, require_supported, templates
from services.notifier.models import Delivery
from services.notifier.transport_base import DeliveryError, PermanentDeliveryError
from shared.envelope import Envelope
from shared.events import Channel, TakeoverCompleted, TakeoverNoticeIssued
from shared.sealing import Sealer


class TakeoverNotice(TemplatedEmail[TakeoverNoticeIssued]):
    """Tells one of a company's administrators, by email and by SMS, that a takeover of its
    administration was asked for through the company's e-Boks, when the letter's code can be
    used, and the link that cancels it (its token unsealed only here, kept out of logs)."""

    events = (TakeoverNoticeIssued,)
    names = ("takeover_notice",)

    @classmethod
    async def plan(cls, session: AsyncSession, envelope: Envelope[TakeoverNoticeIssued]) -> Sequence[Planned]:
        """An email and an SMS to the administrator, each its own delivery."""
        event = envelope.event
        channels: tuple[tuple[Channel, str], ...] = (("email", event.email), ("sms", event.mobile))
        return [
            Planned(
                source_event_id=per_recipient_event_id(envelope.id, channel),
                kind="takeover_notice",
                channel=channel,
                recipient=recipient,
                recipient_name=event.name,
            )
            for channel, recipient in channels
        ]

    @classmethod
    def of(cls, outlets: Outlets) -> Self:
        return cls(
            sealer=outlets.sealer,
            email=outlets.email,
            email_from=outlets.email_from,
            sms=outlets.sms,
            portal_url=outlets.sender.portal_url,
        )

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
        with kept_out_of_logs(token):
            try:
                receipt = await self._sms.send(to=event.mobile, text=text, reference=delivery.message_id)
            except DeliveryError as exc:
                raise type(exc)(str(exc).replace(token, "[link]"), status_code=exc.status_code) from None
        return receipt.location


class TakeoverCompletedNotice(TemplatedEmail[TakeoverCompleted]):
    """Tells a former administrator, by email, that the company's administration was taken
    over through its e-Boks and their login is disabled: one email to each it disabled."""

    events = (TakeoverCompleted,)
    names = ("takeover_completed",)

    @classmethod
    async def plan(cls, session: AsyncSession, envelope: Envelope[TakeoverCompleted]) -> Sequence[Planned]:
        return [
            Planned(
                source_event_id=per_recipient_event_id(envelope.id, str(former.user_id)),
                kind="takeover_completed",
                channel="email",
                recipient=former.email,
                recipient_name=former.name,
            )
            for former in envelope.event.disabled
        ]

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
