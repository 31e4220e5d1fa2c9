"""What the notifier's transports share: the delivery errors and receipt, the write-once
spool file (e-Boks letters, e-invoices, print, the development sinks), and an owned HTTP client
with TLS and retries (`OwnsHttpClient`, used by the e-Boks and e-invoice HTTP transports).

Every transport keeps one promise: a given message id reaches its receiver at most once, and a
second attempt is reported as ``already_delivered`` rather than as a new message. That is what
makes it safe for the notifier to retry after a crash or a redelivered event.
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
from typing import Any, Self, TypedDict
from uuid import UUID

import httpx

from shared.tls import default_tls_context

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


class HttpClientOptions(TypedDict, total=False):
    """How an `OwnsHttpClient` reaches its receiver: TLS, timeout and retries (see there)."""

    client_cert: Path | None
    client_key: Path | None
    ca_bundle: Path | None
    timeout: float
    max_attempts: int
    backoff_base: float
    backoff_max: float
    transport: httpx.AsyncBaseTransport | None
    sleep: Callable[[float], Awaitable[None]]


class OwnsHttpClient:
    """A transport that owns an HTTP client (`_client`), retries what may pass through it
    (`_retry`, `HttpRetry`) and closes it when done with.

    The client verifies the receiver with the system's CAs (or `ca_bundle`'s), presents the
    operator's client certificate where the receiver asks for mutual TLS, and never follows a
    redirect."""

    _client: httpx.AsyncClient
    _retry: HttpRetry

    def __init__(
        self,
        *,
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
        self._retry = HttpRetry(
            max_attempts=max_attempts, backoff_base=backoff_base, backoff_max=backoff_max, sleep=sleep
        )
        self._client = httpx.AsyncClient(
            verify=tls_context(client_cert, client_key, ca_bundle),
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

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
    if ca_bundle is None and client_cert is None:
        return default_tls_context()  # the same for every such transport: made once
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
