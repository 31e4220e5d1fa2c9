"""Local stand-ins for a mail server and an SMS gateway, for development and tests.

`adgang sinks` runs both in one process: a real SMTP server (aiosmtpd) that accepts every mail
and keeps it as `<root>/mail/<recipient address>/<message id>.eml`, and a small HTTP SMS
gateway, speaking what `services.notifier.sms.SmsGateway` sends, that keeps every message as
`<root>/sms/<E.164 number>/<reference>.json`. The notifier's API shows both in development
(`/dev/mail/{address}`, `/dev/sms/{msisdn}`).

Like a real gateway they can refuse, so the failure paths can be tried locally: the mail sink
refuses every address at a `.invalid` domain (RFC 2606) with 550, and the SMS gateway answers
400 to a number that is not a valid phone number and 401 to a wrong token.

A message is stored once per Message-ID (mail) or reference (SMS), as a mail client would
show a redelivered mail once: a second copy of the same message is acknowledged and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import phonenumbers
import uvicorn
from aiosmtpd.smtp import SMTP, Envelope, Session
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.notifier.transport_base import write_once
from shared.logs import mask_contact

log = logging.getLogger(__name__)

# Addresses and numbers become directory names: only what is safe there is accepted.
MAILBOX_PATTERN = r"^[A-Za-z0-9.!#$%&'*+=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,189}$"
MSISDN_PATTERN = r"^\+[1-9][0-9]{6,14}$"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9@._+-]{1,150}$")


# --- the mail sink ------------------------------------------------------------------------------


class _MailStore:
    """aiosmtpd handler: every recipient gets the mail in its own folder."""

    def __init__(self, root: Path) -> None:
        self._root = root

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if not re.fullmatch(MAILBOX_PATTERN, address):
            return "553 5.1.3 the mail sink keeps only plain addresses"
        if address.lower().rstrip(".").endswith(".invalid"):
            return f"550 5.1.1 <{address}>: no such mailbox (the sink refuses every .invalid address)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        message_id = str(message.get("Message-ID") or "").strip("<> ")
        name = (
            message_id if _SAFE_NAME.fullmatch(message_id) else _digest(message_id or uuid.uuid4().hex)
        ) + ".eml"
        for recipient in envelope.rcpt_tos:
            stored = await asyncio.to_thread(
                _write_once, self._root / mailbox_folder(recipient), name, content
            )
            log.info(
                "mail sink: %s %s for %s", "stored" if stored else "already had", name, mask_contact(recipient)
            )
        return "250 2.0.0 stored by the Adgang mail sink"


class MailSink:
    """The SMTP server, in the running event loop."""

    def __init__(self, root: Path, *, host: str = "127.0.0.1", port: int = 8025) -> None:
        self.root = root / "mail"
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        # aiosmtpd logs every DATA line at DEBUG: one-time codes must not reach a log.
        logging.getLogger("mail.log").setLevel(logging.WARNING)

    async def start(self) -> None:
        handler = _MailStore(self.root)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(handler, hostname="adgang-mail-sink", enable_SMTPUTF8=True, loop=loop),
            host=self.host,
            port=self.port,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


def mailbox_folder(address: str) -> str:
    return address.lower()


@dataclass(frozen=True)
class ReceivedAttachment:
    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True)
class ReceivedMail:
    message_id: str
    sender: str
    to: str
    subject: str
    date: datetime | None
    text: str
    attachments: tuple[ReceivedAttachment, ...] = ()


def read_mail(root: Path, address: str) -> list[ReceivedMail]:
    """The mails the sink under `root` holds for `address`, oldest first."""
    if not re.fullmatch(MAILBOX_PATTERN, address):
        return []
    mails = []
    for path in _oldest_first((root / "mail" / mailbox_folder(address)).glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        body = message.get_body(preferencelist=("plain",))
        date = message["Date"].datetime if message["Date"] is not None else None
        mails.append(
            ReceivedMail(
                message_id=str(message["Message-ID"] or ""),
                sender=str(message["From"] or ""),
                to=str(message["To"] or ""),
                subject=str(message["Subject"] or ""),
                date=date,
                text=body.get_content() if isinstance(body, EmailMessage) else "",
                attachments=tuple(
                    ReceivedAttachment(
                        filename=part.get_filename() or "",
                        content_type=part.get_content_type(),
                        content=_decoded(part),
                    )
                    for part in message.iter_attachments()
                ),
            )
        )
    return mails


def _decoded(part: EmailMessage) -> bytes:
    """An attachment's bytes, its transfer encoding undone."""
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


# --- the SMS gateway ----------------------------------------------------------------------------


class _Recipient(BaseModel):
    model_config = ConfigDict(extra="forbid")
    msisdn: int = Field(gt=0)


