"""Fakturaer and Forbrug (S8, S14): a group administrator sees the invoices and usage of the
parent and its subsidiary, filtered and paged; an invoice's lines and totals are billing's; a
limited colleague sees only their two accounts; a foreign invoice is the 404 page; a user
without the `invoices` function gets the 403 page — also when many ask at once.

The portal runs in-process in front of identity's and billing's real APIs (billing on the demo
data); every figure a page shows is checked against billing's own JSON for the same user."""

# ruff: noqa: F811 - fixtures are imported and used by name

from __future__ import annotations

import asyncio
import csv
import io
import re
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import date
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from lxml import html as lxml_html
from pypdf import PdfReader
from sqlalchemy import update

from services.billing.invoicing import Invoicing, invoice_id_for
from services.billing.models import Account, messaging
from services.identity.config import IdentitySettings
from services.identity.models import User
from services.portal.api import create_api as create_portal_api
from services.portal.config import PortalSettings
from shared.clock import FrozenClock
from shared.db import Database
from shared.messaging import Outbox
from shared.sealing import Sealer
from tests.integration.billing_fixtures import NOW
from tests.portal.conftest import log_in_through_portal
from tests.portal.test_support_pages import browser_of
from tests.security.world import (
    OTHER_TENANT,
    PARENT,
    SUBSIDIARY,
    add_user,
    bearer,
    company_group,
    group_administrator,
)
from tests.support.asgi import AppTransport

LIMITED_ACCOUNTS = ["10000021", "10000022"]
# The demo data's months with invoices, seen from NOW (November 2026): the newest closed
# month, October, is left to the monthly run.
NEWEST_INVOICED = date(2026, 9, 1)


# October 2026, the newest closed month, is left by the demo data to the monthly run: this
# module issues it for one account after that account chose OIOUBL, for the XML download.
OCTOBER = date(2026, 10, 1)
OIOUBL_ACCOUNT = "10000012"
GLN = "5790000123457"


@pytest.fixture(scope="module")
def october_as_oioubl(billing_url: str) -> str:
    """The id of the OIOUBL account's October invoice, issued once for the module."""

    async def issue() -> None:
        db = Database(billing_url)
        clock = FrozenClock(NOW)
        try:
            async with db.transaction() as session:
                await session.execute(
                    update(Account)
                    .where(Account.account_number == OIOUBL_ACCOUNT)
                    .values(invoice_format="oioubl", invoice_gln=GLN)
                )
                outbox = Outbox(messaging, clock)
                await Invoicing(outbox=outbox, clock=clock, payment_days=14).issue(
                    session, OCTOBER, accounts=[OIOUBL_ACCOUNT]
                )
        finally:
            await db.dispose()

    asyncio.run(issue())
    return invoice_id_for(OIOUBL_ACCOUNT, OCTOBER)


@pytest.fixture
def clock() -> FrozenClock:
    """The demo data's time, so that "the last six closed months" have usage."""
    return FrozenClock(NOW)


@pytest.fixture
def portal_transports(identity_transport, billing_transport) -> dict[str, httpx.AsyncBaseTransport]:
    return {"identity": identity_transport, "billing": billing_transport}


@pytest.fixture
async def portal_transport(
    portal_settings: PortalSettings, portal_transports, clock: FrozenClock
) -> AsyncIterator[AppTransport]:
    transport = AppTransport(
        app=create_portal_api(portal_settings, clock=clock, transports=portal_transports)
    )
    yield transport
    await transport.aclose()


@pytest.fixture
async def portal(portal_transport: AppTransport) -> AsyncIterator[httpx.AsyncClient]:
    async with browser_of(portal_transport) as browser:
        yield browser


