"""A forgotten password end to end in a real browser against the whole suite (S7): from the
login page's link, the code from the email, an SMS code and a new password, to a login with
it; the codes and the notice are read from the suite's mail and SMS sinks."""

from __future__ import annotations

from playwright.sync_api import Browser, expect

from services.billing.demo import generated_companies
from services.notifier.sinks import read_mail
from services.suite import Suite
from tests.browser.accessibility import assert_accessible
from tests.browser.steps import button, heading, new_page
from tests.support.flows import (
    STRONG_PASSWORD,
    activate_letter,
    apply_once_known,
    new_mail_code,
    new_sms_code,
    seen_ids,
    sinks_dir,
    wait_for_letters,
)
from tests.support.waiting import wait_until

CVR = generated_companies(1)[0].cvr  # a company of its own (the suite makes it for the browser tests)
EMAIL = "glemt@example.dk"
MOBILE = "+4520998877"
NEW_PASSWORD = "Havtorn-Solnedgang-Vinter-77"


def test_a_forgotten_password_is_reset_with_the_email_and_an_sms_code_and_the_new_one_logs_in(
    portal_suite: Suite, browser: Browser, texts
) -> None:
    suite, t = portal_suite, texts["da"]
    applied = apply_once_known(suite, CVR)
    assert applied.status_code == 202, applied.text
    letter = wait_for_letters(suite, CVR)[0]
    assert activate_letter(suite, letter, mobile=MOBILE, email=EMAIL).status_code == 200

    page = new_page(browser)
    context = page.context
    page.goto(suite.url("portal") + "/log-ind")
    page.get_by_role("link", name=t.gettext("reset.link")).click()
    expect(heading(page)).to_have_text(t.gettext("reset.heading"))
    assert_accessible(page)

    mail_seen = seen_ids(suite, address=EMAIL)
    page.locator('[name="username_or_email"]').fill(letter.username)
    button(page, t, "reset.submit").click()
    expect(heading(page)).to_have_text(t.gettext("reset-code.heading"))
    assert_accessible(page)
    page.locator('[name="code"]').fill("000000")  # a wrong code first: words next to the field
    button(page, t, "reset-code.submit").click()
    expect(page.locator("#f-code-error")).to_have_text(t.gettext("reset.wrong-code"))
    expect(page.locator('[name="code"]')).to_have_attribute("aria-invalid", "true")
    page.locator('[name="code"]').fill(new_mail_code(suite, EMAIL, mail_seen))
    button(page, t, "reset-code.submit").click()

    expect(heading(page)).to_have_text(t.gettext("reset-password.heading"))
    expect(page.get_by_role("main")).to_contain_text(t.gettext("reset-password.for-login", username=letter.username))
    assert_accessible(page)
    sms_seen = seen_ids(suite, mobile=MOBILE)
    button(page, t, "reset-password.send-sms").click()
    expect(page.get_by_role("status")).to_contain_text(t.gettext("reset-password.sms-sent", to="+45 •• •• •8 77"))
    page.locator('[name="code"]').fill(new_sms_code(suite, MOBILE, sms_seen))
    page.locator('[name="password"]').fill(NEW_PASSWORD)
    page.locator('[name="password_again"]').fill(NEW_PASSWORD)
    mail_seen = seen_ids(suite, address=EMAIL)
    button(page, t, "reset-password.submit").click()

    expect(heading(page)).to_have_text(t.gettext("reset-done.heading"))
    assert_accessible(page)
    notice = wait_until(
        lambda: next((m for m in read_mail(sinks_dir(suite), EMAIL) if m.message_id not in mail_seen), None),
        deadline_s=60,
        what=f"the notice of the changed password to {EMAIL}",
    )
    assert "er ændret" in notice.subject and "Glemt adgangskode" in notice.text

    # The old password no longer works; the new one does, with the second factor.
    page.get_by_role("main").get_by_role("link", name=t.gettext("reset-done.log-in")).click()
    expect(page.locator('[name="username"]')).to_have_value(letter.username)
    page.locator('[name="password"]').fill(STRONG_PASSWORD)
    button(page, t, "login.submit").click()
    expect(page.get_by_role("alert")).to_contain_text(t.gettext("login.invalid"))
    page.locator('[name="password"]').fill(NEW_PASSWORD)
    button(page, t, "login.submit").click()
    mail_seen = seen_ids(suite, address=EMAIL)
    button(page, t, "login-code.send-email").click()
    page.locator('[name="code"]').fill(new_mail_code(suite, EMAIL, mail_seen))
    button(page, t, "login-code.submit").click()
    expect(page.get_by_role("navigation")).to_be_visible()
    expect(page).to_have_url(suite.url("portal") + "/oversigt")
    context.close()