class SmsRequest(BaseModel):
    """What `SmsGateway` posts; the shape of common Danish gateways."""

    model_config = ConfigDict(extra="ignore")
    recipients: list[_Recipient] = Field(min_length=1, max_length=100)
    message: str = Field(min_length=1, max_length=1530)  # ten concatenated parts
    sender: str = Field(pattern=r"^[A-Za-z0-9 ]{1,11}$")
    reference: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$")


def sms_gateway_app(root: Path, *, token: str) -> Starlette:
    """The SMS gateway sink: `POST /v1/sms` with `Authorization: Bearer <token>`."""
    folder = root / "sms"
    expected = f"Bearer {token}".encode()

    async def send(request: Request) -> JSONResponse:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return _problem(401, "missing or wrong bearer token")
        try:
            body = SmsRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return _problem(
                400, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            )
        numbers = [f"+{recipient.msisdn}" for recipient in body.recipients]
        for number in numbers:
            if not _valid_number(number):
                return _problem(400, f"{number} is not a valid phone number")
        reference = body.reference or uuid.uuid4().hex
        received_at = datetime.now(UTC).isoformat()
        for number in numbers:
            record = {
                "id": reference,
                "sender": body.sender,
                "to": number,
                "text": body.message,
                "received_at": received_at,
            }
            content = json.dumps(record, ensure_ascii=False, indent=2).encode()
            stored = await asyncio.to_thread(_write_once, folder / number, f"{reference}.json", content)
            log.info(
                "sms sink: %s %s for %s", "stored" if stored else "already had", reference, mask_contact(number)
            )
        return JSONResponse({"ids": [reference]}, headers={"location": f"/v1/sms/{reference}"})

    return Starlette(routes=[Route("/v1/sms", send, methods=["POST"])])


class SmsSink:
    """The SMS gateway under uvicorn, in the running event loop."""

    def __init__(self, root: Path, *, token: str, host: str = "127.0.0.1", port: int = 8005) -> None:
        self.root = root / "sms"
        self.host = host
        self.port = port
        config = uvicorn.Config(
            sms_gateway_app(root, token=token),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1/sms"

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # uvicorn could not listen: raises its SystemExit
                raise RuntimeError(f"the SMS sink did not start on {self.host}:{self.port}")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError, SystemExit):
                await self._task
            self._task = None


class _EmbeddedServer(uvicorn.Server):
    """uvicorn in a loop it does not own: the process's owner handles the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True)
class ReceivedSms:
    id: str
    sender: str
    to: str
    text: str
    received_at: datetime


def read_sms(root: Path, number: str) -> list[ReceivedSms]:
    """The SMS the sink under `root` holds for `number` (E.164), oldest first."""
    if not re.fullmatch(MSISDN_PATTERN, number):
        return []
    messages = []
    for path in _oldest_first((root / "sms" / number).glob("*.json")):
        record: dict[str, Any] = json.loads(path.read_text())
        messages.append(
            ReceivedSms(
                id=record["id"],
                sender=record["sender"],
                to=record["to"],
                text=record["text"],
                received_at=datetime.fromisoformat(record["received_at"]),
            )
        )
    return messages


# --- the process --------------------------------------------------------------------------------


async def run_sinks(
    *, root: Path, ready_marker: Path, host: str, smtp_port: int, sms_port: int, token: str
) -> None:
    """Both sinks until SIGTERM or SIGINT; `ready_marker` holds the pid while both listen."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    mail = MailSink(root, host=host, port=smtp_port)
    sms = SmsSink(root, token=token, host=host, port=sms_port)
    await mail.start()
    try:
        await sms.start()
        try:
            await asyncio.to_thread(_write_marker, ready_marker)
            log.info("mail sink on smtp://%s:%d, SMS gateway sink on %s", host, smtp_port, sms.url)
            await stop.wait()
        finally:
            await asyncio.to_thread(ready_marker.unlink, missing_ok=True)
            await sms.stop()
    finally:
        await mail.stop()


# --- storage ------------------------------------------------------------------------------------


def _write_once(folder: Path, name: str, content: bytes) -> bool:
    """Keep `folder/name` as the spools keep a document (`write_once`); whether it was new."""
    return write_once(folder, Path(), name, content)[1]


def _write_marker(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(os.getpid()))  # read by the supervisor (`adgang run`, tests)


def _oldest_first(paths: Iterator[Path]) -> list[Path]:
    return sorted((p for p in paths if p.is_file()), key=lambda p: (p.stat().st_mtime_ns, p.name))


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def _valid_number(number: str) -> bool:
    try:
        return phonenumbers.is_valid_number(phonenumbers.parse(number))
    except phonenumbers.NumberParseException:
        return False


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"status": status, "detail": detail}, status_code=status)
