"""Billing's use cases for the customer registry (the rest of billing builds on it)."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.billing.demo import DEMO_COMPANIES, generated_companies
from services.billing.models import Account, Customer
from shared.clock import Clock
from shared.events import AccountRef, CustomerRegistered
from shared.messaging import Outbox

log = logging.getLogger(__name__)


async def register_customer(
    session: AsyncSession,
    outbox: Outbox,
    clock: Clock,
    *,
    cvr: str,
    name: str,
    parent_cvr: str | None,
    address: str,
    accounts: list[tuple[str, str]],
) -> bool:
    """Add a customer and announce it on `billing.customers`; False if it already exists."""
    if await session.get(Customer, cvr) is not None:
        return False
    now = clock.now()
    session.add(Customer(cvr=cvr, name=name, parent_cvr=parent_cvr, address=address, registered_at=now))
    await session.flush()
    session.add_all(Account(account_number=number, cvr=cvr, name=label) for number, label in accounts)
    await outbox.add(
        session,
        CustomerRegistered(
            cvr=cvr,
            name=name,
            parent_cvr=parent_cvr,
            accounts=[AccountRef(account_number=n, name=label) for n, label in accounts],
            registered_at=now,
        ),
    )
    return True


async def seed_demo_customers(session: AsyncSession, outbox: Outbox, clock: Clock, *, extra: int = 0) -> int:
    """Idempotent: registers the demo companies that are not there yet (parents first), and
    `extra` generated standalone companies for benchmarks and load tests."""
    created = 0
    for company in (*DEMO_COMPANIES, *generated_companies(extra)):
        if await register_customer(
            session,
            outbox,
            clock,
            cvr=company.cvr,
            name=company.name,
            parent_cvr=company.parent_cvr,
            address=company.address,
            accounts=list(company.accounts),
        ):
            created += 1
    if created:
        log.info("registered %d demo customers", created)
    return created


async def list_customers(session: AsyncSession) -> list[Customer]:
    rows = await session.scalars(select(Customer).order_by(Customer.cvr))
    return list(rows)


async def accounts_of(session: AsyncSession, cvr: str) -> list[Account]:
    rows = await session.scalars(select(Account).where(Account.cvr == cvr).order_by(Account.account_number))
    return list(rows)
