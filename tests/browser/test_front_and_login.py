"""The front page and the login in a real browser: both languages, accessible, keyboard only."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from services.suite import Suite
from tests.browser.accessibility import assert_accessible


def test_the_front_page_is_danish_by_default_and_english_by_the_switch_which_is_remembered(
    portal_suite: Suite, page: Page, texts
) -> None:
    page.goto(portal_suite.url("portal"))
    expect(page.locator("html")).to_have_attribute("lang", "da")
    expect(page.get_by_role("heading", level=1)).to_have_text(texts["da"].gettext("front.heading"))
    assert_accessible(page)
    page.get_by_role("link", name=texts["da"].gettext("site.switch-language")).click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", level=1)).to_have_text(texts["en"].gettext("front.heading"))
    assert_accessible(page)
    page.get_by_role("main").get_by_role("link", name=texts["en"].gettext("front.log-in")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(texts["en"].gettext("login.heading"))
    assert_accessible(page)


def test_the_login_form_is_used_with_the_keyboard_alone_and_says_what_is_wrong(
    portal_suite: Suite, page: Page, texts
) -> None:
    da = texts["da"]
    page.goto(portal_suite.url("portal") + "/log-ind")
    assert_accessible(page)
    page.keyboard.type("12345678-abcd")  # the username field has the focus
    page.keyboard.press("Tab")
    page.keyboard.type("not the right password")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text(da.gettext("login.invalid"))
    expect(page.locator('[name="username"]')).to_have_value("12345678-abcd")
    assert_accessible(page)


def test_a_missing_page_answers_404_in_words_in_both_languages(
    portal_suite: Suite, page: Page, texts
) -> None:
    answer = page.goto(portal_suite.url("portal") + "/findes-ikke")
    assert answer is not None and answer.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text(texts["da"].gettext("error.heading-404"))
    assert_accessible(page)
    page.get_by_role("link", name=texts["da"].gettext("site.switch-language")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(texts["en"].gettext("error.heading-404"))
