"""Invoice documents (S8, S10): the PDF, OIOUBL 2.1 and Peppol BIS Billing 3.0 documents billing
renders from an issued invoice's snapshot, to users within their grants (S14) and to the
notifier with its reader token. Every XML validates against the OASIS UBL 2.1 Invoice schema."""

# ruff: noqa: F811 - fixtures are imported from billing_fixtures and used by name

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from lxml import etree
from pypdf import PdfReader
from sqlalchemy import select, update

from services.billing.api import create_api
from services.billing.bootstrap import BillingParts, build
from services.billing.config import BillingSettings
from services.billing.documents import DocumentLine, InvoiceDocument, money
from services.billing.invoice_pdf import render_pdf
from services.billing.invoice_ubl import render_ubl
from services.billing.invoicing import invoice_id_for, vat_of
from services.billing.models import Account, Customer, Invoice, InvoiceLine
from shared.clock import FrozenClock
from shared.db import Database
from shared.events import InvoiceDelivery, InvoiceIssued
from tests.integration.billing_fixtures import (  # noqa: F401 - fixtures
    NOW,
    Tokens,
    billing,
    billing_clock,
    billing_db,
    billing_parts,
    billing_settings,
    billing_url,
    events_since,
    outbox_position,
    tokens,
)

PROBLEM = "application/problem+json"
READER_TOKEN = "document-reader-" + "x" * 32
XSD = Path(__file__).parents[1] / "resources" / "ubl-2.1" / "maindoc" / "UBL-Invoice-2.1.xsd"
NS = {
    "inv": "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
}
OCTOBER = date(2026, 10, 1)  # the newest closed month: the demo data leaves it to the monthly run
GLN = "5790000123452"
# Accounts given a format before October is issued (the rest stay on paper):
OIOUBL_ACCOUNT = "10000021"  # Nordlys Energi A/S
PEPPOL_ACCOUNT = "10000022"  # Nordlys Energi A/S
EMAIL_ACCOUNT = "10000031"  # Nordlys Service ApS, whose language is English
PAPER_ACCOUNT = "10000023"
SOLSIKKE_ACCOUNT = "10000051"  # Bageriet Solsikke ApS, Nørregade 7, on paper, in Danish
ENGLISH_CVR = "41204559"


def october(account: str) -> str:
    return invoice_id_for(account, OCTOBER)


@pytest.fixture(scope="module")
def issued(billing_url: str) -> str:
    """October's invoices of the module's database, issued after the accounts chose formats."""

    async def issue() -> None:
        parts = build(billing_settings(billing_url), clock=FrozenClock(NOW))
        db = parts.db
        try:
            async with db.transaction() as session:
                formats = {
                    OIOUBL_ACCOUNT: {"invoice_format": "oioubl", "invoice_gln": GLN},
                    PEPPOL_ACCOUNT: {
                        "invoice_format": "peppol",
                        "peppol_scheme": "0184",
                        "peppol_id": "37826111",
                    },
                    EMAIL_ACCOUNT: {"invoice_format": "pdf_email", "invoice_email": "bogholderi@nordlys.example"},
                }
                for account, columns in formats.items():
                    await session.execute(
                        update(Account).where(Account.account_number == account).values(**columns)
                    )
                await session.execute(update(Customer).where(Customer.cvr == ENGLISH_CVR).values(language="en"))
                await parts.invoicing.issue(session, OCTOBER)
        finally:
            await db.dispose()

    asyncio.run(issue())
    return billing_url


@pytest.fixture
async def reader(
    issued: str, tokens: Tokens, billing_clock: FrozenClock, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """Billing with a document reader token, as the notifier calls it."""
    settings = BillingSettings(
        database_url=issued,
        var_dir=tmp_path,
        identity_jwks_url="http://identity.test/.well-known/jwks.json",
        document_reader_token=READER_TOKEN,
    )
    app = create_api(settings, clock=billing_clock, jwks_client=tokens.jwks_client())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://billing.test"
    ) as http:
        yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def invoice_and_lines(db: Database, invoice_id: str) -> tuple[Invoice, list[InvoiceLine]]:
    async with db.transaction() as session:
        invoice = await session.get(Invoice, invoice_id)
        assert invoice is not None
        lines = list(
            await session.scalars(
                select(InvoiceLine).where(InvoiceLine.invoice_id == invoice_id).order_by(InvoiceLine.id)
            )
        )
    return invoice, lines


# --- the notifier's internal reads -----------------------------------------------------------


