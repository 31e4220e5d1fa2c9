"""The whole story in a real browser, in Danish and again in English (S1, S2, S4–S7, S12).

A company applies → the letter in its e-Boks links to the activation → the administrator
activates and logs in with an SMS code → adds an authenticator app → logs out → logs in with
the app → creates a colleague limited to two accounts with only invoices (the wizard by
keyboard alone) → the colleague's email links to the activation → the colleague activates and
logs in with an email code → the colleague's menu has no user administration, and its URL
answers 403 in words. Every page on the way passes the accessibility checks.

With `ADGANG_PORTAL_SCREENSHOTS=<dir>` the Danish run saves the main pages there (the
pictures in `docs/portal/` are made this way).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect

from services.notifier.sinks import read_mail
from services.suite import Suite
from tests.browser.accessibility import assert_accessible
from tests.browser.steps import button, heading, new_page, tab_to
from tests.support.flows import (
    CODE,
    STRONG_PASSWORD,
    new_mail_code,
    new_sms_code,
    seen_ids,
    sinks_dir,
    wait_for_letters,
)
from tests.support.waiting import wait_until

ACTIVATION_LINK = re.compile(r"https?://\S+/aktiver\?username=\S+")


@dataclass(frozen=True)
class Story:
    language: str
    cvr: str
    company: str
    admin: str
    admin_email: str
    admin_mobile: str
    colleague: str
    colleague_email: str
    colleague_mobile: str
    colleague_company: str | None  # the wizard's company step, for a group
    colleague_accounts: tuple[str, str]


STORIES = {
    # A group: the administrator holds three companies, so the wizard asks which.
    "da": Story(
        "da",
        "35657193",
        "Nordlys Holding A/S",
        "Mette Holm",
        "mette.holm@nordlys.example",
        "+4520123456",
        "Jonas Berg",
        "jonas.berg@nordlys.example",
        "+4520304050",
        "37826111",
        ("10000021", "10000022"),
    ),
    # One company with two accounts: no company step.
    "en": Story(
        "en",
        "22109340",
        "Bageriet Solsikke ApS",
        "Anne Bager",
        "anne.bager@solsikke.example",
        "+4521123456",
        "Ole Dam",
        "ole.dam@solsikke.example",
        "+4521304050",
        None,
        ("10000051", "10000052"),
    ),
}


def shoot(page: Page, story: Story, name: str) -> None:
    target = os.environ.get("ADGANG_PORTAL_SCREENSHOTS")
    if target and story.language == "da":
        Path(target).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(target) / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("language", ["da", "en"])
def test_the_whole_story_in_the_browser(portal_suite: Suite, browser: Browser, texts, language: str) -> None:
    story = STORIES[language]
    t = texts[language]
    suite = portal_suite
    page = new_page(browser)
    admin_context = page.context

    # 1. Apply (S1).
    page.goto(suite.url("portal"))
    if language == "en":
        page.get_by_role("link", name=texts["da"].gettext("site.switch-language")).click()
    shoot(page, story, "01-forside")
    page.get_by_role("main").get_by_role("link", name=t.gettext("front.apply")).click()
    assert_accessible(page)
    page.locator('[name="cvr"]').fill("12345678")  # a wrong check digit: words next to the field
    button(page, t, "apply.submit").click()
    expect(page.locator("#f-cvr-error")).to_be_visible()
    expect(page.locator('[name="cvr"]')).to_have_attribute("aria-invalid", "true")
    assert_accessible(page)
    page.locator('[name="cvr"]').fill(story.cvr)
    page.locator('[name="company_name"]').fill(story.company)
    page.locator('[name="contact.name"]').fill(story.admin)
    page.locator('[name="contact.email"]').fill(story.admin_email)
    page.locator('[name="contact.mobile"]').fill(story.admin_mobile)
    shoot(page, story, "02-ansoeg")
    button(page, t, "apply.submit").click()
    expect(heading(page)).to_have_text(t.gettext("apply-status.heading"))
    assert_accessible(page)
    shoot(page, story, "03-kvittering")

    # 2. The letter's link opens the activation with the username filled in (S2).
    letter = wait_for_letters(suite, story.cvr)[0]
    link = ACTIVATION_LINK.search(letter.text)
    assert link, f"the letter has no link to the activation:\n{letter.text}"
    page.goto(link.group())
    expect(page.locator('[name="username"]')).to_have_value(letter.username)
    assert_accessible(page)
    shoot(page, story, "04-aktiver")
    page.locator('[name="activation_code"]').fill(letter.code)
    page.locator('[name="password"]').fill(STRONG_PASSWORD)
    page.locator('[name="password_again"]').fill(STRONG_PASSWORD)
    page.locator('[name="email"]').fill(story.admin_email)
    page.locator('[name="mobile"]').fill(story.admin_mobile)
    sms_seen, mail_seen = (
        seen_ids(suite, mobile=story.admin_mobile),
        seen_ids(suite, address=story.admin_email),
    )
    button(page, t, "activate.submit").click()
    expect(heading(page)).to_have_text(t.gettext("activate-confirm.heading"))
    assert_accessible(page)
    page.locator('[name="sms_code"]').fill(new_sms_code(suite, story.admin_mobile, sms_seen))
    page.locator('[name="email_code"]').fill(new_mail_code(suite, story.admin_email, mail_seen))
    button(page, t, "activate-confirm.submit").click()
    expect(heading(page)).to_have_text(t.gettext("activate-done.heading"))
    assert_accessible(page)

    # 3. Log in with an SMS code (S7).
    page.get_by_role("main").get_by_role("link", name=t.gettext("activate-done.log-in")).click()
    expect(page.locator('[name="username"]')).to_have_value(letter.username)
    shoot(page, story, "05-log-ind")
    page.locator('[name="password"]').fill(STRONG_PASSWORD)
    button(page, t, "login.submit").click()
    expect(heading(page)).to_have_text(t.gettext("login-code.heading"))
    assert_accessible(page)
    button(page, t, "login-code.send-sms").click()
    expect(page.get_by_role("status").first).to_be_visible()
    shoot(page, story, "06-engangskode")
    page.locator('[name="code"]').fill(new_sms_code(suite, story.admin_mobile, sms_seen))
    button(page, t, "login-code.submit").click()
    expect(heading(page)).to_have_text(t.gettext("overview.heading", name=story.admin))
    assert_accessible(page)
    shoot(page, story, "07-oversigt")

    # 4. Add an authenticator app: a QR code and the secret as text; ten recovery codes once.
    # The check runs on the profile page, not on the overview while it is being left.
    with page.expect_navigation():
        page.get_by_role("navigation").get_by_role("link", name=t.gettext("menu.profile")).click()
    assert_accessible(page)
    shoot(page, story, "08-min-profil")
    page.get_by_role("link", name=t.gettext("profile.add-app")).click()
    button(page, t, "authenticator.start").click()
    expect(page.get_by_role("img", name=t.gettext("authenticator.qr-alt"))).to_be_visible()
    assert_accessible(page)
    shoot(page, story, "09-godkendelsesapp")
    secret = page.locator(".secret strong").inner_text().replace(" ", "")
    app = pyotp.TOTP(secret)
    page.locator('[name="code"]').fill(app.now())
    button(page, t, "authenticator.confirm").click()
    expect(heading(page)).to_have_text(t.gettext("recovery-codes.heading"))
    assert len(re.findall(r"\b[0-9A-Z]{5}-[0-9A-Z]{5}\b", page.locator("main").inner_text())) == 10
    assert_accessible(page)

    # 5. Log out, and in again with the app.
    button(page, t, "site.log-out").first.click()
    expect(heading(page)).to_have_text(t.gettext("front.heading"))
    page.goto(suite.url("portal") + "/log-ind")
    page.locator('[name="username"]').fill(letter.username)
    page.locator('[name="password"]').fill(STRONG_PASSWORD)
    button(page, t, "login.submit").click()
    # The next step's code: the one just used to confirm the app is spent.
    page.locator('[name="code"]').fill(app.at(time.time() + 30))
    button(page, t, "login-code.submit").click()
    expect(heading(page)).to_have_text(t.gettext("overview.heading", name=story.admin))

    # 6. A colleague limited to two accounts with only invoices: the S5 wizard, keyboard alone.
    page.get_by_role("navigation").get_by_role("link", name=t.gettext("menu.users")).click()
    expect(heading(page)).to_have_text(t.gettext("users.heading"))
    assert_accessible(page)
    shoot(page, story, "10-selvbetjeningsbrugere")
    page.get_by_role("link", name=t.gettext("users.create")).click()
    expect(heading(page)).to_have_text(t.gettext("users-new.heading"))
    assert_accessible(page)
    shoot(page, story, "11-opret-detaljer")
    page.keyboard.type(story.colleague)  # the name field has the focus
    tab_to(page, '[name="email"]')
    page.keyboard.type(story.colleague_email)
    tab_to(page, '[name="mobile"]')
    page.keyboard.type(story.colleague_mobile)
    page.keyboard.press("Enter")
    if story.colleague_company:
        expect(page.locator('[name="grants.cvr"]').first).to_be_visible()
        assert_accessible(page)
        shoot(page, story, "12-opret-virksomhed")
        tab_to(page, '[name="grants.cvr"]')
        while not page.locator(f'[name="grants.cvr"][value="{story.colleague_company}"]').is_checked():
            page.keyboard.press("ArrowDown")
        tab_to(page, 'button[value="next"]')
        page.keyboard.press("Enter")
    expect(page.locator('[name="grants.accounts"]').first).to_be_visible()
    assert_accessible(page)
    shoot(page, story, "13-opret-konti")
    tab_to(page, '[name="access"]')
    while not page.locator('[name="access"][value="some"]').is_checked():
        page.keyboard.press("ArrowDown")
    for account in story.colleague_accounts:
        tab_to(page, f'[name="grants.accounts"][value="{account}"]')
        page.keyboard.press("Space")
    tab_to(page, 'button[value="next"]')
    page.keyboard.press("Enter")
    expect(page.locator('[name="functions"]').first).to_be_visible()
    assert_accessible(page)
    shoot(page, story, "14-opret-funktioner")
    tab_to(page, '[name="functions"][value="invoices"]')
    page.keyboard.press("Space")
    mail_seen = seen_ids(suite, address=story.colleague_email)
    tab_to(page, 'button[value="next"]')
    page.keyboard.press("Enter")
    expect(heading(page)).to_have_text(t.gettext("users-created.heading", name=story.colleague))
    expect(page.get_by_role("main")).to_contain_text(story.colleague_email)
    assert_accessible(page)
    shoot(page, story, "15-oprettet")
    page.get_by_role("link", name=t.gettext("users-created.to-user")).click()
    expect(page.locator('[name="functions"][value="invoices"]')).to_be_checked()
    assert_accessible(page)
    shoot(page, story, "16-bruger")
    admin_context.close()

    # 7. The colleague's email links to the activation (S6); an email code logs in.
    mail = wait_until(
        lambda: next(
            (m for m in read_mail(sinks_dir(suite), story.colleague_email) if m.message_id not in mail_seen),
            None,
        ),
        deadline_s=60,
        what=f"the login email to {story.colleague_email}",
    )
    link = ACTIVATION_LINK.search(mail.text)
    code = CODE.search(mail.text)
    assert link and code, f"the email has no link or code:\n{mail.text}"
    page = new_page(browser)
    colleague = page.context
    page.goto(link.group())
    if language == "en":
        page.get_by_role("link", name=texts["da"].gettext("site.switch-language")).click()
    page.locator('[name="activation_code"]').fill(code.group())
    page.locator('[name="password"]').fill(STRONG_PASSWORD)
    page.locator('[name="password_again"]').fill(STRONG_PASSWORD)
    button(page, t, "activate.submit").click()
    expect(heading(page)).to_have_text(t.gettext("activate-done.heading"))
    page.get_by_role("main").get_by_role("link", name=t.gettext("activate-done.log-in")).click()
    page.locator('[name="password"]').fill(STRONG_PASSWORD)
    button(page, t, "login.submit").click()
    mail_seen = seen_ids(suite, address=story.colleague_email)
    button(page, t, "login-code.send-email").click()
    page.locator('[name="code"]').fill(new_mail_code(suite, story.colleague_email, mail_seen))
    button(page, t, "login-code.submit").click()
    expect(heading(page)).to_have_text(t.gettext("overview.heading", name=story.colleague))

    # 8. No user administration in the colleague's menu; its URL answers 403 in words.
    menu = page.get_by_role("navigation")
    expect(menu.get_by_role("link", name=t.gettext("menu.profile"))).to_be_visible()
    expect(menu.get_by_role("link", name=t.gettext("menu.users"))).to_have_count(0)
    answer = page.goto(suite.url("portal") + "/brugere")
    assert answer is not None and answer.status == 403
    expect(page.get_by_role("main")).to_contain_text(t.gettext("error.needs-user_admin"))
    assert_accessible(page)
    colleague.close()
