"""Invoices (S8) and their documents (S10), within the caller's grants (S14): the list, one
invoice with its lines, and its PDF, OIOUBL or Peppol document.

Every query carries the caller's grants in its WHERE clause. An id outside them answers 404,
exactly as an id that does not exist, so nothing tells a user what they may not see.
"""

from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Header, Query, Response
from sqlalchemy import ColumnElement, select

from services.billing.access import Access
from services.billing.deps import Caller, DbDep, UserRendersDep
from services.billing.documents import (
    DocumentFormat,
    InvoiceDocument,
    document_formats,
    load_document,
)
from services.billing.invoicing import month_start
from services.billing.models import Customer, Invoice, InvoiceLine
from services.billing.paging import check_period, cut, decode_cursor, newest_first
from services.billing.rendering import Rendered, render_beside_the_loop
from services.billing.schemas import (
    AccountFilter,
    Id,
    InvoiceDetail,
    InvoiceLineOut,
    InvoiceOut,
    InvoicePage,
    IsoDate,
)
from shared.db import Database
from shared.problems import PROBLEM, NotFound, Problem
from shared.validation import CvrNumber

router = APIRouter(tags=["invoices and usage"], responses={401: PROBLEM, 403: PROBLEM, 422: PROBLEM})


class NotAcceptable(Problem):
    status = 406
    type_suffix = "not-acceptable"
    title = "No representation in the media type asked for"


DOCUMENT_TYPES = {"application/pdf": "pdf", "application/xml": "xml", "text/xml": "xml"}
DOCUMENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/pdf": {}, "application/xml": {}},
        "description": "The invoice's document, as an attachment",
    },
    404: PROBLEM,
    409: {**PROBLEM, "description": "The invoice has no document in this e-invoice format"},
}
INVOICE_NOT_FOUND = "There is no invoice with this id among the accounts you may see."


def wanted_representation(accept: str | None) -> Literal["json", "pdf", "xml"]:
    """What `Accept` prefers of JSON, PDF and XML (by q-value, then order); JSON when it names
    none of them, as before documents existed."""
    best: tuple[float, int, Literal["json", "pdf", "xml"]] = (0.0, 0, "json")
    for position, part in enumerate((accept or "").split(",")):
        media_type, *parameters = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        kind = DOCUMENT_TYPES.get(media_type.lower())
        if media_type.lower() in ("application/json", "application/*", "*/*"):
            kind = "json"
        if kind is not None and quality > 0 and (quality, -position) > (best[0], best[1]):
            best = (quality, -position, kind)  # type: ignore[assignment]
    return best[2]


def document_response(rendered: Rendered) -> Response:
    return Response(
        rendered.content,
        media_type=rendered.media_type,
        headers={"Content-Disposition": rendered.disposition},
    )


def invoice_query(*where: ColumnElement[bool]) -> Any:
    """Invoices with their company's name; `where` must carry the grants (Access.rows)."""
    return select(Invoice, Customer.name).join(Customer, Customer.cvr == Invoice.cvr).where(*where)


def invoice_out(invoice: Invoice, company_name: str) -> InvoiceOut:
    return InvoiceOut(
        id=invoice.id,
        number=invoice.number,
        cvr=invoice.cvr,
        company_name=company_name,
        account_number=invoice.account_number,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        issued_on=invoice.issued_on,
        due_on=invoice.due_on,
        amount_excl_vat_ore=invoice.amount_excl_vat_ore,
        vat_ore=invoice.vat_ore,
        amount_incl_vat_ore=invoice.amount_incl_vat_ore,
        currency=invoice.currency,
        language=invoice.language,  # type: ignore[arg-type]
        documents=document_formats(invoice),
    )


async def granted_document(db: Database, access: Access, invoice_id: str) -> InvoiceDocument:
    """The invoice's document data, within the caller's grants; 404 as for a missing id."""
    access.require("invoices")
    async with db.reading() as session:
        document = await load_document(session, invoice_id, access.rows(Invoice.cvr, Invoice.account_number))
    if document is None:
        raise NotFound(INVOICE_NOT_FOUND)
    return document


