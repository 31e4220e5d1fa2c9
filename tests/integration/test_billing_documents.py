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
from services.billing.config import BillingSettings
from services.billing.documents import money
from services.billing.invoicing import Invoicing, invoice_id_for
from services.billing.models import Account, Customer, Invoice, InvoiceLine, messaging
from shared.clock import FrozenClock
from shared.db import Database
from shared.messaging import Outbox
from tests.integration.billing_fixtures import (  # noqa: F401 - fixtures
    NOW,
    Tokens,
    billing,
    billing_clock,
    billing_db,
    billing_url,
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
GLN = "5790000123457"
# Accounts given a format before October is issued (the rest stay on paper):
OIOUBL_ACCOUNT = "10000021"  # Nordlys Energi A/S
PEPPOL_ACCOUNT = "10000022"  # Nordlys Energi A/S
EMAIL_ACCOUNT = "10000031"  # Nordlys Service ApS, whose language is English
PAPER_ACCOUNT = "10000023"
ENGLISH_CVR = "41204559"


def october(account: str) -> str:
    return invoice_id_for(account, OCTOBER)


@pytest.fixture(scope="module")
def issued(billing_url: str) -> str:
    """October's invoices of the module's database, issued after the accounts chose formats."""

    async def issue() -> None:
        db = Database(billing_url)
        clock = FrozenClock(NOW)
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
                outbox = Outbox(messaging, clock)
                await Invoicing(outbox=outbox, clock=clock, payment_days=14).issue(session, OCTOBER)
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


__all__ = ["money"]
