"""Fakturaer and Forbrug in a real browser, against the whole suite (issue 11, S8, S14).

The demo group's administrator (from the company's letter) sees the invoices of the parent
and its subsidiaries, opens one and downloads its PDF — the file is a PDF that names the
invoice's number — and sees the usage chart; a colleague limited to two of a subsidiary's
accounts sees only those accounts' invoices, and an invoice of another account, typed as a URL,
is the 404 page. Every page on the way passes the accessibility checks.

With `ADGANG_PORTAL_SCREENSHOTS=<dir>` the pages are saved there too.

The module starts a suite of its own: the story applies for the demo group, as the whole
story does in the package's suite.
"""

from __future__ import annotations

import io

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from pypdf import PdfReader

from services.billing.demo import GROUP_PARENT_CVR
from services.suite import Suite
from tests.browser.accessibility import assert_accessible
from tests.browser.steps import button, heading, new_page, shoot
from tests.browser.steps import log_in as log_in_in_browser
from tests.e2e.test_administration_flow import bearer, identity, log_in
from tests.support.flows import (
    CODE,
    USERNAME,
    activate,
    activate_letter,
    apply,
    wait_for_letters,
    wait_for_mail,
)

GROUP = {
    "35657193": "Nordlys Holding A/S",
    "37826111": "Nordlys Energi A/S",
    "41204559": "Nordlys Service ApS",
    "33112874": "Nordlys Vind ApS",
}
ADMIN = "Mette Holm"
ADMIN_EMAIL = "mette.holm@nordlys.example"
ADMIN_MOBILE = "+4520123456"
COLLEAGUE = "Jonas Berg"
COLLEAGUE_EMAIL = "jonas.berg@nordlys.example"
COLLEAGUE_ACCOUNTS = {"10000021", "10000022"}


@pytest.fixture(scope="module")
def portal_suite(own_suite: Suite) -> Suite:
    return own_suite


def invoice_rows(page: Page) -> list[dict[str, str]]:
    """The list's rows: number, link, company (with its CVR) and account."""
    rows = []
    for row in page.locator("table.invoices tbody tr").all():
        link = row.locator("th a")
        cells = row.locator("td")
        rows.append(
            {
                "number": link.inner_text().strip(),
                "href": link.get_attribute("href") or "",
                "company": cells.nth(1).inner_text().strip(),
                "account": cells.nth(2).inner_text().strip(),
            }
        )
    return rows


