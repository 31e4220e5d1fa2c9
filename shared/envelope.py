"""CloudEvents 1.0 over Kafka, binary content mode.

Attributes travel as `ce_*` headers, the value is the JSON payload. Decoding checks every
required attribute, that the type is known, that it arrived on the topic it belongs to, and
that the payload validates; anything else is an `EnvelopeError` whose message is the reason
written to the dead-letter topic.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from pydantic import ValidationError

from shared.events import EVENT_TYPES, Event

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
REQUIRED = ("ce_id", "ce_source", "ce_type", "ce_specversion")


class EnvelopeError(ValueError):
    """A message that cannot be decoded into a known, valid event."""


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


def _headers(raw: Iterable[tuple[str, bytes]] | None) -> dict[str, str]:
    result: dict[str, str] = {}
    for name, value in raw or ():
        try:
            result[name] = value.decode() if isinstance(value, bytes | bytearray) else str(value)
        except UnicodeDecodeError as exc:
            raise EnvelopeError(f"header {name!r} is not UTF-8") from exc
    return result


def decode(*, topic: str, headers: Sequence[tuple[str, bytes]] | None, value: bytes | None) -> Envelope[Event]:
    attrs = _headers(headers)
    missing = [name for name in REQUIRED if not attrs.get(name)]
    if missing:
        raise EnvelopeError(f"missing CloudEvents header(s): {', '.join(missing)}")
    if attrs["ce_specversion"] != SPEC_VERSION:
        raise EnvelopeError(f"unsupported ce_specversion {attrs['ce_specversion']!r}")
    content_type = attrs.get("content-type", CONTENT_TYPE)
    if content_type.split(";")[0].strip() != CONTENT_TYPE:
        raise EnvelopeError(f"unsupported content-type {content_type!r}")
    model = EVENT_TYPES.get(attrs["ce_type"])
    if model is None:
        raise EnvelopeError(f"unknown ce_type {attrs['ce_type']!r}")
    if model.TOPIC.name != topic:
        raise EnvelopeError(f"{attrs['ce_type']} does not belong on topic {topic}")
    if value is None:
        raise EnvelopeError("message has no value")
    try:
        event = model.model_validate_json(value)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors()[:5]
        )
        kind = (
            "not valid JSON" if any(e["type"] == "json_invalid" for e in exc.errors()) else "invalid payload"
        )
        raise EnvelopeError(f"{kind}: {problems}") from exc
    try:
        time = (
            datetime.fromisoformat(attrs["ce_time"]) if attrs.get("ce_time") else datetime.now().astimezone()
        )
    except ValueError as exc:
        raise EnvelopeError(f"ce_time is not RFC 3339: {attrs['ce_time']!r}") from exc
    return Envelope(
        id=attrs["ce_id"],
        source=attrs["ce_source"],
        type=attrs["ce_type"],
        time=time,
        subject=attrs.get("ce_subject", event.subject()),
        event=event,
    )
