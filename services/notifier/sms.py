"""SMS: a client of an HTTP SMS gateway in the shape Danish gateways share (one-time codes, S7).

`POST <url>` with a bearer token and a JSON body::

    {"recipients": [{"msisdn": 4520123456}], "message": "…", "sender": "Adgang",
     "reference": "<delivery message id>"}

The reference is the delivery's id, derived from the source event, so a gateway that keeps
references (and the local sink) recognises a second attempt at the same message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Self

import httpx
from pydantic import SecretStr

from services.notifier.transport_base import HttpRetry, PermanentDeliveryError, excerpt
from shared.tls import default_tls_context

# An alphanumeric sender id: what a phone shows instead of a number; 11 characters at most.
SENDER_PATTERN = r"^[A-Za-z0-9 ]{1,11}$"

# GSM 03.38: the characters every phone shows, one septet each, and the extension table's two.
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")


def gsm7_septets(text: str) -> int | None:
    """Length of `text` in the GSM 7-bit alphabet, or None when it needs UCS-2."""
    septets = 0
    for char in text:
        if char in _GSM7_BASIC:
            septets += 1
        elif char in _GSM7_EXTENSION:
            septets += 2
        else:
            return None
    return septets


def sms_segments(text: str) -> int:
    """How many SMS `text` is sent as (160 GSM-7 or 70 UCS-2 characters fit in one)."""
    septets = gsm7_septets(text)
    if septets is not None:
        return 1 if septets <= 160 else -(-septets // 153)
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= 70 else -(-units // 67)


def msisdn(number: str) -> int:
    """An E.164 number (`+4520123456`) as the gateway wants it (4520123456); ValueError if it is
    not written as one. Whether the number exists is the gateway's to say (it answers 400)."""
    if not re.fullmatch(r"\+[1-9]\d{6,14}", number):
        raise ValueError(f"not an E.164 phone number: {number!r}")
    return int(number[1:])


@dataclass(frozen=True)
class SmsReceipt:
    reference: str
    location: str


class SmsGateway:
    """Sends one SMS through the gateway, retrying what may pass like the e-Boks HTTP transport
    (`HttpRetry`); any other refusal (400 bad number, 401 wrong token, …) is permanent."""

    name = "sms"

    def __init__(
        self,
        *,
        url: str,
        token: SecretStr,
        sender: str,
        timeout: float = 10.0,
        retry: HttpRetry | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not re.fullmatch(SENDER_PATTERN, sender):
            raise ValueError(f"an SMS sender name is 1 to 11 letters, digits or spaces, not {sender!r}")
        self._url = url
        self._token = token
        self._sender = sender
        self._retry = retry or HttpRetry()
        self._client = httpx.AsyncClient(
            verify=default_tls_context(), timeout=timeout, transport=transport, follow_redirects=False
        )

    async def send(self, *, to: str, text: str, reference: str) -> SmsReceipt:
        try:
            recipient = msisdn(to)
        except ValueError as exc:
            raise PermanentDeliveryError(str(exc)) from exc
        response = await self._retry.post(
            self._client,
            self._url,
            what=f"the SMS gateway did not accept message {reference}",
            json={
                "recipients": [{"msisdn": recipient}],
                "message": text,
                "sender": self._sender,
                "reference": reference,
            },
            headers={"Authorization": f"Bearer {self._token.get_secret_value()}"},
        )
        if not 200 <= response.status_code < 300:
            raise PermanentDeliveryError(
                f"the SMS gateway refused message {reference} with HTTP {response.status_code}: "
                f"{excerpt(response.text)}",
                status_code=response.status_code,
            )
        return SmsReceipt(reference=reference, location=response.headers.get("location", self._url))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
