"""Usage (forbrug, S8): the rows per subscription, category and month, their CSV export and
their monthly sums; and the accounts the caller may use (S9, S10, S14)."""

import csv
import io
from collections.abc import AsyncIterator, Sequence
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.billing.access import Access
from services.billing.changes import format_of
from services.billing.deps import Caller, DbDep
from services.billing.invoicing import month_start
from services.billing.models import Account, Customer, UsageRecord
from services.billing.paging import check_period, cut, decode_cursor, newest_first
from services.billing.schemas import (
    AccountFilter,
    AccountOut,
    AccountPage,
    InvoiceAddressOut,
    IsoDate,
    UsageOut,
    UsagePage,
    UsageSummary,
    UsageSumOut,
)
from shared.db import Database
from shared.problems import PROBLEM
from shared.validation import CvrNumber

router = APIRouter(responses={401: PROBLEM, 403: PROBLEM, 422: PROBLEM})
CsvRows = 1_000  # rows fetched per query while streaming a CSV export


def _kroner(ore: int) -> str:
    sign = "-" if ore < 0 else ""
    return f"{sign}{abs(ore) // 100}.{abs(ore) % 100:02d}"


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


async def usage_csv(db: Database, where: list[ColumnElement[bool]]) -> AsyncIterator[str]:
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
    "/v1/usage",
    tags=["invoices and usage"],
    summary="Usage (forbrug) per subscription, category and month, newest first; `format=csv` exports it",
    response_model=UsagePage,
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
)
async def list_usage(
    access: Caller,
    db: DbDep,
    cvr: Annotated[CvrNumber | None, Query(max_length=16)] = None,
    account: AccountFilter = None,
    subscription: Annotated[str | None, Query(max_length=36, description="Only this subscription id")] = None,
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
            usage_csv(db, where),
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
    db: DbDep,
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


@router.get(
    "/v1/accounts",
    tags=["subscriptions and orders"],
    summary="The accounts you may use, with their company and invoice format (S9, S10, S14)",
)
async def list_accounts(
    access: Caller,
    db: DbDep,
    cvr: Annotated[CvrNumber | None, Query(max_length=16, description="Only this company")] = None,
    cursor: Annotated[
        str | None,
        Query(pattern=r"^[0-9]{6,12}$", description="The last account number of the previous page"),
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
            invoice_format=a.invoice_format,  # type: ignore[arg-type]
            invoice_address=InvoiceAddressOut(**{k: v for k, v in format_of(a).items() if k != "format"})
            if addresses
            else None,
        )
        for a, company_name in rows[:limit]
    ]
    return AccountPage(items=items, next_cursor=items[-1].account_number if len(rows) > limit else None)
