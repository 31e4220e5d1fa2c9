"""Structured logging that never prints a secret.

Secrets are kept out of log calls in the first place (they live in `SecretStr` and sealed
values). As a second line of defence every log record is scrubbed when it is created: values
registered with `register_secret` and anything shaped like an activation code are masked.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from datetime import UTC, datetime
from typing import Any

from shared import correlation

# Activation codes as printed (grouped) and as people type them (any case, no dashes).
_ACTIVATION_CODE = re.compile(
    r"\b(?:[0-9A-HJKMNP-TV-Z]{4}(?:[- ][0-9A-HJKMNP-TV-Z]{4}){4}|[0-9A-HJKMNP-TV-Z]{20})\b", re.IGNORECASE
)
# A takeover notice's cancel link ends in `<notice id>.<secret>` (services/identity/takeover.py):
# a path, so the portal's access log would keep a working link. The notice id stays readable.
_CANCEL_LINK_SECRET = re.compile(
    r"\b([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.[A-Za-z0-9_-]{20,}", re.IGNORECASE
)
_lock = threading.Lock()
_secrets: set[str] = set()
_MASK = "[redacted]"


def register_secret(value: str) -> None:
    """Mask this exact value in every later log line of this process."""
    if len(value) >= 6:
        with _lock:
            _secrets.add(value)


def forget_secret(value: str) -> None:
    with _lock:
        _secrets.discard(value)


def mask_contact(value: str) -> str:
    """An email address or a phone number as logs show it: enough to tell which one it is, not
    enough to write to it. `mette@example.dk` → `m•••@example.dk`, `+4520123456` →
    `+45 •• •• •4 56`. Personal data stays out of logs (GDPR: logs are kept and copied widely)."""
    if "@" in value:
        local, _, domain = value.rpartition("@")
        return f"{local[:1]}•••@{domain}"
    if len(value) < 6:
        return "•••"
    return f"{value[:3]} •• •• •{value[-3]} {value[-2:]}"


def redact(text: str) -> str:
    text = _CANCEL_LINK_SECRET.sub(rf"\1.{_MASK}", text)  # first: a part of it may look like a code
    text = _ACTIVATION_CODE.sub(_MASK, text)
    with _lock:
        secrets = list(_secrets)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


_base_factory = logging.getLogRecordFactory()


def _scrubbing_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    unscrubbed = record.getMessage

    def scrubbed() -> str:
        return redact(unscrubbed())

    # Other libraries' formatters may touch msg and args themselves; overriding the one
    # method every formatter calls scrubs their output too.
    record.getMessage = scrubbed  # type: ignore[method-assign]
    return record


# Line breaks and other control characters (C0, DEL, C1, and Unicode's line and paragraph
# separators); a tab is kept.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_controls(text: str) -> str:
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class RedactingFormatter(logging.Formatter):
    """Plain text, with tracebacks scrubbed like messages.

    One record starts one line at column 0, and nothing else does: a message's line breaks and
    control characters are escaped (`\\n`), and every line of a traceback is indented. A request
    path or a typed name with a line break in it cannot forge a record in the log.
    """

    def format(self, record: logging.LogRecord) -> str:
        # Another handler's formatter may have cached the traceback unindented on the record.
        cached, record.exc_text = record.exc_text, None
        try:
            return super().format(record)
        finally:
            record.exc_text = cached

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - the logging API's name
        return _escape_controls(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:  # noqa: N802 - the logging API's name
        text = redact(super().formatException(ei))
        return "\n".join("    " + _escape_controls(line) for line in text.split("\n"))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - the logging API's name
        return "\n".join("    " + _escape_controls(line) for line in stack_info.split("\n"))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            # On every line, null outside a request or a consumed event (shared.correlation).
            "correlation_id": correlation.current(),
        }
        for key in ("service", "event_id", "event_type", "topic", "application_id"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


# Loggers held at WARNING even when the level is DEBUG: chatty, and the database drivers' debug
# lines carry every statement's parameters, email addresses and mobile numbers among them.
_QUIET = ("aiokafka", "sqlalchemy.engine", "aiosqlite", "httpx")


def install_scrubbing() -> None:
    """Scrub every record of this process, whoever configured the handlers."""
    logging.setLogRecordFactory(_scrubbing_factory)
    logging.captureWarnings(True)  # warnings become log records too, not stray stderr lines


def configure_logging(*, service: str, level: str = "INFO", fmt: str = "json") -> None:
    install_scrubbing()
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter(f"%(asctime)s {service} %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in _QUIET:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def logging_config(*, service: str, level: str, fmt: str) -> dict[str, Any]:
    """The same logging as `configure_logging`, as a dictConfig (faust configures its own)."""
    formatter: dict[str, Any] = (
        {"()": "shared.logs.JsonFormatter"}
        if fmt == "json"
        else {
            "()": "shared.logs.RedactingFormatter",
            "fmt": f"%(asctime)s {service} %(levelname)s %(name)s %(message)s",
        }
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"adgang": formatter},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "adgang", "stream": "ext://sys.stderr"}
        },
        "root": {"level": level.upper(), "handlers": ["default"]},
        "loggers": {name: {"level": "WARNING"} for name in _QUIET},
    }
