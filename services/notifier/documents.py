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

from services.notifier.transports import PermanentDeliveryError, TransientDeliveryError, excerpt

DocumentFormat = Literal["pdf", "oioubl", "peppol"]

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
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = url.rstrip("/")
        self._token = token
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport, follow_redirects=False)

    async def fetch(self, invoice_id: UUID, format: DocumentFormat) -> bytes:
        """The invoice's document in `format`, as billing renders it for the issued invoice."""
        if self._token is None:
            raise PermanentDeliveryError(
                "no token for billing's documents is configured (ADGANG_NOTIFIER_BILLING_DOCUMENT_TOKEN)"
            )
        what = f"invoice {invoice_id}'s {format} document"
        try:
            response = await self._client.get(
                f"{self._url}/internal/v1/invoices/{UUID(str(invoice_id))}/document",
                params={"format": format},
                headers={
                    "Authorization": f"Bearer {self._token.get_secret_value()}",
                    "Accept": f"{MEDIA_TYPES[format]}, application/problem+json",
                },
            )
        except httpx.TransportError as exc:
            raise TransientDeliveryError(
                f"billing did not answer for {what} ({self._url}): {type(exc).__name__}: {exc}"
            ) from exc
        status = response.status_code
        if status == 200:
            media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type != MEDIA_TYPES[format] or not response.content:
                raise PermanentDeliveryError(
                    f"billing answered {what} with {media_type or 'no content type'} "
                    f"({len(response.content)} bytes), not {MEDIA_TYPES[format]}"
                )
            return response.content
        said = _problem_detail(response)
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


def _problem_detail(response: httpx.Response) -> str:
    """A problem+json's `detail` (or `title`), else the start of the body."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return excerpt(response.text)
    if isinstance(body, dict):
        for key in ("detail", "title"):
            if isinstance(body.get(key), str) and body[key]:
                return excerpt(body[key])
    return excerpt(response.text)