async def test_the_notifier_reads_the_pdf_and_the_e_invoice_of_the_format_each_invoice_was_issued_to(
    reader: httpx.AsyncClient,
) -> None:
    path = "/internal/v1/invoices/{}/document"
    pdf = await reader.get(path.format(october(PAPER_ACCOUNT)), params={"format": "pdf"}, headers=bearer(READER_TOKEN))
    assert pdf.status_code == 200, pdf.text
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")
    assert pdf.headers["content-disposition"] == f'attachment; filename="faktura-202610-{PAPER_ACCOUNT}.pdf"'

    oioubl = await reader.get(
        path.format(october(OIOUBL_ACCOUNT)), params={"format": "oioubl"}, headers=bearer(READER_TOKEN)
    )
    assert oioubl.status_code == 200, oioubl.text
    assert oioubl.headers["content-type"].startswith("application/xml")
    assert etree.fromstring(oioubl.content).findtext("cbc:CustomizationID", namespaces=NS) == "OIOUBL-2.1"

    peppol = await reader.get(
        path.format(october(PEPPOL_ACCOUNT)), params={"format": "peppol"}, headers=bearer(READER_TOKEN)
    )
    assert peppol.status_code == 200, peppol.text
    endpoint = etree.fromstring(peppol.content).find(
        "cac:AccountingCustomerParty/cac:Party/cbc:EndpointID", namespaces=NS
    )
    assert (endpoint.get("schemeID"), endpoint.text) == ("0184", "37826111")

    # An invoice issued to OIOUBL has no Peppol endpoint, and one on paper no e-invoice at all.
    for account, format in ((OIOUBL_ACCOUNT, "peppol"), (PAPER_ACCOUNT, "oioubl"), (EMAIL_ACCOUNT, "peppol")):
        refused = await reader.get(
            path.format(october(account)), params={"format": format}, headers=bearer(READER_TOKEN)
        )
        assert refused.status_code == 409, (account, format, refused.text)
        assert refused.headers["content-type"] == PROBLEM
        assert refused.json()["type"].endswith("/format-not-available")
        assert "format=pdf" in refused.json()["detail"]


async def test_the_notifier_is_told_404_for_an_unknown_invoice_and_422_for_an_unknown_format(
    reader: httpx.AsyncClient,
) -> None:
    missing = await reader.get(
        f"/internal/v1/invoices/{uuid.uuid4()}/document", params={"format": "pdf"}, headers=bearer(READER_TOKEN)
    )
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM
    odd = await reader.get(
        f"/internal/v1/invoices/{october(PAPER_ACCOUNT)}/document",
        params={"format": "docx"},
        headers=bearer(READER_TOKEN),
    )
    assert odd.status_code == 422
    assert odd.json()["errors"][0]["field"] == "format"


async def test_wrong_and_missing_reader_tokens_fired_in_parallel_are_each_refused_and_the_right_one_served(
    reader: httpx.AsyncClient, tokens: Tokens
) -> None:
    path = f"/internal/v1/invoices/{october(PAPER_ACCOUNT)}/document"
    user = tokens.group_admin()  # a user's access token is not the reader token either
    wrong = [
        {},
        bearer(""),
        bearer(READER_TOKEN[:-1]),
        bearer(READER_TOKEN + "x"),
        bearer(READER_TOKEN.upper()),
        {"Authorization": f"Basic {READER_TOKEN}"},
        {"Authorization": READER_TOKEN},
        user.headers,
    ] * 5
    right = [bearer(READER_TOKEN)] * 8
    answers = await asyncio.gather(*(reader.get(path, headers=headers) for headers in wrong + right))
    for headers, answer in zip(wrong, answers[: len(wrong)], strict=True):
        assert answer.status_code == 401, headers
        assert answer.headers["content-type"] == PROBLEM
        assert "ADGANG_BILLING_DOCUMENT_READER_TOKEN" in answer.json()["detail"]
        assert not answer.content.startswith(b"%PDF")
    for answer in answers[len(wrong) :]:
        assert answer.status_code == 200
        assert answer.content.startswith(b"%PDF-")


async def test_without_a_reader_token_the_internal_document_path_is_not_there(
    billing: httpx.AsyncClient, issued: str
) -> None:
    answer = await billing.get(
        f"/internal/v1/invoices/{october(PAPER_ACCOUNT)}/document", headers=bearer(READER_TOKEN)
    )
    assert answer.status_code == 404
    assert answer.headers["content-type"] == PROBLEM
    assert "internal document reading is not enabled" in answer.json()["detail"]


def test_a_reader_token_shorter_than_32_characters_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="document_reader_token"):
        BillingSettings(document_reader_token="short")


# --- helpers for the content checks below ------------------------------------------------------


def kroner(ore: int) -> Decimal:
    return Decimal(ore).scaleb(-2)


def pdf_text(content: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)



def xml_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD)))


def amount(element: etree._Element, path: str) -> Decimal:
    found = element.find(path, namespaces=NS)
    assert found is not None, f"{path} is missing"
    assert found.get("currencyID") == "DKK", path
    text = found.text or ""
    assert Decimal(text) == Decimal(text).quantize(Decimal("0.01")), f"{path} = {text}: two decimals at most"
    return Decimal(text)


def required(element: etree._Element, path: str) -> str:
    text = element.findtext(path, namespaces=NS)
    assert text, f"{path} is missing"
    return text


