"""Telefoni og Personligt Nummer in a real browser, against the whole suite (S11, issue 11).

The group's administrator activates from the letter and logs in → Telefoni lists the group's
subscriptions by kind → on a Personligt Nummer, by keyboard alone, chooses opening hours,
types Monday 08:00–12:00, asks for one more row (the form works without JS), types
11:30–16:00 and presses Enter → the overlap is refused in words next to that interval and
nothing is stored → 12:30–16:00 is stored. Every page on the way passes the accessibility
checks.

The module starts a suite of its own: it activates the demo group's administrator, which the
package's suite leaves to the whole story.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page, expect

from services.suite import Suite
from tests.browser.accessibility import assert_accessible
from tests.browser.steps import heading, log_in, new_page, shoot, tab_to
from tests.support.flows import activated_administrator

GROUP_CVR = "35657193"
EMAIL = "mette.holm@nordlys.example"
MOBILE = "+4520123456"


@pytest.fixture(scope="module")
def portal_suite(own_suite: Suite) -> Suite:
    return own_suite


def type_time(page: Page, selector: str, hours_minutes: str) -> None:
    """Tab to a time field and give it the time. The keys a time field takes depend on the
    browser's own clock format (24 hours, or AM/PM), so the value is filled once the field has
    the focus from the keyboard."""
    tab_to(page, selector, most=120)
    page.locator(selector).fill(hours_minutes)


def test_opening_hours_with_an_overlap_are_refused_in_words_and_a_valid_change_is_stored_by_keyboard(
    portal_suite: Suite, browser: Browser, texts
) -> None:
    suite, da = portal_suite, texts["da"]
    letter = activated_administrator(suite, GROUP_CVR, email=EMAIL, mobile=MOBILE)

    page = new_page(browser)
    context = page.context
    log_in(page, suite, da, letter.username, sms_to=MOBILE, path="/log-ind?next=/telefoni")

    # The list, by kind; the menu marks where we are.
    expect(heading(page)).to_have_text(da.gettext("telephony.heading"))
    for kind in ("mobile", "telephony", "personal_number"):
        expect(page.get_by_role("table", name=da.gettext(f"telephony.kind.{kind}"))).to_be_visible()
    assert_accessible(page)
    shoot(page, "telefoni")
    personal_numbers = page.get_by_role("table", name=da.gettext("telephony.kind.personal_number"))
    number = personal_numbers.get_by_role("link").first.inner_text()
    personal_numbers.get_by_role("link", name=number, exact=True).click()
    expect(heading(page)).to_have_text(da.gettext("telephony.settings-heading", number=number))
    settings_url = page.url
    assert_accessible(page)

    # By keyboard: opening hours, Monday 08:00–12:00, one more row.
    tab_to(page, "#f-hours-always", most=200)
    page.keyboard.press("ArrowDown")
    expect(page.locator("#f-hours-scheduled")).to_be_checked()
    type_time(page, "#f-schedule-0-opens", "08:00")
    type_time(page, "#f-schedule-0-closes", "12:00")
    tab_to(page, "button[name=add_row]", most=200)
    page.keyboard.press("Enter")
    expect(page.locator("#f-schedule-0-opens")).to_have_value("08:00")
    expect(page.locator("#f-schedule-1-opens")).to_have_value("")
    expect(page.locator("#f-hours-scheduled")).to_be_checked()

    # An interval that overlaps the first: refused in words next to it, nothing stored.
    type_time(page, "#f-schedule-1-opens", "11:30")
    type_time(page, "#f-schedule-1-closes", "16:00")
    page.keyboard.press("Enter")
    overlap = page.locator("#f-schedule-1-error")
    expect(overlap).to_have_text(da.gettext("telephony.invalid.schedule.item"))
    expect(page.locator("#f-schedule-1-opens")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#f-schedule-1-opens")).to_have_value("11:30")
    assert_accessible(page)
    shoot(page, "telefoni-aabningstider-overlap")
    stored = context.new_page()
    stored.goto(settings_url)
    expect(stored.locator("#f-hours-always")).to_be_checked()
    expect(stored.locator("#f-schedule-0-opens")).to_have_value("")
    stored.close()

    # Corrected: stored, and shown as stored.
    page.locator("#f-schedule-1-opens").fill("12:30")
    page.locator("#f-schedule-1-opens").press("Enter")
    expect(page.get_by_role("status").first).to_have_text(da.gettext("telephony.saved.aabningstider"))
    expect(page.locator("#f-hours-scheduled")).to_be_checked()
    expect(page.locator("#f-schedule-0-opens")).to_have_value("08:00")
    expect(page.locator("#f-schedule-1-opens")).to_have_value("12:30")
    expect(page.locator("#f-schedule-1-closes")).to_have_value("16:00")
    expect(page.locator("#f-closed-tue")).to_be_checked()
    assert_accessible(page)
    context.close()
