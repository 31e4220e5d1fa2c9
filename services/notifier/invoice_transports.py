"""Ways of handing an issued invoice's document to where the company chose to receive it (S10):
an e-invoice (OIOUBL or Peppol BIS) to an access point, or a PDF to a print provider.

They keep the transports' promise (`transport_base.py`): a given invoice reaches its
receiver at most once, and a second attempt is reported as ``already_delivered`` rather than
as a new invoice, so the notifier may retry after a crash or a redelivered event. The spools
write each invoice's file once (`write_once`); the HTTP transport names the invoice in an
`Idempotency-Key` header and takes the access point's 409 as "already have it".
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol
from uuid import UUID

from pydantic import SecretStr

from services.notifier.transport_base import (
    DeliveryReceipt,
    HttpClientOptions,
    OwnsHttpClient,
    PermanentDeliveryError,
    TransientDeliveryError,
    receipt_of,
    write_once,
)

EinvoiceFormat = Literal["oioubl", "peppol"]

# An OIOUBL invoice goes to the buyer's GLN/EAN location number (13 digits); a Peppol invoice
# to a participant `<scheme>:<id>` (ISO 6523 ICD, e.g. 0088 GLN, 0184 Danish CVR, 0198 SE).
# Both become directory names in the spool, so nothing else is accepted.
_ENDPOINTS: dict[str, re.Pattern[str]] = {
    "oioubl": re.compile(r"^[0-9]{13}$"),
    "peppol": re.compile(r"^[0-9]{4}:[A-Za-z0-9][A-Za-z0-9._-]{0,49}$"),
}

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.12


def ensure_endpoint(format: EinvoiceFormat, endpoint: str) -> str:
    """`endpoint` if it is a receiver of `format` (see `_ENDPOINTS`); PermanentDeliveryError if not."""
    pattern = _ENDPOINTS.get(format)
    if pattern is None:
        raise PermanentDeliveryError(f"{format!r} is not an e-invoice format (oioubl or peppol)")
    if not pattern.fullmatch(endpoint):
        wanted = "a 13-digit GLN" if format == "oioubl" else "a Peppol participant <scheme>:<id>"
        raise PermanentDeliveryError(f"{endpoint!r} is not {wanted}")
    return endpoint


class EinvoiceTransport(Protocol):
    name: str

    async def deliver(
        self, *, format: EinvoiceFormat, endpoint: str, invoice_id: UUID, document: bytes
    ) -> DeliveryReceipt: ...


class EinvoiceSpool:
    """Delivers e-invoices as files ``<directory>/<format>/<endpoint>/<invoice_id>.xml``.

    Used where no access point is contracted (development, demos, tests) and as a hand-off
    directory for a separate upload job, like the e-Boks spool."""

    name = "spool"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    async def deliver(
        self, *, format: EinvoiceFormat, endpoint: str, invoice_id: UUID, document: bytes
    ) -> DeliveryReceipt:
        ensure_endpoint(format, endpoint)
        invoice_id = UUID(str(invoice_id))  # only the canonical spelling reaches the file name
        try:
            final, written = await asyncio.to_thread(
                write_once, self.directory, Path(format, endpoint), f"{invoice_id}.xml", document
            )
        except OSError as exc:
            raise TransientDeliveryError(f"could not spool e-invoice {invoice_id}: {exc}") from exc
        return DeliveryReceipt(invoice_id, str(final), already_delivered=not written)

    def list_invoices(self, format: EinvoiceFormat, endpoint: str) -> list[Path]:
        """The e-invoices spooled for `endpoint`, oldest first."""
        folder = self.directory / format / ensure_endpoint(format, endpoint)
        return _oldest_first(folder, "*.xml")


class EinvoiceHttpTransport(OwnsHttpClient):
    """POSTs the invoice XML to the access point named in the operator's contract.

    ``Idempotency-Key`` is the invoice id, so the access point recognises an invoice it
    already has and answers 409, which is the success we wanted. Connection errors, timeouts,
    429 and 5xx are retried (`HttpRetry`); any other refusal is permanent."""

    name = "http"

    def __init__(self, *, url: str, token: SecretStr | None = None, **client: Unpack[HttpClientOptions]) -> None:
        super().__init__(**client)
        self._url = url
        self._token = token

    async def deliver(
        self, *, format: EinvoiceFormat, endpoint: str, invoice_id: UUID, document: bytes
    ) -> DeliveryReceipt:
        ensure_endpoint(format, endpoint)
        headers = {
            "Content-Type": "application/xml",
            "Idempotency-Key": str(invoice_id),
            "X-Document-Format": format,
            "X-Recipient-Endpoint": endpoint,
        }
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        response = await self._retry.post(
            self._client,
            self._url,
            what=f"the access point did not accept e-invoice {invoice_id}",
            content=document,
            headers=headers,
        )
        return receipt_of(
            response, invoice_id, url=self._url, refused=f"the access point refused e-invoice {invoice_id}"
        )


class PrintSpool:
    """Hands invoices on paper to a print provider as files ``<directory>/<invoice_id>.pdf``,
    each written once, which the provider picks up. The PDF's buyer block is the address a
    window envelope shows, so the file is all the provider needs."""

    name = "print"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    async def deliver(self, *, invoice_id: UUID, document: bytes) -> DeliveryReceipt:
        invoice_id = UUID(str(invoice_id))
        try:
            final, written = await asyncio.to_thread(
                write_once, self.directory, Path(), f"{invoice_id}.pdf", document
            )
        except OSError as exc:
            raise TransientDeliveryError(f"could not spool invoice {invoice_id} for print: {exc}") from exc
        return DeliveryReceipt(invoice_id, str(final), already_delivered=not written)

    def list_invoices(self) -> list[Path]:
        """The invoices waiting for print, oldest first."""
        return _oldest_first(self.directory, "*.pdf")


def _oldest_first(folder: Path, pattern: str) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [path for path in folder.glob(pattern) if path.is_file()]
    return sorted(found, key=lambda path: (path.stat().st_mtime_ns, path.name))
