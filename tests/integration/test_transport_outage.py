"""A delivery channel that fails for a minute (issue 13, outages): the mail server refuses
connections, the SMS gateway and the e-Boks endpoint answer 503. With the notifier's own
settings each delivery is tried again with a growing, jittered back-off, is delivered once the
channel is back, and arrives exactly once, even when the receiver took it but its answer was
lost. The minute passes on the notifier's clock, not the test's: the transports' own waits and
the dispatcher's back-off both move that clock."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier.config import NotifierSettings
from services.notifier.dispatch import Dispatcher, RetryPolicy
from services.notifier.eboks import HttpTransport
from services.notifier.email import EmailReceipt, SmtpTransport, parse_mailbox
from services.notifier.kinds import Sender
from services.notifier.memo import parse_memo_message
from services.notifier.models import Delivery, messaging
from services.notifier.recording import Recorder
from services.notifier.sinks import MailSink, read_mail, read_sms, sms_gateway_app
from services.notifier.sms import SmsGateway, SmsReceipt
from services.notifier.transport_base import DeliveryReceipt, HttpRetry
from shared.clock import FrozenClock
from shared.db import Database
from shared.envelope import Envelope, decode, encode
from shared.events import CredentialsIssued, OtpRequested
from shared.messaging import Outbox
from shared.sealing import Sealer
from tests.support.ports import free_ports

OUTAGE = timedelta(seconds=60)
CVR = "22109340"
MOBILE = "+4520123456"
ADDRESS = "mette@example.dk"
TOKEN = "sms-gateway-token"
CODE = "482913"


@pytest.fixture
def database_url(notifier_url: str) -> str:
    return notifier_url


@dataclass
class Outage:
    """The channels are down until `ends` on the notifier's clock."""

    clock: FrozenClock
    ends: datetime

    @property
    def down(self) -> bool:
        return self.clock.now() < self.ends

    async def sleep(self, seconds: float) -> None:
        """The transports' waits between their own tries pass on the notifier's clock."""
        self.clock.advance(timedelta(seconds=seconds))