class Billing:
    """Billing's API as one user sees it, to check the pages against."""

    def __init__(self, transport: httpx.AsyncBaseTransport, headers: dict[str, str]) -> None:
        self.http = httpx.AsyncClient(transport=transport, base_url="http://billing", headers=headers)

    async def every(self, path: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        cursor = None
        while True:
            answer = await self.http.get(
                path, params=[*params, ("limit", "200")] + ([("cursor", cursor)] if cursor else [])
            )
            assert answer.status_code == 200, answer.text
            rows += answer.json()["items"]
            cursor = answer.json()["next_cursor"]
            if cursor is None:
                return rows


@pytest.fixture
async def billing_as(db: Database, clock: FrozenClock, settings: IdentitySettings, billing_transport):
    opened: list[httpx.AsyncClient] = []

    async def as_user(user: User) -> Billing:
        billing = Billing(billing_transport, await bearer(db, clock, settings, user))
        opened.append(billing.http)
        return billing

    yield as_user
    for http in opened:
        await http.aclose()


async def limited_colleague(db: Database, clock: FrozenClock) -> User:
    return await add_user(db, clock, grants={SUBSIDIARY: LIMITED_ACCOUNTS}, functions=["invoices"])


# --- reading the pages ------------------------------------------------------------------------


def document(page: httpx.Response) -> Any:
    return lxml_html.fromstring(page.text)


def text(element: Any) -> str:
    """The element's words, its no-break spaces kept (amounts are written with them)."""
    return re.sub(r"[ \t\r\n]+", " ", element.text_content()).strip()


def listed(page: httpx.Response) -> list[dict[str, str]]:
    """The invoice list's rows."""
    rows = []
    for row in document(page).xpath("//table[contains(@class, 'invoices')]/tbody/tr"):
        cells = row.xpath("./th|./td")
        rows.append(
            {
                "href": cells[0].xpath(".//a/@href")[0],
                "number": text(cells[0]),
                "period": text(cells[1]),
                "company": text(cells[2]),
                "account": text(cells[3]),
                "incl": text(cells[6]),
            }
        )
    return rows


def older_link(page: httpx.Response) -> str | None:
    found = document(page).xpath("//nav[contains(@class, 'pages')]//a[@rel='next']/@href")
    return found[0] if found else None


def field_error(page: httpx.Response, name: str) -> str | None:
    """The words next to the filter field `name`."""
    found = document(page).xpath(f"//p[@id='f-billing-{name}-error']")
    return text(found[0]) if found else None


def danish_kroner(ore: int) -> str:
    """Written here without the portal's code: 1.234,50 kr."""
    sign = "-" if ore < 0 else ""
    whole, rest = divmod(abs(ore), 100)
    return f"{sign}{whole:,}".replace(",", ".") + f",{rest:02d}\xa0kr."


def english_kroner(ore: int) -> str:
    sign = "-" if ore < 0 else ""
    whole, rest = divmod(abs(ore), 100)
    return f"{sign}DKK\xa0{whole:,}.{rest:02d}"


DANISH_MONTHS = [
    "januar",
    "februar",
    "marts",
    "april",
    "maj",
    "juni",
    "juli",
    "august",
    "september",
    "oktober",
    "november",
    "december",
]


def danish_month(first_day: str) -> str:
    year, month, _ = first_day.split("-")
    return f"{DANISH_MONTHS[int(month) - 1]} {year}"


async def logged_in(portal: httpx.AsyncClient, db: Database, sealer: Sealer, user: User) -> httpx.AsyncClient:
    await log_in_through_portal(portal, db, sealer, user.username)
    return portal


async def logged_in_group_administrator(
    portal: httpx.AsyncClient, db: Database, clock: FrozenClock, sealer: Sealer
) -> User:
    """The demo group, and its administrator logged in through `portal`."""
    await company_group(db, clock)
    admin = await group_administrator(db, clock)
    await logged_in(portal, db, sealer, admin)
    return admin


# --- Fakturaer ---------------------------------------------------------------------------------


async def test_a_group_administrator_sees_the_parents_and_the_subsidiarys_invoices_newest_first_in_kroner(
    db, clock, sealer, portal, billing_as
) -> None:
    admin = await logged_in_group_administrator(portal, db, clock, sealer)
    expected = await (await billing_as(admin)).every("/v1/invoices", [])

    page = await portal.get("/fakturaer")

    assert page.status_code == 200, page.text
    shown = listed(page)
    assert len(shown) == 25 and len(expected) > 25
    assert [row["number"] for row in shown] == [invoice["number"] for invoice in expected[:25]]
    for row, invoice in zip(shown, expected, strict=False):
        assert row["href"] == f"/fakturaer/{invoice['id']}"
        assert row["company"] == invoice["company_name"]
        assert row["account"] == invoice["account_number"]
        assert row["period"] == danish_month(invoice["period_start"])
        assert row["incl"] == danish_kroner(invoice["amount_incl_vat_ore"])
    assert {invoice["cvr"] for invoice in expected} == {PARENT, SUBSIDIARY}
    assert {"Nordlys Holding A/S", "Nordlys Energi A/S"} <= {row["company"] for row in shown}
    # The company filter offers exactly the companies of the grants.
    choices = document(page).xpath("//select[@name='cvr']/option/@value")
    assert sorted(v for v in choices if v) == sorted([PARENT, SUBSIDIARY])

    english = await portal.get("/sprog", params={"til": "en", "next": "/fakturaer"})
    assert english.status_code in (302, 303)
    in_english = listed(await portal.get("/fakturaer"))
    assert in_english[0]["incl"] == english_kroner(expected[0]["amount_incl_vat_ore"])


async def test_the_older_invoices_link_pages_through_every_invoice_exactly_once(
    db, clock, sealer, portal, billing_as
) -> None:
    admin = await logged_in_group_administrator(portal, db, clock, sealer)
    expected = await (await billing_as(admin)).every("/v1/invoices", [])

    seen: list[str] = []
    path: str | None = "/fakturaer"
    pages = 0
    while path is not None:
        page = await portal.get(path)
        assert page.status_code == 200, page.text
        seen += [row["number"] for row in listed(page)]
        path = older_link(page)
        pages += 1
        if path is not None:
            assert "cursor=" in path
            assert pages == 1 or "Nyeste fakturaer" in page.text

    assert seen == [invoice["number"] for invoice in expected]
    assert pages == -(-len(expected) // 25)


async def test_the_filters_narrow_to_a_company_an_account_and_a_period_of_months(
    db, clock, sealer, portal, billing_as
) -> None:
    admin = await logged_in_group_administrator(portal, db, clock, sealer)
    billing = await billing_as(admin)

    by_company = listed(await portal.get("/fakturaer", params={"cvr": SUBSIDIARY}))
    assert by_company and {row["company"] for row in by_company} == {"Nordlys Energi A/S"}

    period = {"account": "10000012", "from": "2026-03", "to": "2026-05"}
    page = await portal.get("/fakturaer", params=period)
    expected = await billing.every(
        "/v1/invoices", [("account", "10000012"), ("from", "2026-03-01"), ("to", "2026-05-01")]
    )
    assert [row["number"] for row in listed(page)] == [i["number"] for i in expected]
    assert [row["period"] for row in listed(page)] == ["maj 2026", "april 2026", "marts 2026"]
    # The form shows what was chosen.
    assert document(page).xpath("//input[@name='from']/@value") == ["2026-03"]
    assert document(page).xpath("//input[@name='account']/@value") == ["10000012"]


async def test_wrong_filter_values_are_words_next_to_their_fields(db, clock, sealer, portal) -> None:
    await logged_in_group_administrator(portal, db, clock, sealer)

    # Billing refuses these (422 naming the field); the portal says it in its own words.
    account = await portal.get("/fakturaer", params={"account": "12ab"})
    backwards = await portal.get("/fakturaer", params={"from": "2026-06", "to": "2026-01"})
    company = await portal.get("/fakturaer", params={"cvr": "12345678"})
    # Not a month at all: the portal cannot even ask.
    month = await portal.get("/forbrug", params={"from": "2026-13"})
    cursor = await portal.get("/fakturaer", params={"cursor": "not-one-of-billings"})

    assert account.status_code == 422
    assert (
        field_error(account, "account")
        == "Et kontonummer har 6-12 cifre og intet andet. Ret det, eller lad feltet være tomt for alle konti."
    )
    assert backwards.status_code == 422 and field_error(
        backwards,
        "from",
    ).startswith("Skriv måneden som år og måned")
    assert (
        company.status_code == 422 and field_error(company, "cvr") == "Vælg en af virksomhederne på listen."
    )
    assert month.status_code == 422 and field_error(month, "from").startswith("Skriv måneden som år og måned")
    assert cursor.status_code == 422 and "Linket til ældre fakturaer virker ikke længere" in cursor.text
    for page in (account, backwards, company, month):
        assert 'aria-invalid="true"' in page.text


async def test_an_invoice_shows_its_lines_by_subscription_and_category_with_vat_and_totals_as_billing_has_them(
    db, clock, sealer, portal, billing_as
) -> None:
    admin = await logged_in_group_administrator(portal, db, clock, sealer)
    invoice_id = invoice_id_for("10000021", NEWEST_INVOICED)
    answer = await (await billing_as(admin)).http.get(f"/v1/invoices/{invoice_id}")
    assert answer.status_code == 200, answer.text
    invoice = answer.json()

    page = await portal.get(f"/fakturaer/{invoice_id}")

    assert page.status_code == 200, page.text
    tree = document(page)
    assert text(tree.xpath("//h1")[0]) == f"Faktura {invoice['number']}"
    groups = tree.xpath("//table[contains(@class, 'invoice-lines')]/tbody")
    by_identifier: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in invoice["lines"]:
        by_identifier[line["identifier"]].append(line)
    assert [text(g.xpath("./tr/th[@scope='rowgroup']")[0]) for g in groups] == sorted(by_identifier)
    for group in groups:
        identifier = text(group.xpath("./tr/th[@scope='rowgroup']")[0])
        lines = by_identifier[identifier]
        amounts = [
            text(cell)
            for cell in group.xpath("./tr[not(contains(@class, 'subtotal'))]/td[contains(@class, 'amount')]")
        ]
        assert sorted(amounts) == sorted(danish_kroner(line["amount_ore"]) for line in lines)
        subtotal = text(group.xpath("./tr[contains(@class, 'subtotal')]/td[contains(@class, 'amount')]")[0])
        assert subtotal == danish_kroner(sum(line["amount_ore"] for line in lines))
        categories = [
            text(row.xpath("./td")[0]).split(" ")[0]
            for row in group.xpath("./tr[not(contains(@class, 'subtotal'))]")
        ]
        assert categories[0] == "Abonnement"  # the fee first, then the usage
    footer = [text(cell) for cell in tree.xpath("//tfoot//td")]
    assert footer == [
        danish_kroner(invoice["amount_excl_vat_ore"]),
        danish_kroner(invoice["vat_ore"]),
        danish_kroner(invoice["amount_incl_vat_ore"]),
    ]
    assert sum(line["amount_ore"] for line in invoice["lines"]) == invoice["amount_excl_vat_ore"]
    assert tree.xpath("//a[@href=$href]", href=f"/fakturaer/{invoice_id}/pdf")


async def test_the_pdf_download_is_billings_document_with_its_type_and_file_name(
    db, clock, sealer, portal, billing_as
) -> None:
    admin = await logged_in_group_administrator(portal, db, clock, sealer)
    billing = await billing_as(admin)
    invoice_id = invoice_id_for("10000021", NEWEST_INVOICED)
    invoice = (await billing.http.get(f"/v1/invoices/{invoice_id}")).json()
    straight = await billing.http.get(f"/v1/invoices/{invoice_id}/document", params={"format": "pdf"})

    download = await portal.get(f"/fakturaer/{invoice_id}/pdf")

    assert download.status_code == 200, download.text
    assert download.content.startswith(b"%PDF")
    assert download.headers["content-type"] == straight.headers["content-type"] == "application/pdf"
    assert download.headers["content-disposition"] == straight.headers["content-disposition"]
    assert download.headers["cache-control"] == "no-store"
    words = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(download.content)).pages)
    assert invoice["number"] in words
    total = invoice["amount_incl_vat_ore"]
    assert f"{total // 100:,}".replace(",", ".") + f",{total % 100:02d}" in words


