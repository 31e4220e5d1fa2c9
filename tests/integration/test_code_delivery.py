"""One-time codes by SMS and email (S7), delivered to the real local sinks: a requested code
arrives, a sink that is down is tried again, a refusal is final, a code that expires undelivered
is given up, and the code is never written to a log or left unsealed in the database."""

from __future__ import annotations

import email
import email.policy
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from services.notifier.api import create_api
from services.notifier.config import NotifierSettings
from services.notifier.dispatch import EXPIRED, Dispatcher, RetryPolicy
from services.notifier.eboks import SpoolTransport
from services.notifier.email import SmtpTransport, parse_mailbox
from services.notifier.kinds import Sender
from services.notifier.models import Delivery, messaging
from services.notifier.recording import Recorder
from services.notifier.sinks import MailSink, SmsSink, read_mail, read_sms
from services.notifier.sms import SmsGateway, SmsReceipt
from services.notifier.transport_base import HttpRetry, TransientDeliveryError
from shared.clock import FrozenClock
from shared.db import Database
from shared.envelope import Envelope, decode, encode
from shared.events import OtpRequested
from shared.messaging import Outbox
from shared.sealing import Sealer
from tests.support.asgi import AppTransport
from tests.support.ports import free_ports
from tests.support.tokens import IdentityKeys

CODE = "482913"
MOBILE = "+4520123456"
ADDRESS = "mette@example.dk"
TOKEN = "sink-token-for-tests"
FROM = parse_mailbox("Adgang Selvbetjening <no-reply@adgang.example.dk>")


@dataclass
class Sinks:
    root: Path
    smtp_port: int
    sms_port: int

    @property
    def sms_url(self) -> str:
        return f"http://127.0.0.1:{self.sms_port}/v1/sms"


@pytest.fixture
def database_url(notifier_url: str) -> str:
    return notifier_url


@pytest.fixture
def sink_ports() -> Sinks:
    smtp_port, sms_port = free_ports(2)
    return Sinks(root=Path(), smtp_port=smtp_port, sms_port=sms_port)


@pytest.fixture
async def sinks(tmp_path: Path, sink_ports: Sinks) -> AsyncIterator[Sinks]:
    running = Sinks(root=tmp_path / "sinks", smtp_port=sink_ports.smtp_port, sms_port=sink_ports.sms_port)
    mail = MailSink(running.root, port=running.smtp_port)
    sms = SmsSink(running.root, token=TOKEN, port=running.sms_port)
    await mail.start()
    await sms.start()
    yield running
    await sms.stop()
    await mail.stop()


def code_envelope(
    sealer: Sealer,
    clock: FrozenClock,
    *,
    channel: str = "sms",
    recipient: str = MOBILE,
    purpose: str = "login",
    expires_in: timedelta = timedelta(minutes=5),
    event_id: str | None = None,
) -> Envelope:
    challenge_id = uuid.uuid4()
    event = OtpRequested(
        user_id=uuid.uuid4(),
        challenge_id=challenge_id,
        purpose=purpose,  # type: ignore[arg-type]
        channel=channel,  # type: ignore[arg-type]
        recipient=recipient,
        code=sealer.seal(CODE, context=OtpRequested.sealing_context(challenge_id)),
        expires_at=clock.now() + expires_in,
    )
    record = encode(event, event_id=event_id or str(uuid.uuid4()), time=clock.now())
    return decode(topic=record.topic, headers=record.headers, value=record.value)


def dispatcher(
    db: Database, clock: FrozenClock, sealer: Sealer, sinks: Sinks, *, sms: Any = None, max_attempts: int = 3
) -> Dispatcher:
    return Dispatcher(
        db=db,
        outbox=Outbox(messaging, clock),
        clock=clock,
        sealer=sealer,
        eboks=SpoolTransport(sinks.root / "eboks"),
        sender=Sender(cvr="29311005", name="Adgang Erhverv", portal_url="https://example.dk"),
        email=SmtpTransport(host="127.0.0.1", port=sinks.smtp_port, tls="none", timeout=5),
        email_from=FROM,
        sms=sms
        or SmsGateway(
            url=sinks.sms_url, token=SecretStr(TOKEN), sender="Adgang", retry=HttpRetry(max_attempts=1)
        ),
        retry=RetryPolicy(max_attempts=max_attempts, base_s=2, max_s=60),
        lease=timedelta(seconds=60),
    )


