"""Issuing the month's invoices (S8): one invoice per account, with a line per subscription's
monthly fee and a line per subscription and category of metered usage, 25 % VAT on top.

An invoice's usage lines are exactly that account's usage records of the period, so the usage
view and its CSV export agree with the invoice. Issuing is idempotent: an account already
invoiced for the period is skipped (and a unique key guards a race), so the worker's periodic
run and the command can both run without issuing twice.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.billing.models import (
    Account,
    Customer,
    Invoice,
    InvoiceLine,
    Product,
    Subscription,
    UsageRecord,
)
from shared.clock import Clock
from shared.events import InvoiceIssued
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


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(period: date) -> date:
    return (period.replace(day=28) + timedelta(days=4)).replace(day=1)


def previous_month(period: date) -> date:
    return (period.replace(day=1) - timedelta(days=1)).replace(day=1)


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

        account_query = select(Account.account_number, Account.cvr, Customer.name).join(
            Customer, Customer.cvr == Account.cvr
        )
        if accounts is not None:
            account_query = account_query.where(Account.account_number.in_(list(accounts)))
        candidates = {row.account_number: row for row in await session.execute(account_query)}
        already = (
            set(
                await session.scalars(
                    select(Invoice.account_number).where(
                        Invoice.period_start == period, Invoice.account_number.in_(list(candidates))
                    )
                )
            )
            if candidates
            else set()
        )
        todo = [number for number in sorted(candidates) if number not in already]
        invoices = lines = 0
        for chunk_start in range(0, len(todo), 200):
            chunk = todo[chunk_start : chunk_start + 200]
            fees = await session.execute(
                select(
                    Subscription.id,
                    Subscription.account_number,
                    Subscription.identifier,
                    Product.name,
                    Product.monthly_fee_ore,
                )
                .join(Product, Product.code == Subscription.product_code)
                .where(
                    Subscription.account_number.in_(chunk),
                    Subscription.status == "active",
                    Subscription.activated_at < _midnight(end),
                )
                .order_by(Subscription.account_number, Subscription.identifier)
            )
            usage = await session.execute(
                select(UsageRecord)
                .where(UsageRecord.account_number.in_(chunk), UsageRecord.period == period)
                .order_by(UsageRecord.account_number, UsageRecord.identifier, UsageRecord.category)
            )
            by_account: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for sub_id, number, identifier, name, fee in fees:
                by_account[number].append(
                    {
                        "subscription_id": sub_id,
                        "identifier": identifier,
                        "category": "subscription",
                        "description": name,
                        "quantity": 1,
                        "unit": "month",
                        "amount_ore": fee,
                    }
                )
            for record in usage.scalars():
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
            invoice_rows, line_rows, events = [], [], []
            for number in chunk:
                account_lines = by_account.get(number)
                if not account_lines:
                    continue  # nothing to bill this month
                account = candidates[number]
                invoice_id = invoice_id_for(number, period)
                excl = sum(line["amount_ore"] for line in account_lines)
                vat = vat_of(excl)
                invoice_rows.append(
                    {
                        "id": invoice_id,
                        "number": invoice_number_for(number, period),
                        "cvr": account.cvr,
                        "account_number": number,
                        "period_start": period,
                        "period_end": end - timedelta(days=1),
                        "issued_on": issued_on,
                        "due_on": due_on,
                        "amount_excl_vat_ore": excl,
                        "vat_ore": vat,
                        "amount_incl_vat_ore": excl + vat,
                        "currency": "DKK",
                        "created_at": self.clock.now(),
                    }
                )
                line_rows += [{"invoice_id": invoice_id, **line} for line in account_lines]
                if announce:
                    events.append(
                        InvoiceIssued(
                            invoice_id=uuid.UUID(invoice_id),
                            invoice_number=invoice_number_for(number, period),
                            cvr=account.cvr,
                            company_name=account.name,
                            account_number=number,
                            period_start=period,
                            period_end=end - timedelta(days=1),
                            issued_on=issued_on,
                            due_on=due_on,
                            amount_excl_vat_ore=excl,
                            vat_ore=vat,
                            amount_incl_vat_ore=excl + vat,
                        )
                    )
            if invoice_rows:
                await session.execute(insert(Invoice), invoice_rows)
            for start in range(0, len(line_rows), BATCH):
                await session.execute(insert(InvoiceLine), line_rows[start : start + BATCH])
            for event in events:
                await self.outbox.add(session, event)
            invoices += len(invoice_rows)
            lines += len(line_rows)
        if invoices:
            log.log(
                logging.INFO if announce else logging.DEBUG,
                "issued %d invoices (%d lines) for %s",
                invoices,
                lines,
                f"{period:%Y-%m}",
            )
        return IssueResult(period, invoices, lines)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=COPENHAGEN)