async def test_an_e_invoice_is_passed_on_as_billing_wrote_it_and_a_paper_invoice_has_none_in_words(
    db, clock, sealer, portal, billing_as, october_as_oioubl
) -> None:
    admin = await logged_in_group_administrator(portal, db, clock, sealer)
    billing = await billing_as(admin)
    straight = await billing.http.get(
        f"/v1/invoices/{october_as_oioubl}/document", params={"format": "oioubl"}
    )
    assert straight.status_code == 200, straight.text

    xml = await portal.get(f"/fakturaer/{october_as_oioubl}/oioubl")
    paper = await portal.get(f"/fakturaer/{invoice_id_for('10000021', NEWEST_INVOICED)}/oioubl")

    assert xml.status_code == 200
    assert xml.headers["content-type"] == straight.headers["content-type"]
    assert xml.headers["content-disposition"] == straight.headers["content-disposition"]
    assert xml.content.startswith(b"<?xml") and GLN.encode() in xml.content
    assert paper.status_code == 409
    assert "Denne faktura findes ikke som e-faktura i det format. Hent den som PDF i stedet." in paper.text


async def set_invoice_format(billing_url: str, account: str, **values: str | None) -> None:
    db = Database(billing_url)
    try:
        async with db.transaction() as session:
            await session.execute(update(Account).where(Account.account_number == account).values(**values))
    finally:
        await db.dispose()