async def record(db: Database, clock: FrozenClock, envelope: Envelope) -> None:
    async with db.transaction() as session:
        await Recorder(clock).record(session, envelope)


async def the_delivery(db: Database) -> Delivery:
    async with db.transaction() as session:
        delivery = await session.scalar(select(Delivery))
    assert delivery is not None
    return delivery


async def outcomes(db: Database) -> list[tuple[str, dict[str, Any]]]:
    """The notifier.deliveries events in the outbox: (type, payload)."""
    async with db.transaction() as session:
        rows = (
            await session.execute(
                select(messaging.outbox.c.headers, messaging.outbox.c.value).order_by(messaging.outbox.c.seq)
            )
        ).all()
    return [(dict(json.loads(h))["ce_type"].split(".")[-2], json.loads(v)) for h, v in rows]


async def test_a_code_requested_by_sms_arrives_at_the_sms_gateway_with_the_code(
    db, clock, sealer, sinks
) -> None:
    envelope = code_envelope(sealer, clock)
    await record(db, clock, envelope)

    assert await dispatcher(db, clock, sealer, sinks).dispatch_due() == 1

    [sms] = read_sms(sinks.root, MOBILE)
    assert sms.text.startswith(f"{CODE} er din engangskode") and sms.sender == "Adgang" and sms.to == MOBILE
    delivery = await the_delivery(db)
    assert (delivery.kind, delivery.channel, delivery.status) == ("otp_login", "sms", "delivered")
    assert delivery.deliver_by is None and delivery.expires_at is not None
    [(kind, payload)] = await outcomes(db)
    assert kind == "DeliverySucceeded"
    assert payload["channel"] == "sms" and payload["recipient"] == MOBILE
    assert payload["application_id"] is None and payload["source_event_id"] == envelope.id


async def test_a_code_requested_by_email_arrives_as_a_mail_with_the_code(db, clock, sealer, sinks) -> None:
    await record(db, clock, code_envelope(sealer, clock, channel="email", recipient=ADDRESS))

    assert await dispatcher(db, clock, sealer, sinks).dispatch_due() == 1

    [path] = list((sinks.root / "mail" / ADDRESS).glob("*.eml"))
    mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    delivery = await the_delivery(db)
    assert mail["Message-ID"] == f"<{delivery.message_id}@adgang.example.dk>"
    assert mail["To"] == ADDRESS and mail["Subject"] == "Din engangskode til Selvbetjening"
    assert CODE in mail.get_content()
    assert delivery.status == "delivered"
    assert [kind for kind, _ in await outcomes(db)] == ["DeliverySucceeded"]


async def test_a_code_to_confirm_a_mobile_number_says_so(db, clock, sealer, sinks) -> None:
    await record(db, clock, code_envelope(sealer, clock, purpose="confirm_mobile"))
    await dispatcher(db, clock, sealer, sinks).dispatch_due()
    [sms] = read_sms(sinks.root, MOBILE)
    assert "bekræfte dit mobilnummer" in sms.text
    assert (await the_delivery(db)).kind == "otp_confirm_mobile"


async def test_a_code_to_confirm_an_email_goes_by_email_and_says_so(db, clock, sealer, sinks) -> None:
    await record(
        db, clock, code_envelope(sealer, clock, channel="email", recipient=ADDRESS, purpose="confirm_email")
    )
    await dispatcher(db, clock, sealer, sinks).dispatch_due()
    [mail] = read_mail(sinks.root, ADDRESS)
    assert mail.subject == "Din kode til at bekræfte din e-mailadresse" and CODE in mail.text
    assert (await the_delivery(db)).kind == "otp_confirm_email"


async def test_the_code_stays_sealed_in_the_database_until_it_is_sent(db, clock, sealer, sinks) -> None:
    await record(db, clock, code_envelope(sealer, clock))
    await dispatcher(db, clock, sealer, sinks).dispatch_due()
    delivery = await the_delivery(db)
    assert CODE not in delivery.source_payload
    assert "ciphertext" in json.loads(delivery.source_payload)["code"]


