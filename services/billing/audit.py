"""Billing's audit trail: who changed what, for which company, from where, when (S9–S11).

Each entry is kept in billing's own table and published as `BillingAuditRecorded` on
`billing.audit` through the outbox, in the transaction of the change: identity keeps them in
the company's audit trail, which the company's administrators read (`GET /v1/audit`)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.billing.access import Access
from services.billing.models import AuditEntry
from shared.events import (
    BillingAuditRecorded,
    InvoiceFormatChanged,
    MasterDataChanged,
    SubscriptionOrdered,
    SubscriptionSettingsChanged,
    SubscriptionUpgraded,
)
from shared.messaging import Outbox

# The events of a customer's own change: each is announced together with its audit entry.
Change = (
    MasterDataChanged
    | InvoiceFormatChanged
    | SubscriptionSettingsChanged
    | SubscriptionOrdered
    | SubscriptionUpgraded
)


async def audit(
    session: AsyncSession,
    outbox: Outbox,
    access: Access,
    action: str,
    cvr: str,
    target: str,
    at: datetime,
    client: str | None,
    details: dict[str, Any],
    *,
    account_number: str | None = None,
) -> None:
    """Keep and publish one change; `account_number` names the account it concerns, if one."""
    # Through JSON once, so the event's details are what the table keeps (dates as text).
    kept = json.dumps(details, sort_keys=True, default=str)
    session.add(
        AuditEntry(
            actor_id=access.user_id,
            action=action,
            cvr=cvr,
            target=target,
            client_address=client,
            details=kept,
            at=at,
        )
    )
    await outbox.add(
        session,
        BillingAuditRecorded(
            audit_id=uuid.uuid4(),
            actor_id=uuid.UUID(access.user_id),
            action=action,
            cvr=cvr,
            account_number=account_number,
            target=target,
            details=json.loads(kept),
            client_address=client,
            at=at,
        ),
    )


async def announce(
    session: AsyncSession,
    outbox: Outbox,
    access: Access,
    event: Change,
    *,
    action: str,
    target: str,
    at: datetime,
    client: str | None,
    details: dict[str, Any],
) -> None:
    """A change is announced and audited in the transaction that makes it: its event, then its
    audit entry, for the event's company and account (if the change concerns one)."""
    await outbox.add(session, event)
    await audit(
        session,
        outbox,
        access,
        action,
        event.cvr,
        target,
        at,
        client,
        details,
        account_number=getattr(event, "account_number", None),
    )