async def test_an_invoice_issued_as_oioubl_offers_its_xml_to_everyone_who_sees_it_also_after_the_format_changed(
    db, clock, sealer, portal_transport, billing_url, october_as_oioubl
) -> None:
    """The link follows the documents billing names for the invoice as issued, not the
    account's format today, and needs no `master_data`."""
    await company_group(db, clock)
    invoices_only = await add_user(db, clock, grants={PARENT: "all"}, functions=["invoices"])
    one_account = await add_user(db, clock, grants={PARENT: [OIOUBL_ACCOUNT]}, functions=["invoices"])
    paper = invoice_id_for("10000011", NEWEST_INVOICED)
    link = f"/fakturaer/{october_as_oioubl}/oioubl"
    async with browser_of(portal_transport) as browser, browser_of(portal_transport) as other:
        await logged_in(browser, db, sealer, invoices_only)
        await logged_in(other, db, sealer, one_account)

        async def look() -> list[httpx.Response]:
            return list(
                await asyncio.gather(
                    browser.get(f"/fakturaer/{october_as_oioubl}"),
                    other.get(f"/fakturaer/{october_as_oioubl}"),
                    browser.get(f"/fakturaer/{paper}"),
                )
            )

        issued = await look()
        # The account takes PDF by email from now on; the invoice was issued as OIOUBL.
        await set_invoice_format(
            billing_url, OIOUBL_ACCOUNT, invoice_format="pdf_email", invoice_email="faktura@example.dk", invoice_gln=None
        )
        try:
            changed = await look()
            followed = await other.get(link)
        finally:
            await set_invoice_format(
                billing_url, OIOUBL_ACCOUNT, invoice_format="oioubl", invoice_email=None, invoice_gln=GLN
            )

    for e_invoice, limited, on_paper in (issued, changed):
        for page in (e_invoice, limited):
            assert page.status_code == 200
            assert document(page).xpath("//a[@href=$href]/text()", href=link) == ["Hent e-fakturaen (OIOUBL, XML)"]
        assert on_paper.status_code == 200
        assert not document(on_paper).xpath("//a[contains(@href, '/oioubl') or contains(@href, '/peppol')]")
        assert document(on_paper).xpath("//a[contains(@href, '/pdf')]")
    assert followed.status_code == 200 and followed.content.startswith(b"<?xml")
    assert b"OIOUBL-2.1" in followed.content


