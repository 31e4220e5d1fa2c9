"""Taking over a company's administration through its e-Boks, in a real browser against the
whole suite (issue 10, item 3).

A cancelled takeover: the old administrator's email has a link; its page shows what is
cancelled, and the button cancels it; the letter's code then opens nothing.

A takeover end to end: the company's administrator exists → the application form offers a
takeover, with what it means → the old administrator is told by email and SMS → the letter's
code is refused before the notice period, in words → the suite's clock passes the notice
period (every process reads the same offset file) → the code from the e-Boks letter activates
the new administrator, who logs in → the old administrator is disabled, told by email, and
cannot log in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, expect

from services.billing.demo import generated_companies
from services.notifier.sinks import read_mail, read_sms
from services.portal.i18n import Texts
from services.suite import Suite
from tests.browser.accessibility import assert_accessible
from tests.browser.conftest import EXTRA_CUSTOMERS, move_clock
from tests.browser.steps import button, heading, new_page
from tests.support.flows import (
    STRONG_PASSWORD,
    Letter,
    activate,
    activated_administrator,
    apply,
    new_mail_code,
    new_sms_code,
    seen_ids,
    sinks_dir,
    wait_for_letters,
    wait_for_status,
)
from tests.support.waiting import wait_until

CANCELLED_CVR, TAKEN_OVER_CVR = (c.cvr for c in generated_companies(EXTRA_CUSTOMERS)[1:3])
CANCEL_LINK = re.compile(r"https?://\S+/overtagelse/annuller/\S+")
NOTICE_S = 72 * 3600


@pytest.fixture
def clock_put_back(portal_suite: Suite) -> Iterator[None]:
    """The suite's clock as it was after the story: the tests after it read real time (an
    authenticator app's codes do)."""
    yield
    move_clock(portal_suite, 0)


def _company_with_an_administrator(suite: Suite, cvr: str, *, email: str, mobile: str) -> str:
    """Apply, and activate the letter's login: its username."""
    letter = activated_administrator(suite, cvr, email=email, mobile=mobile)
    _takeover_offered(suite, cvr)
    return letter.username


def _notice(suite: Suite, *, email: str | None = None, mobile: str | None = None):
    """The takeover notice with its cancel link, by email or by SMS."""
    def found():
        messages = read_mail(sinks_dir(suite), email) if email else read_sms(sinks_dir(suite), mobile or "")
        return next((m for m in messages if CANCEL_LINK.search(m.text)), None)

    return wait_until(found, deadline_s=60, what=f"the takeover notice to {email or mobile}")


def _takeover_offered(suite: Suite, cvr: str) -> None:
    """Until onboarding has learnt of the activation, it would take an ordinary application;
    identity, which knows, rejects those, and a takeover can be asked for once they are done."""
    accepted_meanwhile: list[str] = []

    def offered() -> bool:
        response = apply(suite, cvr)
        if response.status_code == 202:
            accepted_meanwhile.append(response.json()["id"])
        return response.status_code == 409 and bool(response.json().get("takeover_available"))

    wait_until(offered, deadline_s=30, what=f"onboarding to offer a takeover of CVR {cvr}")
    for application_id in accepted_meanwhile:
        wait_for_status(suite, application_id, "rejected")


def _takeover_letter(suite: Suite, cvr: str) -> Letter:
    """The second letter in the company's e-Boks: the takeover's (its words say so)."""
    letters = wait_for_letters(suite, cvr, 2)
    return next(letter for letter in letters if "Varslingsperiode" in letter.text)


def test_a_cancelled_takeover_in_the_browser(portal_suite: Suite, browser: Browser, texts: dict[str, Texts]) -> None:
    suite, t = portal_suite, texts["da"]
    old_email, old_mobile = "gitte@firma1.example", "+4522110011"
    _company_with_an_administrator(suite, CANCELLED_CVR, email=old_email, mobile=old_mobile)
    requested = apply(suite, CANCELLED_CVR, takeover=True, email="ny@firma1.example", mobile="+4522110099")
    assert (requested.status_code, requested.json().get("kind")) == (202, "takeover"), requested.text
    notice = _notice(suite, email=old_email)
    link = CANCEL_LINK.search(notice.text)
    assert link, f"the notice has no cancel link:\n{notice.text}"
    letter = _takeover_letter(suite, CANCELLED_CVR)

    page = new_page(browser)
    page.goto(link.group())
    expect(heading(page)).to_contain_text(t.gettext("takeover.cancel-heading", company="").strip())
    expect(page.get_by_role("main")).to_contain_text(CANCELLED_CVR)
    assert_accessible(page)
    button(page, t, "takeover.cancel-submit").click()
    expect(page.get_by_role("status")).to_contain_text("er annulleret")
    assert_accessible(page)
    page.goto(link.group())  # the link again: used, and nothing more to do
    expect(page.get_by_role("button", name=t.gettext("takeover.cancel-submit"))).to_have_count(0)

    refused = activate(suite, letter.username, letter.code, email="ny@firma1.example", mobile="+4522110099")
    assert refused.status_code == 400, refused.text  # the takeover's login was withdrawn
    page.context.close()


