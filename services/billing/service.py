"""Billing's customer registry and its demo data (S8, S14).

The registry announces customers on `billing.customers`; onboarding and identity learn the
groups from there. Demo data (customers, subscriptions, twelve months of usage and the
invoices of all but the newest month) is deterministic and loaded only where settings allow.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.billing.catalogue import BY_CODE
from services.billing.demo import (
    DEMO_COMPANIES,
    LARGE_COMPANY_SUBSCRIPTIONS_PER_ACCOUNT,
    DemoCompany,
    demo_subscriptions,
    generated_companies,
    large_company,
    monthly_usage,
)
from services.billing.invoicing import COPENHAGEN, Invoicing, last_closed_period, next_month, previous_month
from services.billing.models import Account, Customer, Subscription, UsageRecord
from shared.clock import Clock
from shared.events import AccountRef, CustomerRegistered
from shared.messaging import Outbox

log = logging.getLogger(__name__)

SUBSCRIPTION_NAMESPACE = uuid.UUID("8f7b7b2e-2f0e-4c55-8d0b-5a2f7e9c1d34")
HISTORY_MONTHS = 12


async def register_customer(
    session: AsyncSession, outbox: Outbox, clock: Clock, company: DemoCompany
) -> bool:
    """Add a customer and announce it on `billing.customers`; False if it already exists."""
    if await session.get(Customer, company.cvr) is not None:
        return False
    now = clock.now()
    contact_name, contact_email, contact_phone = company.contact
    session.add(
        Customer(
            cvr=company.cvr,
            name=company.name,
            parent_cvr=company.parent_cvr,
            street=company.street,
            postal_code=company.postal_code,
            city=company.city,
            contact_name=contact_name,
            contact_email=contact_email,
            contact_phone=contact_phone,
            master_data_version=1,
            registered_at=now,
        )
    )
    await session.flush()
    session.add_all(
        Account(
            account_number=number,
            cvr=company.cvr,
            name=label,
            invoice_format="paper",
            invoice_format_version=1,
        )
        for number, label in company.accounts
    )
    await outbox.add(
        session,
        CustomerRegistered(
            cvr=company.cvr,
            name=company.name,
            parent_cvr=company.parent_cvr,
            accounts=[AccountRef(account_number=n, name=label) for n, label in company.accounts],
            registered_at=now,
        ),
    )
    return True


async def seed_demo_customers(session: AsyncSession, outbox: Outbox, clock: Clock, *, extra: int = 0) -> int:
    """Idempotent: registers the demo companies that are not there yet (parents first), and
    `extra` generated standalone companies for benchmarks and load tests."""
    created = 0
    for company in (*DEMO_COMPANIES, *generated_companies(extra)):
        if await register_customer(session, outbox, clock, company):
            created += 1
    if created:
        log.info("registered %d demo customers", created)
    return created


def subscription_id_for(account_number: str, identifier: str) -> str:
    return str(uuid.uuid5(SUBSCRIPTION_NAMESPACE, f"{account_number}:{identifier}"))


async def seed_demo_activity(
    session: AsyncSession,
    invoicing: Invoicing,
    clock: Clock,
    company: DemoCompany,
    *,
    per_account: int | None = None,
) -> bool:
    """A company's subscriptions, twelve months of usage and the invoices of all months but
    the newest closed one (the monthly run issues that). False if already there."""
    if await session.scalar(
        select(func.count()).select_from(Subscription).where(Subscription.cvr == company.cvr)
    ):
        return False
    newest = last_closed_period(clock)
    periods = [newest]
    while len(periods) < HISTORY_MONTHS:
        periods.append(previous_month(periods[-1]))
    first = periods[-1]
    activated = (datetime(first.year, first.month, 1, tzinfo=COPENHAGEN) - timedelta(days=30)).astimezone(UTC)
    subscriptions: list[dict[str, Any]] = [
        {
            "id": subscription_id_for(s.account_number, s.identifier),
            "cvr": company.cvr,
            "account_number": s.account_number,
            "identifier": s.identifier,
            "product_code": s.product_code,
            "status": "active",
            "settings": "{}",
            "settings_version": 1,
            "created_at": activated,
            "activated_at": activated,
        }
        for s in demo_subscriptions(company, per_account=per_account)
    ]
    await _insert_batched(session, Subscription, subscriptions)
    usage = [
        {
            "subscription_id": s["id"],
            "identifier": s["identifier"],
            "cvr": company.cvr,
            "account_number": s["account_number"],
            "period": period,
            "category": category,
            "quantity": quantity,
            "unit": unit,
            "amount_ore": amount,
        }
        for period in periods
        for s in subscriptions
        for category, quantity, unit, amount in monthly_usage(
            s["id"], BY_CODE[s["product_code"]].kind, f"{period:%Y-%m}"
        )
    ]
    await _insert_batched(session, UsageRecord, usage)
    accounts = [number for number, _ in company.accounts]
    for period in reversed(periods[1:]):
        await invoicing.issue(
            session, period, accounts=accounts, announce=False, issued_on=next_month(period)
        )
    return True


async def seed_demo_data(
    session: AsyncSession,
    outbox: Outbox,
    invoicing: Invoicing,
    clock: Clock,
    *,
    extra: int = 0,
    size: str = "small",
) -> None:
    """All demo data, idempotently: the small set always, the large company for `size=large`."""
    await seed_demo_customers(session, outbox, clock, extra=extra)
    for company in DEMO_COMPANIES:
        await seed_demo_activity(session, invoicing, clock, company)
    if size == "large":
        company = large_company()
        await register_customer(session, outbox, clock, company)
        if await seed_demo_activity(
            session, invoicing, clock, company, per_account=LARGE_COMPANY_SUBSCRIPTIONS_PER_ACCOUNT
        ):
            log.info("loaded the large demo company %s", company.cvr)


async def _insert_batched(
    session: AsyncSession, model: type, rows: list[dict[str, Any]], batch: int = 5_000
) -> None:
    for start in range(0, len(rows), batch):
        await session.execute(insert(model), rows[start : start + batch])


def period_of(text: str) -> date:
    """`YYYY-MM` into the first day of that month."""
    year, _, month = text.partition("-")
    return date(int(year), int(month), 1)