async def test_a_foreign_or_unknown_invoice_is_the_404_page_and_so_is_its_pdf(
    db, clock, sealer, portal
) -> None:
    await company_group(db, clock)
    colleague = await limited_colleague(db, clock)
    await logged_in(portal, db, sealer, colleague)
    other_company = invoice_id_for("10000051", NEWEST_INVOICED)
    same_company_other_account = invoice_id_for("10000023", NEWEST_INVOICED)
    own = invoice_id_for("10000021", NEWEST_INVOICED)

    for invoice_id in (other_company, same_company_other_account, "00000000-0000-4000-8000-000000000000"):
        for path in (f"/fakturaer/{invoice_id}", f"/fakturaer/{invoice_id}/pdf"):
            page = await portal.get(path)
            assert page.status_code == 404, (path, page.status_code)
            assert text(document(page).xpath("//h1")[0]) == "Siden findes ikke"
    assert (await portal.get(f"/fakturaer/{own}")).status_code == 200
    assert (await portal.get(f"/fakturaer/{own}/xml")).status_code == 404


async def test_a_limited_colleague_sees_only_the_invoices_and_usage_of_their_two_accounts(
    db, clock, sealer, portal, billing_as
) -> None:
    await company_group(db, clock)
    colleague = await limited_colleague(db, clock)
    billing = await billing_as(colleague)
    expected = await billing.every("/v1/invoices", [])
    await logged_in(portal, db, sealer, colleague)

    seen: list[dict[str, str]] = []
    path: str | None = "/fakturaer"
    while path is not None:
        page = await portal.get(path)
        assert page.status_code == 200, page.text
        seen += listed(page)
        path = older_link(page)

    assert [row["number"] for row in seen] == [i["number"] for i in expected]
    assert {row["account"] for row in seen} == set(LIMITED_ACCOUNTS)
    # Asking for the parent or the third account of the subsidiary shows nothing of them.
    assert listed(await portal.get("/fakturaer", params={"cvr": PARENT})) == []
    assert listed(await portal.get("/fakturaer", params={"account": "10000023"})) == []
    choices = document(await portal.get("/fakturaer")).xpath("//select[@name='cvr']/option/@value")
    assert [v for v in choices if v] == [SUBSIDIARY]
    accounts = document(await portal.get("/fakturaer")).xpath(
        "//datalist[@id='billing-accounts']/option/@value"
    )
    assert sorted(accounts) == LIMITED_ACCOUNTS

    usage = await portal.get("/forbrug", params={"from": "2025-01", "to": "2026-12"})
    assert usage.status_code == 200
    assert usage_table(usage) == summed(await billing.every("/v1/usage", [("from", "2025-01-01")]))
    everything = await portal.get("/forbrug.csv", params={"from": "2025-01"})
    csv_rows = list(csv.DictReader(io.StringIO(everything.text)))
    # The broadband account (10000022) has no metered usage: only the mobile account's rows.
    assert csv_rows and {row["account_number"] for row in csv_rows} == {"10000021"}