@router.get(
    "/v1/invoices", summary="Invoices of the companies and accounts you may see, newest first (S8, S14)"
)
async def list_invoices(
    access: Caller,
    db: DbDep,
    cvr: Annotated[CvrNumber | None, Query(max_length=16, description="Only this company")] = None,
    account: AccountFilter = None,
    period_from: Annotated[
        IsoDate | None, Query(alias="from", description="Periods starting on or after")
    ] = None,
    period_to: Annotated[
        IsoDate | None, Query(alias="to", description="Periods starting on or before")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> InvoicePage:
    access.require("invoices")
    check_period(period_from, period_to)
    query = invoice_query(
        *access.narrowed(Invoice.cvr, Invoice.account_number, cvr=cvr, accounts=account or [])
    )
    if period_from is not None:
        query = query.where(Invoice.period_start >= month_start(period_from))
    if period_to is not None:
        query = query.where(Invoice.period_start <= period_to)
    after = decode_cursor(cursor, str) if cursor is not None else None
    query = newest_first(query, Invoice.issued_on, Invoice.id, after=after, limit=limit + 1)
    async with db.reading() as session:
        rows = (await session.execute(query)).all()
    page, next_cursor = cut(rows, limit, lambda row: (row[0].issued_on, row[0].id))
    return InvoicePage(items=[invoice_out(invoice, name) for invoice, name in page], next_cursor=next_cursor)


@router.get(
    "/v1/invoices/{invoice_id}",
    summary="One invoice with its lines; `Accept: application/pdf` or `application/xml` "
    "answers its document (S8, S10)",
    responses={
        **DOCUMENT_RESPONSES,
        200: {"content": {"application/json": {}, "application/pdf": {}, "application/xml": {}}},
        406: {**PROBLEM, "description": "XML asked for, but the account receives no e-invoices"},
    },
)
async def get_invoice(
    access: Caller,
    db: DbDep,
    renders: UserRendersDep,
    invoice_id: Id,
    accept: Annotated[str | None, Header(max_length=1000)] = None,
) -> InvoiceDetail:
    wanted = wanted_representation(accept)
    if wanted != "json":
        return await _invoice_document(db, access, invoice_id, wanted, renders)  # type: ignore[return-value]
    access.require("invoices")
    async with db.reading() as session:
        query = invoice_query(Invoice.id == invoice_id, access.rows(Invoice.cvr, Invoice.account_number))
        row = (await session.execute(query)).first()
        if row is None:
            raise NotFound(INVOICE_NOT_FOUND)
        lines = await session.scalars(
            select(InvoiceLine).where(InvoiceLine.invoice_id == invoice_id).order_by(InvoiceLine.id)
        )
        invoice, name = row
        return InvoiceDetail(
            **invoice_out(invoice, name).model_dump(),
            lines=[
                InvoiceLineOut(
                    subscription_id=line.subscription_id,
                    identifier=line.identifier,
                    category=line.category,
                    description=line.description,
                    quantity=line.quantity,
                    unit=line.unit,
                    amount_ore=line.amount_ore,
                )
                for line in lines
            ],
        )


async def _invoice_document(
    db: Database,
    access: Access,
    invoice_id: str,
    wanted: Literal["pdf", "xml"],
    renders: anyio.CapacityLimiter,
) -> Response:
    """The document `Accept` asked for: the PDF, or the e-invoice of the account's format."""
    document = await granted_document(db, access, invoice_id)
    if wanted == "pdf":
        return document_response(await render_beside_the_loop(document, "pdf", renders))
    if document.e_invoice_format is None:
        raise NotAcceptable(
            f"Invoice {document.number} was issued to an account that receives no e-invoice "
            f"(its format was {document.delivery_format}). Ask for Accept: application/pdf, or "
            f"use /v1/invoices/{invoice_id}/document?format=pdf."
        )
    return document_response(await render_beside_the_loop(document, document.e_invoice_format, renders))


@router.get(
    "/v1/invoices/{invoice_id}/document",
    summary="The invoice's document as issued: PDF, OIOUBL 2.1 or Peppol BIS Billing 3.0 (S8, S10)",
    response_class=Response,
    responses=DOCUMENT_RESPONSES,
)
async def get_invoice_document(
    access: Caller,
    db: DbDep,
    renders: UserRendersDep,
    invoice_id: Id,
    format: Annotated[
        DocumentFormat,
        Query(description="pdf, or oioubl/peppol for an invoice issued to that e-invoice format"),
    ] = "pdf",
) -> Response:
    document = await granted_document(db, access, invoice_id)
    return document_response(await render_beside_the_loop(document, format, renders))
