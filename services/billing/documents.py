"""Invoice documents (S8, S10): an invoice as its documents show it (`InvoiceDocument`, read
from the stored invoice and its snapshot), the seller, the characters an invoice can print, and
the words and numbers of both languages. `invoice_pdf.py` writes the PDF a person reads,
`invoice_ubl.py` the e-invoices a buyer's system reads (OIOUBL 2.1 to a GLN/EAN location, Peppol
BIS Billing 3.0 to a Peppol endpoint), and `rendering.py` renders the format asked for.

Every document is rendered from the stored invoice and its snapshot (the buyer's master data,
language and delivery as they were at issue), so a document opened or sent later says what the
invoice said when it was issued. Nothing is cached: a document is only ever produced after the
caller's grants were checked for that very request.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Literal

from babel import Locale
from babel.dates import format_date
from babel.numbers import parse_pattern
from fontTools.ttLib import TTFont
from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession
from stdnum import luhn

from services.billing.models import Invoice, InvoiceLine
from shared.problems import Problem

DocumentFormat = Literal["pdf", "oioubl", "peppol"]
FONTS = Path(__file__).parent / "fonts"
FONT_FILES = ("DejaVuSans-Latin.ttf", "DejaVuSans-Bold-Latin.ttf")
# The characters both shipped fonts have glyphs for; any other would print as a gap.
PRINTABLE = frozenset.intersection(
    *(frozenset(TTFont(FONTS / name).getBestCmap()) for name in FONT_FILES)
)
# What XML 1.0 cannot carry at all (lxml refuses the whole document if a text holds one).
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _printable_pattern() -> str:
    """A pattern of the texts `unprintable` lets through (for the OpenAPI document)."""
    allowed = sorted(c for c in PRINTABLE if not unicodedata.category(chr(c)).startswith("C"))
    ranges: list[tuple[int, int]] = []
    for c in allowed:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1] = (ranges[-1][0], c)
        else:
            ranges.append((c, c))
    return "^[" + "".join(f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges) + "]*$"


PRINTABLE_PATTERN = _printable_pattern()


def unprintable(text: str) -> str | None:
    """The first character of `text` an invoice cannot carry, None if there is none: a control
    or format character (XML refuses the former; the latter, like U+202E, reorders what a
    reader sees) or one the shipped fonts have no glyph for."""
    for character in text:
        if unicodedata.category(character).startswith("C") or ord(character) not in PRINTABLE:
            return character
    return None


@dataclass(frozen=True)
class Seller:
    """The telecom that issues the invoices: who the documents say they are from."""

    name: str
    street: str
    postal_code: str
    city: str
    cvr: str
    email: str
    phone: str
    bank_registration: str  # reg.nr.
    bank_account: str  # kontonr.
    iban: str
    bic: str
    fi_creditor: str  # FI-kort kreditornummer (8 digits)


# The one place the seller's details live; every document takes them from here.
SELLER = Seller(
    name="Adgang Erhverv A/S",
    street="Telegade 1",
    postal_code="2300",
    city="København S",
    cvr="29100004",
    email="erhverv@adgang.dk",
    phone="+4570101010",
    bank_registration="5301",
    bank_account="0001234567",
    iban="DK5453010001234567",
    bic="DABADKKK",
    fi_creditor="85123456",
)


class FormatNotAvailable(Problem):
    status = 409
    type_suffix = "format-not-available"
    title = "The invoice has no document in this format"


@dataclass(frozen=True)
class DocumentLine:
    subscription_id: str | None
    identifier: str
    category: str  # subscription, calls, sms, data
    description: str
    quantity: int
    unit: str  # month, minutes, messages, MB
    amount_ore: int


@dataclass(frozen=True)
class InvoiceDocument:
    """An invoice as its documents show it: the stored invoice, its snapshot and its lines."""

    id: str
    number: str
    cvr: str
    account_number: str
    period_start: date
    period_end: date
    issued_on: date
    due_on: date
    amount_excl_vat_ore: int
    vat_ore: int
    amount_incl_vat_ore: int
    currency: str
    buyer_name: str
    buyer_street: str
    buyer_postal_code: str
    buyer_city: str
    language: str
    delivery_format: str
    delivery_gln: str | None
    delivery_peppol_scheme: str | None
    delivery_peppol_id: str | None
    lines: tuple[DocumentLine, ...]

    @classmethod
    def of(cls, invoice: Invoice, lines: Iterable[InvoiceLine]) -> InvoiceDocument:
        return cls(
            id=invoice.id,
            number=invoice.number,
            cvr=invoice.cvr,
            account_number=invoice.account_number,
            period_start=invoice.period_start,
            period_end=invoice.period_end,
            issued_on=invoice.issued_on,
            due_on=invoice.due_on,
            amount_excl_vat_ore=invoice.amount_excl_vat_ore,
            vat_ore=invoice.vat_ore,
            amount_incl_vat_ore=invoice.amount_incl_vat_ore,
            currency=invoice.currency,
            buyer_name=invoice.buyer_name,
            buyer_street=invoice.buyer_street,
            buyer_postal_code=invoice.buyer_postal_code,
            buyer_city=invoice.buyer_city,
            language=invoice.language,
            delivery_format=invoice.delivery_format,
            delivery_gln=invoice.delivery_gln,
            delivery_peppol_scheme=invoice.delivery_peppol_scheme,
            delivery_peppol_id=invoice.delivery_peppol_id,
            lines=tuple(
                DocumentLine(
                    subscription_id=line.subscription_id,
                    identifier=line.identifier,
                    category=line.category,
                    description=line.description,
                    quantity=line.quantity,
                    unit=line.unit,
                    amount_ore=line.amount_ore,
                )
                for line in lines
            ),
        )

    @property
    def e_invoice_format(self) -> DocumentFormat | None:
        """The XML format the account received its invoices in when this one was issued."""
        formats = document_formats(self)
        return formats[1] if len(formats) > 1 else None


def document_formats(invoice: Invoice | InvoiceDocument) -> list[DocumentFormat]:
    """The documents an issued invoice has: the PDF, and the e-invoice of the format it was
    issued to, if any."""
    if invoice.delivery_format == "oioubl" and invoice.delivery_gln:
        return ["pdf", "oioubl"]
    if invoice.delivery_format == "peppol" and invoice.delivery_peppol_scheme and invoice.delivery_peppol_id:
        return ["pdf", "peppol"]
    return ["pdf"]


async def load_document(
    session: AsyncSession, invoice_id: str, *where: ColumnElement[bool]
) -> InvoiceDocument | None:
    """The invoice `invoice_id` with its lines, if it exists and satisfies `where` (the caller's
    grants: pass `Access.rows(...)`); None otherwise, the same for both."""
    invoice = await session.scalar(select(Invoice).where(Invoice.id == invoice_id, *where))
    if invoice is None:
        return None
    lines = await session.scalars(
        select(InvoiceLine).where(InvoiceLine.invoice_id == invoice_id).order_by(InvoiceLine.id)
    )
    return InvoiceDocument.of(invoice, lines)


# --- words and numbers --------------------------------------------------------------------

LOCALES = {"da": "da_DK", "en": "en_GB"}
CATEGORY_ORDER = {"subscription": 0, "calls": 1, "sms": 2, "data": 3}
WORDS: dict[str, dict[str, str]] = {
    "da": {
        "invoice": "Faktura",
        "to": "Faktura til",
        "cvr": "CVR-nr.",
        "number": "Fakturanummer",
        "issued_on": "Fakturadato",
        "due_on": "Forfaldsdato",
        "account": "Kontonummer",
        "period": "Periode",
        "description": "Beskrivelse",
        "quantity": "Antal",
        "amount": "Beløb (kr.)",
        "subtotal": "I alt for {identifier}",
        "by_category": "Fordelt på kategorier",
        "excl": "I alt ekskl. moms",
        "vat": "Moms {percent} %",
        "incl": "I alt inkl. moms",
        "payment": "Betaling",
        "pay_by": "Betales senest {due} til reg.nr. {reg} kontonr. {account}. "
        "Angiv fakturanummer {number} som reference.",
        "fik": "Eller med FI-kort: {line}",
        "page": "Side {page} af {pages}",
        "continued": "Faktura {number}, fortsat",
        "subscription": "Abonnement",
        "calls": "Opkald",
        "sms": "SMS",
        "data": "Data",
        "calls_text": "Opkald ud over abonnement",
        "sms_text": "SMS ud over abonnement",
        "data_text": "Data ud over abonnement",
        "month": "md.",
        "minutes": "min.",
        "messages": "stk.",
        "MB": "MB",
    },
    "en": {
        "invoice": "Invoice",
        "to": "Invoice to",
        "cvr": "CVR no.",
        "number": "Invoice number",
        "issued_on": "Invoice date",
        "due_on": "Due date",
        "account": "Account number",
        "period": "Period",
        "description": "Description",
        "quantity": "Quantity",
        "amount": "Amount (DKK)",
        "subtotal": "Total for {identifier}",
        "by_category": "By category",
        "excl": "Total excl. VAT",
        "vat": "VAT {percent}%",
        "incl": "Total incl. VAT",
        "payment": "Payment",
        "pay_by": "Please pay by {due} to reg. no. {reg} account no. {account}. "
        "Quote invoice number {number} as the reference.",
        "fik": "Or by FI card: {line}",
        "page": "Page {page} of {pages}",
        "continued": "Invoice {number}, continued",
        "subscription": "Subscription",
        "calls": "Calls",
        "sms": "Text messages",
        "data": "Data",
        "calls_text": "Calls beyond the subscription",
        "sms_text": "Text messages beyond the subscription",
        "data_text": "Data beyond the subscription",
        "month": "month",
        "minutes": "min",
        "messages": "messages",
        "MB": "MB",
    },
}


def words(language: str) -> dict[str, str]:
    return WORDS.get(language, WORDS["da"])


# Parsed once: a long invoice formats thousands of numbers.
BABEL_LOCALES = {language: Locale.parse(code) for language, code in LOCALES.items()}
MONEY_PATTERN = parse_pattern("#,##0.00")
COUNT_PATTERN = parse_pattern("#,##0")


def _locale(language: str) -> Locale:
    return BABEL_LOCALES.get(language, BABEL_LOCALES["da"])


def money(ore: int, language: str) -> str:
    """Kroner with two decimals the language's way: 1.234,56 in Danish, 1,234.56 in English."""
    return MONEY_PATTERN.apply(Decimal(ore).scaleb(-2), _locale(language))


