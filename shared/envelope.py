"""CloudEvents 1.0 over Kafka, binary content mode.

Attributes travel as `ce_*` headers, the value is the JSON payload. Decoding checks the value's
size, every required attribute, that the type is known, that it arrived on the topic it belongs
to, and that the payload validates; anything else is an `EnvelopeError` with a `kind` (a few
fixed words, the dead-letter metric's label and the `dlq_reason_kind` header) and a reason a
person can read (the `dlq_reason` header). docs/operations.md says what to do about each kind.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Generic, TypeVar

from pydantic import ValidationError

from shared.events import EVENT_TYPES, Event

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
REQUIRED = ("ce_id", "ce_source", "ce_type", "ce_specversion")


# The largest value a consumer parses. Our biggest events (a user's grants over a large group,
# an audit entry's details) are a few kilobytes, so 256 KiB is far above anything we publish,
# while parsing stays cheap and bounded. It is well below the broker's limit on a record
# (Kafka's `message.max.bytes` and the producer's `max.request.size`, 1 MiB by default), so an
# oversized value still fits on the dead-letter topic with the `dlq_*` headers added.
MAX_VALUE_BYTES = 256 * 1024
# The inbox keeps `ce_id` in a column of 64 characters (shared/messaging.py).
MAX_ID_LENGTH = 64


class ReasonKind(StrEnum):
    """Why a message went to `<topic>.dlq`: low-cardinality, for the metric's `reason` label."""

    OVERSIZED = "oversized"  # value over MAX_VALUE_BYTES; never parsed
    MISSING_HEADER = "missing-header"  # a required ce_* header absent, empty or null
    BAD_HEADER = "bad-header"  # a header not text, repeated differently, or a value we do not take
    BAD_KEY = "bad-key"  # the record's key is not UTF-8 text
    UNKNOWN_TYPE = "unknown-type"  # ce_type is no event we know (a newer producer?)
    WRONG_TOPIC = "wrong-topic"  # a known type on a topic it does not belong to
    NO_VALUE = "no-value"  # a record without a value
    INVALID_JSON = "invalid-json"  # the value is not JSON
    INVALID_PAYLOAD = "invalid-payload"  # JSON that the event's model refuses
    HANDLER_FAILED = "handler-failed"  # decoded fine; the handler failed on every retry