@dataclass
class EboksEndpoint:
    """The contracted e-Boks endpoint: 503 while down; then it keeps each X-Message-UUID once
    (201, or 409 for one it already has). The first letter after the outage is kept, but its
    answer is lost on the way back (a gateway's 504), as when a connection breaks at the end."""

    outage: Outage
    letters: dict[str, bytes] = field(default_factory=dict)
    answers: list[int] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        if self.outage.down:
            status = 503
        elif (uuid_ := headers["x-message-uuid"]) in self.letters:
            status = 409
        else:
            self.letters[uuid_] = body
            status = 504 if 504 not in self.answers else 201
        self.answers.append(status)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def failing_gateway(outage: Outage, gateway: Any) -> Callable[..., Awaitable[None]]:
    """The SMS gateway (the local sink's, which keeps each reference once) behind a front that
    answers 503 while down, and loses the first answer after it."""
    lost: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if outage.down:
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        if not lost:
            lost.append(True)

            async def swallow(message: dict[str, Any]) -> None:
                pass

            await gateway(scope, receive, swallow)
            await send({"type": "http.response.start", "status": 504, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await gateway(scope, receive, send)

    return app


@dataclass
class Attempts:
    """When the dispatcher tried each channel, on its clock."""

    clock: FrozenClock
    at: dict[str, list[datetime]] = field(default_factory=dict)

    def mark(self, channel: str) -> None:
        self.at.setdefault(channel, []).append(self.clock.now())


@dataclass
class CountedMail:
    transport: SmtpTransport
    attempts: Attempts

    async def send(self, message: EmailMessage) -> EmailReceipt:
        self.attempts.mark("email")
        return await self.transport.send(message)


@dataclass
class CountedSms:
    gateway: SmsGateway
    attempts: Attempts

    async def send(self, *, to: str, text: str, reference: str) -> SmsReceipt:
        self.attempts.mark("sms")
        return await self.gateway.send(to=to, text=text, reference=reference)


@dataclass
class CountedEboks:
    transport: HttpTransport
    attempts: Attempts
    name: str = "http"

    async def deliver(self, *, recipient_cvr: str, message_uuid: UUID, document: bytes) -> DeliveryReceipt:
        self.attempts.mark("eboks")
        return await self.transport.deliver(recipient_cvr=recipient_cvr, message_uuid=message_uuid, document=document)


def envelope(event: Any, clock: FrozenClock) -> Envelope[Any]:
    record = encode(event, event_id=str(uuid.uuid4()), time=clock.now())
    return decode(topic=record.topic, headers=record.headers, value=record.value)


def events(sealer: Sealer, clock: FrozenClock) -> dict[str, Any]:
    """An event whose delivery goes by each channel: a letter's login (e-Boks), codes by SMS and email."""
    user_id = uuid.uuid4()
    letter = CredentialsIssued(
        user_id=user_id,
        application_id=uuid.uuid4(),
        recipient_cvr=CVR,
        company_name="Bageriet Solsikke ApS",
        username=f"{CVR}-abcd",
        activation_code=sealer.seal("AB12-CD34-EF56-GH78-JK9M", context=CredentialsIssued.sealing_context(user_id)),
        expires_at=clock.now() + timedelta(days=7),
        deliver_by=clock.now() + timedelta(hours=2),
    )
    by_channel: dict[str, Any] = {"eboks": letter}
    for channel, recipient in (("sms", MOBILE), ("email", ADDRESS)):
        challenge_id = uuid.uuid4()
        by_channel[channel] = OtpRequested(
                user_id=uuid.uuid4(),
                challenge_id=challenge_id,
                purpose="login",
                channel=channel,  # type: ignore[arg-type]
                recipient=recipient,
                code=sealer.seal(CODE, context=OtpRequested.sealing_context(challenge_id)),
                expires_at=clock.now() + timedelta(minutes=10),
        )
    return by_channel


@pytest.fixture
async def mail_sink(tmp_path: Path) -> AsyncIterator[MailSink]:
    (port,) = free_ports(1)
    sink = MailSink(tmp_path / "sinks", port=port)
    yield sink
    await sink.stop()


async def pending(db: Database) -> list[Delivery]:
    async with db.transaction() as session:
        return list(await session.scalars(select(Delivery).where(Delivery.status == "pending")))


@pytest.mark.parametrize("channel", ["eboks", "sms", "email"])
async def test_a_channel_down_for_a_minute_is_retried_with_back_off_and_delivers_once(
    channel: str,
    db: Database,
    database_url: str,
    clock: FrozenClock,
    sealer: Sealer,
    tmp_path: Path,
    mail_sink: MailSink,
) -> None:
    settings = NotifierSettings(database_url=database_url, var_dir=tmp_path)  # the shipped retry policy
    retry = RetryPolicy(
        max_attempts=settings.delivery_max_attempts,
        base_s=settings.delivery_retry_base_s,
        max_s=settings.delivery_retry_max_s,
    )
    outage = Outage(clock, clock.now() + OUTAGE)
    attempts = Attempts(clock)
    eboks = EboksEndpoint(outage)
    sms_root = tmp_path / "sinks"
    inner = {"max_attempts": 3, "backoff_base": 0.5, "backoff_max": 8.0, "sleep": outage.sleep}
    eboks_transport = HttpTransport(
        url="http://eboks.test/letters", transport=httpx.ASGITransport(app=eboks), **inner  # type: ignore[arg-type]
    )
    sms_gateway = SmsGateway(
        url="http://sms.test/v1/sms",
        token=SecretStr(TOKEN),
        sender="Adgang",
        retry=HttpRetry(**inner),  # type: ignore[arg-type]
        transport=httpx.ASGITransport(app=failing_gateway(outage, sms_gateway_app(sms_root, token=TOKEN))),
    )
    dispatcher = Dispatcher(
        db=db,
        outbox=Outbox(messaging, clock),
        clock=clock,
        sealer=sealer,
        eboks=CountedEboks(eboks_transport, attempts),
        sender=Sender(cvr="29311005", name="Adgang Erhverv", portal_url="https://example.dk"),
        email=CountedMail(SmtpTransport(host="127.0.0.1", port=mail_sink.port, tls="none", timeout=5), attempts),
        email_from=parse_mailbox("Adgang <no-reply@adgang.example.dk>"),
        sms=CountedSms(sms_gateway, attempts),
        retry=retry,
        lease=timedelta(seconds=settings.lease_seconds("eboks")),
    )
    # One delivery at a time: its waits are then its own, not another channel's on the same clock.
    async with db.transaction() as session:
        await Recorder(clock).record(session, envelope(events(sealer, clock)[channel], clock))

    # The mail server is down (nothing listens on its port) until the outage ends; the
    # dispatcher runs whenever a delivery is next due, on its clock.
    for _ in range(retry.max_attempts * 3):
        if not outage.down and mail_sink._server is None:  # noqa: SLF001 - started once it is back
            await mail_sink.start()
        await dispatcher.dispatch_due()
        waiting = await pending(db)
        if not waiting:
            break
        due = min(d.next_attempt_at for d in waiting)
        clock.advance(max(timedelta(0), due.replace(tzinfo=clock.now().tzinfo) - clock.now()))
    await eboks_transport.aclose()
    await sms_gateway.aclose()

    async with db.transaction() as session:
        [delivery] = list(await session.scalars(select(Delivery)))
    assert (delivery.channel, delivery.status) == (channel, "delivered")

    # Exactly one reached its receiver, though the e-Boks endpoint and the SMS gateway took it
    # once while their answer was lost.
    if channel == "eboks":
        assert len(eboks.letters) == 1 and eboks.answers.count(504) == 1 and eboks.answers[-1] == 409
        [letter] = eboks.letters.values()
        assert parse_memo_message(letter).recipient_cvr == CVR
    assert len(read_sms(sms_root, MOBILE)) == (1 if channel == "sms" else 0)
    assert len(read_mail(tmp_path / "sinks", ADDRESS)) == (1 if channel == "email" else 0)

    times = attempts.at[channel]
    # Every try but the last began while the channel was down (over HTTP the last may begin
    # then too, and get through on one of the transport's own tries after it).
    assert all(t < outage.ends for t in times[:-1]), times
    if channel == "email":
        assert times[-1] >= outage.ends, times
    assert 1 < len(times) <= retry.max_attempts
    # Each wait is the policy's back-off for that attempt: at least half its ceiling (the
    # jitter), so the waits grow; over HTTP the transport's own tries add to it.
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
    for attempt, gap in enumerate(gaps, start=1):
        ceiling = min(retry.max_s, retry.base_s * 2 ** (attempt - 1))
        assert gap >= ceiling / 2, (attempt, gaps)
        if channel == "email":  # no tries of its own: the wait is the dispatcher's alone
            assert gap <= ceiling, (attempt, gaps)
    assert gaps == sorted(gaps), gaps


class DatabaseAway(Database):
    """The service's database, which goes away for the next `away` transactions when told."""

    away = 0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        if self.away:
            self.away -= 1
            raise ConnectionRefusedError(111, "Connect call failed")
        async with super().transaction() as session:
            yield session


@dataclass
class MailThenDatabaseAway:
    """The mail goes out; the database is away just as the notifier would record that."""

    transport: SmtpTransport
    db: DatabaseAway

    async def send(self, message: EmailMessage) -> EmailReceipt:
        receipt = await self.transport.send(message)
        self.db.away = 3
        return receipt


async def test_a_message_sent_while_the_database_went_away_is_recorded_once_it_is_back_and_not_sent_again(
    database_url: str, clock: FrozenClock, sealer: Sealer, tmp_path: Path, mail_sink: MailSink
) -> None:
    db = DatabaseAway(database_url)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    dispatcher = Dispatcher(
        db=db,
        outbox=Outbox(messaging, clock),
        clock=clock,
        sealer=sealer,
        eboks=None,
        sender=Sender(cvr="29311005", name="Adgang Erhverv", portal_url="https://example.dk"),
        email=MailThenDatabaseAway(SmtpTransport(host="127.0.0.1", port=mail_sink.port, tls="none", timeout=5), db),
        email_from=parse_mailbox("Adgang <no-reply@adgang.example.dk>"),
        retry=RetryPolicy(max_attempts=8, base_s=2, max_s=300),
        lease=timedelta(seconds=20),
        sleep=sleep,
    )
    try:
        await mail_sink.start()
        async with db.transaction() as session:
            await Recorder(clock).record(session, envelope(events(sealer, clock)["email"], clock))

        assert await dispatcher.dispatch_due() == 1  # waits for the database instead of failing
        assert len(waits) == 3 and waits == sorted(waits)
        clock.advance(timedelta(minutes=5))  # long past the lease
        assert await dispatcher.dispatch_due() == 0

        async with db.transaction() as session:
            [delivery] = list(await session.scalars(select(Delivery)))
        assert (delivery.status, delivery.attempts) == ("delivered", 1)
        assert len(read_mail(tmp_path / "sinks", ADDRESS)) == 1
    finally:
        await db.dispose()
