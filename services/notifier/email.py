"""Email: building the message and handing it to an SMTP server (one-time codes, S7; invoices, S8, S10).

Every message is plain text in UTF-8, with documents attached where it carries any (an
invoice's PDF). Its Message-ID is derived from the delivery's id, which
is derived from the source event, so a redelivered event or a retry after a crash sends a mail
the receiving side recognises as the same one.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Literal

import aiosmtplib
from pydantic import SecretStr

from services.notifier.transport_base import PermanentDeliveryError, TransientDeliveryError

SmtpTls = Literal["none", "starttls", "tls"]


def parse_mailbox(value: str) -> Address:
    """`Display Name <local@domain>` (or a bare address) as an `Address`; ValueError if it is not one."""
    name, address = parseaddr(value)
    local, at, domain = address.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in address):
        raise ValueError(f"not an email address with an optional display name: {value!r}")
    return Address(display_name=name, username=local, domain=domain)


def message_id_header(message_id: str, *, domain: str) -> str:
    """The Message-ID header for a delivery: its id at the sender's domain."""
    return f"<{message_id}@{domain}>"


@dataclass(frozen=True)
class Attachment:
    """A document attached to a mail: `application/pdf` unless told."""

    filename: str
    content: bytes
    maintype: str = "application"
    subtype: str = "pdf"


def build_email(
    *,
    message_id: str,
    sender: Address,
    to: str,
    subject: str,
    text: str,
    date: datetime,
    language: str,
    attachments: Sequence[Attachment] = (),
) -> EmailMessage:
    """A text/plain UTF-8 message, multipart/mixed with `attachments` when there are any;
    `date` must be timezone-aware."""
    if date.tzinfo is None:
        raise ValueError("date must be timezone-aware")
    message = EmailMessage()
    message["Message-ID"] = message_id_header(message_id, domain=sender.domain)
    message["Date"] = format_datetime(date)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies to a code
    # Quoted-printable keeps the text (and the code) readable in the raw mail, and needs no
    # 8BITMIME from the server.
    message.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    for attachment in attachments:
        # Makes the message multipart/mixed, the text its first part; base64 for the bytes.
        message.add_attachment(
            attachment.content,
            maintype=attachment.maintype,
            subtype=attachment.subtype,
            filename=attachment.filename,
        )
    # Last: set_content clears the Content-* headers, and add_attachment moves them to the text part.
    message["Content-Language"] = language
    return message


@dataclass(frozen=True)
class EmailReceipt:
    message_id: str
    location: str


class SmtpTransport:
    """Sends a message through one SMTP server (the operator's relay; the mail sink locally).

    Failures that may pass (no connection, timeouts, 4xx answers) are transient. A 5xx answer
    to the recipient or to the message itself is permanent: the same mail will be refused
    again. A 5xx to login or sender is the operator's configuration, which can be mended while
    the delivery waits, so it stays transient.
    """

    name = "smtp"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        tls: SmtpTls,
        username: str | None = None,
        password: SecretStr | None = None,
        timeout: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("the SMTP username and password must be given together")
        self._host = host
        self._port = port
        self._tls = tls
        self._username = username
        self._password = password
        self._timeout = timeout
        self._tls_context = tls_context

    async def send(self, message: EmailMessage) -> EmailReceipt:
        message_id = str(message["Message-ID"])
        try:
            await aiosmtplib.send(
                message,
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=self._password.get_secret_value() if self._password else None,
                use_tls=self._tls == "tls",
                start_tls=self._tls == "starttls",
                tls_context=self._tls_context,
                timeout=self._timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refusal.code for refusal in exc.recipients]
            error = _refusal(f"recipient refused ({_answers(exc.recipients)})", permanent=min(codes) >= 500)
            raise error from exc
        except (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPDataError) as exc:
            raise _refusal(f"mail refused: {exc.code} {exc.message}", permanent=exc.code >= 500) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise TransientDeliveryError(
                f"mail server {self._host}:{self._port} answered {exc.code} {exc.message}",
                status_code=exc.code,
            ) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TransientDeliveryError(
                f"could not send mail through {self._host}:{self._port}: {type(exc).__name__}: {exc}"
            ) from exc
        return EmailReceipt(message_id=message_id, location=f"smtp://{self._host}:{self._port}/{message_id}")


def _refusal(reason: str, *, permanent: bool) -> PermanentDeliveryError | TransientDeliveryError:
    return PermanentDeliveryError(reason) if permanent else TransientDeliveryError(reason)


def _answers(refusals: list[aiosmtplib.SMTPRecipientRefused]) -> str:
    return "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in refusals)