async def test_without_the_invoices_function_every_invoice_and_usage_address_is_the_403_page(
    db, clock, sealer, portal
) -> None:
    await company_group(db, clock)
    user = await add_user(db, clock, grants={PARENT: "all", SUBSIDIARY: "all"}, functions=["orders"])
    await logged_in(portal, db, sealer, user)
    own = invoice_id_for("10000011", NEWEST_INVOICED)

    for path in ("/fakturaer", f"/fakturaer/{own}", f"/fakturaer/{own}/pdf", "/forbrug", "/forbrug.csv"):
        page = await portal.get(path)
        assert page.status_code == 403, path
        assert text(document(page).xpath("//h1")[0]) == "Du har ikke adgang til denne side", path
        assert (
            "Du har ikke adgang til fakturaer og forbrug. Spørg din virksomheds administrator." in page.text
        )


# --- Forbrug -----------------------------------------------------------------------------------


def usage_table(page: httpx.Response) -> dict[tuple[str, str], tuple[str, str]]:
    """(month, category) → (quantity, amount) as the table shows them."""
    cells = {}
    for group in document(page).xpath("//table[contains(@class, 'usage-table')]/tbody"):
        month = text(group.xpath("./tr/th[@scope='rowgroup']")[0])
        for row in group.xpath("./tr[not(contains(@class, 'subtotal'))]"):
            tds = row.xpath("./td")
            if len(tds) == 3:
                cells[(month, text(tds[0]))] = (text(tds[1]), text(tds[2]))
    return cells


CATEGORY = {"calls": "Opkald", "sms": "SMS", "data": "Data"}
UNIT = {"minutes": "min.", "messages": "stk.", "MB": "MB"}


