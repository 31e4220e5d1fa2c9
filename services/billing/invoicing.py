"""Issuing the month's invoices (S8): one invoice per account, with a line per subscription's
monthly fee and a line per subscription and category of metered usage, 25 % VAT on top.

An invoice's usage lines are exactly that account's usage records of the period, so the usage
view and its CSV export agree with the invoice. Issuing is idempotent: an account already
invoiced for the period is skipped (and a unique key guards a race), so the worker's periodic
run (`InvoiceRun`) and the command can both run without issuing twice.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import exists, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.billing.catalogue import BY_CODE
from services.billing.models import (
    Account,
    Customer,
    Invoice,
    InvoiceLine,
    Order,
    Subscription,
    UsageRecord,
)
from shared.clock import Clock
from shared.db import Database, upsert_statement
from shared.events import InvoiceDelivery, InvoiceIssued
from shared.messaging import Outbox

log = logging.getLogger(__name__)

COPENHAGEN = ZoneInfo("Europe/Copenhagen")
VAT_PERCENT = 25
INVOICE_NAMESPACE = uuid.UUID("5d0c2f7e-6a1b-4d7e-9a55-3b1f0c6e2a10")
CATEGORY_TEXT = {
    "calls": "Opkald ud over abonnement",
    "sms": "SMS ud over abonnement",
    "data": "Data ud over abonnement",
}
BATCH = 5_000
CHUNK = 200  # accounts per round of queries


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(period: date) -> date:
    return (period.replace(day=28) + timedelta(days=4)).replace(day=1)


def previous_month(period: date) -> date:
    return (period.replace(day=1) - timedelta(days=1)).replace(day=1)


def period_of(text: str) -> date:
    """`YYYY-MM` into the first day of that month."""
    year, _, month = text.partition("-")
    return date(int(year), int(month), 1)


def local_today(clock: Clock) -> date:
    return clock.now().astimezone(COPENHAGEN).date()


def last_closed_period(clock: Clock) -> date:
    """The newest month that has ended (Danish time): the one the monthly run invoices."""
    return previous_month(month_start(local_today(clock)))


def vat_of(amount_ore: int) -> int:
    """25 % VAT in whole øre, rounded half up."""
    return (amount_ore * VAT_PERCENT + 50) // 100


def invoice_id_for(account_number: str, period: date) -> str:
    return str(uuid.uuid5(INVOICE_NAMESPACE, f"{account_number}:{period.isoformat()}"))


def invoice_number_for(account_number: str, period: date) -> str:
    return f"{period:%Y%m}-{account_number}"


def snapshot(account: Any) -> dict[str, Any]:
    """The invoice's columns that keep what its document says: the buyer's master data, the
    language and how the account receives invoices, as they are at issue (S8, S10). Only the
    chosen format's fields are kept, so a format changed later applies from the next invoice."""
    chosen = account.invoice_format
    return {
        "buyer_name": account.name,
        "buyer_street": account.street,
        "buyer_postal_code": account.postal_code,
        "buyer_city": account.city,
        "language": account.language,
        "delivery_format": chosen,
        "delivery_email": account.invoice_email if chosen == "pdf_email" else None,
        "delivery_gln": account.invoice_gln if chosen == "oioubl" else None,
        "delivery_peppol_scheme": account.peppol_scheme if chosen == "peppol" else None,
        "delivery_peppol_id": account.peppol_id if chosen == "peppol" else None,
    }


def delivery_of(row: dict[str, Any]) -> InvoiceDelivery:
    """`InvoiceIssued.delivery` from an invoice row's snapshot."""
    return InvoiceDelivery(
        format=row["delivery_format"],
        email=row["delivery_email"],
        gln=row["delivery_gln"],
        peppol_scheme=row["delivery_peppol_scheme"],
        peppol_id=row["delivery_peppol_id"],
    )


@dataclass(frozen=True)
class IssueResult:
    period: date
    invoices: int
    lines: int