def check_ubl(content: bytes, invoice: Invoice, lines: list[InvoiceLine], profile: str) -> etree._Element:
    """What can be checked of an OIOUBL or Peppol invoice without the network: the UBL 2.1
    schema, the profile's mandatory elements, that the lines add up to the totals, and that the
    VAT breakdown is 25 % of the taxable amount, rounded half up to whole øre."""
    root = etree.fromstring(content)
    schema = xml_schema()
    assert schema.validate(root), schema.error_log

    if profile == "peppol":
        assert required(root, "cbc:CustomizationID") == (
            "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"
        )
        assert required(root, "cbc:ProfileID") == "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
        assert root.find("cbc:UBLVersionID", namespaces=NS) is None
        category, tax_scheme = "S", "VAT"
        buyer_scheme, buyer_id = invoice.delivery_peppol_scheme, invoice.delivery_peppol_id
    else:
        assert required(root, "cbc:UBLVersionID") == "2.1"
        assert required(root, "cbc:CustomizationID") == "OIOUBL-2.1"
        assert required(root, "cbc:ProfileID") == "urn:www.nesubl.eu:profiles:profile5:ver2.0"
        assert required(root, "cbc:UUID") == invoice.id
        category, tax_scheme = "StandardRated", "63"
        buyer_scheme, buyer_id = "GLN", invoice.delivery_gln
    assert required(root, "cbc:ID") == invoice.number
    assert required(root, "cbc:IssueDate") == invoice.issued_on.isoformat()
    assert required(root, "cbc:DueDate") == invoice.due_on.isoformat()
    assert required(root, "cbc:InvoiceTypeCode") == "380"
    assert required(root, "cbc:DocumentCurrencyCode") == "DKK"
    assert required(root, "cbc:BuyerReference") == invoice.account_number
    assert required(root, "cac:InvoicePeriod/cbc:StartDate") == invoice.period_start.isoformat()
    assert required(root, "cac:InvoicePeriod/cbc:EndDate") == invoice.period_end.isoformat()

    seller = root.find("cac:AccountingSupplierParty/cac:Party", namespaces=NS)
    buyer = root.find("cac:AccountingCustomerParty/cac:Party", namespaces=NS)
    for party in (seller, buyer):
        assert party is not None
        for path in (
            "cbc:EndpointID",
            "cac:PartyName/cbc:Name",
            "cac:PostalAddress/cbc:StreetName",
            "cac:PostalAddress/cbc:CityName",
            "cac:PostalAddress/cbc:PostalZone",
            "cac:PartyLegalEntity/cbc:RegistrationName",
            "cac:PartyLegalEntity/cbc:CompanyID",
        ):
            required(party, path)
        assert required(party, "cac:PostalAddress/cac:Country/cbc:IdentificationCode") == "DK"
        assert required(party, "cac:PartyTaxScheme/cbc:CompanyID").startswith("DK")
        assert required(party, "cac:PartyTaxScheme/cac:TaxScheme/cbc:ID") == tax_scheme
    assert buyer is not None
    endpoint = buyer.find("cbc:EndpointID", namespaces=NS)
    assert (endpoint.get("schemeID"), endpoint.text) == (buyer_scheme, buyer_id)
    assert required(buyer, "cac:PartyTaxScheme/cbc:CompanyID") == f"DK{invoice.cvr}"
    assert required(buyer, "cac:PartyLegalEntity/cbc:RegistrationName") == invoice.buyer_name
    assert required(buyer, "cac:PostalAddress/cbc:StreetName") == invoice.buyer_street

    payment_means = root.findall("cac:PaymentMeans", namespaces=NS)
    # Danish suppliers pay by bank account (42: reg.nr. and account); Peppol also names the IBAN.
    codes = [required(means, "cbc:PaymentMeansCode") for means in payment_means]
    assert codes == (["42", "58"] if profile == "peppol" else ["42"])
    for means in payment_means:
        required(means, "cac:PayeeFinancialAccount/cbc:ID")
        required(means, "cac:PayeeFinancialAccount/cac:FinancialInstitutionBranch/cbc:ID")
        assert invoice.number in (means.findtext("cbc:PaymentID", namespaces=NS) or "") + (
            means.findtext("cbc:InstructionNote", namespaces=NS) or ""
        )
    if profile == "oioubl":
        assert required(buyer, "cac:Contact/cbc:ID") == invoice.account_number

    xml_lines = root.findall("cac:InvoiceLine", namespaces=NS)
    assert len(xml_lines) == len(lines)
    assert [required(line, "cbc:ID") for line in xml_lines] == [str(n) for n in range(1, len(lines) + 1)]
    line_sum = Decimal(0)
    for line in xml_lines:
        line_amount = amount(line, "cbc:LineExtensionAmount")
        quantity = Decimal(required(line, "cbc:InvoicedQuantity"))
        price = amount(line, "cac:Price/cbc:PriceAmount")
        base = Decimal(line.findtext("cac:Price/cbc:BaseQuantity", default="1", namespaces=NS))
        assert price >= 0
        # quantity × price ÷ base quantity is the line's amount (EN 16931 BR-LIN-04 / PEPPOL-EN16931-R120)
        assert (quantity * price / base).quantize(Decimal("0.01")) == line_amount if quantity else line_amount == 0
        required(line, "cac:Item/cbc:Name")
        assert required(line, "cac:Item/cac:ClassifiedTaxCategory/cbc:ID") == category
        assert Decimal(required(line, "cac:Item/cac:ClassifiedTaxCategory/cbc:Percent")) == 25
        line_taxes = line.findall("cac:TaxTotal", namespaces=NS)
        if profile == "peppol":
            assert line_taxes == []  # Peppol's VAT is the document's only
        else:
            [line_tax] = line_taxes
            assert amount(line_tax, "cbc:TaxAmount") == (line_amount * Decimal("0.25")).quantize(
                Decimal("0.01"), rounding="ROUND_HALF_UP"
            )
            assert amount(line_tax, "cac:TaxSubtotal/cbc:TaxableAmount") == line_amount
        line_sum += line_amount
    assert sorted(amount(line, "cbc:LineExtensionAmount") for line in xml_lines) == sorted(
        kroner(line.amount_ore) for line in lines
    )

    [tax_total] = root.findall("cac:TaxTotal", namespaces=NS)
    subtotals = tax_total.findall("cac:TaxSubtotal", namespaces=NS)
    assert len(subtotals) == 1  # one category: standard rated
    [subtotal] = subtotals
    taxable = amount(subtotal, "cbc:TaxableAmount")
    tax = amount(subtotal, "cbc:TaxAmount")
    assert required(subtotal, "cac:TaxCategory/cbc:ID") == category
    assert Decimal(required(subtotal, "cac:TaxCategory/cbc:Percent")) == 25
    assert tax == (taxable * Decimal("0.25")).quantize(Decimal("0.01"), rounding="ROUND_HALF_UP")
    assert amount(tax_total, "cbc:TaxAmount") == tax

    totals = root.find("cac:LegalMonetaryTotal", namespaces=NS)
    assert totals is not None
    assert amount(totals, "cbc:LineExtensionAmount") == line_sum == taxable
    assert amount(totals, "cbc:TaxExclusiveAmount") == line_sum == kroner(invoice.amount_excl_vat_ore)
    assert amount(totals, "cbc:TaxInclusiveAmount") == line_sum + tax == kroner(invoice.amount_incl_vat_ore)
    assert amount(totals, "cbc:PayableAmount") == kroner(invoice.amount_incl_vat_ore)
    assert tax == kroner(invoice.vat_ore)
    return root


