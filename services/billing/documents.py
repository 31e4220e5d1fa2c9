"""Invoice documents (S8, S10): the PDF a person reads and the e-invoices a buyer's system reads
(OIOUBL 2.1 to a GLN/EAN location, Peppol BIS Billing 3.0 to a Peppol endpoint).

Every document is rendered from the stored invoice and its snapshot (the buyer's master data,
language and delivery as they were at issue), so a document opened or sent later says what the
invoice said when it was issued. Nothing is cached: a document is only ever produced after the
caller's grants were checked for that very request.

PDFs are written with fpdf2: pure Python (no system libraries, unlike WeasyPrint's Pango and
cairo), embeds and subsets TrueType fonts, so the shipped DejaVu Sans renders æ, ø and å.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import anyio
from babel import Locale
from babel.dates import format_date
from babel.numbers import parse_pattern
from fontTools.ttLib import TTFont
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from lxml import etree
from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession
from stdnum import luhn

from services.billing.invoicing import VAT_PERCENT, vat_of
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


@dataclass(frozen=True)
class Rendered:
    content: bytes
    media_type: str
    filename: str

    @property
    def disposition(self) -> str:
        return f'attachment; filename="{self.filename}"'


def render(document: InvoiceDocument, format: DocumentFormat) -> Rendered:
    """The document in `format`; `FormatNotAvailable` for an e-invoice format the invoice was
    not issued to (an e-invoice needs the buyer's endpoint, which only that format records)."""
    if format == "pdf":
        return Rendered(render_pdf(document), "application/pdf", f"faktura-{document.number}.pdf")
    if document.e_invoice_format != format:
        endpoint = "a GLN/EAN number (OIOUBL)" if format == "oioubl" else "a Peppol endpoint"
        raise FormatNotAvailable(
            f"Invoice {document.number} was issued to an account without {endpoint}, so there is no "
            f"{format} document of it; ask for format=pdf instead"
            + (f", or format={document.e_invoice_format}." if document.e_invoice_format else ".")
        )
    return Rendered(render_ubl(document, format), "application/xml", f"faktura-{document.number}.xml")


async def render_beside_the_loop(
    document: InvoiceDocument, format: DocumentFormat, limiter: anyio.CapacityLimiter
) -> Rendered:
    """`render` in a worker thread, at most `limiter`'s number at once. A long invoice's PDF
    takes seconds of CPU; rendered on the event loop it would stop billing answering anyone
    else meanwhile, and a user asking for it in parallel could stop billing altogether."""
    return await anyio.to_thread.run_sync(render, document, format, limiter=limiter)


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


# --- PDF ------------------------------------------------------------------------------------


class _InvoicePdf(FPDF):
    def __init__(self, document: InvoiceDocument) -> None:
        super().__init__(format="A4", unit="mm")
        self.document = document
        self.words = words(document.language)
        self.set_margins(15, 15, 15)
        self.set_auto_page_break(True, margin=22)
        regular, bold = FONT_FILES
        self.add_font("DejaVu", "", str(FONTS / regular))
        self.add_font("DejaVu", "B", str(FONTS / bold))
        self.set_title(f"{self.words['invoice']} {document.number}")
        self.set_author(SELLER.name)
        self.set_lang(document.language)
        # The document's date, not the moment of rendering: an invoice renders to the same
        # bytes every time, so a document sent again after a crash is the one sent before.
        self.set_creation_date(datetime.combine(document.issued_on, time(), tzinfo=UTC))

    def header(self) -> None:
        if self.page_no() > 1:  # continuation pages say whose invoice they continue
            self.set_font("DejaVu", "", 8)
            self.cell(0, 5, self.words["continued"].format(number=self.document.number))
            self.ln(8)
            self.table_heading()

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("DejaVu", "", 7)
        self.cell(
            120, 4, f"{SELLER.name} · {SELLER.street} · {SELLER.postal_code} {SELLER.city} · CVR {SELLER.cvr}"
        )
        self.cell(
            0, 4, self.words["page"].format(page=self.page_no(), pages="{nb}"), align="R"
        )

    def table_heading(self) -> None:
        self.set_font("DejaVu", "B", 8)
        self.cell(105, 6, self.words["description"], border="B")
        self.cell(35, 6, self.words["quantity"], border="B", align="R")
        self.cell(0, 6, self.words["amount"], border="B", align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_font("DejaVu", "", 8)


def render_pdf(document: InvoiceDocument) -> bytes:
    """The invoice as a paginated A4 PDF in the invoice's language."""
    w = words(document.language)
    lang = document.language
    pdf = _InvoicePdf(document)
    pdf.add_page()

    pdf.set_font("DejaVu", "B", 14)
    pdf.cell(110, 7, SELLER.name)
    pdf.set_font("DejaVu", "B", 18)
    pdf.cell(0, 7, w["invoice"], align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("DejaVu", "", 8)
    for text in (
        SELLER.street,
        f"{SELLER.postal_code} {SELLER.city}",
        f"CVR {SELLER.cvr} · {SELLER.phone} · {SELLER.email}",
    ):
        pdf.cell(0, 4, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(8)

    top = pdf.get_y()
    pdf.set_font("DejaVu", "B", 8)
    pdf.cell(0, 5, w["to"], new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("DejaVu", "", 10)
    for text in (
        document.buyer_name,
        document.buyer_street,
        f"{document.buyer_postal_code} {document.buyer_city}",
        f"{w['cvr']} {document.cvr}",
    ):
        pdf.cell(95, 5, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    bottom = pdf.get_y()
    pdf.set_y(top)
    facts = (
        (w["number"], document.number),
        (w["issued_on"], day(document.issued_on, lang)),
        (w["due_on"], day(document.due_on, lang)),
        (w["account"], document.account_number),
        (w["period"], f"{day(document.period_start, lang)} – {day(document.period_end, lang)}"),
    )
    for label, value in facts:
        pdf.set_x(110)
        pdf.set_font("DejaVu", "", 8)
        pdf.cell(30, 5, label)
        pdf.set_font("DejaVu", "B", 8)
        pdf.cell(0, 5, value, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_y(max(bottom, pdf.get_y()) + 8)

    pdf.table_heading()
    for identifier, lines in grouped(document.lines):
        pdf.set_font("DejaVu", "B", 8)
        pdf.cell(0, 6, identifier or w["account"], new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font("DejaVu", "", 8)
        for line in lines:
            pdf.cell(5, 5, "")
            pdf.cell(100, 5, f"{w.get(line.category, line.category)}: {line_text(line, lang)}")
            pdf.cell(35, 5, f"{quantity(line.quantity, lang)} {w.get(line.unit, line.unit)}", align="R")
            pdf.cell(0, 5, money(line.amount_ore, lang), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.cell(140, 5, w["subtotal"].format(identifier=identifier), align="R")
        pdf.cell(
            0,
            5,
            money(sum(line.amount_ore for line in lines), lang),
            border="T",
            align="R",
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )
        pdf.ln(1)

    by_category: dict[str, int] = defaultdict(int)
    for line in document.lines:
        by_category[line.category] += line.amount_ore
    pdf.ln(4)
    pdf.set_font("DejaVu", "B", 8)
    pdf.cell(0, 6, w["by_category"], border="B", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("DejaVu", "", 8)
    for category in sorted(by_category, key=lambda c: CATEGORY_ORDER.get(c, 9)):
        pdf.cell(140, 5, w.get(category, category))
        pdf.cell(0, 5, money(by_category[category], lang), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    pdf.ln(3)
    totals = (
        (w["excl"], document.amount_excl_vat_ore, ""),
        (w["vat"].format(percent=VAT_PERCENT), document.vat_ore, ""),
        (w["incl"], document.amount_incl_vat_ore, "B"),
    )
    for label, amount, style in totals:
        pdf.set_font("DejaVu", style, 9)
        pdf.cell(140, 6, label, align="R")
        pdf.cell(0, 6, money(amount, lang), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    pdf.ln(6)
    pdf.set_font("DejaVu", "B", 9)
    pdf.cell(0, 6, w["payment"], new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("DejaVu", "", 8)
    pdf.multi_cell(
        0,
        4,
        w["pay_by"].format(
            due=day(document.due_on, lang),
            reg=SELLER.bank_registration,
            account=SELLER.bank_account,
            number=document.number,
        ),
        align="L",
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    fik = fi_payment_line(document)
    if fik is not None:
        pdf.cell(0, 5, w["fik"].format(line=fik), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.cell(0, 5, f"IBAN {SELLER.iban} · BIC {SELLER.bic}", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    return bytes(pdf.output())


# --- UBL 2.1: OIOUBL and Peppol BIS Billing 3.0 ------------------------------------------------

INVOICE_NS = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
NSMAP = {None: INVOICE_NS, "cac": CAC, "cbc": CBC}
PEPPOL_CUSTOMIZATION = "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"
PEPPOL_PROFILE = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
OIOUBL_CUSTOMIZATION = "OIOUBL-2.1"
OIOUBL_PROFILE = "urn:www.nesubl.eu:profiles:profile5:ver2.0"  # Procurement-BilSim: invoice only
# UN/ECE recommendation 20 units of the invoice lines' units.
UNIT_CODES = {"month": "MON", "minutes": "MIN", "messages": "H87", "MB": "4L"}


def _amount(ore: int) -> str:
    return str(Decimal(ore).scaleb(-2).quantize(Decimal("0.01")))


class _Ubl:
    """Appends UBL elements in schema order; `profile` decides the codes each profile wants."""

    def __init__(self, profile: DocumentFormat, currency: str) -> None:
        self.profile = profile
        self.currency = currency
        self.root = etree.Element(f"{{{INVOICE_NS}}}Invoice", nsmap=NSMAP)

    def basic(self, parent: Any, name: str, text: str, **attributes: str) -> Any:
        element = etree.SubElement(parent, f"{{{CBC}}}{name}", {k: v for k, v in attributes.items() if v})
        # Master data stored before it was checked (`unprintable`) may hold characters XML
        # cannot carry; left out, the rest of the e-invoice is still the invoice as issued.
        element.text = NOT_XML.sub("", text)
        return element

    def money(self, parent: Any, name: str, ore: int) -> Any:
        return self.basic(parent, name, _amount(ore), currencyID=self.currency)

    def aggregate(self, parent: Any, name: str) -> Any:
        return etree.SubElement(parent, f"{{{CAC}}}{name}")

    def party(
        self,
        parent: Any,
        *,
        endpoint: tuple[str, str],
        name: str,
        street: str,
        postal_code: str,
        city: str,
        cvr: str,
        contact: str | None = None,
    ) -> None:
        party = self.aggregate(parent, "Party")
        scheme, endpoint_id = endpoint
        self.basic(party, "EndpointID", endpoint_id, schemeID=scheme)
        self.basic(self.aggregate(party, "PartyName"), "Name", name)
        address = self.aggregate(party, "PostalAddress")
        if self.profile == "oioubl":
            self.basic(
                address,
                "AddressFormatCode",
                "StructuredLax",
                listAgencyID="320",
                listID="urn:oioubl:codelist:addressformatcode-1.1",
            )
        self.basic(address, "StreetName", street)
        self.basic(address, "CityName", city)
        self.basic(address, "PostalZone", postal_code)
        self.basic(self.aggregate(address, "Country"), "IdentificationCode", "DK")
        tax_scheme = self.aggregate(party, "PartyTaxScheme")
        if self.profile == "oioubl":
            self.basic(tax_scheme, "CompanyID", f"DK{cvr}", schemeID="DK:SE")
        else:
            self.basic(tax_scheme, "CompanyID", f"DK{cvr}")
        self.tax_scheme(tax_scheme)
        legal = self.aggregate(party, "PartyLegalEntity")
        self.basic(legal, "RegistrationName", name)
        if self.profile == "oioubl":
            self.basic(legal, "CompanyID", f"DK{cvr}", schemeID="DK:CVR")
        else:
            self.basic(legal, "CompanyID", cvr, schemeID="0184")
        if contact is not None and self.profile == "oioubl":
            # OIOUBL's buyer reference (personreference): the account the invoice is for.
            self.basic(self.aggregate(party, "Contact"), "ID", contact)

    def tax_scheme(self, parent: Any) -> None:
        scheme = self.aggregate(parent, "TaxScheme")
        if self.profile == "oioubl":
            self.basic(
                scheme, "ID", "63", schemeAgencyID="320", schemeID="urn:oioubl:id:taxschemeid-1.5"
            )
            self.basic(scheme, "Name", "Moms")
        else:
            self.basic(scheme, "ID", "VAT")

    def tax_category(self, parent: Any, name: str) -> None:
        category = self.aggregate(parent, name)
        if self.profile == "oioubl":
            self.basic(
                category,
                "ID",
                "StandardRated",
                schemeAgencyID="320",
                schemeID="urn:oioubl:id:taxcategoryid-1.3",
            )
        else:
            self.basic(category, "ID", "S")
        self.basic(category, "Percent", str(VAT_PERCENT))
        self.tax_scheme(category)


def buyer_endpoint(document: InvoiceDocument, profile: DocumentFormat) -> tuple[str, str]:
    if profile == "oioubl" and document.delivery_gln:
        return "GLN", document.delivery_gln
    if profile == "peppol" and document.delivery_peppol_scheme and document.delivery_peppol_id:
        return document.delivery_peppol_scheme, document.delivery_peppol_id
    raise FormatNotAvailable(f"Invoice {document.number} has no {profile} endpoint; ask for format=pdf.")


def render_ubl(document: InvoiceDocument, profile: DocumentFormat) -> bytes:
    """The invoice as a UBL 2.1 Invoice: OIOUBL 2.1 (`oioubl`) or Peppol BIS Billing 3.0
    (`peppol`). One VAT category (standard rated, 25 %) covers every line."""
    ubl = _Ubl(profile, document.currency)
    root = ubl.root
    if profile == "oioubl":
        ubl.basic(root, "UBLVersionID", "2.1")
        ubl.basic(root, "CustomizationID", OIOUBL_CUSTOMIZATION)
        ubl.basic(
            root, "ProfileID", OIOUBL_PROFILE, schemeAgencyID="320", schemeID="urn:oioubl:id:profileid-1.6"
        )
    else:
        ubl.basic(root, "CustomizationID", PEPPOL_CUSTOMIZATION)
        ubl.basic(root, "ProfileID", PEPPOL_PROFILE)
    ubl.basic(root, "ID", document.number)
    if profile == "oioubl":
        ubl.basic(root, "UUID", document.id)
    ubl.basic(root, "IssueDate", document.issued_on.isoformat())
    ubl.basic(root, "DueDate", document.due_on.isoformat())
    if profile == "oioubl":
        ubl.basic(
            root,
            "InvoiceTypeCode",
            "380",
            listAgencyID="320",
            listID="urn:oioubl:codelist:invoicetypecode-1.2",
        )
    else:
        ubl.basic(root, "InvoiceTypeCode", "380")
    ubl.basic(root, "DocumentCurrencyCode", document.currency)
    # The buyer's reference is the account: what the customer's system books the invoice by.
    ubl.basic(root, "BuyerReference", document.account_number)
    period = ubl.aggregate(root, "InvoicePeriod")
    ubl.basic(period, "StartDate", document.period_start.isoformat())
    ubl.basic(period, "EndDate", document.period_end.isoformat())

    seller_endpoint = ("DK:CVR", f"DK{SELLER.cvr}") if profile == "oioubl" else ("0184", SELLER.cvr)
    ubl.party(
        ubl.aggregate(root, "AccountingSupplierParty"),
        endpoint=seller_endpoint,
        name=SELLER.name,
        street=SELLER.street,
        postal_code=SELLER.postal_code,
        city=SELLER.city,
        cvr=SELLER.cvr,
    )
    ubl.party(
        ubl.aggregate(root, "AccountingCustomerParty"),
        endpoint=buyer_endpoint(document, profile),
        name=document.buyer_name,
        street=document.buyer_street,
        postal_code=document.buyer_postal_code,
        city=document.buyer_city,
        cvr=document.cvr,
        contact=document.account_number,
    )

    if profile == "oioubl":
        # A Danish bank transfer (reg.nr. and account) with the invoice number as reference.
        means = ubl.aggregate(root, "PaymentMeans")
        ubl.basic(means, "ID", "1")
        ubl.basic(means, "PaymentMeansCode", "42")
        ubl.basic(means, "PaymentDueDate", document.due_on.isoformat())
        ubl.basic(
            means,
            "PaymentChannelCode",
            "DK:BANK",
            listAgencyID="320",
            listID="urn:oioubl:codelist:paymentchannelcode-1.1",
        )
        ubl.basic(means, "InstructionNote", document.number)
        account = ubl.aggregate(means, "PayeeFinancialAccount")
        ubl.basic(account, "ID", SELLER.bank_account)
        ubl.basic(ubl.aggregate(account, "FinancialInstitutionBranch"), "ID", SELLER.bank_registration)
    else:
        # A transfer to the Danish bank account (42: the Danish rules' code with reg.nr. and
        # account), or to the IBAN (58), the invoice number as the payment id (BT-83).
        for code, account_id, branch_id in (
            ("42", SELLER.bank_account, SELLER.bank_registration),
            ("58", SELLER.iban, SELLER.bic),
        ):
            means = ubl.aggregate(root, "PaymentMeans")
            ubl.basic(means, "PaymentMeansCode", code)
            ubl.basic(means, "PaymentID", document.number)
            account = ubl.aggregate(means, "PayeeFinancialAccount")
            ubl.basic(account, "ID", account_id)
            ubl.basic(ubl.aggregate(account, "FinancialInstitutionBranch"), "ID", branch_id)

    line_total = sum(line.amount_ore for line in document.lines)
    tax_total = ubl.aggregate(root, "TaxTotal")
    ubl.money(tax_total, "TaxAmount", document.vat_ore)
    subtotal = ubl.aggregate(tax_total, "TaxSubtotal")
    ubl.money(subtotal, "TaxableAmount", line_total)
    ubl.money(subtotal, "TaxAmount", document.vat_ore)
    ubl.tax_category(subtotal, "TaxCategory")

    totals = ubl.aggregate(root, "LegalMonetaryTotal")
    ubl.money(totals, "LineExtensionAmount", line_total)
    ubl.money(totals, "TaxExclusiveAmount", document.amount_excl_vat_ore)
    ubl.money(totals, "TaxInclusiveAmount", document.amount_incl_vat_ore)
    ubl.money(totals, "PayableAmount", document.amount_incl_vat_ore)

    for number, line in enumerate(
        (line for _, lines in grouped(document.lines) for line in lines), start=1
    ):
        element = ubl.aggregate(root, "InvoiceLine")
        ubl.basic(element, "ID", str(number))
        unit = UNIT_CODES.get(line.unit, "C62")
        ubl.basic(element, "InvoicedQuantity", str(line.quantity), unitCode=unit)
        ubl.money(element, "LineExtensionAmount", line.amount_ore)
        if profile == "oioubl":
            # OIOUBL wants each line's VAT too (Peppol forbids it: its VAT is the document's).
            line_tax = ubl.aggregate(element, "TaxTotal")
            ubl.money(line_tax, "TaxAmount", vat_of(line.amount_ore))
            line_subtotal = ubl.aggregate(line_tax, "TaxSubtotal")
            ubl.money(line_subtotal, "TaxableAmount", line.amount_ore)
            ubl.money(line_subtotal, "TaxAmount", vat_of(line.amount_ore))
            ubl.tax_category(line_subtotal, "TaxCategory")
        item = ubl.aggregate(element, "Item")
        if line.identifier:
            ubl.basic(item, "Description", line.identifier)
        ubl.basic(item, "Name", line_text(line, document.language))
        ubl.tax_category(item, "ClassifiedTaxCategory")
        # The price is the line's amount for all of its quantity (BaseQuantity), so that
        # quantity × price ÷ base quantity is the line amount exactly, without rounding.
        price = ubl.aggregate(element, "Price")
        ubl.money(price, "PriceAmount", line.amount_ore)
        ubl.basic(price, "BaseQuantity", str(max(line.quantity, 1)), unitCode=unit)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
