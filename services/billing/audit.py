"""Billing's audit trail: who changed what, for which company, from where, when (S9–S11)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.billing.access import Access
from services.billing.models import AuditEntry


def audit(
    session: AsyncSession,
    access: Access,
    action: str,
    cvr: str,
    target: str,
    at: datetime,
    client: str | None,
    details: dict[str, Any],
) -> None:
    session.add(
        AuditEntry(
            actor_id=access.user_id,
            action=action,
            cvr=cvr,
            target=target,
            client_address=client,
            details=json.dumps(details, sort_keys=True, default=str),
            at=at,
        )
    )
