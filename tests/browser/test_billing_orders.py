"""Bestil og opgrader, and Stamdata og fakturaformat, in a real browser against the whole suite
(issue 11, S9, S10).

The standalone demo company's administrator activates from the letter and logs in; on Bestil
og opgrader they order a subscription and upgrade another, each form reaching the portal twice
(a double click), and each gives one order in billing and one confirmation email from the
notifier; the receipt shows the order's status. On Stamdata the master data is opened in two tabs of one browser: the first
tab's change is saved, the second tab's, made from the same version, gets the "changed
meanwhile" page. Every page on the way passes the accessibility checks.

The module starts a suite of its own: its administrator is the standalone company's, which
the package's shared suite gives to other stories.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Route, expect

from services.billing.demo import STANDALONE_CVR
from services.notifier.sinks import read_mail
from services.suite import Suite
from tests.browser.accessibility import assert_accessible
from tests.browser.steps import button, heading, log_in, new_page
from tests.support.flows import (
    activated_administrator,
    sinks_dir,
)
from tests.support.waiting import wait_until

EMAIL = "kirsten.ordre@standalone.example"
MOBILE = "+4521654321"
RECEIPT = re.compile(r"/bestil/ordrer/([0-9a-f-]{36})$")


@pytest.fixture(scope="module")
def portal_suite(own_suite: Suite) -> Suite:
    return own_suite


def sent_twice(route: Route) -> None:
    """A post reaches the portal twice, as when a double click or a flaky network sends the
    form again before the first answer is shown: the browser shows the second answer."""
    if route.request.method != "POST":
        route.continue_()
        return
    route.fetch(max_redirects=0)
    route.fulfill(response=route.fetch(max_redirects=0))


def confirmations(suite: Suite) -> list:  # noqa: ANN001 - ReceivedMail
    """The order confirmations the notifier emailed the administrator."""
    return [m for m in read_mail(sinks_dir(suite), EMAIL) if m.subject.startswith("Bekræftelse af din")]


def test_an_order_and_an_upgrade_each_give_one_confirmation_and_a_stale_edit_in_a_second_tab_is_shown(
    portal_suite: Suite, browser: Browser, texts
) -> None:
    suite, t = portal_suite, texts["da"]
    letter = activated_administrator(suite, STANDALONE_CVR, email=EMAIL, mobile=MOBILE)

    page = new_page(browser)
    context = page.context
    log_in(page, suite, t, letter.username, sms_to=MOBILE)
    expect(page.get_by_role("navigation").get_by_role("link", name=t.gettext("menu.orders"))).to_be_visible()

    # Order a subscription, the form sent twice.
    page.route(re.compile(r".*/bestil(/opgrader/.*)?$"), sent_twice)
    page.get_by_role("navigation").get_by_role("link", name=t.gettext("menu.orders")).click()
    expect(heading(page)).to_have_text(t.gettext("orders.heading"))
    assert_accessible(page)
    account = page.locator("#f-account_number option").nth(1).get_attribute("value")
    assert account
    page.locator("#f-account_number").select_option(account)
    page.locator("#f-product_code").select_option("PN-BASIS")
    button(page, t, "orders.place").click()
    expect(heading(page)).to_have_text(t.gettext("orders.receipt-heading.new"))
    # Billing's worker may complete the order before the receipt is drawn: either status is right.
    expect(page.get_by_role("main").locator(".details .status")).to_have_text(
        re.compile(f"^({re.escape(t.gettext('orders.status.received'))}|{re.escape(t.gettext('orders.status.completed'))})$")
    )
    assert_accessible(page)
    ordered = RECEIPT.search(page.url)
    assert ordered, page.url

    # Upgrade a subscription along an allowed path, the form sent twice.
    page.goto(suite.url("portal") + "/bestil")
    upgrade_form = page.locator("form.upgrade-form").first
    upgrade_form.get_by_role("button", name=t.gettext("orders.upgrade"), exact=True).click()
    expect(heading(page)).to_have_text(t.gettext("orders.receipt-heading.upgrade"))
    expect(page.get_by_role("main")).to_contain_text(t.gettext("orders.status.completed"))
    upgraded = RECEIPT.search(page.url)
    assert upgraded, page.url

    # One confirmation each: the notifier reads billing's orders in order, so once the
    # upgrade's has come, a second order from the form sent twice would have been mailed before it.
    def once_the_upgrades_came() -> list | None:  # noqa: ANN001 - ReceivedMail
        found = confirmations(suite)
        return found if any(upgraded.group(1) in m.text for m in found) else None

    mails = wait_until(
        once_the_upgrades_came,
        deadline_s=60,
        what="the upgrade's confirmation email",
    )
    assert sorted(m.subject.split(" af din ")[1].split(" ")[0] for m in mails) == ["bestilling", "opgradering"]
    assert [m for m in mails if ordered.group(1) in m.text], [m.text for m in mails]
    page.get_by_role("link", name=t.gettext("orders.see-orders")).first.click()
    expect(heading(page)).to_have_text(t.gettext("orders.list-heading"))
    expect(page.locator("table tbody tr")).to_have_count(2)
    assert_accessible(page)

    # Master data in two tabs: the second tab's change, made from the same version, is stale.
    path = suite.url("portal") + f"/stamdata/{STANDALONE_CVR}"
    first_tab, second_tab = page, context.new_page()
    first_tab.goto(suite.url("portal") + "/stamdata")
    expect(heading(first_tab)).to_have_text(t.gettext("masterdata.heading"))
    assert_accessible(first_tab)
    first_tab.goto(path)
    second_tab.goto(path)
    assert_accessible(first_tab)
    first_tab.locator('[name="city"]').fill("Første Fane By")
    button(first_tab, t, "masterdata.save").click()
    expect(first_tab.get_by_role("status").first).to_have_text(t.gettext("masterdata.saved"))
    second_tab.locator('[name="contact_name"]').fill("Anden Fane")
    button(second_tab, t, "masterdata.save").click()
    expect(heading(second_tab)).to_have_text(t.gettext("masterdata.changed-heading"))
    expect(second_tab.get_by_role("table")).to_contain_text("Første Fane By")
    assert_accessible(second_tab)
    # Redone on the current version, the second tab's change is saved too.
    expect(second_tab.locator('[name="contact_name"]')).to_have_value("Anden Fane")
    button(second_tab, t, "masterdata.save").click()
    expect(second_tab.get_by_role("status").first).to_have_text(t.gettext("masterdata.saved"))
    expect(second_tab.get_by_role("main")).to_contain_text("Anden Fane")

    # The invoice format form: one fieldset of formats, words next to a wrong GLN.
    second_tab.get_by_role("link", name=re.compile(t.gettext("masterdata.account-format", account="").strip())).first.click()
    second_tab.get_by_label(t.gettext("masterdata.format.oioubl")).check()
    # With script, only the chosen format's fields show.
    expect(second_tab.locator('[name="email"]')).to_be_hidden()
    expect(second_tab.locator('[name="gln"]')).to_be_visible()
    second_tab.locator('[name="gln"]').fill("5790000435967")
    button(second_tab, t, "masterdata.format-save").click()
    expect(second_tab.locator("#f-gln-error")).to_have_text(t.gettext("masterdata.invalid.gln"))
    assert_accessible(second_tab)
    context.close()
