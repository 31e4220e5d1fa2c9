"""Accessibility checks of a page: axe-core (4.11.0, shipped in `axe/`) and the rules the
portal keeps itself: one `h1`, every field labelled."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from playwright.sync_api import Page

AXE = Path(__file__).resolve().parent / "axe" / "axe.min.js"
AXE_VERSION = "4.11.0"
RULE_SETS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
BLOCKING = {"serious", "critical"}


@cache
def _axe_source() -> str:
    source = AXE.read_text()
    assert f"axe v{AXE_VERSION}" in source[:100], "tests/browser/axe/axe.min.js is not the pinned version"
    return source


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe's serious and critical violations on the page as it is now. axe runs through the
    browser's debugging protocol, so the page's CSP (no inline script) stays in force."""
    page.evaluate(_axe_source())
    result = page.evaluate(
        "options => axe.run(document, options)", {"runOnly": {"type": "tag", "values": RULE_SETS}}
    )
    return [v for v in result["violations"] if v.get("impact") in BLOCKING]


def describe(violations: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{v['id']} ({v['impact']}): {v['help']} — " + "; ".join(n["target"][0] for n in v["nodes"][:3])
        for v in violations
    )


def assert_accessible(page: Page) -> None:
    """No serious or critical axe violation, one `h1`, and a label for every field."""
    violations = axe_violations(page)
    assert not violations, f"{page.url}:\n{describe(violations)}"
    assert page.locator("h1").count() == 1, f"{page.url} has {page.locator('h1').count()} h1 elements"
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
            .filter(e => e.type !== 'hidden' && e.type !== 'submit' && e.type !== 'button')
            .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
            .map(e => e.name || e.id)"""
    )
    assert not unlabelled, f"{page.url}: fields without a label: {unlabelled}"
