"""The portal's words: every message has a Danish and an English text, with the same
placeholders, and every message a template or a page asks for by name exists."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest

from services.portal.i18n import LANGUAGES, LOCALE_DIR, read_catalogues

PORTAL = Path(__file__).resolve().parents[2] / "services" / "portal"
# `_("apply.heading")` in templates and `page._("apply.heading")` / `_("…")` in Python.
LITERAL_IDS = re.compile(r"""\b_\(\s*["']([a-z0-9_.-]+)["']\s*[,)]""")


def _messages(language: str) -> dict[str, dict[str, str]]:
    return {
        area: {m.id: m.string for m in catalogue if m.id}
        for area, catalogue in read_catalogues(language).items()
    }


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_area_has_a_catalogue_in_each_language_with_the_same_messages() -> None:
    danish, english = _messages("da"), _messages("en")
    assert set(danish) == set(english), "an area's catalogue is missing in one language"
    for area in danish:
        assert set(danish[area]) == set(english[area]), f"{area}.po: messages differ between da and en"


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_message_is_empty_and_none_is_defined_twice(language: str) -> None:
    seen: dict[str, str] = {}
    for area, messages in _messages(language).items():
        for message_id, text in messages.items():
            assert text.strip(), f"{language}/{area}.po: {message_id} has no text"
            assert message_id not in seen, f"{message_id} is in both {seen.get(message_id)}.po and {area}.po"
            seen[message_id] = area


def test_danish_and_english_texts_have_the_same_placeholders() -> None:
    danish, english = _messages("da"), _messages("en")
    for area, messages in danish.items():
        for message_id, text in messages.items():
            assert _placeholders(text) == _placeholders(english[area][message_id]), message_id


def test_every_message_asked_for_by_name_exists() -> None:
    known = {message_id for messages in _messages("da").values() for message_id in messages}
    sources = [*PORTAL.glob("templates/*.html"), *PORTAL.glob("**/*.py")]
    missing = {
        f"{source.relative_to(PORTAL)}: {message_id}"
        for source in sources
        for message_id in LITERAL_IDS.findall(source.read_text())
        if message_id not in known
    }
    assert not missing, sorted(missing)


def test_the_catalogues_are_where_the_portal_reads_them() -> None:
    assert all((LOCALE_DIR / language).is_dir() for language in LANGUAGES)
