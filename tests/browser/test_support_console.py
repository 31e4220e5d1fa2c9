"""The support console in a real browser (S3, S13): a support login activates and logs in with
the same two factors, lands on the console without the customer menu, finds a company by CVR,
and a customer page answers it 403 in words. Every page passes the accessibility checks."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from services.billing.demo import STANDALONE_CVR
from services.suite import Suite
from tests.browser.accessibility import assert_accessible
from tests.browser.steps import button, heading
from tests.support.flows import STRONG_PASSWORD, create_staff, new_mail_code, seen_ids

STAFF_EMAIL = "bo.support@adgang.example"


def test_support_staff_log_in_to_the_console_and_find_a_company(portal_suite: Suite, page: Page, texts) -> None:
    t = texts["da"]
    code = create_staff(
        portal_suite, username="support.bo", name="Bo Support", email=STAFF_EMAIL, mobile="+4520888888"
    )
    page.goto(portal_suite.url("portal") + "/aktiver?username=support.bo")
    page.locator('[name="activation_code"]').fill(code)
    page.locator('[name="password"]').fill(STRONG_PASSWORD)
    page.locator('[name="password_again"]').fill(STRONG_PASSWORD)
    button(page, t, "activate.submit").click()
    expect(heading(page)).to_have_text(t.gettext("activate-done.heading"))
    page.get_by_role("main").get_by_role("link", name=t.gettext("activate-done.log-in")).click()
    page.locator('[name="password"]').fill(STRONG_PASSWORD)
    button(page, t, "login.submit").click()
    seen = seen_ids(portal_suite, address=STAFF_EMAIL)
    button(page, t, "login-code.send-email").click()
    page.locator('[name="code"]').fill(new_mail_code(portal_suite, STAFF_EMAIL, seen))
    button(page, t, "login-code.submit").click()

    expect(heading(page)).to_have_text(t.gettext("support.heading"))
    menu = page.get_by_role("navigation")
    expect(menu.get_by_role("link", name=t.gettext("menu.support"))).to_be_visible()
    expect(menu.get_by_role("link", name=t.gettext("menu.users"))).to_have_count(0)
    assert_accessible(page)
    page.locator('[name="cvr"]').fill("1234")
    button(page, t, "support.search").click()
    expect(page.locator(".field.has-error")).to_be_visible()
    assert_accessible(page)
    page.locator('[name="cvr"]').fill(STANDALONE_CVR)
    button(page, t, "support.search").click()
    expect(heading(page)).to_have_text(t.gettext("support-company.heading", cvr=STANDALONE_CVR))
    assert_accessible(page)

    answer = page.goto(portal_suite.url("portal") + "/oversigt")
    assert answer is not None and answer.status == 403
    expect(page.get_by_role("main")).to_contain_text(t.gettext("error.customers-only"))
    assert_accessible(page)
