"""Logs never print an activation code or a registered secret (S2: only the e-Boks sees the code)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from services.identity.domain import generate_activation_code
from shared.logs import (
    JsonFormatter,
    RedactingFormatter,
    forget_secret,
    install_scrubbing,
    redact,
    register_secret,
)

CODE = "7Q4K-93XZ-ABCD-EFGH-JKMN"


@pytest.fixture
def scrubbing() -> Iterator[None]:
    """Scrubbing installed for one test; the previous record factory is put back afterwards."""
    previous = logging.getLogRecordFactory()
    install_scrubbing()
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


@pytest.fixture(params=["text", "json"])
def captured(request: pytest.FixtureRequest, scrubbing: None) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose formatted output (plain text or JSON lines) ends up in a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter() if request.param == "json" else logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"tests.logs.{request.node.name}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, buffer
    finally:
        logger.removeHandler(handler)


def messages(buffer: io.StringIO) -> list[str]:
    lines = buffer.getvalue().splitlines()
    try:
        return [json.loads(line)["msg"] for line in lines]
    except json.JSONDecodeError:
        return lines


def test_an_activation_code_in_the_message_is_redacted(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buffer = captured

    logger.info(f"issued code {CODE} to user 42")

    assert messages(buffer) == ["issued code [redacted] to user 42"]


def test_an_activation_code_in_the_arguments_is_redacted(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = captured

    logger.warning("issued code %s to user %d", CODE, 42)

    assert messages(buffer) == ["issued code [redacted] to user 42"]
    assert CODE not in buffer.getvalue()


def test_freshly_generated_activation_codes_are_all_recognised_and_redacted(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, buffer = captured
    codes = [generate_activation_code() for _ in range(50)]

    for code in codes:
        logger.info("code=%s", code)

    assert messages(buffer) == ["code=[redacted]"] * 50


def test_a_registered_secret_is_masked(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buffer = captured
    secret = "s3cr3t-token-value"
    register_secret(secret)
    try:
        logger.error("calling e-Boks with token %s failed", secret)
    finally:
        forget_secret(secret)
    logger.error("after forgetting: %s", secret)

    assert messages(buffer) == [
        "calling e-Boks with token [redacted] failed",
        f"after forgetting: {secret}",
    ]


def test_ordinary_text_is_untouched(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buffer = captured
    ordinary = [
        "user 35657193-abcd activated",
        "application 0b6e4c1e-1f4a-4c3e-9d0a-2f6a7c1b9e55 received",
        "ABCD-EFGH-JKMN-PQRS is only four groups",
        "XABCD-EFGH-JKMN-PQRS-TVWX is glued to a longer word",
        "ABCU-EFGH-JKMN-PQRS-TVWX has a U, which Crockford leaves out",
    ]

    for text in ordinary:
        logger.info(text)

    assert messages(buffer) == ordinary


def logger_with(formatter: logging.Formatter, name: str) -> tuple[logging.Logger, io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"tests.logs.{name}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    return logger, buffer


def test_the_json_formatter_redacts_an_activation_code_in_the_traceback(scrubbing: None) -> None:
    logger, buffer = logger_with(JsonFormatter(), "json_traceback")
    try:
        raise ValueError(f"code {CODE} was refused")
    except ValueError:
        logger.exception("activation failed")

    entry = json.loads(buffer.getvalue())
    assert entry["msg"] == "activation failed"
    assert "ValueError: code [redacted] was refused" in entry["exc"]
    assert CODE not in buffer.getvalue()


def test_the_plain_text_format_redacts_an_activation_code_in_the_traceback(scrubbing: None) -> None:
    logger, buffer = logger_with(RedactingFormatter("%(message)s"), "text_traceback")
    try:
        raise ValueError(f"code {CODE} was refused")
    except ValueError:
        logger.exception("activation failed")

    assert CODE not in buffer.getvalue()


def test_an_activation_code_as_a_person_typed_it_is_redacted_too() -> None:
    assert redact(f"typed {CODE.lower()}") == "typed [redacted]"
    assert redact(f"typed {CODE.replace('-', '')}") == "typed [redacted]"


FORGED = "2026-12-02 12:00:00,000 identity INFO services.identity.login login succeeded for support"


@pytest.mark.parametrize("breaker", ["\n", "\r\n", "\r", "\u2028", "\x85"])
def test_the_plain_text_format_keeps_a_line_break_in_a_message_from_forging_a_record(
    scrubbing: None, breaker: str
) -> None:
    """A request path or a typed name carrying a line break is written escaped, on its record's
    own line: a reader (or a log shipper splitting on line ends) sees one record, not two."""
    logger, buffer = logger_with(RedactingFormatter("%(asctime)s identity %(levelname)s %(message)s"), "forge")
    logger.warning("no such page: %s", f"/x{breaker}{FORGED}")

    [line] = buffer.getvalue().splitlines()
    assert FORGED in line and breaker not in line
    assert line.endswith("/x" + breaker.encode("unicode_escape").decode("ascii") + FORGED)


def test_the_plain_text_format_indents_every_line_of_a_traceback_even_one_an_attacker_wrote(
    scrubbing: None,
) -> None:
    logger, buffer = logger_with(RedactingFormatter("%(asctime)s identity %(levelname)s %(message)s"), "forge_exc")
    json_buffer = io.StringIO()  # a JSON handler formatting first caches the traceback on the record
    json_handler = logging.StreamHandler(json_buffer)
    json_handler.setFormatter(JsonFormatter())
    logger.handlers.insert(0, json_handler)
    try:
        raise ValueError(f"bad name\n{FORGED}")
    except ValueError:
        logger.exception("activation failed")

    first, *rest = buffer.getvalue().splitlines()
    assert first.endswith("activation failed") and rest
    assert all(line.startswith("    ") for line in rest), rest
    assert any(line.strip() == FORGED for line in rest)