async def test_the_same_event_twice_gives_one_delivery_and_one_message(db, clock, sealer, sinks) -> None:
    envelope = code_envelope(sealer, clock, channel="email", recipient=ADDRESS)
    await record(db, clock, envelope)
    await record(db, clock, envelope)
    assert await dispatcher(db, clock, sealer, sinks).dispatch_due() == 1
    assert len(read_mail(sinks.root, ADDRESS)) == 1


@pytest.mark.parametrize("channel, recipient", [("sms", MOBILE), ("email", ADDRESS)])
async def test_a_sink_that_is_down_is_tried_again_after_a_backoff(
    db, clock, sealer, tmp_path, sink_ports, channel, recipient
) -> None:
    down = Sinks(root=tmp_path / "sinks", smtp_port=sink_ports.smtp_port, sms_port=sink_ports.sms_port)
    sender = dispatcher(db, clock, sealer, down)
    await record(db, clock, code_envelope(sealer, clock, channel=channel, recipient=recipient))

    assert await sender.dispatch_due() == 1
    delivery = await the_delivery(db)
    assert delivery.status == "pending" and delivery.attempts == 1 and delivery.last_error
    assert await outcomes(db) == []

    mail, sms = MailSink(down.root, port=down.smtp_port), SmsSink(down.root, token=TOKEN, port=down.sms_port)
    await mail.start()
    await sms.start()
    try:
        assert await sender.dispatch_due() == 0, "the retry waits for its backoff"
        clock.advance(timedelta(seconds=2))
        assert await sender.dispatch_due() == 1
    finally:
        await sms.stop()
        await mail.stop()

    delivery = await the_delivery(db)
    assert delivery.status == "delivered" and delivery.attempts == 2
    received = read_sms(down.root, MOBILE) if channel == "sms" else read_mail(down.root, ADDRESS)
    assert len(received) == 1 and CODE in received[0].text


async def test_an_sms_gateway_that_answers_400_fails_the_delivery_at_once(db, clock, sealer, sinks) -> None:
    # A number written as E.164 that no phone has: the gateway, not the notifier, knows that.
    await record(db, clock, code_envelope(sealer, clock, recipient="+4500000000"))
    sender = dispatcher(db, clock, sealer, sinks)
    await sender.dispatch_due()

    [(kind, payload)] = await outcomes(db)
    assert kind == "DeliveryFailed" and "HTTP 400" in payload["reason"]
    assert payload["attempts"] == 1
    clock.advance(timedelta(minutes=1))
    assert await sender.dispatch_due() == 0


async def test_a_mail_server_that_refuses_the_recipient_with_550_fails_the_delivery_at_once(
    db, clock, sealer, sinks
) -> None:
    await record(db, clock, code_envelope(sealer, clock, channel="email", recipient="mette@example.invalid"))
    sender = dispatcher(db, clock, sealer, sinks)
    await sender.dispatch_due()

    [(kind, payload)] = await outcomes(db)
    assert kind == "DeliveryFailed" and "550" in payload["reason"]
    assert (await the_delivery(db)).status == "failed"


async def test_a_wrong_gateway_token_fails_the_delivery(db, clock, sealer, sinks) -> None:
    gateway = SmsGateway(url=sinks.sms_url, token=SecretStr("wrong"), sender="Adgang")
    await record(db, clock, code_envelope(sealer, clock))
    await dispatcher(db, clock, sealer, sinks, sms=gateway).dispatch_due()
    [(kind, payload)] = await outcomes(db)
    assert kind == "DeliveryFailed" and "HTTP 401" in payload["reason"]


async def test_a_code_that_expires_before_it_could_be_delivered_fails_and_is_not_tried_again(
    db, clock, sealer, tmp_path, sink_ports
) -> None:
    down = Sinks(root=tmp_path / "sinks", smtp_port=sink_ports.smtp_port, sms_port=sink_ports.sms_port)
    sender = dispatcher(db, clock, sealer, down, max_attempts=50)
    await record(db, clock, code_envelope(sealer, clock, expires_in=timedelta(minutes=1)))
    await sender.dispatch_due()
    assert (await the_delivery(db)).status == "pending"

    clock.advance(timedelta(minutes=1))
    assert await sender.dispatch_due() == 1

    delivery = await the_delivery(db)
    assert delivery.status == "failed" and delivery.attempts == 1
    [(kind, payload)] = await outcomes(db)
    assert kind == "DeliveryFailed" and payload["reason"] == EXPIRED == "expired before delivery"
    clock.advance(timedelta(hours=1))
    assert await sender.dispatch_due() == 0
    assert (await the_delivery(db)).attempts == 1


