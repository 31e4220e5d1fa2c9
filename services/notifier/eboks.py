"""Ways of handing a MeMo letter to the company's e-Boks (S2): a spool directory, or the
contracted e-Boks endpoint over HTTP (docs/eboks.md).

Both keep the transports' promise (`transport_base.py`): a given ``message_uuid`` reaches the
mailbox at most once, and a second attempt is reported as ``already_delivered`` rather than as a
new letter.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from uuid import UUID

from services.notifier.memo import ensure_cvr
from services.notifier.transport_base import (
    DeliveryReceipt,
    HttpClientOptions,
    OwnsHttpClient,
    PermanentDeliveryError,
    TransientDeliveryError,
    receipt_of,
    write_once,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.12


class EboksTransport(Protocol):
    name: str

    async def deliver(
        self, *, recipient_cvr: str, message_uuid: UUID, document: bytes
    ) -> DeliveryReceipt: ...


class SpoolTransport:
    """Delivers letters as files ``<directory>/<cvr>/<message_uuid>.xml``.

    Used where no e-Boks endpoint is contracted (development, demos, tests) and as a
    hand-off directory for a separate upload job. A letter file appears complete or not
    at all, and is never overwritten, even by several processes sharing the directory.
    """

    name = "spool"

    def __init__(self, directory: Path) -> None:
        self._directory = Path(directory)

    @property
    def directory(self) -> Path:
        return self._directory

    async def deliver(self, *, recipient_cvr: str, message_uuid: UUID, document: bytes) -> DeliveryReceipt:
        try:
            ensure_cvr(recipient_cvr, field="recipient_cvr")
        except ValueError as exc:
            raise PermanentDeliveryError(str(exc)) from exc
        # Normalise so that only the canonical UUID spelling can ever reach the file name.
        canonical_uuid = UUID(str(message_uuid))
        return await asyncio.to_thread(self._write_once, recipient_cvr, canonical_uuid, document)

    def list_letters(self, cvr: str) -> list[Path]:
        """The letters delivered to ``cvr``, oldest first."""
        folder = self._directory / ensure_cvr(cvr)
        if not folder.is_dir():
            return []
        letters = [path for path in folder.glob("*.xml") if path.is_file()]
        return sorted(letters, key=lambda path: (path.stat().st_mtime_ns, path.name))

    def _write_once(self, cvr: str, message_uuid: UUID, document: bytes) -> DeliveryReceipt:
        try:
            final, written = write_once(self._directory, Path(cvr), f"{message_uuid}.xml", document)
        except OSError as exc:
            raise TransientDeliveryError(f"could not spool letter {message_uuid}: {exc}") from exc
        return DeliveryReceipt(message_uuid=message_uuid, location=str(final), already_delivered=not written)


class HttpTransport(OwnsHttpClient):
    """POSTs the MeMo XML to the e-Boks sender endpoint named in the operator's contract.

    Retries what may pass (connection errors, timeouts, 429, 5xx) with exponential backoff
    and jitter; any other refusal is permanent. HTTP 409 means the receiver already holds
    this ``X-Message-UUID``, which is the success we wanted.
    """

    name = "http"

    def __init__(self, *, url: str, **client: Unpack[HttpClientOptions]) -> None:
        super().__init__(**client)
        self._url = url

    async def deliver(self, *, recipient_cvr: str, message_uuid: UUID, document: bytes) -> DeliveryReceipt:
        try:
            ensure_cvr(recipient_cvr, field="recipient_cvr")
        except ValueError as exc:
            raise PermanentDeliveryError(str(exc)) from exc
        headers = {
            "Content-Type": "application/xml",
            "X-Message-UUID": str(message_uuid),
            "X-Recipient-CVR": recipient_cvr,
        }
        response = await self._retry.post(
            self._client,
            self._url,
            what=f"e-Boks did not accept letter {message_uuid}",
            content=document,
            headers=headers,
        )
        return receipt_of(response, message_uuid, url=self._url, refused=f"e-Boks refused letter {message_uuid}")