class EnvelopeError(ValueError):
    """A message that cannot be decoded into a known, valid event: `kind` says which way,
    the message says exactly what (it never quotes the value, which may carry personal data)."""

    def __init__(self, kind: ReasonKind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


E_co = TypeVar("E_co", bound=Event, covariant=True)


@dataclass(frozen=True)
class Envelope(Generic[E_co]):
    """A decoded message: its CloudEvents attributes and its typed event. Handlers declare the
    event they take (`Envelope[CustomerRegistered]`), so `envelope.event` needs no check."""

    id: str
    source: str
    type: str
    time: datetime
    subject: str
    event: E_co


@dataclass(frozen=True)
class KafkaRecord:
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def new_event_id() -> str:
    return str(uuid.uuid4())


def encode(event: Event, *, event_id: str, time: datetime) -> KafkaRecord:
    headers = [
        ("ce_id", event_id),
        ("ce_source", event.SOURCE),
        ("ce_type", event.TYPE),
        ("ce_specversion", SPEC_VERSION),
        ("ce_time", time.isoformat()),
        ("ce_subject", event.subject()),
        ("content-type", CONTENT_TYPE),
    ]
    return KafkaRecord(
        topic=event.TOPIC.name,
        key=event.key().encode(),
        value=event.model_dump_json().encode(),
        headers=[(k, v.encode()) for k, v in headers],
    )


def _text(value: object) -> str | None:
    """A header's value as text; `None` for a null value (Kafka allows one)."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode()  # UnicodeDecodeError for the caller to name
    if isinstance(value, str):
        return value
    raise TypeError(type(value).__name__)


def _headers(raw: Iterable[object] | None) -> dict[str, str]:
    """The envelope's own headers (`ce_*`, `content-type`) as text. Other headers are left
    alone whatever they hold: tracing or tooling may add binary ones."""
    result: dict[str, str] = {}
    for item in raw or ():
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise EnvelopeError(ReasonKind.BAD_HEADER, "a header is not a (name, value) pair")
        name, value = item
        try:
            name = _text(name)
        except (UnicodeDecodeError, TypeError):
            raise EnvelopeError(ReasonKind.BAD_HEADER, "a header name is not UTF-8 text") from None
        if name is None or not (name.startswith("ce_") or name == "content-type"):
            continue
        try:
            text = _text(value)
        except (UnicodeDecodeError, TypeError):
            raise EnvelopeError(ReasonKind.BAD_HEADER, f"header {name!r} is not UTF-8") from None
        if text is None:
            continue  # a null value: as if the header were absent
        if name in result and result[name] != text:
            raise EnvelopeError(ReasonKind.BAD_HEADER, f"header {name!r} appears twice with different values")
        result[name] = text
    return result


def decode(
    *,
    topic: str,
    headers: Sequence[tuple[str, bytes]] | Iterable[object] | None,
    value: bytes | None,
    key: bytes | None = None,
) -> Envelope[Event]:
    """The event a consumed message carries, or an `EnvelopeError` saying why not: its `kind`
    (one of `ReasonKind`) and a reason a person can read. The value's size is checked first, so
    an oversized value is never parsed."""
    if value is not None and len(value) > MAX_VALUE_BYTES:
        raise EnvelopeError(
            ReasonKind.OVERSIZED, f"value of {len(value)} bytes is over the limit of {MAX_VALUE_BYTES} bytes"
        )
    attrs = _headers(headers)
    missing = [name for name in REQUIRED if not attrs.get(name)]
    if missing:
        raise EnvelopeError(ReasonKind.MISSING_HEADER, f"missing CloudEvents header(s): {', '.join(missing)}")
    event_id = attrs["ce_id"]
    if len(event_id) > MAX_ID_LENGTH or not event_id.isprintable():
        raise EnvelopeError(
            ReasonKind.BAD_HEADER, f"ce_id must be at most {MAX_ID_LENGTH} printable characters"
        )
    if attrs["ce_specversion"] != SPEC_VERSION:
        raise EnvelopeError(ReasonKind.BAD_HEADER, f"unsupported ce_specversion {attrs['ce_specversion']!r}")
    content_type = attrs.get("content-type", CONTENT_TYPE)
    if content_type.split(";")[0].strip() != CONTENT_TYPE:
        raise EnvelopeError(ReasonKind.BAD_HEADER, f"unsupported content-type {content_type!r}")
    if key is not None:
        try:
            bytes(key).decode()
        except (UnicodeDecodeError, TypeError):
            raise EnvelopeError(ReasonKind.BAD_KEY, "the message key is not UTF-8 text") from None
    model = EVENT_TYPES.get(attrs["ce_type"])
    if model is None:
        raise EnvelopeError(ReasonKind.UNKNOWN_TYPE, f"unknown ce_type {attrs['ce_type']!r}")
    if model.TOPIC.name != topic:
        raise EnvelopeError(ReasonKind.WRONG_TOPIC, f"{attrs['ce_type']} does not belong on topic {topic}")
    if value is None:
        raise EnvelopeError(ReasonKind.NO_VALUE, "message has no value")
    try:
        event = model.model_validate_json(value)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors()[:5]
        )
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise EnvelopeError(ReasonKind.INVALID_JSON, f"not valid JSON: {problems}") from exc
        raise EnvelopeError(ReasonKind.INVALID_PAYLOAD, f"invalid payload: {problems}") from exc
    try:
        time = (
            datetime.fromisoformat(attrs["ce_time"]) if attrs.get("ce_time") else datetime.now().astimezone()
        )
    except ValueError as exc:
        raise EnvelopeError(ReasonKind.BAD_HEADER, f"ce_time is not RFC 3339: {attrs['ce_time']!r}") from exc
    return Envelope(
        id=attrs["ce_id"],
        source=attrs["ce_source"],
        type=attrs["ce_type"],
        time=time,
        subject=attrs.get("ce_subject", event.subject()),
        event=event,
    )