class Invoicing:
    def __init__(self, *, outbox: Outbox, clock: Clock, payment_days: int) -> None:
        self.outbox = outbox
        self.clock = clock
        self.payment_days = payment_days

    async def issue(
        self,
        session: AsyncSession,
        period: date,
        *,
        accounts: Iterable[str] | None = None,
        announce: bool = True,
        issued_on: date | None = None,
    ) -> IssueResult:
        """Issue `period`'s invoices for every account (or just `accounts`) not yet invoiced.
        `announce=False` is for history loaded as demo data: no `InvoiceIssued` is sent."""
        period = month_start(period)
        end = next_month(period)
        if issued_on is None:
            issued_on = max(end, local_today(self.clock))
        due_on = issued_on + timedelta(days=self.payment_days)

        invoiced = exists().where(
            Invoice.account_number == Account.account_number, Invoice.period_start == period
        )
        account_query = (
            select(
                Account.account_number,
                Account.cvr,
                Customer.name,
                Customer.street,
                Customer.postal_code,
                Customer.city,
                Customer.language,
                Account.invoice_format,
                Account.invoice_email,
                Account.invoice_gln,
                Account.peppol_scheme,
                Account.peppol_id,
            )
            .join(Customer, Customer.cvr == Account.cvr)
            .where(~invoiced)
            .order_by(Account.account_number)
        )
        if accounts is not None:
            account_query = account_query.where(Account.account_number.in_(list(accounts)))
        candidates = {row.account_number: row for row in await session.execute(account_query)}
        todo = list(candidates)
        invoices = lines = 0
        for chunk_start in range(0, len(todo), CHUNK):
            chunk = todo[chunk_start : chunk_start + CHUNK]
            by_account = await self._lines(session, chunk, period, end)
            invoice_rows, line_rows = [], []
            for number in chunk:
                account_lines = by_account.get(number)
                if not account_lines:
                    continue  # nothing to bill this month
                excl = sum(line["amount_ore"] for line in account_lines)
                account = candidates[number]
                invoice_rows.append(
                    {
                        "id": invoice_id_for(number, period),
                        "number": invoice_number_for(number, period),
                        "cvr": candidates[number].cvr,
                        "account_number": number,
                        "period_start": period,
                        "period_end": end - timedelta(days=1),
                        "issued_on": issued_on,
                        "due_on": due_on,
                        "amount_excl_vat_ore": excl,
                        "vat_ore": vat_of(excl),
                        "amount_incl_vat_ore": excl + vat_of(excl),
                        "currency": "DKK",
                        "created_at": self.clock.now(),
                        **snapshot(account),
                    }
                )
            created = await self._insert_new(session, invoice_rows)
            for row in invoice_rows:
                if row["id"] not in created:
                    continue  # issued meanwhile by another run: that run has its lines
                line_rows += [{"invoice_id": row["id"], **line} for line in by_account[row["account_number"]]]
                if announce:
                    await self.outbox.add(
                        session,
                        InvoiceIssued(
                            invoice_id=uuid.UUID(row["id"]),
                            invoice_number=row["number"],
                            cvr=row["cvr"],
                            company_name=candidates[row["account_number"]].name,
                            account_number=row["account_number"],
                            period_start=period,
                            period_end=row["period_end"],
                            issued_on=issued_on,
                            due_on=due_on,
                            amount_excl_vat_ore=row["amount_excl_vat_ore"],
                            vat_ore=row["vat_ore"],
                            amount_incl_vat_ore=row["amount_incl_vat_ore"],
                            delivery=delivery_of(row),
                            language=row["language"],
                        ),
                    )
            for start in range(0, len(line_rows), BATCH):
                await session.execute(insert(InvoiceLine), line_rows[start : start + BATCH])
            invoices += len(created)
            lines += len(line_rows)
            line_rows = []
        if invoices:
            log.log(
                logging.INFO if announce else logging.DEBUG,
                "issued %d invoices (%d lines) for %s",
                invoices,
                lines,
                f"{period:%Y-%m}",
            )
        return IssueResult(period, invoices, lines)

    async def _lines(
        self, session: AsyncSession, accounts: list[str], period: date, end: date
    ) -> dict[str, list[dict[str, Any]]]:
        """Each account's lines: the fee of every subscription active at the period's end, at
        the product it had then (an upgrade later does not reprice the past), and its usage."""
        period_end = _midnight(end)
        subscriptions = list(
            await session.execute(
                select(
                    Subscription.id,
                    Subscription.account_number,
                    Subscription.identifier,
                    Subscription.product_code,
                )
                .where(
                    Subscription.account_number.in_(accounts),
                    Subscription.status == "active",
                    Subscription.activated_at < period_end,
                )
                .order_by(Subscription.account_number, Subscription.identifier)
            )
        )
        product_then: dict[str, str] = {}
        ids = [s.id for s in subscriptions]
        for start in range(0, len(ids), BATCH):
            later_upgrades = await session.execute(
                select(Order.subscription_id, Order.from_product_code)
                .where(
                    Order.kind == "upgrade",
                    Order.subscription_id.in_(ids[start : start + BATCH]),
                    Order.completed_at >= period_end,
                )
                .order_by(Order.completed_at.desc())
            )
            for subscription_id, from_code in later_upgrades:  # the earliest later upgrade wins
                if from_code:
                    product_then[subscription_id] = from_code
        by_account: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for sub_id, number, identifier, code in subscriptions:
            product = BY_CODE[product_then.get(sub_id, code)]
            by_account[number].append(
                {
                    "subscription_id": sub_id,
                    "identifier": identifier,
                    "category": "subscription",
                    "description": product.name,
                    "quantity": 1,
                    "unit": "month",
                    "amount_ore": product.monthly_fee_ore,
                }
            )
        usage = await session.scalars(
            select(UsageRecord)
            .where(UsageRecord.account_number.in_(accounts), UsageRecord.period == period)
            .order_by(UsageRecord.account_number, UsageRecord.identifier, UsageRecord.category)
        )
        for record in usage:
            by_account[record.account_number].append(
                {
                    "subscription_id": record.subscription_id,
                    "identifier": record.identifier,
                    "category": record.category,
                    "description": CATEGORY_TEXT.get(record.category, record.category),
                    "quantity": record.quantity,
                    "unit": record.unit,
                    "amount_ore": record.amount_ore,
                }
            )
        return by_account

    async def _insert_new(self, session: AsyncSession, rows: list[dict[str, Any]]) -> set[str]:
        """Insert the invoices that do not exist yet (a concurrent run may have issued some);
        the ids of those this call created."""
        if not rows:
            return set()
        statement = (
            upsert_statement(session, Invoice)
            # id, number and (account, period) all derive from the account and period: any
            # conflict is this very invoice, written meanwhile by another run.
            .on_conflict_do_nothing()
            .returning(Invoice.id)
        )
        created: set[str] = set()
        for start in range(0, len(rows), BATCH):
            created |= set((await session.scalars(statement, rows[start : start + BATCH])).all())
        return created


class InvoiceRun:
    """The monthly run: issues the newest closed month's invoices of every account not yet
    invoiced for it. Run often; it does the work once."""

    def __init__(self, *, db: Database, invoicing: Invoicing, clock: Clock) -> None:
        self.db = db
        self.invoicing = invoicing
        self.clock = clock

    async def run_once(self) -> IssueResult:
        async with self.db.transaction() as session:
            return await self.invoicing.issue(session, last_closed_period(self.clock))


def _midnight(day: date) -> datetime:
    """Midnight in Copenhagen at the start of `day`, in UTC (as every timestamp is stored)."""
    return datetime(day.year, day.month, day.day, tzinfo=COPENHAGEN).astimezone(UTC)