async def test_a_code_recorded_after_it_expired_is_failed_without_an_attempt(
    db, clock, sealer, sinks
) -> None:
    await record(db, clock, code_envelope(sealer, clock, expires_in=timedelta(seconds=-1)))
    await dispatcher(db, clock, sealer, sinks).dispatch_due()
    assert read_sms(sinks.root, MOBILE) == []
    [(kind, payload)] = await outcomes(db)
    assert (kind, payload["reason"], payload["attempts"]) == ("DeliveryFailed", EXPIRED, 0)


class EchoingGateway:
    """A gateway whose error quotes the message it was given, as some do."""

    async def send(self, *, to: str, text: str, reference: str) -> SmsReceipt:
        raise TransientDeliveryError(f"gateway busy, could not send {text!r} to {to}")


async def test_the_code_is_never_written_to_a_log_or_an_error(db, clock, sealer, sinks, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    await record(db, clock, code_envelope(sealer, clock))
    await record(db, clock, code_envelope(sealer, clock, channel="email", recipient=ADDRESS))
    await record(db, clock, code_envelope(sealer, clock, recipient="+4500000000"))
    await record(db, clock, code_envelope(sealer, clock, channel="email", recipient="x@example.invalid"))
    await dispatcher(db, clock, sealer, sinks).dispatch_due()
    await record(db, clock, code_envelope(sealer, clock, recipient="+4520123457"))
    await dispatcher(db, clock, sealer, sinks, sms=EchoingGateway()).dispatch_due()

    assert len(read_sms(sinks.root, MOBILE)) == 1 and len(read_mail(sinks.root, ADDRESS)) == 1
    assert "delivered otp_login" in caplog.text and "failed for good" in caplog.text
    assert CODE not in caplog.text
    assert all(CODE not in record.getMessage() for record in caplog.records)
    async with db.transaction() as session:
        errors = list(
            await session.scalars(select(Delivery.last_error).where(Delivery.last_error.is_not(None)))
        )
    assert len(errors) == 3 and all(CODE not in error for error in errors)
    assert any("[code]" in error for error in errors)
    assert all(CODE not in json.dumps(payload) for _, payload in await outcomes(db))


async def test_in_development_the_api_shows_what_the_sinks_received_and_staff_the_delivery_records(
    database_url, db, clock, sealer, sinks
) -> None:
    await record(db, clock, code_envelope(sealer, clock))
    await record(db, clock, code_envelope(sealer, clock, channel="email", recipient=ADDRESS))
    await dispatcher(db, clock, sealer, sinks).dispatch_due()

    identity = IdentityKeys(clock)
    settings = NotifierSettings(
        database_url=database_url, var_dir=sinks.root.parent, identity_jwks_url="http://identity.test/jwks"
    )
    api = create_api(settings, clock=clock, jwks_client=identity.jwks_client())
    async with httpx.AsyncClient(transport=AppTransport(app=api), base_url="http://notifier") as client:
        sms = (await client.get(f"/dev/sms/{MOBILE}")).json()
        mail = (await client.get(f"/dev/mail/{ADDRESS.upper()}")).json()
        nobody = await client.get("/dev/sms/+4599999999")
        # The delivery records are support staff's, in development too (docs/notifications.md).
        deliveries = (
            await client.get("/v1/deliveries", params={"kind": "otp_login"}, headers=identity.staff())
        ).json()

    assert [m["to"] for m in sms] == [MOBILE] and CODE in sms[0]["text"] and sms[0]["sender"] == "Adgang"
    assert mail[0]["from"] == "Adgang Selvbetjening <no-reply@adgang.example.dk>"
    assert mail[0]["subject"] == "Din engangskode til Selvbetjening" and CODE in mail[0]["text"]
    assert nobody.status_code == 200 and nobody.json() == []
    assert {d["channel"] for d in deliveries} == {"sms", "email"}
    assert all(d["expires_at"] and d["deliver_by"] is None for d in deliveries)
