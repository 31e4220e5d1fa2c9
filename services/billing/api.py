"""Billing's HTTP API: invoices and usage (S8), subscriptions and orders (S9), master data and
invoice format (S10), telephony and Personligt Nummer settings (S11), for the companies and
accounts the caller's token grants (S5.4–S5.6, S14).

Every query carries the caller's grants in its WHERE clause. An id outside them answers 404,
exactly as an id that does not exist, so nothing tells a user what they may not see.
"""

# Routes close over local dependencies, so annotations are evaluated eagerly (no __future__ import).
import base64
import csv
import hmac
import io
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal, TypeVar

import anyio
import httpx
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from sqlalchemy import ColumnElement, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from services.billing.access import Access, bearer_access, revocation_check
from services.billing.catalogue import BY_CODE, PRODUCTS, upgrades_from
from services.billing.changes import Changes, InvoiceFormat, MasterDataChange, etag, format_of
from services.billing.config import BillingSettings
from services.billing.documents import (
    DocumentFormat,
    InvoiceDocument,
    Rendered,
    document_formats,
    load_document,
    render_beside_the_loop,
    unprintable,
)
from services.billing.invoicing import month_start
from services.billing.models import (
    Account,
    Customer,
    Invoice,
    InvoiceLine,
    Order,
    Subscription,
    UsageRecord,
    messaging,
)
from services.billing.ordering import Ordering, Placed
from services.billing.telephony import effective_settings
from shared.clock import Clock, as_utc
from shared.db import Database
from shared.messaging import Outbox
from shared.problems import MEDIA_TYPE, Forbidden, InvalidField, NotFound, Problem, Unauthenticated
from shared.ratelimit import client_address
from shared.validation import CvrNumber, DanishPhone, EmailAddress, Gln, normalise_cvr, normalise_gln
from shared.web import create_app

PROBLEM = {"content": {MEDIA_TYPE: {}}, "description": "problem+json"}
T = TypeVar("T")
Id = Annotated[str, Path(max_length=36)]
AccountNumber = Annotated[str, Path(pattern=r"^\d{6,12}$")]


def _iso_date(value: Any) -> Any:
    """Dates are written YYYY-MM-DD; a bare number is not taken for a Unix time."""
    if isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("a date is written YYYY-MM-DD, e.g. 2026-01-31")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date)]
AccountFilter = Annotated[
    list[Annotated[str, Field(pattern=r"^\d{6,12}$")]] | None,
    Query(max_length=200, description="Only these account numbers (repeatable)"),
]
CsvRows = 1_000  # rows fetched per query while streaming a CSV export


# --- cursors ----------------------------------------------------------------------------------