def test_a_takeover_end_to_end_in_the_browser(
    portal_suite: Suite, browser: Browser, texts: dict[str, Texts], clock_put_back: None
) -> None:
    suite, t = portal_suite, texts["da"]
    old_email, old_mobile = "gorm@firma2.example", "+4522220022"
    new_email, new_mobile = "nina@firma2.example", "+4522220099"
    old_username = _company_with_an_administrator(suite, TAKEN_OVER_CVR, email=old_email, mobile=old_mobile)

    # 1. The form offers a takeover, with what it means, and asks for it.
    page = new_page(browser)
    page.goto(suite.url("portal") + "/ansoeg")
    page.locator('[name="cvr"]').fill(TAKEN_OVER_CVR)
    page.locator('[name="company_name"]').fill("Firma 2")
    page.locator('[name="contact.name"]').fill("Nina Ny")
    page.locator('[name="contact.email"]').fill(new_email)
    page.locator('[name="contact.mobile"]').fill(new_mobile)
    button(page, t, "apply.submit").click()
    expect(heading(page)).to_have_text(t.gettext("takeover.offer-heading"))
    expect(page.get_by_role("main")).to_contain_text(t.gettext("takeover.offer-told"))
    assert_accessible(page)
    button(page, t, "takeover.offer-submit").click()
    expect(heading(page)).to_have_text(t.gettext("apply-status.heading"))

    # 2. The old administrator is told by email and by SMS, each with the cancel link.
    notice = _notice(suite, email=old_email)
    sms = _notice(suite, mobile=old_mobile)
    assert CANCEL_LINK.search(notice.text) and "kan bruges fra" in notice.text, notice.text
    assert CANCEL_LINK.search(sms.text) and "deaktiveres" in sms.text, sms.text

    # 3. The letter's code is refused before the notice period, in words.
    letter = _takeover_letter(suite, TAKEN_OVER_CVR)
    assert "Varslingsperiode: 72 timer" in letter.text
    page.goto(suite.url("portal") + f"/aktiver?username={letter.username}")

    def fill_activation() -> None:
        page.locator('[name="activation_code"]').fill(letter.code)
        page.locator('[name="password"]').fill(STRONG_PASSWORD)
        page.locator('[name="password_again"]').fill(STRONG_PASSWORD)
        page.locator('[name="email"]').fill(new_email)
        page.locator('[name="mobile"]').fill(new_mobile)
        button(page, t, "activate.submit").click()

    fill_activation()
    expect(page.get_by_role("alert")).to_contain_text("kan bruges fra")
    assert_accessible(page)

    # 4. The notice period passes for the whole suite; the code now activates the new administrator.
    move_clock(suite, NOTICE_S + 60)
    sms_seen, mail_seen = seen_ids(suite, mobile=new_mobile), seen_ids(suite, address=new_email)
    fill_activation()
    expect(heading(page)).to_have_text(t.gettext("activate-confirm.heading"))
    page.locator('[name="sms_code"]').fill(new_sms_code(suite, new_mobile, sms_seen))
    page.locator('[name="email_code"]').fill(new_mail_code(suite, new_email, mail_seen))
    button(page, t, "activate-confirm.submit").click()
    expect(heading(page)).to_have_text(t.gettext("activate-done.heading"))

    # 5. The new administrator logs in.
    page.get_by_role("main").get_by_role("link", name=t.gettext("activate-done.log-in")).click()
    page.locator('[name="password"]').fill(STRONG_PASSWORD)
    button(page, t, "login.submit").click()
    button(page, t, "login-code.send-sms").click()
    page.locator('[name="code"]').fill(new_sms_code(suite, new_mobile, sms_seen))
    button(page, t, "login-code.submit").click()
    expect(heading(page)).to_have_text(t.gettext("overview.heading", name="Nina Ny"))

    # 6. The old one is disabled, told by email, and cannot log in.
    done = wait_until(
        lambda: next((m for m in read_mail(sinks_dir(suite), old_email) if "overtaget" in m.text), None),
        deadline_s=60,
        what="the email telling the old administrator of the takeover",
    )
    assert "deaktiveret" in done.text
    old_login = httpx.post(
        f"{suite.url('identity')}/v1/login", json={"username": old_username, "password": STRONG_PASSWORD}, timeout=10
    )
    assert old_login.status_code == 403 and old_login.json()["type"].endswith("/login-disabled"), old_login.text
    page.context.close()
