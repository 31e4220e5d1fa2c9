"""What a kind of message is: the one declaration of the event it answers, the deliveries it
records for that event (channel and recipients), and how it renders and sends one of them.

A kind is a class (`Kind`). Its class attributes and `plan` are the recording side: the
worker's recorder (`recording.py`) asks each kind that answers an event which deliveries to
record, in the consumer's transaction. An instance, built by `of(outlets)` from the transports
the dispatcher has, is the sending side: it reads the source event from the delivery (kept as it
came, codes sealed), unseals what it must only now, renders the message for the delivery's
channel and hands it to that channel's transport. It answers where the message went, or raises
a `DeliveryError` (transient or permanent) for the dispatcher's bookkeeping.

`KINDS` (`kinds/__init__.py`) lists every kind once; the recorder and the dispatcher both read it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier.documents import BillingDocuments
from services.notifier.eboks import EboksTransport
from services.notifier.email import Attachment, EmailReceipt, build_email
from services.notifier.invoice_transports import EinvoiceTransport, PrintSpool
from services.notifier.letters import require_supported, templates
from services.notifier.models import Delivery
from services.notifier.sms import SmsReceipt
from services.notifier.transport_base import DeliveryError, PermanentDeliveryError
from shared.clock import as_utc
from shared.envelope import Envelope
from shared.events import Channel, Event
from shared.logs import forget_secret, register_secret
from shared.sealing import Sealer

E = TypeVar("E", bound=Event)


class EmailTransport(Protocol):
    async def send(self, message: EmailMessage) -> EmailReceipt: ...


class SmsTransport(Protocol):
    async def send(self, *, to: str, text: str, reference: str) -> SmsReceipt: ...


@dataclass(frozen=True)
class Sender:
    cvr: str
    name: str
    portal_url: str


@dataclass(frozen=True)
class Outlets:
    """What the kinds send with: the sealer that unseals codes, the operator as sender, and the
    transports of the channels (None: the channel is not configured, and its deliveries fail
    saying so)."""

    sealer: Sealer
    sender: Sender
    eboks: EboksTransport | None = None
    email: EmailTransport | None = None
    email_from: Address | None = None
    sms: SmsTransport | None = None
    documents: BillingDocuments | None = None
    einvoice: EinvoiceTransport | None = None
    printer: PrintSpool | None = None


@dataclass(frozen=True)
class Planned:
    """One delivery a kind records for an event: its kind name (`deliveries.kind`), channel and
    recipient. `source_event_id` names it for exactly-once (default: the event's own id, one
    delivery per event); its message id is derived from it."""

    kind: str
    channel: Channel
    recipient: str
    source_event_id: str | None = None
    recipient_name: str | None = None
    recipient_language: str | None = None
    application_id: str | None = None
    deliver_by: datetime | None = None
    expires_at: datetime | None = None


class Kind(Generic[E]):
    """A kind of message: declared by `events`, `names`, `plan` (what to record) and `send`."""

    # The events it answers (one, but for an order's confirmation).
    events: ClassVar[tuple[type[Event], ...]]
    # The names of its deliveries (`deliveries.kind`); stored, so never renamed.
    names: ClassVar[tuple[str, ...]]

    @classmethod
    async def plan(cls, session: AsyncSession, envelope: Envelope[E]) -> Sequence[Planned]:
        """The deliveries to record for the event (none, one, or one per recipient)."""
        raise NotImplementedError

    @classmethod
    def of(cls, outlets: Outlets) -> Self:
        """The kind ready to send, with the outlets it needs."""
        raise NotImplementedError

    async def send(self, delivery: Delivery) -> str:
        """Render and send the delivery's message; where it went (a path, a URL, an id)."""
        raise NotImplementedError


AnyKind = Kind[Any]


class TemplatedEmail(Kind[E]):
    """An email rendered from `<name>.<language>.email.txt.j2`, whose top level sets `subject`."""

    def __init__(self, *, email: EmailTransport | None, email_from: Address | None) -> None:
        self._email = email
        self._email_from = email_from

    @classmethod
    def of(cls, outlets: Outlets) -> Self:
        return cls(email=outlets.email, email_from=outlets.email_from)

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
        with kept_out_of_logs(secret):
            try:
                return (await self._email.send(message)).location
            except DeliveryError as exc:
                raise type(exc)(str(exc).replace(secret, "[code]"), status_code=exc.status_code) from None


class PortalEmail(TemplatedEmail[E]):
    """A templated email that links to the portal."""

    def __init__(self, *, email: EmailTransport | None, email_from: Address | None, portal_url: str) -> None:
        super().__init__(email=email, email_from=email_from)
        self._portal_url = portal_url

    @classmethod
    def of(cls, outlets: Outlets) -> Self:
        return cls(email=outlets.email, email_from=outlets.email_from, portal_url=outlets.sender.portal_url)


@contextlib.contextmanager
def kept_out_of_logs(code: str) -> Iterator[None]:
    # The second line of defence (shared.logs masks it in any record made meanwhile); the first
    # is that nothing here logs the message it sends.
    register_secret(code)
    try:
        yield
    finally:
        forget_secret(code)


# Names the delivery of one event to one of several recipients (an invoice's users, S8; a
# takeover notice's email and SMS; a changed mobile number's old number).
PER_RECIPIENT_NAMESPACE = uuid.UUID("6f1c3a52-8d0e-4b7a-9c55-2e4f8a7d1b93")


def per_recipient_event_id(event_id: str, user_id: str) -> str:
    """The source id of the delivery of one event to one user: the same for a redelivery."""
    return str(uuid.uuid5(PER_RECIPIENT_NAMESPACE, f"{event_id}/{user_id}"))
