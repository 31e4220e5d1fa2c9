"""Billing's customer registry (S8, S14): a company becomes a customer with its accounts, and
is announced on `billing.customers`, from where onboarding and identity learn the groups."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from services.billing.models import Account, Customer
from shared.clock import Clock
from shared.events import AccountRef, CustomerRegistered
from shared.messaging import Outbox

if TYPE_CHECKING:
    from services.billing.demo import DemoCompany


class Registry:
    def __init__(self, *, outbox: Outbox, clock: Clock) -> None:
        self.outbox = outbox
        self.clock = clock

    async def register(self, session: AsyncSession, company: DemoCompany) -> bool:
        """Add a customer and announce it on `billing.customers`; False if it already exists."""
        if await session.get(Customer, company.cvr) is not None:
            return False
        now = self.clock.now()
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
        await self.outbox.add(
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
