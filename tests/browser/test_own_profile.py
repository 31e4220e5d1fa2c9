"""A user's own profile in a real browser, against the whole suite (issue 10, item 2).

A company applies in English → its administrator activates from the letter → every SMS and
email to them is in English: the notice that the password was set, the login code by SMS, and
the portal switches to English at login though the browser began in Danish → on Min profil
the administrator changes the mobile number, confirmed by the code sent by SMS to the new
number, and is emailed (in English) that it changed. Every page on the way passes the
accessibility checks.

The module starts a suite of its own: the whole story applies for both demo companies that can
get an administrator, so this story cannot share that suite.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, expect

from services.billing.demo import STANDALONE_CVR
from services.notifier.sinks import read_mail, read_sms
from services.suite import Suite
from tests.browser.accessibility import assert_accessible
from tests.browser.steps import button, heading, log_in, new_page
from tests.support.flows import (
    activate_letter,
    apply_once_known,
    new_sms_code,
    seen_ids,
    sinks_dir,
    wait_for_letters,
)
from tests.support.waiting import wait_until

EMAIL = "anne.bager@solsikke.example"
MOBILE = "+4521123456"
NEW_MOBILE = "+4531323334"


@pytest.fixture(scope="module")
def portal_suite(own_suite: Suite) -> Suite:
    return own_suite


def mail_with_subject(suite: Suite, address: str, subject: str, seen: set[str]):  # noqa: ANN201 - ReceivedMail
    return wait_until(
        lambda: next(
            (m for m in read_mail(sinks_dir(suite), address) if m.message_id not in seen and m.subject == subject),
            None,
        ),
        deadline_s=60,
        what=f"a mail to {address} with the subject {subject!r}",
    )


def test_an_english_user_gets_english_messages_and_changes_the_mobile_with_the_code_sent_to_the_new_number(
    portal_suite: Suite, browser: Browser, texts
) -> None:
    suite = portal_suite
    da, en = texts["da"], texts["en"]
    applied = apply_once_known(suite, STANDALONE_CVR, language="en", email=EMAIL, mobile=MOBILE)
    assert applied.status_code in (201, 202), applied.text
    letter = wait_for_letters(suite, STANDALONE_CVR)[0]
    mail_seen = seen_ids(suite, address=EMAIL)
    assert activate_letter(suite, letter, mobile=MOBILE, email=EMAIL).status_code == 200

    # The notice that the password was set: in English.
    notice = mail_with_subject(suite, EMAIL, "Your Self-service login has changed", mail_seen)
    assert "A password was just set for your Self-service login." in notice.text
    mail_seen.add(notice.message_id)

    # A browser that knows nothing of the user: the login pages are Danish.
    page = new_page(browser)
    context = page.context
    code = log_in(page, suite, da, letter.username, sms_to=MOBILE)
    [login_sms] = [m for m in read_sms(sinks_dir(suite), MOBILE) if code in m.text]
    assert login_sms.text.startswith(f"{code} is your one-time code for Self-service"), login_sms.text

    # The login's language from now on.
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.goto(suite.url("portal") + "/profil")
    expect(heading(page)).to_have_text(en.gettext("profile.heading"))
    assert_accessible(page)

    # A new mobile number, confirmed by the code sent to it.
    page.get_by_role("link", name=en.gettext("myprofile.change-mobile"), exact=True).click()
    expect(heading(page)).to_have_text(en.gettext("myprofile.mobile-heading"))
    assert_accessible(page)
    page.locator('[name="mobile"]').fill("31 32 33 34")
    new_seen = seen_ids(suite, mobile=NEW_MOBILE)
    button(page, en, "myprofile.send-code").click()
    expect(heading(page)).to_have_text(en.gettext("myprofile.code-heading"))
    assert_accessible(page)
    new_code = new_sms_code(suite, NEW_MOBILE, new_seen)
    [confirm_sms] = [m for m in read_sms(sinks_dir(suite), NEW_MOBILE) if new_code in m.text]
    assert "is your code to change to this mobile number" in confirm_sms.text, confirm_sms.text
    page.locator('[name="code"]').fill("000000" if new_code != "000000" else "111111")
    button(page, en, "myprofile.confirm").click()
    expect(page.locator("#f-code-error")).to_have_text(en.gettext("myprofile.code-wrong"))
    expect(page.locator('[name="code"]')).to_have_attribute("aria-invalid", "true")
    assert_accessible(page)
    page.locator('[name="code"]').fill(new_code)
    button(page, en, "myprofile.confirm").click()
    expect(heading(page)).to_have_text(en.gettext("profile.heading"))
    expect(page.get_by_role("status").first).to_have_text(en.gettext("myprofile.mobile-saved"))
    expect(page.get_by_role("main")).to_contain_text(f"{NEW_MOBILE} · {en.gettext('profile.mobile-confirmed')}")
    assert_accessible(page)

    # The email on file is told, in English.
    told = mail_with_subject(suite, EMAIL, "Your Self-service login has changed", mail_seen)
    assert "The mobile number or email address of your Self-service login was just changed." in told.text

    # The sessions page shows this browser.
    page.get_by_role("link", name=en.gettext("myprofile.your-sessions"), exact=True).click()
    expect(page.get_by_role("main")).to_contain_text(en.gettext("myprofile.session-this"))
    assert_accessible(page)
    context.close()
