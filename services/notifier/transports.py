"""Ways of handing a MeMo letter to the company's e-Boks (S2), and what every transport shares:
the errors, the write-once spool file and the HTTP retries (`invoice_transports.py` uses them).

Every transport keeps one promise: a given ``message_uuid`` reaches the mailbox at most once,
and a second attempt is reported as ``already_delivered`` rather than as a new letter. That
is what makes it safe for the notifier to retry after a crash or a redelivered event.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self
from uuid import UUID

import httpx

from services.notifier.memo import ensure_cvr

_BODY_EXCERPT_CHARS = 200


class DeliveryError(Exception):
    """The message did not reach its recipient (an e-Boks, a mail server, an SMS gateway)."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class TransientDeliveryError(DeliveryError):
    """Delivery failed for a reason that may pass; the same letter may be tried again later."""


class PermanentDeliveryError(DeliveryError):
    """The receiver refused this letter; sending it again unchanged will not help."""


@dataclass(frozen=True)
class DeliveryReceipt:
    message_uuid: UUID
    location: str
    already_delivered: bool


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


def write_once(root: Path, folder: Path, name: str, document: bytes) -> tuple[Path, bool]:
    """Write `root/folder/name` complete or not at all, and never over an existing file, even
    with several processes sharing the directory; the path, and whether this call wrote it.

    The spools' promise (e-Boks letters, e-invoices, print): a document handed over twice is
    one file. `folder` and `name` must already be safe names; OSError if the disk fails."""
    directory = root / folder
    final = directory / name
    directory.mkdir(parents=True, exist_ok=True)
    if final.exists():
        return final, False
    temp_name: str | None = None
    try:
        # The temp name neither ends in the document's suffix nor looks like a document, so a
        # reader listing them never sees a half-written one.
        fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as temp_file:
            temp_file.write(document)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        # link() refuses to replace an existing name, atomically, across processes: exactly
        # one writer of a given name wins; rename() would overwrite.
        try:
            os.link(temp_name, final)
        except FileExistsError:
            return final, False
    finally:
        if temp_name is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
    # Without this a power loss can forget the new directory entries after we reported success.
    for relative in (folder, *folder.parents):
        _fsync_directory(root / relative)
    return final, True


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OwnsHttpClient:
    """A transport that owns an HTTP client (`_client`) and closes it when done with."""

    _client: httpx.AsyncClient

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


def receipt_of(response: httpx.Response, message_uuid: UUID, *, url: str, refused: str) -> DeliveryReceipt:
    """What an idempotent receiver's final answer means: 2xx delivered now, 409 delivered
    before (it already holds this id: the success we wanted), anything else a refusal that
    sending the same message again will not change."""
    status = response.status_code
    location = response.headers.get("location", url)
    if 200 <= status < 300:
        return DeliveryReceipt(message_uuid, location, already_delivered=False)
    if status == 409:
        return DeliveryReceipt(message_uuid, location, already_delivered=True)
    raise PermanentDeliveryError(f"{refused} with HTTP {status}: {excerpt(response.text)}", status_code=status)


class HttpTransport(OwnsHttpClient):
    """POSTs the MeMo XML to the e-Boks sender endpoint named in the operator's contract.

    Retries what may pass (connection errors, timeouts, 429, 5xx) with exponential backoff
    and jitter; any other refusal is permanent. HTTP 409 means the receiver already holds
    this ``X-Message-UUID``, which is the success we wanted.
    """

    name = "http"

    def __init__(
        self,
        *,
        url: str,
        client_cert: Path | None = None,
        client_key: Path | None = None,
        ca_bundle: Path | None = None,
        timeout: float = 10.0,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if (client_cert is None) != (client_key is None):
            raise ValueError("client_cert and client_key must be given together")
        self._url = url
        self._retry = HttpRetry(
            max_attempts=max_attempts, backoff_base=backoff_base, backoff_max=backoff_max, sleep=sleep
        )
        self._client = httpx.AsyncClient(
            verify=tls_context(client_cert, client_key, ca_bundle),
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

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


class HttpRetry:
    """POSTs again what may pass — connection errors, timeouts, 429 and 5xx — with exponential
    backoff and jitter, honouring a `Retry-After` in seconds. Shared by the HTTP transports."""

    def __init__(
        self,
        *,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if backoff_base < 0 or backoff_max < 0:
            raise ValueError("backoff_base and backoff_max must not be negative")
        self.max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._sleep = sleep

    async def post(self, client: httpx.AsyncClient, url: str, *, what: str, **request: Any) -> httpx.Response:
        """The first answer not worth retrying (2xx, or a 4xx other than 429), for the caller to
        judge; `TransientDeliveryError` starting with `what` once the attempts are spent."""
        last_failure = "no attempt made"
        last_status: int | None = None
        for attempt in range(1, self.max_attempts + 1):
            retry_after: float | None = None
            try:
                response = await client.post(url, **request)
            except httpx.TransportError as exc:
                last_failure = f"{type(exc).__name__}: {exc}"
                last_status = None
            else:
                status = response.status_code
                if status != 429 and status < 500:
                    return response
                last_failure = f"HTTP {status}: {excerpt(response.text)}"
                last_status = status
                retry_after = _retry_after_seconds(response)
            if attempt < self.max_attempts:
                await self._sleep(self.delay_before(attempt + 1, retry_after))
        raise TransientDeliveryError(
            f"{what} after {self.max_attempts} attempts; last failure: {last_failure}",
            status_code=last_status,
        )

    def delay_before(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self._backoff_max)
        ceiling = self._backoff_base * 2 ** (attempt - 2)
        # Jitter within [ceiling/2, ceiling): spreads out many notifiers retrying together
        # while each wait stays longer than the one before.
        return min(self._backoff_max, ceiling * (1 + random.random()) / 2)

    def worst_case_seconds(self, timeout: float) -> float:
        """The longest one `post` can take: every attempt timing out, every wait at its longest."""
        return self.max_attempts * timeout + (self.max_attempts - 1) * self._backoff_max


def tls_context(client_cert: Path | None, client_key: Path | None, ca_bundle: Path | None) -> ssl.SSLContext:
    """The TLS context of an HTTP transport: the system's (or `ca_bundle`'s) CAs, and the
    operator's client certificate where the receiver asks for mutual TLS."""
    if ca_bundle is not None:
        context = ssl.create_default_context(cafile=str(ca_bundle))
    else:
        context = httpx.create_ssl_context()
    if client_cert is not None and client_key is not None:
        context.load_cert_chain(certfile=str(client_cert), keyfile=str(client_key))
    return context


def _retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    # Only the delta-seconds form; an HTTP-date falls back to our own backoff.
    if not value.isascii() or not value.isdigit():
        return None
    return float(value)


def excerpt(body: str) -> str:
    """The start of a response body, on one line, for an error message."""
    flattened = " ".join(body.split())
    if len(flattened) <= _BODY_EXCERPT_CHARS:
        return flattened
    return flattened[:_BODY_EXCERPT_CHARS] + "…"
