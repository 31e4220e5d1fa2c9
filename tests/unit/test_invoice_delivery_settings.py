"""What delivering invoice documents needs from the notifier's settings and its mail (S10):
the billing token in production, an access point for the HTTP transport, the spools under
`var/`, and a mail that carries the PDF as an attachment."""

from __future__ import annotations

import email
import email.policy
import uuid
from datetime import UTC, date, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.notifier.bootstrap import einvoice_transport
from services.notifier.config import NotifierSettings
from services.notifier.email import Attachment, build_email, parse_mailbox
from services.notifier.invoice_transports import EinvoiceHttpTransport, EinvoiceSpool
from services.notifier.kinds import invoice_filename
from shared.events import InvoiceIssued
from shared.sealing import generate_key

PRODUCTION = {
    "environment": "production",
    "database_url": "postgresql+asyncpg://adgang@postgres/notifier",
    "sealing_keys": f"k1:{generate_key()}",
    "sealing_active_key_id": "k1",
    "portal_url": "https://selvbetjening.example.dk",
    "email_smtp_host": "smtp.example.dk",
    "email_from": "Adgang <no-reply@example.dk>",
    "sms_gateway_url": "https://gatewayapi.example/rest/mtsms",
    "sms_gateway_token": "secret",
}


@pytest.mark.parametrize("token", [None, "", "   "])
def test_production_refuses_to_start_without_the_billing_document_token(token: str | None) -> None:
    given = PRODUCTION | ({"billing_document_token": token} if token is not None else {})
    with pytest.raises(ValidationError, match="billing_document_token must be set in production"):
        NotifierSettings.model_validate(given)

    settings = NotifierSettings.model_validate(PRODUCTION | {"billing_document_token": "a-document-token"})
    assert settings.billing_document_token is not None


def test_in_development_documents_come_from_the_local_billing_and_go_to_spools_under_var(tmp_path: Path) -> None:
    settings = NotifierSettings.model_validate({"var_dir": tmp_path})

    assert settings.billing_url == "http://127.0.0.1:8003"
    assert settings.billing_document_token is None
    assert settings.einvoice_transport == "spool"
    assert (settings.einvoice_dir, settings.print_dir) == (tmp_path / "einvoice", tmp_path / "print")


@pytest.mark.parametrize("url", [None, "ftp://ap.example.dk/invoices", "not a url"])
def test_the_http_e_invoice_transport_needs_the_access_points_http_url(url: str | None) -> None:
    with pytest.raises(ValidationError, match="einvoice_http_url"):
        NotifierSettings.model_validate({"einvoice_transport": "http", "einvoice_http_url": url})


def test_a_billing_url_that_is_not_http_is_refused() -> None:
    with pytest.raises(ValidationError, match="billing_url"):
        NotifierSettings.model_validate({"billing_url": "billing:8003"})


def test_the_lease_of_a_document_delivery_covers_fetching_it_from_billing() -> None:
    settings = NotifierSettings.model_validate({"billing_timeout_s": 30})
    assert settings.lease_seconds("print") == 30 + 20
    assert settings.lease_seconds("einvoice") == 30 + 20
    assert settings.lease_seconds("email") == 4 * 10 + 30 + 20


def test_a_mail_with_a_pdf_is_multipart_with_the_text_first_and_the_pdf_attached() -> None:
    pdf = b"%PDF-1.7\n\x00\xff binary \r\n%%EOF\n"
    message = build_email(
        message_id=str(uuid.uuid4()),
        sender=parse_mailbox("Adgang Erhverv <faktura@adgang.example.dk>"),
        to="bogholderi@solsikke.example.dk",
        subject="Faktura 202601-10020030 fra Adgang Erhverv",
        text="Hermed faktura 202601-10020030 – beløb 1.245,00 kr.\n",
        date=datetime(2026, 2, 1, 8, 0, tzinfo=UTC),
        language="da",
        attachments=(Attachment(filename="faktura-202601-10020030.pdf", content=pdf),),
    )

    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed.get_content_type() == "multipart/mixed"
    assert parsed["Content-Language"] == "da" and parsed["Auto-Submitted"] == "auto-generated"
    body = parsed.get_body(preferencelist=("plain",))
    assert body is not None and "beløb 1.245,00 kr." in body.get_content()
    [attachment] = list(parsed.iter_attachments())
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == "faktura-202601-10020030.pdf"
    assert attachment["Content-Transfer-Encoding"] == "base64"
    assert attachment.get_payload(decode=True) == pdf


@pytest.mark.parametrize(
    ("number", "language", "filename"),
    [
        ("202601-10020030", "da", "faktura-202601-10020030.pdf"),
        ("202601-10020030", "en", "invoice-202601-10020030.pdf"),
        ("2026/01 ../10020030", "da", "faktura-2026-01-10020030.pdf"),
    ],
)
def test_the_attached_pdf_is_named_by_the_invoice_number_in_the_companys_language(
    number: str, language: str, filename: str
) -> None:
    invoice = InvoiceIssued(
        invoice_id=uuid.uuid4(),
        invoice_number=number,
        cvr="22109340",
        company_name="Bageriet Solsikke ApS",
        account_number="10020030",
        period_start=date(2026, 1, 1),
        period_end=date(2026, 1, 31),
        issued_on=date(2026, 2, 1),
        due_on=date(2026, 2, 15),
        amount_excl_vat_ore=99_600,
        vat_ore=24_900,
        amount_incl_vat_ore=124_500,
        language=language,  # type: ignore[arg-type]
    )
    assert invoice_filename(invoice) == filename


async def test_the_worker_takes_the_e_invoice_transport_the_settings_choose(tmp_path: Path) -> None:
    spool = einvoice_transport(NotifierSettings.model_validate({"var_dir": tmp_path}))
    assert isinstance(spool, EinvoiceSpool) and spool.directory == tmp_path / "einvoice"

    http = einvoice_transport(
        NotifierSettings.model_validate(
            {"einvoice_transport": "http", "einvoice_http_url": "https://ap.example.dk/v1/invoices"}
        )
    )
    assert isinstance(http, EinvoiceHttpTransport)
    await http.aclose()