def summed(rows: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[str, str]]:
    sums: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, 0, ""])
    for row in rows:
        cell = sums[(danish_month(row["period"]), CATEGORY[row["category"]])]
        cell[0] += row["quantity"]
        cell[1] += row["amount_ore"]
        cell[2] = row["unit"]
    return {
        key: (f"{q:,}".replace(",", ".") + f" {UNIT[unit]}", danish_kroner(ore))
        for key, (q, ore, unit) in sums.items()
    }


async def test_usage_is_the_last_six_closed_months_in_a_chart_and_a_table_that_sum_billings_rows(
    db, clock, sealer, portal, billing_as
) -> None:
    admin = await logged_in_group_administrator(portal, db, clock, sealer)
    # NOW is in November 2026: the last six closed months are May to October.
    rows = await (await billing_as(admin)).every("/v1/usage", [("from", "2026-05-01"), ("to", "2026-10-01")])

    page = await portal.get("/forbrug")

    assert page.status_code == 200, page.text
    assert usage_table(page) == summed(rows)
    tree = document(page)
    assert tree.xpath("//input[@name='from']/@value") == ["2026-05"]
    assert tree.xpath("//input[@name='to']/@value") == ["2026-10"]
    svg = tree.xpath("//svg")[0]
    assert svg.get("role") == "img"
    assert set(svg.get("aria-labelledby").split()) == {"usage-chart-title", "usage-chart-desc"}
    assert "style=" not in page.text
    # One bar per month; each segment's own title names its figure, as the table does.
    months = svg.xpath(".//g[@class='chart-month']")
    assert [text(m.xpath("./text")[0]) for m in months] == [
        "maj 2026",
        "jun. 2026",
        "jul. 2026",
        "aug. 2026",
        "sep. 2026",
        "okt. 2026",
    ]
    titles = {text(t) for t in svg.xpath(".//rect/title")}
    table = usage_table(page)
    assert titles == {f"{month}, {category}: {amount}" for (month, category), (_, amount) in table.items()}
    # Bar heights are proportional to the amounts: the tallest month is the largest sum.
    heights = [sum(float(r.get("height")) for r in m.xpath("./rect")) for m in months]
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        totals[row["period"]] += row["amount_ore"]
    ordered = [totals[p] for p in sorted(totals)]
    assert heights.index(max(heights)) == ordered.index(max(ordered))


async def test_usage_filters_narrow_the_sums_and_the_csv_is_billings_for_the_same_filters(
    db, clock, sealer, portal, billing_as
) -> None:
    admin = await logged_in_group_administrator(portal, db, clock, sealer)
    billing = await billing_as(admin)
    chosen = {"cvr": SUBSIDIARY, "account": "10000023", "from": "2026-01", "to": "2026-03"}
    params = [("cvr", SUBSIDIARY), ("account", "10000023"), ("from", "2026-01-01"), ("to", "2026-03-01")]

    page = await portal.get("/forbrug", params=chosen)
    download = await portal.get("/forbrug.csv", params=chosen)
    straight = await billing.http.get("/v1/usage", params=[*params, ("format", "csv")])

    assert page.status_code == 200
    assert usage_table(page) == summed(await billing.every("/v1/usage", params))
    assert {month for month, _ in usage_table(page)} == {"januar 2026", "februar 2026", "marts 2026"}
    assert download.status_code == 200
    assert download.content == straight.content and len(download.content) > 100
    assert download.headers["content-type"] == straight.headers["content-type"]
    assert download.headers["content-disposition"] == straight.headers["content-disposition"]
    # The page's CSV link carries the same filters.
    link = document(page).xpath("//a[@download and starts-with(@href, '/forbrug.csv')]/@href")[0]
    assert parse_qs(urlsplit(link).query) == {k: [v] for k, v in chosen.items()}
    # A filter billing refuses sends the download back to the page, which says why.
    refused = await portal.get("/forbrug.csv", params={"account": "x1"})
    assert refused.status_code == 303 and refused.headers["location"].startswith("/forbrug?")
    assert field_error(await portal.get(refused.headers["location"]), "account")