def day(value: date, language: str) -> str:
    return format_date(value, "long", locale=_locale(language))


def quantity(value: int, language: str) -> str:
    return COUNT_PATTERN.apply(value, _locale(language))


def line_text(line: DocumentLine, language: str) -> str:
    """A subscription's fee is its product's name; usage lines are said in the document's language."""
    if line.category == "subscription":
        return line.description
    return words(language).get(f"{line.category}_text", line.description)


def grouped(lines: Sequence[DocumentLine]) -> list[tuple[str, list[DocumentLine]]]:
    """Lines by subscription (in the order of their identifiers), each by category."""
    groups: dict[str, list[DocumentLine]] = defaultdict(list)
    for line in lines:
        groups[line.identifier].append(line)
    return [
        (identifier, sorted(groups[identifier], key=lambda x: CATEGORY_ORDER.get(x.category, 9)))
        for identifier in sorted(groups)
    ]


def fi_payment_line(document: InvoiceDocument) -> str | None:
    """The FI-kort (type 71) line with the invoice number as payment id: its digits and a
    modulus-10 check digit, 15 in all. None when the number has more than 14 digits."""
    digits = "".join(c for c in document.number if c.isdigit())
    if len(digits) > 14:
        return None
    payload = digits.rjust(14, "0")
    return f"+71<{payload}{luhn.calc_check_digit(payload)}+{SELLER.fi_creditor}<"