def test_the_group_administrator_downloads_a_pdf_and_a_limited_colleague_sees_only_two_accounts(
    portal_suite: Suite, browser: Browser, texts
) -> None:
    suite = portal_suite
    t = texts["da"]
    # The group's administrator, from the letter; a colleague limited to two of the
    # subsidiary's accounts with only invoices, added through identity's API.
    assert apply(suite, GROUP_PARENT_CVR, mobile=ADMIN_MOBILE, email=ADMIN_EMAIL).status_code == 202
    [letter] = wait_for_letters(suite, GROUP_PARENT_CVR)
    assert (
        activate_letter(suite, letter, mobile=ADMIN_MOBILE, email=ADMIN_EMAIL, name=ADMIN).status_code == 200
    )
    tokens = log_in(suite, letter.username, method="sms", recipient=ADMIN_MOBILE)
    with identity(suite) as http:
        created = http.post(
            "/v1/users",
            headers=bearer(tokens),
            json={
                "name": COLLEAGUE,
                "email": COLLEAGUE_EMAIL,
                "mobile": "+4520304050",
                "grants": [{"cvr": "37826111", "accounts": sorted(COLLEAGUE_ACCOUNTS)}],
                "functions": ["invoices"],
            },
        )
        assert created.status_code == 201, created.text
    with httpx.Client(base_url=suite.url("billing"), timeout=15) as http:
        theirs = http.get(
            "/v1/invoices",
            params={"account": sorted(COLLEAGUE_ACCOUNTS), "limit": 200},
            headers=bearer(tokens),
        )
    assert theirs.status_code == 200, theirs.text
    [mail] = wait_for_mail(suite, COLLEAGUE_EMAIL)
    username, code = USERNAME.search(mail.text), CODE.search(mail.text)
    assert username and code, mail.text
    assert activate(suite, username.group(), code.group()).status_code == 200

    # 1. The administrator: the parent's and the subsidiaries' invoices.
    page = new_page(browser, accept_downloads=True)
    admin_context = page.context
    log_in_in_browser(page, suite, t, letter.username, sms_to=ADMIN_MOBILE)
    expect(heading(page)).to_have_text(t.gettext("overview.heading", name=ADMIN))
    page.get_by_role("navigation").get_by_role("link", name=t.gettext("menu.invoices")).click()
    expect(heading(page)).to_have_text(t.gettext("invoices.heading"))
    assert_accessible(page)
    shoot(page, "20-fakturaer")
    rows = invoice_rows(page)
    assert len(rows) == 25
    companies = {row["company"] for row in rows}
    assert companies == set(GROUP.values()), companies
    offered = set(
        page.locator('select[name="cvr"] option').evaluate_all("options => options.map(o => o.value)")
    )
    assert offered - {""} == set(GROUP)

    # Filtering by a subsidiary keeps only its invoices.
    page.locator('select[name="cvr"]').select_option("37826111")
    button(page, t, "invoices.filter-submit").click()
    expect(page.locator("table.invoices tbody tr").first).to_be_visible()
    assert {row["company"] for row in invoice_rows(page)} == {GROUP["37826111"]}
    parent_invoice = next(r for r in rows if r["account"] == "10000011")
    foreign = parent_invoice["href"]

    # 2. One invoice, and its PDF.
    page.goto(suite.url("portal") + foreign)
    expect(heading(page)).to_have_text(t.gettext("invoices.invoice-heading", number=parent_invoice["number"]))
    expect(page.locator("table.invoice-lines tfoot tr.total")).to_be_visible()
    assert_accessible(page)
    shoot(page, "21-faktura")
    with page.expect_download() as started:
        page.get_by_role("link", name=t.gettext("invoices.download-pdf")).click()
    download = started.value
    with open(download.path(), "rb") as handle:
        content = handle.read()
    assert content.startswith(b"%PDF")
    words = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(content)).pages)
    assert parent_invoice["number"] in words
    assert download.suggested_filename.endswith(".pdf")

    # 3. Forbrug: the chart and the table of the last six closed months.
    page.get_by_role("navigation").get_by_role("link", name=t.gettext("menu.usage")).click()
    expect(heading(page)).to_have_text(t.gettext("usage.heading"))
    expect(page.get_by_role("img", name=t.gettext("usage.chart-title"))).to_be_visible()
    expect(page.locator("table.usage-table tbody")).to_have_count(6)
    assert_accessible(page)
    shoot(page, "22-forbrug")
    with page.expect_download() as started:
        page.get_by_role("link", name=t.gettext("usage.download-csv")).click()
    with open(started.value.path(), encoding="utf-8") as handle:
        assert handle.readline().startswith("period,cvr,account_number")
    admin_context.close()

    # 4. The colleague: only the two accounts; another account's invoice is the 404 page.
    page = new_page(browser, accept_downloads=True)
    colleague_context = page.context
    log_in_in_browser(page, suite, t, username.group(), email_to=COLLEAGUE_EMAIL)
    expect(heading(page)).to_have_text(t.gettext("overview.heading", name=COLLEAGUE))
    page.get_by_role("navigation").get_by_role("link", name=t.gettext("menu.invoices")).click()
    expect(heading(page)).to_have_text(t.gettext("invoices.heading"))
    seen = invoice_rows(page)
    while (older := page.locator("nav.pages a[rel=next]")).count():
        older.click()
        seen += invoice_rows(page)
    assert seen and {row["account"] for row in seen} == COLLEAGUE_ACCOUNTS
    assert sorted(row["number"] for row in seen) == sorted(i["number"] for i in theirs.json()["items"])
    answer = page.goto(suite.url("portal") + foreign)
    assert answer is not None and answer.status == 404
    expect(heading(page)).to_have_text(t.gettext("error.heading-404"))
    assert_accessible(page)
    answer = page.goto(suite.url("portal") + foreign + "/pdf")
    assert answer is not None and answer.status == 404
    colleague_context.close()
