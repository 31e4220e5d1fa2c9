"""Every audit action identity and billing record has words in the portal's `audit` catalogue,
in Danish and in English, so the Revisionsspor page never shows a bare code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.portal.i18n import LANGUAGES, read_catalogues

SERVICES = Path(__file__).resolve().parents[2] / "services"
# `action="login.failed"`, `"user.create",` as `act`'s argument, billing's `"order.placed",`.
ACTION = re.compile(
    r"""["']((?:login|second-factor|user|support|order|subscription|master_data|invoice_format|password|profile|takeover)"""
    r"""\.[a-z_-]+)["']"""
)


def recorded_actions() -> set[str]:
    sources = [*SERVICES.glob("identity/*.py"), *SERVICES.glob("billing/*.py")]
    found = {action for source in sources for action in ACTION.findall(source.read_text())}
    return {action for action in found if not action.endswith("_")}


def test_the_actions_are_found_in_the_code() -> None:
    assert {"login.succeeded", "login.failed", "login.locked", "second-factor.changed", "order.placed"} <= (
        recorded_actions()
    )


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_recorded_action_has_words(language: str) -> None:
    words = {m.id for m in read_catalogues(language)["audit"] if m.id}
    missing = sorted(a for a in recorded_actions() if f"audit.action.{a}" not in words)
    assert missing == [], f"locale/{language}/audit.po lacks words for {missing}"
