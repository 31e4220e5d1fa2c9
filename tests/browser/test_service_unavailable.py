"""The "try again" page in a real browser: while a service the portal needs is not answering,
a person gets a page in their language (Danish, then English after switching) that says so,
with a link that asks for the same page again; once the service is back, that link gives them
the page they asked for. Every version of the page passes the accessibility check.

The service is onboarding's API, stopped and started again with the suite's own means; the
page is an application's status page (`/ansoeg/<id>`), which asks onboarding for the application."""

from __future__ import annotations

import signal
from urllib.parse import urlsplit

from playwright.sync_api import Browser, Locator, Page, Response, expect

from services.billing.demo import generated_companies
from services.portal.i18n import Texts
from services.suite import Suite
from tests.browser.accessibility import assert_accessible
from tests.browser.conftest import EXTRA_CUSTOMERS
from tests.browser.steps import heading, new_page
from tests.support.flows import apply_once_known

CVR = generated_companies(EXTRA_CUSTOMERS)[3].cvr  # this story's own company (tests/browser/conftest.py)
ONBOARDING_API = "onboarding-api"


def answered(page: Page, link: Locator) -> Response:
    """The answer of the page a followed link ends on (after the language switch's redirect)."""
    with page.expect_response(lambda answer: urlsplit(answer.url).path.startswith("/ansoeg/")) as response:
        link.click()
    return response.value


def assert_try_again_page(page: Page, answer: Response, language: str, t: Texts) -> None:
    assert answer.status == 503, answer.status
    expect(page.locator("html")).to_have_attribute("lang", language)
    expect(heading(page)).to_have_text(t.gettext("error.heading-503"))
    expect(page.get_by_role("main")).to_contain_text(t.gettext("error.unavailable"))
    expect(page.get_by_role("link", name=t.gettext("error.try-again"), exact=True)).to_be_visible()
    assert_accessible(page)


def test_a_person_is_asked_to_try_again_in_their_language_and_trying_again_works_once_the_service_is_back(
    portal_suite: Suite, browser: Browser, texts
) -> None:
    suite, da, en = portal_suite, texts["da"], texts["en"]
    applied = apply_once_known(suite, CVR)
    assert applied.status_code == 202, applied.text
    status_page = f"{suite.url('portal')}/ansoeg/{applied.json()['id']}"
    page = new_page(browser)
    try:
        expect_status_page_after_the_outage(page, suite, status_page, da, en)
    finally:
        page.context.close()


def expect_status_page_after_the_outage(page: Page, suite: Suite, url: str, da: Texts, en: Texts) -> None:
    # The page works before the outage.
    assert (first := page.goto(url)) is not None and first.status == 200
    expect(heading(page)).to_have_text(da.gettext("apply-status.heading"))

    suite.kill(ONBOARDING_API, signal.SIGTERM)
    try:
        # In Danish, as the browser starts.
        answer = page.goto(url)
        assert answer is not None
        assert_try_again_page(page, answer, "da", da)
        # Trying again while onboarding is still away gives the same page.
        again = page.get_by_role("link", name=da.gettext("error.try-again"), exact=True)
        assert_try_again_page(page, answered(page, again), "da", da)
        # The language switch of the page itself brings the person back to it, in English.
        switch = page.get_by_role("link", name=da.gettext("site.switch-language"))
        assert_try_again_page(page, answered(page, switch), "en", en)
    finally:
        suite.start_again(ONBOARDING_API)  # waits until it is ready

    # Back: "Try again" gives the page the person asked for.
    back = answered(page, page.get_by_role("link", name=en.gettext("error.try-again"), exact=True))
    assert back.status == 200, back.status
    expect(heading(page)).to_have_text(en.gettext("apply-status.heading"))
    expect(page.get_by_role("main")).to_contain_text(CVR)
    assert page.url == url
    assert_accessible(page)