class Recording(httpx.AsyncBaseTransport):
    """A transport that notes the path of every request before passing it on."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return await self.inner.handle_async_request(request)


async def test_usage_over_any_period_is_one_call_for_billings_sums_whatever_the_number_of_rows(
    db, clock, sealer, portal_settings, identity_transport, billing_transport, billing_as
) -> None:
    await company_group(db, clock)
    admin = await group_administrator(db, clock)
    rows = await (await billing_as(admin)).every("/v1/usage", [("from", "2025-01-01")])
    recording = Recording(billing_transport)
    app = create_portal_api(
        portal_settings, clock=clock, transports={"identity": identity_transport, "billing": recording}
    )
    async with AppTransport(app=app) as transport, browser_of(transport) as browser:
        await logged_in(browser, db, sealer, admin)
        recording.paths.clear()
        page = await browser.get("/forbrug", params={"from": "2025-01", "to": "2026-12"})

    assert page.status_code == 200, page.text
    assert rows and usage_table(page) == summed(rows)
    assert len({month for month, _ in usage_table(page)}) == 12
    assert recording.paths == ["/v1/usage/summary"]
    assert "ikke vist" not in page.text


# --- who gets what, all at once -----------------------------------------------------------------


async def test_many_users_at_once_each_get_exactly_what_their_grants_and_functions_allow(
    db, clock, sealer, portal_transport, billing_as
) -> None:
    await company_group(db, clock)
    admin = await group_administrator(db, clock)
    colleague = await limited_colleague(db, clock)
    without = await add_user(db, clock, grants={PARENT: "all", SUBSIDIARY: "all"}, functions=["orders"])
    outsider = await add_user(
        db, clock, grants={OTHER_TENANT: "all"}, functions=["invoices"], tenant=OTHER_TENANT
    )
    browsers = {}
    for name, user in (
        ("admin", admin),
        ("colleague", colleague),
        ("without", without),
        ("outsider", outsider),
    ):
        browsers[name] = browser_of(portal_transport)
        await logged_in(browsers[name], db, sealer, user)
    invoices = {
        "parent": invoice_id_for("10000011", NEWEST_INVOICED),
        "limited": invoice_id_for("10000022", NEWEST_INVOICED),
        "subsidiary_other": invoice_id_for("10000023", NEWEST_INVOICED),
        "other_tenant": invoice_id_for("10000051", NEWEST_INVOICED),
    }
    allowed = {
        "admin": {"parent", "limited", "subsidiary_other"},
        "colleague": {"limited"},
        "without": set(),
        "outsider": {"other_tenant"},
    }
    asks = [
        (name, invoice, suffix)
        for name in browsers
        for invoice in invoices
        for suffix in ("", "/pdf")
        for _ in range(2)
    ] + [(name, None, path) for name in browsers for path in ("/fakturaer", "/forbrug.csv?from=2025-01")]
    visible = {
        "colleague": set(LIMITED_ACCOUNTS),
        "admin": {"10000011", "10000012", "10000021", "10000022", "10000023"},
        "outsider": {"10000051", "10000052"},
    }

    async def ask(name: str, invoice: str | None, suffix: str) -> httpx.Response:
        path = f"/fakturaer/{invoices[invoice]}{suffix}" if invoice else suffix
        return await browsers[name].get(path)

    try:
        answers = await asyncio.gather(*[ask(*a) for a in asks])
    finally:
        for browser in browsers.values():
            await browser.aclose()

    for (name, invoice, suffix), answer in zip(asks, answers, strict=True):
        if name == "without":
            assert answer.status_code == 403, (name, invoice, suffix)
        elif invoice is None:
            assert answer.status_code == 200, (name, suffix)
            if suffix == "/fakturaer":
                accounts = {row["account"] for row in listed(answer)}
            else:
                accounts = {row["account_number"] for row in csv.DictReader(io.StringIO(answer.text))}
            assert accounts and accounts <= visible[name], (name, suffix, accounts)
        elif invoice in allowed[name] and suffix == "/pdf":
            assert answer.status_code == 200, (name, invoice, suffix)
            assert answer.content.startswith(b"%PDF")
        elif invoice in allowed[name]:
            assert answer.status_code == 200, (name, invoice, suffix)
            assert invoices[invoice] in answer.text
        else:
            assert answer.status_code == 404, (name, invoice, suffix)
            assert "%PDF" not in answer.text
