"""The correlation id: one value that follows an HTTP request through every event it causes.

An API takes the caller's `X-Correlation-ID` when it is well formed, or makes a new one, and
echoes it in the response (`shared.web`). The outbox writes it on every event as the CloudEvents
extension attribute `correlationid` (`ce_correlationid`), with `causationid` (`ce_causationid`)
naming the event whose handler added it; the idempotent consumer puts both back in place while
its handler runs (`shared.messaging`), and the JSON logs write `correlation_id` on every line
(`shared.logs`). An event added outside any request or handler (a periodic job) starts its own
chain: its correlation id is its own `ce_id`. docs/operations.md, "Following one application
across services".
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

HEADER = "X-Correlation-ID"
CORRELATION_HEADER = "ce_correlationid"  # CloudEvents extension attribute `correlationid`
CAUSATION_HEADER = "ce_causationid"  # CloudEvents extension attribute `causationid`

# What a caller may choose: short, and only characters that are safe in a header, a log line and
# a query; a UUID fits. Anything else is replaced by a new id rather than refused: the id is for
# following a request, not a reason to fail one.
_WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")

_correlation: ContextVar[str | None] = ContextVar("adgang_correlation_id", default=None)
_causation: ContextVar[str | None] = ContextVar("adgang_causation_id", default=None)


def well_formed(value: str | None) -> str | None:
    """`value` if it may be used as a correlation id, else None."""
    return value if value is not None and _WELL_FORMED.fullmatch(value) else None


def new_correlation_id() -> str:
    return str(uuid.uuid4())


def current() -> str | None:
    """The correlation id of the request or event being handled, if any."""
    return _correlation.get()


def causation() -> str | None:
    """The id of the event whose handler is running, if any."""
    return _causation.get()


def set_current(correlation_id: str) -> None:
    """Set the correlation id for the rest of this task (an HTTP request's own task)."""
    _correlation.set(correlation_id)


@contextmanager
def correlated(correlation_id: str | None, causation_id: str | None = None) -> Iterator[None]:
    """Run a block as part of `correlation_id`'s chain, caused by the event `causation_id`."""
    correlation_token = _correlation.set(correlation_id)
    causation_token = _causation.set(causation_id)
    try:
        yield
    finally:
        _causation.reset(causation_token)
        _correlation.reset(correlation_token)


def extension_headers(event_id: str) -> list[tuple[str, str]]:
    """The CloudEvents extension headers an event added now carries: the current correlation id
    (or the event's own id, starting a chain) and, inside a handler, the event that caused it."""
    headers = [(CORRELATION_HEADER, current() or event_id)]
    if (cause := causation()) is not None:
        headers.append((CAUSATION_HEADER, cause))
    return headers


def from_headers(headers: Iterable[object]) -> tuple[str | None, str | None]:
    """The correlation id a consumed message carries (when well formed) and its own `ce_id`.
    Headers in odd shapes are passed over here: decoding the envelope judges them."""
    found: dict[str, str | None] = {}
    for header in headers or ():
        if not isinstance(header, tuple | list) or len(header) != 2:
            continue
        name, value = header
        if name in (CORRELATION_HEADER, "ce_id") and name not in found:
            try:
                text = value.decode() if isinstance(value, bytes | bytearray) else None
            except UnicodeDecodeError:
                text = None
            found[name] = well_formed(text)
    event_id = found.get("ce_id")
    return found.get(CORRELATION_HEADER) or event_id, event_id
