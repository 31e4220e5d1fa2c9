"""`adgang dlq list` shows an operator's terminal what is on a `.dlq`: the headers it prints
come from whoever produced the poison record, so control characters (terminal escapes, line
breaks that forge rows) are shown escaped and a huge header is cut short."""

from __future__ import annotations

import pytest

import shared.deadletters as deadletters
from services.cli import main
from shared.deadletters import StoredDeadLetter, topic_of

FORGED = "\x1b]0;owned\x07\x1b[2J\nevil-row 0:0 handler-failed"


def letter_with(ce_type: str, reason: str) -> StoredDeadLetter:
    topic = topic_of("billing.audit")
    headers = [
        ("ce_type", ce_type.encode()),
        ("dlq_reason", reason.encode()),
        ("dlq_reason_kind", b"unknown-type"),
        ("dlq_consumer", b"billing:billing.audit"),
        ("dlq_original_topic", b"billing.audit"),
    ]
    return deadletters._dead_letter(topic, 0, 7, b"key", b"value", headers)


def test_dlq_list_escapes_control_characters_and_cuts_huge_headers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    letters = [letter_with(FORGED + "x" * 500_000, "unknown ce_type æøå " + FORGED)]

    async def listed(bootstrap: str, topic: object) -> list[StoredDeadLetter]:
        return letters

    monkeypatch.setattr(deadletters, "list_dead_letters", listed)
    assert main(["dlq", "list", "billing.audit", "--bootstrap", "127.0.0.1:1"]) == 0
    out = capsys.readouterr().out

    assert "\x1b" not in out and "\x07" not in out
    assert len(out.splitlines()) == 3  # the count, the heading, one letter: no forged row
    assert "æøå" in out  # Danish letters stay as they are
    assert len(out) < 20_000
    assert "value" not in out and "key" not in out.split("\n", 2)[2]
