"""Invoice documents, fetched from billing when the notifier delivers them (S10).

Billing renders an invoice's PDF, OIOUBL or Peppol document from what it stored when the
invoice was issued, and answers it to the notifier on an internal route:

    GET <BILLING_URL>/internal/v1/invoices/<invoice id>/document?format=pdf|oioubl|peppol
    Authorization: Bearer <BILLING_DOCUMENT_TOKEN>

The notifier keeps no copy: each attempt asks again, so a document is always the one billing
answers for the invoice as issued. Billing not answering is transient (the delivery is tried
again); an invoice billing does not know (404) or a format it cannot render for it (409) is
permanent, with billing's own words in the reason.
"""

from __future__ import annotations

import json
from typing import Literal, Self
from uuid import UUID

import httpx
from pydantic import SecretStr

from services.notifier.transport_base import PermanentDeliveryError, TransientDeliveryError, excerpt
from shared.tls import default_tls_context

DocumentFormat = Literal["pdf", "oioubl", "peppol"]

# Billing's PDF of an invoice with tens of thousands of lines is a few MiB; mail servers take
# attachments of about 25 MiB. Whatever answers at billing's address is read no further.
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
# A problem+json's detail is all that is wanted of an answer that is not the document.
PROBLEM_MAX_BYTES = 64 * 1024

MEDIA_TYPES: dict[str, str] = {
    "pdf": "application/pdf",
    "oioubl": "application/xml",
    "peppol": "application/xml",
}


class BillingDocuments:
    """A client of billing's internal document route; one connection pool for the worker."""

    def __init__(
        self,
        *,
        url: str,
        token: SecretStr | None,
        timeout: float = 10.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = url.rstrip("/")
        self._token = token
        self._max_bytes = max_bytes
        self._client = httpx.AsyncClient(
            verify=default_tls_context(), timeout=timeout, transport=transport, follow_redirects=False
        )

    async def fetch(self, invoice_id: UUID, format: DocumentFormat) -> bytes:
        """The invoice's document in `format`, as billing renders it for the issued invoice."""
        if self._token is None:
            raise PermanentDeliveryError(
                "no token for billing's documents is configured (ADGANG_NOTIFIER_BILLING_DOCUMENT_TOKEN)"
            )
        what = f"invoice {invoice_id}'s {format} document"
        request = self._client.build_request(
            "GET",
            f"{self._url}/internal/v1/invoices/{UUID(str(invoice_id))}/document",
            params={"format": format},
            headers={
                "Authorization": f"Bearer {self._token.get_secret_value()}",
                "Accept": f"{MEDIA_TYPES[format]}, application/problem+json",
            },
        )
        try:
            response = await self._client.send(request, stream=True)
            try:
                status = response.status_code
                limit = self._max_bytes if status == 200 else PROBLEM_MAX_BYTES
                content = await _read_at_most(response, limit)
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            raise TransientDeliveryError(
                f"billing did not answer for {what} ({self._url}): {type(exc).__name__}: {exc}"
            ) from exc
        if status == 200:
            if content is None:
                raise PermanentDeliveryError(
                    f"billing's answer for {what} is larger than {self._max_bytes / (1024 * 1024):g} MiB "
                    "(ADGANG_NOTIFIER_BILLING_DOCUMENT_MAX_BYTES); it was not read further"
                )
            media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type != MEDIA_TYPES[format] or not content:
                raise PermanentDeliveryError(
                    f"billing answered {what} with {media_type or 'no content type'} "
                    f"({len(content)} bytes), not {MEDIA_TYPES[format]}"
                )
            return content
        said = _problem_detail(content or b"")
        if status in (404, 409):
            # 404: billing has no such invoice (or does not serve documents to the notifier);
            # 409: the invoice has no buyer endpoint for that format. Asking again will not help.
            raise PermanentDeliveryError(f"billing has no {what} (HTTP {status}): {said}", status_code=status)
        if status in (401, 403):
            # The operator's configuration, which can be mended while the delivery waits.
            raise TransientDeliveryError(
                f"billing refused the notifier's document token for {what} (HTTP {status}): {said}; "
                "ADGANG_NOTIFIER_BILLING_DOCUMENT_TOKEN must equal billing's DOCUMENT_READER_TOKEN",
                status_code=status,
            )
        if status == 429 or status >= 500:
            raise TransientDeliveryError(f"billing failed {what} (HTTP {status}): {said}", status_code=status)
        raise PermanentDeliveryError(f"billing refused {what} (HTTP {status}): {said}", status_code=status)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


async def _read_at_most(response: httpx.Response, limit: int) -> bytes | None:
    """The body of a streamed `response`, or None as soon as it is longer than `limit` bytes
    (by its Content-Length or by what arrived), without reading the rest."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _problem_detail(content: bytes) -> str:
    """A problem+json's `detail` (or `title`), else the start of the body."""
    text = content.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        return excerpt(text)
    if isinstance(body, dict):
        for key in ("detail", "title"):
            if isinstance(body.get(key), str) and body[key]:
                return excerpt(body[key])
    return excerpt(text)
