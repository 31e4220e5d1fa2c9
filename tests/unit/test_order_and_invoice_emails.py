"""The texts of the order confirmation (S9) and invoice ready (S8) emails: amounts and days as
people write them in Danish and English, every fact in both languages, and which grant covers
which account."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from email.message import EmailMessage

import pytest

from services.notifier.email import EmailReceipt, parse_mailbox
from services.notifier.kinds import InvoiceReady, OrderConfirmation
from services.notifier.letters import format_amount, format_day, templates
from services.notifier.models import Delivery, RecipientGrant
from shared.events import InvoiceIssued, SubscriptionOrdered

PORTAL = "https://selvbetjening.example.dk/"
FROM = parse_mailbox("Adgang Selvbetjening <no-reply@adgang.example.dk>")
GREETING = {"da": "Hej", "en": "Hello"}

ORDER_CONTEXT = {
    "name": "Mette Hansen",
    "product": "Mobil Fri 100 GB",
    "account_number": "10020030",
    "monthly_fee": "199,00 kr.",
    "order_id": "0b5e4f0e-8d51-4a55-9d36-0d6c2f4f3a10",
    "portal_url": PORTAL,
}
INVOICE_CONTEXT = {
    "name": "Mette Hansen",
    "company_name": "Jensen & Søn ApS",
    "cvr": "22109340",
    "account_number": "10020030",
    "invoice_number": "2026-004711",
    "period_start": "1. januar 2026",
    "period_end": "31. januar 2026",
    "amount": "1.245,00 kr.",
    "due": "15. februar 2026",
    "portal_url": PORTAL,
}


@pytest.mark.parametrize(
    ("ore", "danish", "english"),
    [
        (19_900, "199,00 kr.", "DKK 199.00"),
        (123_450, "1.234,50 kr.", "DKK 1,234.50"),
        (123_456_789, "1.234.567,89 kr.", "DKK 1,234,567.89"),
        (5, "0,05 kr.", "DKK 0.05"),
        (0, "0,00 kr.", "DKK 0.00"),
        (-2_500, "-25,00 kr.", "DKK -25.00"),
    ],
)
def test_an_amount_in_ore_is_written_in_kroner_as_each_language_writes_money(
    ore: int, danish: str, english: str
) -> None:
    assert format_amount(ore, language="da") == danish
    assert format_amount(ore, language="en") == english


def test_a_day_is_written_as_each_language_writes_dates() -> None:
    assert format_day(date(2026, 3, 1), language="da") == "1. marts 2026"
    assert format_day(date(2026, 12, 24), language="en") == "24 December 2026"


def test_a_language_without_templates_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        format_amount(100, language="de")


def render(template: str, language: str, context: dict[str, str]) -> tuple[str, str]:
    module = templates.get_template(f"{template}.{language}.email.txt.j2").make_module(context)
    return str(getattr(module, "subject")), str(module)  # noqa: B009


@pytest.mark.parametrize("language", ["da", "en"])
@pytest.mark.parametrize("change", ["ordered", "upgraded"])
def test_every_order_confirmation_has_a_subject_and_every_fact_of_the_order(
    language: str, change: str
) -> None:
    identifier = "+4520998877" if change == "upgraded" else ""
    subject, text = render(
        "order_confirmation", language, {**ORDER_CONTEXT, "change": change, "identifier": identifier}
    )

    assert "Mobil Fri 100 GB" in subject
    assert text.startswith(f"{GREETING[language]} Mette Hansen\n\n")
    for fact in ORDER_CONTEXT.values():
        assert fact in text
    assert identifier in text
    assert "{{" not in text and "{%" not in text


@pytest.mark.parametrize("language", ["da", "en"])
def test_every_invoice_email_has_a_subject_and_every_fact_of_the_invoice(language: str) -> None:
    subject, text = render("invoice_ready", language, INVOICE_CONTEXT)

    assert "Jensen & Søn ApS" in subject  # plain text: no HTML escaping of the name
    assert text.startswith(f"{GREETING[language]} Mette Hansen\n\n")
    for fact in INVOICE_CONTEXT.values():
        assert fact in text


@pytest.mark.parametrize("language", ["da", "en"])
def test_a_message_to_someone_without_a_known_name_greets_without_one(language: str) -> None:
    for template, context in (("invoice_ready", INVOICE_CONTEXT), ("order_confirmation", ORDER_CONTEXT)):
        _, text = render(template, language, {**context, "change": "ordered", "identifier": "", "name": ""})
        assert text.startswith(f"{GREETING[language]}\n\n")


def test_a_grant_covers_every_account_of_its_company_or_only_those_it_lists() -> None:
    everything = RecipientGrant(cvr="22109340", all_accounts=True, account_numbers=[])
    listed = RecipientGrant(cvr="22109340", all_accounts=False, account_numbers=["10020030"])

    assert everything.covers("10020030") and everything.covers("99999999")
    assert listed.covers("10020030") and not listed.covers("10020031")


class MailTray:
    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []

    async def send(self, message: EmailMessage) -> EmailReceipt:
        self.sent.append(message)
        return EmailReceipt(message_id=str(message["Message-ID"]), location="tray")


def delivery(event: SubscriptionOrdered | InvoiceIssued, *, name: str | None) -> Delivery:
    return Delivery(
        id=str(uuid.uuid4()),
        source_event_id=str(uuid.uuid4()),
        source_event_type=event.TYPE,
        source_payload=event.model_dump_json(),
        channel="email",
        recipient="mette@example.dk",
        recipient_name=name,
        kind="order_confirmation",
        message_id=str(uuid.uuid4()),
        created_at=datetime(2026, 2, 1, 8, 0, tzinfo=UTC),
    )


async def test_the_kinds_write_in_danish_to_the_recorded_address_and_name() -> None:
    tray = MailTray()
    order = SubscriptionOrdered(
        order_id=uuid.uuid4(),
        cvr="22109340",
        account_number="10020030",
        subscription_id=uuid.uuid4(),
        product_code="MOBIL-FRI-100",
        product_name="Mobil Fri 100 GB",
        monthly_fee_ore=19_900,
        ordered_by=uuid.uuid4(),
        ordered_at=datetime(2026, 2, 1, 8, 0, tzinfo=UTC),
    )
    await OrderConfirmation(email=tray, email_from=FROM, portal_url=PORTAL).send(
        delivery(order, name="Mette")
    )

    [mail] = tray.sent
    assert mail["To"] == "mette@example.dk" and mail["Content-Language"] == "da"
    assert "Hej Mette" in mail.get_content() and "199,00 kr." in mail.get_content()


async def test_an_invoice_email_recorded_without_a_name_still_goes_out() -> None:
    tray = MailTray()
    invoice = InvoiceIssued(
        invoice_id=uuid.uuid4(),
        invoice_number="2026-004711",
        cvr="22109340",
        company_name="Jensen & Søn ApS",
        account_number="10020030",
        period_start=date(2026, 1, 1),
        period_end=date(2026, 1, 31),
        issued_on=date(2026, 2, 1),
        due_on=date(2026, 2, 15),
        amount_excl_vat_ore=99_600,
        vat_ore=24_900,
        amount_incl_vat_ore=124_500,
    )
    await InvoiceReady(email=tray, email_from=FROM, portal_url=PORTAL).send(delivery(invoice, name=None))

    [mail] = tray.sent
    text = mail.get_content()
    assert text.startswith("Hej\n\n") and "1.245,00 kr." in text and "15. februar 2026" in text