def encode_cursor(day: date | datetime, row_id: str | int) -> str:
    return base64.urlsafe_b64encode(json.dumps([day.isoformat(), row_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, id_type: type, key_type: type[date] = date) -> tuple[Any, Any]:
    """The (date or time, id) of the last row of a page, as `encode_cursor` gave it out."""
    key: Any = None
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        key, row_id = key_type.fromisoformat(raw[0]), raw[1]
    except (ValueError, TypeError, IndexError, KeyError, AttributeError):
        row_id = None
    if isinstance(key, datetime):
        key = key.astimezone(UTC) if key.tzinfo else None
    valid = key is not None and (
        isinstance(row_id, str)
        and id_type is str
        and len(row_id) <= 36
        or type(row_id) is int
        and id_type is int
        and 0 < row_id < 2**63
    )
    if not valid:
        raise InvalidField("cursor", "is not a cursor this API gave out; start again without one")
    return key, row_id


def newest_first(
    query: Any, key_column: Any, id_column: Any, *, after: tuple[Any, Any] | None, limit: int
) -> Any:
    """`query` ordered newest first (by `key_column`, ties by id), from after the last row of
    the previous page, `limit` rows. The cursor is part of the index search (keyset paging)."""
    if after is not None:
        query = query.where(tuple_(key_column, id_column) < tuple_(*after))
    return query.order_by(key_column.desc(), id_column.desc()).limit(limit)


def cut(rows: Sequence[T], limit: int, key: Callable[[T], tuple[Any, Any]]) -> tuple[list[T], str | None]:
    """A page of `rows` (fetched one longer than `limit`) and the cursor to the next, if any."""
    page = list(rows[:limit])
    return page, encode_cursor(*key(page[-1])) if len(rows) > limit else None


def _kroner(ore: int) -> str:
    sign = "-" if ore < 0 else ""
    return f"{sign}{abs(ore) // 100}.{abs(ore) % 100:02d}"


def check_period(start: date | None, end: date | None) -> None:
    if start is not None and end is not None and start > end:
        raise InvalidField("from", "must not be after 'to'")


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


# --- response models --------------------------------------------------------------------------


class Page(BaseModel):
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class InvoiceOut(BaseModel):
    id: str
    number: str
    cvr: str
    company_name: str
    account_number: str
    period_start: date
    period_end: date
    issued_on: date
    due_on: date
    amount_excl_vat_ore: int
    vat_ore: int
    amount_incl_vat_ore: int
    currency: str
    language: Literal["da", "en"] = Field(description="The language of its documents")
    documents: list[DocumentFormat] = Field(
        description="The formats of GET /v1/invoices/{id}/document?format= this invoice has: pdf, and "
        "oioubl or peppol when it was issued to that e-invoice format"
    )


class InvoiceLineOut(BaseModel):
    subscription_id: str | None
    identifier: str
    category: str
    description: str
    quantity: int
    unit: str
    amount_ore: int


class InvoiceDetail(InvoiceOut):
    lines: list[InvoiceLineOut]


class InvoicePage(Page):
    items: list[InvoiceOut]


class UsageOut(BaseModel):
    id: int
    period: date = Field(description="The first day of the month")
    cvr: str
    account_number: str
    subscription_id: str
    identifier: str
    category: str
    quantity: int
    unit: str
    amount_ore: int


class UsagePage(Page):
    items: list[UsageOut]


class UsageSumOut(BaseModel):
    period: date = Field(description="The first day of the month")
    category: str
    unit: str
    quantity: int = Field(description="The sum of the month's rows of this category")
    amount_ore: int = Field(description="The sum of the month's rows of this category")


class UsageSummary(BaseModel):
    items: list[UsageSumOut] = Field(description="Oldest month first, then by category and unit")


class InvoiceAddressOut(BaseModel):
    """Where the account's invoices go: only the chosen format's fields are set."""

    email: str | None = None
    gln: str | None = None
    scheme: str | None = None
    endpoint_id: str | None = None


class AccountOut(BaseModel):
    account_number: str
    name: str
    cvr: str
    company_name: str
    invoice_format: Literal["pdf_email", "oioubl", "peppol", "paper"]
    invoice_address: InvoiceAddressOut | None = Field(
        description="Only with the `master_data` function (an invoice email names a person or a "
        "mailbox of the company); null otherwise"
    )


class AccountPage(Page):
    items: list[AccountOut]


class ProductOut(BaseModel):
    code: str
    name: str
    kind: str
    monthly_fee_ore: int
    description: str
    orderable: bool
    upgrades_to: list[str]


class SubscriptionOut(BaseModel):
    id: str
    cvr: str
    account_number: str
    identifier: str
    product: ProductOut
    status: str
    created_at: datetime
    activated_at: datetime | None


class SubscriptionPage(Page):
    items: list[SubscriptionOut]


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    account_number: str = Field(pattern=r"^\d{6,12}$", description="One of the accounts you may use")
    product_code: str = Field(max_length=40, description="A product of GET /v1/products")
    options: dict[str, str | None] = Field(
        default_factory=dict, max_length=5, description="Product options, e.g. port_number, sim"
    )


class UpgradeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    product_code: str = Field(max_length=40, description="One of the subscription's `upgrades_to`")


class OrderOut(BaseModel):
    id: str
    kind: Literal["new", "upgrade"]
    status: Literal["received", "completed"]
    cvr: str
    account_number: str
    subscription_id: str
    product_code: str
    from_product_code: str | None
    options: dict[str, Any]
    created_at: datetime
    completed_at: datetime | None


class OrderPage(Page):
    items: list[OrderOut]


class MasterDataOut(BaseModel):
    cvr: str
    name: str
    parent_cvr: str | None
    street: str
    postal_code: str
    city: str
    contact_name: str
    contact_email: str
    contact_phone: str
    language: Literal["da", "en"] = Field(description="The language of the company's invoices")
    version: int
    changed_at: datetime | None


class MasterDataPatch(BaseModel):
    """Change any of these; absent fields stay as they are."""

    model_config = ConfigDict(extra="forbid")
    street: str | None = Field(default=None, min_length=2, max_length=200)
    postal_code: str | None = Field(default=None, pattern=r"^[0-9]{4}$", description="Danish postal code")
    city: str | None = Field(default=None, min_length=2, max_length=100)
    contact_name: str | None = Field(default=None, min_length=1, max_length=200)
    contact_email: EmailAddress | None = Field(default=None, max_length=320)
    contact_phone: DanishPhone | None = Field(default=None, max_length=20)
    language: Literal["da", "en"] | None = Field(
        default=None, description="The language of the company's invoices, from the next invoice on"
    )

    @field_validator("street", "city")
    @classmethod
    def _printable_on_invoices(cls, value: str | None) -> str | None:
        # Street and city are printed on every invoice and sent in its e-invoice (S10): a
        # control character would make the e-invoice impossible to render, a format character
        # (U+202E) would show the reader other text than was stored, and a character outside
        # the invoice font would print as a gap.
        character = unprintable(value) if value is not None else None
        if character is not None:
            raise ValueError(
                f"the character {character!r} (U+{ord(character):04X}) cannot be printed on the "
                "company's invoices; use letters, digits and punctuation of Latin script"
            )
        return value


class PdfByEmail(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["pdf_email"]
    email: EmailAddress = Field(max_length=320, description="Where the PDF invoices go")


class Oioubl(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["oioubl"]
    gln: Gln = Field(max_length=20, description="GLN/EAN location number, 13 digits (NemHandel)")


PEPPOL_SCHEMES = {"0088": "GLN/EAN", "0184": "Danish CVR number", "0198": "Danish SE number"}


class Peppol(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["peppol"]
    scheme: Literal["0088", "0184", "0198"] = Field(
        description="Peppol endpoint scheme: " + str(PEPPOL_SCHEMES)
    )
    endpoint_id: str = Field(min_length=1, max_length=50, description="The endpoint id in that scheme")


class Paper(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["paper"]


InvoiceFormatIn = Annotated[PdfByEmail | Oioubl | Peppol | Paper, Field(discriminator="format")]


class InvoiceFormatOut(BaseModel):
    account_number: str
    cvr: str
    format: str
    email: str | None = None
    gln: str | None = None
    scheme: str | None = None
    endpoint_id: str | None = None
    version: int
    changed_at: datetime | None


class SettingsOut(BaseModel):
    subscription_id: str
    identifier: str
    product_kind: str
    settings: dict[str, Any]
    version: int


def peppol_endpoint(scheme: str, endpoint_id: str) -> str:
    """A Peppol endpoint id checked by its scheme's own rules (S10)."""
    value = endpoint_id.strip()
    try:
        if scheme == "0088":
            return normalise_gln(value)
        if scheme == "0184":
            return normalise_cvr(value.removeprefix("DK"))
        if scheme == "0198":  # an SE number: 8 digits, optionally after "DK"
            digits = value.removeprefix("DK")
            if len(digits) == 8 and digits.isdigit():
                return digits
            raise ValueError("a Danish SE number has exactly 8 digits")
    except ValueError as exc:
        raise InvalidField("endpoint_id", f"{exc} (scheme {scheme}: {PEPPOL_SCHEMES[scheme]})") from None
    raise InvalidField("scheme", f"must be one of {sorted(PEPPOL_SCHEMES)}")


Versioned = TypeVar("Versioned", MasterDataOut, InvoiceFormatOut, SettingsOut)


def tagged(response: Response, out: Versioned) -> Versioned:
    """The representation, with its version as the strong ETag a change must send back."""
    response.headers["ETag"] = etag(out.version)
    return out


def _product(code: str) -> ProductOut:
    p = BY_CODE[code]
    return ProductOut(
        code=p.code,
        name=p.name,
        kind=p.kind,
        monthly_fee_ore=p.monthly_fee_ore,
        description=p.description,
        orderable=p.orderable,
        upgrades_to=upgrades_from(p.code),
    )


def _subscription(s: Subscription) -> SubscriptionOut:
    return SubscriptionOut(
        id=s.id,
        cvr=s.cvr,
        account_number=s.account_number,
        identifier=s.identifier,
        product=_product(s.product_code),
        status=s.status,
        created_at=as_utc(s.created_at),
        activated_at=as_utc(s.activated_at) if s.activated_at else None,
    )


def _order(o: Order) -> OrderOut:
    return OrderOut(
        id=o.id,
        kind=o.kind,  # type: ignore[arg-type]
        status=o.status,  # type: ignore[arg-type]
        cvr=o.cvr,
        account_number=o.account_number,
        subscription_id=o.subscription_id,
        product_code=o.product_code,
        from_product_code=o.from_product_code,
        options=json.loads(o.options),
        created_at=as_utc(o.created_at),
        completed_at=as_utc(o.completed_at) if o.completed_at else None,
    )


def _master_data(c: Customer) -> MasterDataOut:
    return MasterDataOut(
        cvr=c.cvr,
        name=c.name,
        parent_cvr=c.parent_cvr,
        street=c.street,
        postal_code=c.postal_code,
        city=c.city,
        contact_name=c.contact_name,
        contact_email=c.contact_email,
        contact_phone=c.contact_phone,
        language=c.language,  # type: ignore[arg-type]
        version=c.master_data_version,
        changed_at=as_utc(c.master_data_changed_at) if c.master_data_changed_at else None,
    )


def _invoice_format(a: Any) -> InvoiceFormatOut:
    return InvoiceFormatOut(
        account_number=a.account_number,
        cvr=a.cvr,
        **format_of(a),
        version=a.invoice_format_version,
        changed_at=as_utc(a.invoice_format_changed_at) if a.invoice_format_changed_at else None,
    )


def _settings(s: Subscription) -> SettingsOut:
    kind = BY_CODE[s.product_code].kind
    return SettingsOut(
        subscription_id=s.id,
        identifier=s.identifier,
        product_kind=kind,
        settings=effective_settings(kind, json.loads(s.settings)),
        version=s.settings_version,
    )


def usage_sums(where: Sequence[ColumnElement[bool]]) -> Any:
    """(period, category, unit, quantity, øre) of the usage rows `where` keeps (which must carry
    the grants), summed per month, category and unit, oldest month first."""
    return (
        select(
            UsageRecord.period,
            UsageRecord.category,
            UsageRecord.unit,
            func.sum(UsageRecord.quantity),
            func.sum(UsageRecord.amount_ore),
        )
        .where(*where)
        .group_by(UsageRecord.period, UsageRecord.category, UsageRecord.unit)
        .order_by(UsageRecord.period, UsageRecord.category, UsageRecord.unit)
    )


# --- routers ----------------------------------------------------------------------------------


def reading_router(
    db: Database, current_access: Callable[..., Awaitable[Access]], renders: anyio.CapacityLimiter
) -> APIRouter:
    router = APIRouter(responses={401: PROBLEM, 403: PROBLEM, 422: PROBLEM})
    Caller = Annotated[Access, Depends(current_access)]

    @router.get("/v1/products", tags=["catalogue"], summary="The product catalogue and its upgrade paths")
    async def products(_: Caller) -> list[ProductOut]:
        return [_product(p.code) for p in PRODUCTS]

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

    @router.get(
        "/v1/invoices",
        tags=["invoices and usage"],
        summary="Invoices of the companies and accounts you may see, newest first (S8, S14)",
    )
    async def list_invoices(
        access: Caller,
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
        return InvoicePage(
            items=[invoice_out(invoice, name) for invoice, name in page], next_cursor=next_cursor
        )

    async def granted_document(access: Access, invoice_id: str) -> InvoiceDocument:
        """The invoice's document data, within the caller's grants; 404 as for a missing id."""
        access.require("invoices")
        async with db.reading() as session:
            document = await load_document(
                session, invoice_id, access.rows(Invoice.cvr, Invoice.account_number)
            )
        if document is None:
            raise NotFound(INVOICE_NOT_FOUND)
        return document

    @router.get(
        "/v1/invoices/{invoice_id}",
        tags=["invoices and usage"],
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
        invoice_id: Id,
        accept: Annotated[str | None, Header(max_length=1000)] = None,
    ) -> InvoiceDetail:
        wanted = wanted_representation(accept)
        if wanted != "json":
            document = await granted_document(access, invoice_id)
            if wanted == "pdf":
                return document_response(await render_beside_the_loop(document, "pdf", renders))  # type: ignore[return-value]
            if document.e_invoice_format is None:
                raise NotAcceptable(
                    f"Invoice {document.number} was issued to an account that receives no e-invoice "
                    f"(its format was {document.delivery_format}). Ask for Accept: application/pdf, or "
                    f"use /v1/invoices/{invoice_id}/document?format=pdf."
                )
            return document_response(  # type: ignore[return-value]
                await render_beside_the_loop(document, document.e_invoice_format, renders)
            )
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

    @router.get(
        "/v1/invoices/{invoice_id}/document",
        tags=["invoices and usage"],
        summary="The invoice's document as issued: PDF, OIOUBL 2.1 or Peppol BIS Billing 3.0 (S8, S10)",
        response_class=Response,
        responses=DOCUMENT_RESPONSES,
    )
    async def get_invoice_document(
        access: Caller,
        invoice_id: Id,
        format: Annotated[
            DocumentFormat,
            Query(description="pdf, or oioubl/peppol for an invoice issued to that e-invoice format"),
        ] = "pdf",
    ) -> Response:
        document = await granted_document(access, invoice_id)
        return document_response(await render_beside_the_loop(document, format, renders))

    def usage_where(
        access: Access,
        cvr: str | None,
        account: list[str] | None,
        subscription: str | None,
        period_from: date | None,
        period_to: date | None,
    ) -> list[ColumnElement[bool]]:
        check_period(period_from, period_to)
        where = access.narrowed(UsageRecord.cvr, UsageRecord.account_number, cvr=cvr, accounts=account or [])
        if subscription is not None:
            where.append(UsageRecord.subscription_id == subscription)
        if period_from is not None:
            where.append(UsageRecord.period >= month_start(period_from))
        if period_to is not None:
            where.append(UsageRecord.period <= period_to)
        return where

    def usage_out(r: UsageRecord) -> UsageOut:
        return UsageOut(
            id=r.id,
            period=r.period,
            cvr=r.cvr,
            account_number=r.account_number,
            subscription_id=r.subscription_id,
            identifier=r.identifier,
            category=r.category,
            quantity=r.quantity,
            unit=r.unit,
            amount_ore=r.amount_ore,
        )

    async def usage_rows(
        session: AsyncSession, where: list[ColumnElement[bool]], cursor: tuple[date, int] | None, limit: int
    ) -> list[UsageRecord]:
        query = newest_first(
            select(UsageRecord).where(*where), UsageRecord.period, UsageRecord.id, after=cursor, limit=limit
        )
        return list(await session.scalars(query))

    @router.get(
        "/v1/usage",
        tags=["invoices and usage"],
        summary="Usage (forbrug) per subscription, category and month, newest first; `format=csv` exports it",
        response_model=UsagePage,
        responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
    )
    async def list_usage(
        access: Caller,
        cvr: Annotated[CvrNumber | None, Query(max_length=16)] = None,
        account: AccountFilter = None,
        subscription: Annotated[
            str | None, Query(max_length=36, description="Only this subscription id")
        ] = None,
        period_from: Annotated[
            IsoDate | None, Query(alias="from", description="Months from this date's month")
        ] = None,
        period_to: Annotated[
            IsoDate | None, Query(alias="to", description="Months starting on or before")
        ] = None,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        format: Annotated[
            Literal["json", "csv"], Query(description="csv: every matching row, no paging")
        ] = "json",
    ) -> Any:
        access.require("invoices")
        where = usage_where(access, cvr, account, subscription, period_from, period_to)
        if format == "csv":
            return StreamingResponse(
                usage_csv(where),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": 'attachment; filename="usage.csv"'},
            )
        after = decode_cursor(cursor, int) if cursor is not None else None
        async with db.reading() as session:
            rows = await usage_rows(session, where, after, limit + 1)
        page, next_cursor = cut(rows, limit, lambda r: (r.period, r.id))
        return UsagePage(items=[usage_out(r) for r in page], next_cursor=next_cursor)

    @router.get(
        "/v1/usage/summary",
        tags=["invoices and usage"],
        summary="Usage (forbrug) summed per month, category and unit, oldest month first (S8, S14)",
    )
    async def usage_summary(
        access: Caller,
        cvr: Annotated[CvrNumber | None, Query(max_length=16)] = None,
        account: AccountFilter = None,
        period_from: Annotated[
            IsoDate | None, Query(alias="from", description="Months from this date's month")
        ] = None,
        period_to: Annotated[
            IsoDate | None, Query(alias="to", description="Months starting on or before")
        ] = None,
    ) -> UsageSummary:
        """The sums of exactly the rows `GET /v1/usage` lists for the same filters: one GROUP BY
        over the usage index of the company (or the accounts) the grants name."""
        access.require("invoices")
        where = usage_where(access, cvr, account, None, period_from, period_to)
        async with db.reading() as session:
            rows = (await session.execute(usage_sums(where))).all()
        # PostgreSQL sums bigint as numeric: back to whole units and øre.
        return UsageSummary(
            items=[
                UsageSumOut(period=p, category=c, unit=u, quantity=int(q), amount_ore=int(a))
                for p, c, u, q, a in rows
            ]
        )

    async def usage_csv(where: list[ColumnElement[bool]]) -> AsyncIterator[str]:
        header = [
            "period",
            "cvr",
            "account_number",
            "subscription_id",
            "identifier",
            "category",
            "quantity",
            "unit",
            "amount_ore",
            "amount_dkk",
        ]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        after: tuple[date, int] | None = None
        while True:
            async with db.reading() as session:
                rows = await usage_rows(session, where, after, CsvRows)
            for r in rows:
                writer.writerow(
                    [
                        r.period.strftime("%Y-%m"),
                        r.cvr,
                        r.account_number,
                        r.subscription_id,
                        r.identifier,
                        r.category,
                        r.quantity,
                        r.unit,
                        r.amount_ore,
                        _kroner(r.amount_ore),
                    ]
                )
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            if len(rows) < CsvRows:
                return
            after = (rows[-1].period, rows[-1].id)

    @router.get(
        "/v1/accounts",
        tags=["subscriptions and orders"],
        summary="The accounts you may use, with their company and invoice format (S9, S10, S14)",
    )
    async def list_accounts(
        access: Caller,
        cvr: Annotated[CvrNumber | None, Query(max_length=16, description="Only this company")] = None,
        cursor: Annotated[
            str | None,
            Query(pattern=r"^\d{6,12}$", description="The last account number of the previous page"),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> AccountPage:
        """By account number. Every function of billing needs to know the accounts, so any of
        them lists them; the invoice address only with `master_data`, which may read and change
        it anyway."""
        access.require("orders", "master_data", "telephony", "invoices")
        query = (
            select(Account, Customer.name)
            .join(Customer, Customer.cvr == Account.cvr)
            .where(*access.narrowed(Account.cvr, Account.account_number, cvr=cvr))
        )
        if cursor is not None:
            query = query.where(Account.account_number > cursor)
        query = query.order_by(Account.account_number).limit(limit + 1)
        async with db.reading() as session:
            rows = (await session.execute(query)).all()
        addresses = "master_data" in access.functions
        items = [
            AccountOut(
                account_number=a.account_number,
                name=a.name,
                cvr=a.cvr,
                company_name=company_name,
                invoice_format=a.invoice_format,
                invoice_address=InvoiceAddressOut(
                    **{k: v for k, v in format_of(a).items() if k != "format"}
                )
                if addresses
                else None,
            )
            for a, company_name in rows[:limit]
        ]
        return AccountPage(items=items, next_cursor=items[-1].account_number if len(rows) > limit else None)

    @router.get(
        "/v1/subscriptions",
        tags=["subscriptions and orders"],
        summary="Subscriptions on the accounts you may use (S9, S11)",
    )
    async def list_subscriptions(
        access: Caller,
        cvr: Annotated[CvrNumber | None, Query(max_length=16)] = None,
        account: AccountFilter = None,
        cursor: Annotated[
            str | None, Query(max_length=100, description="The last id of the previous page")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> SubscriptionPage:
        access.require("orders", "telephony", "invoices")
        query = select(Subscription).where(
            *access.narrowed(Subscription.cvr, Subscription.account_number, cvr=cvr, accounts=account or [])
        )
        if cursor is not None:
            query = query.where(Subscription.id > cursor)
        query = query.order_by(Subscription.id).limit(limit + 1)
        async with db.reading() as session:
            rows = list(await session.scalars(query))
        items = [_subscription(s) for s in rows[:limit]]
        return SubscriptionPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)

    @router.get(
        "/v1/subscriptions/{subscription_id}",
        tags=["subscriptions and orders"],
        summary="One subscription",
        responses={404: PROBLEM},
    )
    async def get_subscription(access: Caller, subscription_id: Id) -> SubscriptionOut:
        access.require("orders", "telephony", "invoices")
        async with db.reading() as session:
            s = await session.scalar(
                select(Subscription).where(
                    Subscription.id == subscription_id,
                    access.rows(Subscription.cvr, Subscription.account_number),
                )
            )
        if s is None:
            raise NotFound("There is no subscription with this id among the accounts you may use.")
        return _subscription(s)

    @router.get(
        "/v1/orders",
        tags=["subscriptions and orders"],
        summary="Orders and upgrades on the accounts you may use, newest first (S9)",
    )
    async def list_orders(
        access: Caller,
        cvr: Annotated[CvrNumber | None, Query(max_length=16)] = None,
        account: AccountFilter = None,
        status: Annotated[Literal["received", "completed"] | None, Query()] = None,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> OrderPage:
        access.require("orders")
        query = select(Order).where(
            *access.narrowed(Order.cvr, Order.account_number, cvr=cvr, accounts=account or [])
        )
        if status is not None:
            query = query.where(Order.status == status)
        after = decode_cursor(cursor, str, datetime) if cursor is not None else None
        query = newest_first(query, Order.created_at, Order.id, after=after, limit=limit + 1)
        async with db.reading() as session:
            rows = list(await session.scalars(query))
        page, next_cursor = cut(rows, limit, lambda o: (as_utc(o.created_at), o.id))
        return OrderPage(items=[_order(o) for o in page], next_cursor=next_cursor)

    @router.get(
        "/v1/orders/{order_id}",
        tags=["subscriptions and orders"],
        summary="One order and its status",
        responses={404: PROBLEM},
    )
    async def get_order(access: Caller, order_id: Id) -> OrderOut:
        access.require("orders")
        async with db.reading() as session:
            o = await session.scalar(
                select(Order).where(Order.id == order_id, access.rows(Order.cvr, Order.account_number))
            )
        if o is None:
            raise NotFound("There is no order with this id among the accounts you may use.")
        return _order(o)

    return router


def writing_router(
    db: Database,
    current_access: Callable[..., Awaitable[Access]],
    ordering: Ordering,
    changes: Changes,
) -> APIRouter:
    router = APIRouter(responses={401: PROBLEM, 403: PROBLEM, 404: PROBLEM, 422: PROBLEM})
    Caller = Annotated[Access, Depends(current_access)]
    IdempotencyKey = Annotated[
        str,
        Header(
            alias="Idempotency-Key",
            min_length=8,
            max_length=100,
            pattern=r"^[\x21-\x7e]+$",
            description="Unique per order (e.g. a UUID): a retried request with the same key creates no second order",
        ),
    ]
    IfMatch = Annotated[
        str | None, Header(alias="If-Match", max_length=200, description="The ETag you read (required)")
    ]

    def placed(result: Placed, response: Response) -> OrderOut:
        response.status_code = 200 if result.replayed else 201
        if result.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        response.headers["Location"] = f"/v1/orders/{result.order.id}"
        return _order(result.order)

    @router.post(
        "/v1/orders",
        tags=["subscriptions and orders"],
        status_code=201,
        summary="Order a new subscription on one of your accounts (S9)",
        responses={200: {"description": "A retry with the same Idempotency-Key: the first order"}},
    )
    async def place_order(
        access: Caller, body: OrderIn, key: IdempotencyKey, request: Request, response: Response
    ) -> OrderOut:
        result = await ordering.order(
            access,
            key=key,
            account_number=body.account_number,
            product_code=body.product_code,
            options={k: v for k, v in body.options.items() if v is not None},
            client=client_address(request),
        )
        return placed(result, response)

    @router.post(
        "/v1/subscriptions/{subscription_id}/upgrade",
        tags=["subscriptions and orders"],
        status_code=201,
        summary="Upgrade a subscription along an allowed path (S9)",
        responses={200: {"description": "A retry with the same Idempotency-Key"}, 409: PROBLEM},
    )
    async def upgrade(
        access: Caller,
        subscription_id: Id,
        body: UpgradeIn,
        key: IdempotencyKey,
        request: Request,
        response: Response,
    ) -> OrderOut:
        result = await ordering.upgrade(
            access,
            key=key,
            subscription_id=subscription_id,
            product_code=body.product_code,
            client=client_address(request),
        )
        return placed(result, response)

    @router.get(
        "/v1/companies/{cvr}/master-data",
        tags=["master data and invoice format"],
        summary="A company's master data (stamdata, S10), with its ETag",
    )
    async def get_master_data(
        access: Caller, cvr: Annotated[str, Path(pattern=r"^\d{8}$")], response: Response
    ) -> MasterDataOut:
        async with db.reading() as session:
            customer = await changes.company(session, access, cvr)
        return tagged(response, _master_data(customer))

    @router.patch(
        "/v1/companies/{cvr}/master-data",
        tags=["master data and invoice format"],
        summary="Change master data (S10); If-Match with the ETag you read is required",
        responses={412: PROBLEM, 428: PROBLEM},
    )
    async def patch_master_data(
        access: Caller,
        cvr: Annotated[str, Path(pattern=r"^\d{8}$")],
        body: MasterDataPatch,
        request: Request,
        response: Response,
        if_match: IfMatch = None,
    ) -> MasterDataOut:
        async with db.transaction() as session:
            customer = await changes.change_master_data(
                session,
                access,
                cvr,
                MasterDataChange(**body.model_dump(exclude_none=True)),
                if_match=if_match,
                client=client_address(request),
            )
        return tagged(response, _master_data(customer))

    @router.get(
        "/v1/accounts/{account_number}/invoice-format",
        tags=["master data and invoice format"],
        summary="How the account's invoices are sent (S10), with its ETag",
    )
    async def get_invoice_format(
        access: Caller, account_number: AccountNumber, response: Response
    ) -> InvoiceFormatOut:
        async with db.reading() as session:
            account = await changes.account(session, access, account_number)
        return tagged(response, _invoice_format(account))

    @router.put(
        "/v1/accounts/{account_number}/invoice-format",
        tags=["master data and invoice format"],
        summary="Set the invoice format: PDF by email, OIOUBL to a GLN/EAN, Peppol, or paper (S10)",
        responses={412: PROBLEM, 428: PROBLEM},
    )
    async def put_invoice_format(
        access: Caller,
        account_number: AccountNumber,
        body: InvoiceFormatIn,
        request: Request,
        response: Response,
        if_match: IfMatch = None,
    ) -> InvoiceFormatOut:
        match body:
            case PdfByEmail():
                wanted = InvoiceFormat("pdf_email", email=body.email)
            case Oioubl():
                wanted = InvoiceFormat("oioubl", gln=body.gln)
            case Peppol():
                wanted = InvoiceFormat(
                    "peppol",
                    peppol_scheme=body.scheme,
                    peppol_id=peppol_endpoint(body.scheme, body.endpoint_id),
                )
            case _:
                wanted = InvoiceFormat("paper")
        async with db.transaction() as session:
            account = await changes.change_invoice_format(
                session, access, account_number, wanted, if_match=if_match, client=client_address(request)
            )
        return tagged(response, _invoice_format(account))

    @router.get(
        "/v1/subscriptions/{subscription_id}/settings",
        tags=["telephony and Personligt Nummer"],
        summary="A subscription's telephony or Personligt Nummer settings (S11), with its ETag",
    )
    async def get_settings(access: Caller, subscription_id: Id, response: Response) -> SettingsOut:
        async with db.reading() as session:
            subscription = await changes.subscription(session, access, subscription_id)
        return tagged(response, _settings(subscription))

    @router.patch(
        "/v1/subscriptions/{subscription_id}/settings",
        tags=["telephony and Personligt Nummer"],
        summary="Change settings with a JSON merge patch (S11); If-Match is required",
        responses={412: PROBLEM, 428: PROBLEM},
    )
    async def patch_settings(
        access: Caller,
        subscription_id: Id,
        body: dict[str, Any],
        request: Request,
        response: Response,
        if_match: IfMatch = None,
    ) -> SettingsOut:
        async with db.transaction() as session:
            subscription = await changes.change_settings(
                session, access, subscription_id, body, if_match=if_match, client=client_address(request)
            )
        return tagged(response, _settings(subscription))

    return router


def internal_router(db: Database, token: str | None, renders: anyio.CapacityLimiter) -> APIRouter:
    """What other services of the platform read from billing, with a bearer token of their own
    (not a user's): the notifier fetches the documents it delivers."""
    router = APIRouter(tags=["internal"], responses={401: PROBLEM, 403: PROBLEM, 404: PROBLEM})

    @router.get(
        "/internal/v1/invoices/{invoice_id}/document",
        summary="An invoice's document as issued, for the notifier's delivery (S10); "
        "Authorization: Bearer with the document reader token",
        response_class=Response,
        responses=DOCUMENT_RESPONSES,
    )
    async def read_document(
        request: Request,
        invoice_id: Id,
        format: Annotated[DocumentFormat, Query(description="pdf, oioubl or peppol")] = "pdf",
    ) -> Response:
        if token is None:
            raise NotFound(
                "internal document reading is not enabled: set ADGANG_BILLING_DOCUMENT_READER_TOKEN "
                "on billing to let the notifier read invoice documents."
            )
        if "x-forwarded-for" in request.headers or "forwarded" in request.headers:
            # Only the reverse proxy in front of the APIs adds these, and through it the internet
            # reaches billing: a reader token that leaked must not open every company's invoices
            # from there. The notifier calls billing directly (ADGANG_NOTIFIER_BILLING_URL).
            raise Forbidden(
                "Invoice documents are read on this path only inside the platform's network, not "
                "through the reverse proxy: point ADGANG_NOTIFIER_BILLING_URL at billing directly."
            )
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # Constant time, so the answer's timing does not tell how much of a guess was right.
        if not (scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())):
            raise Unauthenticated(
                "Send billing's document reader token as 'Authorization: Bearer <token>' "
                "(ADGANG_BILLING_DOCUMENT_READER_TOKEN)."
            )
        async with db.reading() as session:
            document = await load_document(session, invoice_id)
        if document is None:
            raise NotFound(f"There is no invoice {invoice_id}.")
        return document_response(await render_beside_the_loop(document, format, renders))

    return router


def create_api(
    settings: BillingSettings | None = None,
    *,
    clock: Clock | None = None,
    jwks_client: httpx.AsyncClient | None = None,
) -> FastAPI:
    settings = settings or BillingSettings()
    clock = clock or settings.clock()
    db = Database(settings.db_url)
    outbox = Outbox(messaging, clock)
    # Access tokens are identity's; billing verifies them against its JWKS (S7, S12).
    verifier = settings.token_verifier(client=jwks_client, is_revoked=revocation_check(db))
    current_access = bearer_access(verifier, clock)
    app = create_app(
        title="Adgang billing",
        description="Invoices and usage (S8), orders (S9), master data and invoice format (S10), "
        "telephony and Personligt Nummer (S11) of business customers, within the caller's grants (S14).",
        settings=settings,
        db=db,
    )
    # Users' documents and the notifier's each have their own render slots: a user asking for
    # long invoices in parallel must not hold up the delivery of every company's invoices.
    user_renders = anyio.CapacityLimiter(settings.document_render_concurrency)
    notifier_renders = anyio.CapacityLimiter(settings.document_render_concurrency)
    app.include_router(reading_router(db, current_access, user_renders))
    reader_token = settings.document_reader_token
    app.include_router(
        internal_router(db, reader_token.get_secret_value() if reader_token else None, notifier_renders)
    )
    app.include_router(
        writing_router(
            db,
            current_access,
            Ordering(db=db, outbox=outbox, clock=clock),
            Changes(outbox=outbox, clock=clock),
        )
    )
    return app
