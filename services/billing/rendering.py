"""An invoice's document in the format asked for (S8, S10), rendered in a worker thread."""

from __future__ import annotations

from dataclasses import dataclass

import anyio

from services.billing.documents import DocumentFormat, FormatNotAvailable, InvoiceDocument
from services.billing.invoice_ubl import render_ubl


@dataclass(frozen=True)
class Rendered:
    content: bytes
    media_type: str
    filename: str

    @property
    def disposition(self) -> str:
        return f'attachment; filename="{self.filename}"'


def render_pdf(document: InvoiceDocument) -> bytes:
    """The invoice's PDF. fpdf2 (with fontTools, Pillow, lxml: ~25 MB) is imported by the first
    PDF a process renders, not by every process that imports billing."""
    from services.billing.invoice_pdf import render_pdf as render

    return render(document)


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
