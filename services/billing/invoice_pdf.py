"""The PDF of an invoice (S8, S10), the document a person reads, in the invoice's language.

PDFs are written with fpdf2: pure Python (no system libraries, unlike WeasyPrint's Pango and
cairo), embeds and subsets TrueType fonts, so the shipped DejaVu Sans renders æ, ø and å.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, time

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from services.billing.documents import (
    CATEGORY_ORDER,
    FONT_FILES,
    FONTS,
    SELLER,
    InvoiceDocument,
    day,
    fi_payment_line,
    grouped,
    line_text,
    money,
    quantity,
    words,
)
from services.billing.invoicing import VAT_PERCENT


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