# --- what users get, within their grants -------------------------------------------------------


async def test_the_e_invoices_validate_against_ubl_2_1_and_the_rules_of_their_profile(
    reader: httpx.AsyncClient, tokens: Tokens, billing_db: Database
) -> None:
    admin = tokens.group_admin()
    for account, profile in ((OIOUBL_ACCOUNT, "oioubl"), (PEPPOL_ACCOUNT, "peppol")):
        invoice, lines = await invoice_and_lines(billing_db, october(account))
        by_query = await reader.get(
            f"/v1/invoices/{invoice.id}/document", params={"format": profile}, headers=admin.headers
        )
        assert by_query.status_code == 200, by_query.text
        assert by_query.headers["content-disposition"] == f'attachment; filename="faktura-{invoice.number}.xml"'
        check_ubl(by_query.content, invoice, lines, profile)
        # Accept: application/xml answers the format the invoice was issued to.
        by_accept = await reader.get(
            f"/v1/invoices/{invoice.id}", headers={**admin.headers, "Accept": "application/xml"}
        )
        assert by_accept.status_code == 200 and by_accept.content == by_query.content


def test_the_schema_itself_refuses_an_invoice_without_its_mandatory_elements() -> None:
    schema = xml_schema()
    empty = etree.fromstring(f'<Invoice xmlns="{NS["inv"]}"/>'.encode())
    assert not schema.validate(empty)  # so a passing validation above means something


