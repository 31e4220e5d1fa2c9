"""The steps the browser stories share: a fresh browser, the portal's buttons and headings by
their words, and a login as a person makes it (its one-time code read from the suite's SMS
or mail sink, `tests/support/flows.py`)."""

from __future__ import annotations

import os
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page, expect

from services.portal.i18n import Texts
from services.suite import Suite
from tests.support.flows import STRONG_PASSWORD, new_mail_code, new_sms_code, seen_ids


def new_context(browser: Browser, **options: object) -> BrowserContext:
    """A fresh browser profile: no cookies, Danish like most of the portal's users."""
    opened = browser.new_context(locale="da-DK", timezone_id="Europe/Copenhagen", **options)  # type: ignore[arg-type]
    opened.set_default_timeout(20_000)
    return opened


def new_page(browser: Browser, **options: object) -> Page:
    """A page of a fresh browser profile (`new_context`); close it with `page.context.close()`."""
    return new_context(browser, **options).new_page()


def shoot(page: Page, name: str) -> None:
    """With `ADGANG_PORTAL_SCREENSHOTS=<dir>`, the page as it looks (for docs/portal/)."""
    target = os.environ.get("ADGANG_PORTAL_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / f"{name}.png"), full_page=True)


def tab_to(page: Page, selector: str, *, most: int = 40) -> None:
    """Press Tab until an element `selector` has the focus (one of a radio group: Tab stops
    once in a group), as a keyboard user would."""
    target = page.locator(selector)
    for _ in range(most):
        if target.evaluate_all("elements => elements.includes(document.activeElement)"):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{selector} never got the focus by Tab")


def button(page: Page, t: Texts, message_id: str, **values: object):
    return page.get_by_role("button", name=t.gettext(message_id, **values), exact=True)


def heading(page: Page):
    return page.get_by_role("heading", level=1)


def log_in(
    page: Page,
    suite: Suite,
    t: Texts,
    username: str,
    *,
    sms_to: str = "",
    email_to: str = "",
    path: str = "/log-ind",
) -> str:
    """From the login page (`path`, e.g. with `?next=`): the username and password, then a
    one-time code sent by SMS (`sms_to`) or email (`email_to`), as a person logs in. Returns the
    code."""
    page.goto(suite.url("portal") + path)
    page.locator('[name="username"]').fill(username)
    page.locator('[name="password"]').fill(STRONG_PASSWORD)
    button(page, t, "login.submit").click()
    expect(heading(page)).to_have_text(t.gettext("login-code.heading"))
    if sms_to:
        seen = seen_ids(suite, mobile=sms_to)
        button(page, t, "login-code.send-sms").click()
        code = new_sms_code(suite, sms_to, seen)
    else:
        seen = seen_ids(suite, address=email_to)
        button(page, t, "login-code.send-email").click()
        code = new_mail_code(suite, email_to, seen)
    page.locator('[name="code"]').fill(code)
    button(page, t, "login-code.submit").click()
    return code