async def test_the_pdf_says_the_invoice_s_lines_and_totals_in_danish_with_danish_letters(
    reader: httpx.AsyncClient, tokens: Tokens, billing_db: Database
) -> None:
    invoice, lines = await invoice_and_lines(billing_db, october(SOLSIKKE_ACCOUNT))
    caller = tokens.caller([{"cvr": invoice.cvr, "accounts": "all"}], ["invoices"])
    answer = await reader.get(f"/v1/invoices/{invoice.id}", headers={**caller.headers, "Accept": "application/pdf"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/pdf"
    assert answer.headers["content-disposition"] == f'attachment; filename="faktura-{invoice.number}.pdf"'
    text = pdf_text(answer.content)
    for expected in (
        "Faktura",
        "Bageriet Solsikke ApS",
        "Nørregade 7",
        "4000 Roskilde",
        f"CVR-nr. {invoice.cvr}",
        f"Fakturanummer {invoice.number}",
        f"Kontonummer {invoice.account_number}",
        "Periode 1. oktober 2026 – 31. oktober 2026",
        "Beløb (kr.)",
        "Fordelt på kategorier",
        "København S",
        f"I alt ekskl. moms {money(invoice.amount_excl_vat_ore, 'da')}",
        f"Moms 25 % {money(invoice.vat_ore, 'da')}",
        f"I alt inkl. moms {money(invoice.amount_incl_vat_ore, 'da')}",
        f"Angiv fakturanummer {invoice.number} som reference",
        "FI-kort: +71<",
    ):
        assert expected in " ".join(text.split()), expected
    assert line_rows(text, "da") == expected_rows(lines, "da")


async def test_an_invoice_renders_to_the_same_pdf_every_time_dated_its_issue_day(
    reader: httpx.AsyncClient, tokens: Tokens, billing_db: Database
) -> None:
    """A document sent again (a delivery retried after a crash) is byte for byte the one the
    customer may already have, and it is dated the day the invoice was issued."""
    invoice, _ = await invoice_and_lines(billing_db, october(SOLSIKKE_ACCOUNT))
    caller = tokens.caller([{"cvr": invoice.cvr, "accounts": "all"}], ["invoices"])
    path = f"/v1/invoices/{invoice.id}/document"
    first = await reader.get(path, params={"format": "pdf"}, headers=caller.headers)
    assert first.status_code == 200, first.text
    created = PdfReader(io.BytesIO(first.content)).metadata.creation_date
    assert created is not None and created.date() == invoice.issued_on
    again = await reader.get(path, params={"format": "pdf"}, headers=caller.headers)
    assert again.content == first.content


async def test_the_pdf_of_an_english_speaking_company_is_in_english(
    reader: httpx.AsyncClient, tokens: Tokens, billing_db: Database
) -> None:
    invoice, lines = await invoice_and_lines(billing_db, october(EMAIL_ACCOUNT))
    assert invoice.language == "en"
    admin = tokens.group_admin()
    answer = await reader.get(f"/v1/invoices/{invoice.id}/document", params={"format": "pdf"}, headers=admin.headers)
    assert answer.status_code == 200, answer.text
    text = pdf_text(answer.content)
    for expected in (
        "Invoice",
        "Nordlys Service ApS",
        f"Invoice number {invoice.number}",
        "Period 1 October 2026 – 31 October 2026",
        "Amount (DKK)",
        f"Total excl. VAT {money(invoice.amount_excl_vat_ore, 'en')}",
        f"VAT 25% {money(invoice.vat_ore, 'en')}",
        f"Total incl. VAT {money(invoice.amount_incl_vat_ore, 'en')}",
        "København S",  # the seller's address keeps its letters in any language
    ):
        assert expected in " ".join(text.split()), expected
    assert "Beløb" not in text and "Faktura til" not in text
    assert line_rows(text, "en") == expected_rows(lines, "en")


CATEGORY_WORDS = {
    "da": {"subscription": "Abonnement", "calls": "Opkald", "sms": "SMS", "data": "Data"},
    "en": {"subscription": "Subscription", "calls": "Calls", "sms": "Text messages", "data": "Data"},
}


def line_rows(text: str, language: str) -> list[tuple[str, str]]:
    """(category word, amount) of every invoice line row the PDF's text shows, sorted."""
    words = CATEGORY_WORDS[language]
    rows = []
    for row in text.splitlines():
        category, colon, rest = row.partition(": ")
        if colon and category in words.values():
            rows.append((category, rest.rsplit(" ", 1)[-1]))
    return sorted(rows)


def expected_rows(lines: list[InvoiceLine], language: str) -> list[tuple[str, str]]:
    return sorted((CATEGORY_WORDS[language][line.category], money(line.amount_ore, language)) for line in lines)


async def test_xml_is_not_acceptable_for_an_invoice_issued_without_an_e_invoice_format(
    reader: httpx.AsyncClient, tokens: Tokens
) -> None:
    admin = tokens.group_admin()
    answer = await reader.get(
        f"/v1/invoices/{october(PAPER_ACCOUNT)}", headers={**admin.headers, "Accept": "application/xml"}
    )
    assert answer.status_code == 406
    assert answer.headers["content-type"] == PROBLEM
    assert "?format=" in answer.json()["detail"] and "application/pdf" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("text/html", "application/json"),
        ("application/json, application/pdf;q=0.5", "application/json"),
        ("application/pdf", "application/pdf"),
        ("application/json;q=0.2, application/pdf", "application/pdf"),
        ("application/pdf;q=0.5, application/xml", "application/xml"),
        ("text/xml", "application/xml"),
        ("application/xml;q=0, application/pdf;q=0.1", "application/pdf"),
    ],
)
async def test_accept_chooses_json_the_pdf_or_the_xml(
    reader: httpx.AsyncClient, tokens: Tokens, accept: str | None, kind: str
) -> None:
    admin = tokens.group_admin()
    headers = {**admin.headers, **({"Accept": accept} if accept else {})}
    answer = await reader.get(f"/v1/invoices/{october(OIOUBL_ACCOUNT)}", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith(kind)
    if kind == "application/json":
        assert answer.json()["number"] == f"202610-{OIOUBL_ACCOUNT}"
        assert answer.json()["documents"] == ["pdf", "oioubl"] and answer.json()["language"] == "da"


async def test_the_invoice_list_says_which_documents_each_invoice_has(reader: httpx.AsyncClient, tokens: Tokens) -> None:
    admin = tokens.group_admin()
    page = await reader.get("/v1/invoices", params={"from": "2026-10-01", "to": "2026-10-01", "limit": 200}, headers=admin.headers)
    assert page.status_code == 200, page.text
    documents = {i["account_number"]: i["documents"] for i in page.json()["items"]}
    assert documents[OIOUBL_ACCOUNT] == ["pdf", "oioubl"]
    assert documents[PEPPOL_ACCOUNT] == ["pdf", "peppol"]
    assert documents[EMAIL_ACCOUNT] == documents[PAPER_ACCOUNT] == ["pdf"]


async def test_documents_need_the_invoices_function(reader: httpx.AsyncClient, tokens: Tokens) -> None:
    orders_only = tokens.caller([{"cvr": "37826111", "accounts": "all"}], ["orders"])
    for request in (
        reader.get(f"/v1/invoices/{october(PAPER_ACCOUNT)}/document", headers=orders_only.headers),
        reader.get(
            f"/v1/invoices/{october(PAPER_ACCOUNT)}", headers={**orders_only.headers, "Accept": "application/pdf"}
        ),
    ):
        answer = await request
        assert answer.status_code == 403
        assert answer.headers["content-type"] == PROBLEM


async def test_foreign_invoices_fired_in_parallel_with_own_are_404s_indistinguishable_from_missing_ones(
    reader: httpx.AsyncClient, tokens: Tokens
) -> None:
    """S14: a colleague limited to two accounts gets their documents; every other invoice, of
    their own company or another, answers exactly as an id that does not exist."""
    colleague = tokens.caller([{"cvr": "37826111", "accounts": [OIOUBL_ACCOUNT, PEPPOL_ACCOUNT]}], ["invoices"])
    own = [october(OIOUBL_ACCOUNT), october(PEPPOL_ACCOUNT)]
    foreign = [october(PAPER_ACCOUNT), october(EMAIL_ACCOUNT), october(SOLSIKKE_ACCOUNT), str(uuid.uuid4())]

    def requests(invoice_id: str) -> list[tuple[str, dict[str, str], dict[str, str]]]:
        return [
            (f"/v1/invoices/{invoice_id}", {"Accept": "application/pdf"}, {}),
            (f"/v1/invoices/{invoice_id}", {"Accept": "application/xml"}, {}),
            (f"/v1/invoices/{invoice_id}/document", {}, {"format": "pdf"}),
            (f"/v1/invoices/{invoice_id}/document", {}, {"format": "peppol"}),
        ]

    planned = [(invoice_id, *request) for invoice_id in own + foreign for request in requests(invoice_id)] * 2
    answers = await asyncio.gather(
        *(
            reader.get(path, headers={**colleague.headers, **headers}, params=params)
            for _, path, headers, params in planned
        )
    )
    missing_bodies = set()
    for (invoice_id, path, headers, params), answer in zip(planned, answers, strict=True):
        if invoice_id in own:
            wants_peppol = params.get("format") == "peppol" or headers.get("Accept") == "application/xml"
            if wants_peppol and invoice_id == october(OIOUBL_ACCOUNT) and params:
                assert answer.status_code == 409, answer.text  # its own invoice, issued to OIOUBL
            else:
                assert answer.status_code == 200, (path, headers, params, answer.text)
        else:
            assert answer.status_code == 404, (invoice_id, path, answer.text)
            body = answer.json()
            body.pop("instance")
            missing_bodies.add(tuple(sorted(body.items())))
    assert len(missing_bodies) == 1  # a foreign invoice says exactly what a missing one says


# --- the snapshot: an issued invoice keeps what it said -----------------------------------------


async def test_each_issued_invoice_announces_its_delivery_and_language_from_its_snapshot(
    issued: str, billing_db: Database
) -> None:
    events = {str(e.invoice_id): e for e in await events_since(billing_db, 0, InvoiceIssued)}
    oioubl, peppol, email, paper = (
        events[october(a)] for a in (OIOUBL_ACCOUNT, PEPPOL_ACCOUNT, EMAIL_ACCOUNT, PAPER_ACCOUNT)
    )
    assert oioubl.delivery == InvoiceDelivery(format="oioubl", gln=GLN)
    assert peppol.delivery == InvoiceDelivery(format="peppol", peppol_scheme="0184", peppol_id="37826111")
    assert email.delivery == InvoiceDelivery(format="pdf_email", email="bogholderi@nordlys.example")
    assert paper.delivery == InvoiceDelivery(format="paper")
    assert (oioubl.language, email.language, paper.language) == ("da", "en", "da")
    invoice, _ = await invoice_and_lines(billing_db, october(EMAIL_ACCOUNT))
    assert (invoice.buyer_name, invoice.buyer_street, invoice.buyer_city) == (
        "Nordlys Service ApS",
        "Kongensgade 88",
        "Odense C",
    )


async def test_master_data_language_and_format_changed_after_issue_apply_from_the_next_invoice(
    reader: httpx.AsyncClient, tokens: Tokens, billing_db: Database, billing_parts: BillingParts
) -> None:
    admin = tokens.group_admin()
    read = await reader.get("/v1/companies/37826111/master-data", headers=admin.headers)
    assert read.json()["language"] == "da"
    changed = await reader.patch(
        "/v1/companies/37826111/master-data",
        json={"street": "Søndergade 1", "city": "Århus C", "language": "en"},
        headers={**admin.headers, "If-Match": read.headers["etag"]},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["language"] == "en"
    form = await reader.get(f"/v1/accounts/{PEPPOL_ACCOUNT}/invoice-format", headers=admin.headers)
    moved = await reader.put(
        f"/v1/accounts/{PEPPOL_ACCOUNT}/invoice-format",
        json={"format": "oioubl", "gln": GLN},
        headers={**admin.headers, "If-Match": form.headers["etag"]},
    )
    assert moved.status_code == 200, moved.text

    # October's invoice was issued before: it is still the Peppol invoice to the old address, in Danish.
    old = await reader.get(f"/v1/invoices/{october(PEPPOL_ACCOUNT)}", headers={**admin.headers, "Accept": "application/xml"})
    assert old.status_code == 200
    root = etree.fromstring(old.content)
    assert root.findtext("cbc:ProfileID", namespaces=NS) == "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
    assert root.findtext(
        "cac:AccountingCustomerParty/cac:Party/cac:PostalAddress/cbc:StreetName", namespaces=NS
    ) == "Vestergade 4"
    old_pdf = await reader.get(f"/v1/invoices/{october(PEPPOL_ACCOUNT)}/document", headers=admin.headers)
    assert "Vestergade 4" in pdf_text(old_pdf.content) and "Fakturanummer" in pdf_text(old_pdf.content)
    refused = await reader.get(
        f"/v1/invoices/{october(PEPPOL_ACCOUNT)}/document", params={"format": "oioubl"}, headers=admin.headers
    )
    assert refused.status_code == 409

    # November's invoice is issued after the changes: OIOUBL to the GLN, the new address, English.
    november = date(2026, 11, 1)
    start = await outbox_position(billing_db)
    async with billing_db.transaction() as session:
        await billing_parts.invoicing.issue(session, november, accounts=[PEPPOL_ACCOUNT])
    [event] = await events_since(billing_db, start, InvoiceIssued)
    assert event.delivery == InvoiceDelivery(format="oioubl", gln=GLN) and event.language == "en"
    new_id = invoice_id_for(PEPPOL_ACCOUNT, november)
    new = await reader.get(f"/v1/invoices/{new_id}", headers={**admin.headers, "Accept": "application/xml"})
    assert new.status_code == 200, new.text
    invoice, lines = await invoice_and_lines(billing_db, new_id)
    root = check_ubl(new.content, invoice, lines, "oioubl")
    assert root.findtext(
        "cac:AccountingCustomerParty/cac:Party/cac:PostalAddress/cbc:StreetName", namespaces=NS
    ) == "Søndergade 1"
    new_pdf = pdf_text((await reader.get(f"/v1/invoices/{new_id}/document", headers=admin.headers)).content)
    assert "Søndergade 1" in new_pdf and "Århus C" in new_pdf and "Invoice number" in new_pdf


async def test_two_language_changes_from_the_same_read_fired_in_parallel_leave_one_and_refuse_the_other(
    reader: httpx.AsyncClient, tokens: Tokens
) -> None:
    admin = tokens.caller([{"cvr": "22109340", "accounts": "all"}])
    read = await reader.get("/v1/companies/22109340/master-data", headers=admin.headers)
    tag = read.headers["etag"]
    answers = await asyncio.gather(
        *(
            reader.patch(
                "/v1/companies/22109340/master-data",
                json={"language": language},
                headers={**admin.headers, "If-Match": tag},
            )
            for language in ("en", "da", "en", "da")
        )
    )
    # Only a change is a new version: "da" is the language already, so it succeeds without one.
    statuses = sorted(answer.status_code for answer in answers)
    won = [answer for answer in answers if answer.status_code == 200]
    assert statuses.count(412) >= 1 and all(s in (200, 412) for s in statuses), statuses
    assert any(answer.json()["language"] == "en" for answer in won)
    after = await reader.get("/v1/companies/22109340/master-data", headers=admin.headers)
    assert after.json()["language"] in ("da", "en") and after.json()["version"] == read.json()["version"] + 1
    invalid = await reader.patch(
        "/v1/companies/22109340/master-data",
        json={"language": "de"},
        headers={**admin.headers, "If-Match": after.headers["etag"]},
    )
    assert invalid.status_code == 422 and invalid.json()["errors"][0]["field"] == "language"


# --- documents of invoices made up for the edge cases ------------------------------------------


def made_up(lines: list[DocumentLine], *, language: str = "da", profile: str = "peppol") -> InvoiceDocument:
    excl = sum(line.amount_ore for line in lines)
    return InvoiceDocument(
        id=str(uuid.uuid4()),
        number="202610-10000099",
        cvr="37826111",
        account_number="10000099",
        period_start=OCTOBER,
        period_end=date(2026, 10, 31),
        issued_on=date(2026, 11, 1),
        due_on=date(2026, 11, 15),
        amount_excl_vat_ore=excl,
        vat_ore=vat_of(excl),
        amount_incl_vat_ore=excl + vat_of(excl),
        currency="DKK",
        buyer_name="Æbleø Rådgivning ApS",
        buyer_street="Åboulevarden 7",
        buyer_postal_code="8000",
        buyer_city="Aarhus C",
        language=language,
        delivery_format=profile,
        delivery_gln=GLN if profile == "oioubl" else None,
        delivery_peppol_scheme="0088" if profile == "peppol" else None,
        delivery_peppol_id=GLN if profile == "peppol" else None,
        lines=tuple(lines),
    )


def as_rows(document: InvoiceDocument) -> tuple[Invoice, list[InvoiceLine]]:
    """The made-up document as the stored rows `check_ubl` compares with."""
    columns = [column.name for column in Invoice.__table__.columns]
    fields = {name: getattr(document, name) for name in columns if hasattr(document, name)}
    invoice = Invoice(**fields)
    lines = [
        InvoiceLine(
            subscription_id=line.subscription_id,
            identifier=line.identifier,
            category=line.category,
            description=line.description,
            quantity=line.quantity,
            unit=line.unit,
            amount_ore=line.amount_ore,
        )
        for line in document.lines
    ]
    return invoice, lines


@pytest.mark.parametrize("profile", ["oioubl", "peppol"])
def test_vat_of_half_an_ore_is_rounded_up_and_odd_usage_prices_still_add_up(profile: str) -> None:
    # 2 øre of usage is 0.5 øre of VAT: rounded half up to 1 øre; 7 minutes for 1.03 kr has no
    # exact unit price in øre, so the line is priced for its whole quantity.
    document = made_up(
        [
            DocumentLine("s1", "+4528000001", "sms", "SMS ud over abonnement", 1, "messages", 2),
            DocumentLine("s1", "+4528000001", "calls", "Opkald ud over abonnement", 7, "minutes", 103),
            DocumentLine("s2", "+4528000002", "data", "Data ud over abonnement", 0, "MB", 0),
            DocumentLine("s2", "+4528000002", "subscription", "Mobil 50 GB", 1, "month", 14900),
        ],
        profile=profile,
    )
    assert document.vat_ore == vat_of(15005) == 3751  # 3751.25 øre
    invoice, lines = as_rows(document)
    check_ubl(render_ubl(document, profile), invoice, lines, profile)
    odd = made_up([DocumentLine("s1", "+4528000001", "sms", "SMS", 1, "messages", 2)], profile=profile)
    root = check_ubl(render_ubl(odd, profile), *as_rows(odd), profile)
    assert root.findtext("cac:TaxTotal/cbc:TaxAmount", namespaces=NS) == "0.01"


@pytest.mark.parametrize("language", ["da", "en"])
def test_a_long_invoice_runs_over_numbered_pages_and_keeps_every_line(language: str) -> None:
    lines = [
        DocumentLine(f"s{n}", f"+4528{n:06d}", category, "Mobil Fri", quantity, unit, 100 * n + offset)
        for n in range(1, 81)
        for category, quantity, unit, offset in (("subscription", 1, "month", 9900), ("calls", n, "minutes", n))
    ]
    document = made_up(lines, language=language, profile="paper")
    reader = PdfReader(io.BytesIO(render_pdf(document)))
    pages = [page.extract_text() for page in reader.pages]
    assert len(pages) > 2
    page_word = "Side" if language == "da" else "Page"
    of_word = "af" if language == "da" else "of"
    for number, text in enumerate(pages, start=1):
        assert f"{page_word} {number} {of_word} {len(pages)}" in text
    continued = "fortsat" if language == "da" else "continued"
    assert all(continued in text for text in pages[1:])
    text = "\n".join(pages)
    assert "Æbleø Rådgivning ApS" in text and "Åboulevarden 7" in text
    shown = line_rows(text, language)
    assert shown == sorted(
        (CATEGORY_WORDS[language][line.category], money(line.amount_ore, language)) for line in lines
    )


def test_migration_0004_fills_invoices_issued_before_from_todays_master_data_and_format(
    database_factory,
) -> None:
    from alembic import command
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from services.registry import SERVICES
    from shared.db import alembic_config, migrate

    url = database_factory("billing")
    location = SERVICES["billing"].migrations
    migrate(location, url, revision="0003")

    async def run(statement: str, **params: object) -> list:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            rows = list(result) if result.returns_rows else []
        await engine.dispose()
        return rows

    at = NOW
    asyncio.run(
        run(
            "INSERT INTO customers (cvr, name, street, postal_code, city, contact_name, contact_email, "
            "contact_phone, master_data_version, registered_at) VALUES ('22109340', 'Bageriet Solsikke ApS', "
            "'Nørregade 7', '4000', 'Roskilde', '', '', '', 1, :at)",
            at=at,
        )
    )
    asyncio.run(
        run(
            "INSERT INTO accounts (account_number, cvr, name, invoice_format, invoice_gln, "
            "invoice_format_version) VALUES ('10000051', '22109340', 'Butik', 'oioubl', :gln, 2)",
            gln=GLN,
        )
    )
    asyncio.run(
        run(
            "INSERT INTO invoices (id, number, cvr, account_number, period_start, period_end, issued_on, "
            "due_on, amount_excl_vat_ore, vat_ore, amount_incl_vat_ore, currency, created_at) VALUES "
            "(:id, '202609-10000051', '22109340', '10000051', :start, :end, :issued, :due, 100, 25, 125, "
            "'DKK', :at)",
            id=october(SOLSIKKE_ACCOUNT),
            start=date(2026, 9, 1),
            end=date(2026, 9, 30),
            issued=date(2026, 10, 1),
            due=date(2026, 10, 15),
            at=at,
        )
    )
    migrate(location, url)

    [row] = asyncio.run(
        run(
            "SELECT buyer_name, buyer_street, buyer_postal_code, buyer_city, language, delivery_format, "
            "delivery_email, delivery_gln, delivery_peppol_scheme, delivery_peppol_id FROM invoices"
        )
    )
    assert tuple(row) == (
        "Bageriet Solsikke ApS",
        "Nørregade 7",
        "4000",
        "Roskilde",
        "da",
        "oioubl",
        None,
        GLN,
        None,
        None,
    )
    [(language,)] = asyncio.run(run("SELECT language FROM customers"))
    assert language == "da"

    command.downgrade(alembic_config(location, url), "0003")
    [(count,)] = asyncio.run(run("SELECT count(*) FROM invoices"))
    assert count == 1
