"""Delivery records for support staff (S3, S13): the letters, mails and SMS to a recipient."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import select

from services.notifier.deps import CurrentStaff, DbDep
from services.notifier.models import Delivery
from services.notifier.schemas import DeliveryOut
from shared.clock import as_utc
from shared.problems import PROBLEM

router = APIRouter(tags=["deliveries"])


@router.get(
    "/v1/deliveries",
    response_model=list[DeliveryOut],
    summary="Delivery records, newest first: e.g. the letters to a CVR (S3, S13; support staff only)",
    description=(
        "`recipient` is a CVR number for letters (`kind=credentials_letter`), a mail address or "
        "an E.164 mobile number for the rest. 401 without a valid access token, 403 for a login "
        "that is not support staff's."
    ),
    responses={401: PROBLEM, 403: PROBLEM, 422: PROBLEM},
)
async def deliveries(
    db: DbDep,
    _staff: CurrentStaff,
    recipient: Annotated[str | None, Query(max_length=320)] = None,
    kind: Annotated[str | None, Query(max_length=50)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[DeliveryOut]:
    query = select(Delivery).order_by(Delivery.created_at.desc(), Delivery.id.desc()).limit(limit)
    if recipient:
        query = query.where(Delivery.recipient == recipient)
    if kind:
        query = query.where(Delivery.kind == kind)
    async with db.reading() as session:
        rows = list(await session.scalars(query))
    return [
        DeliveryOut(
            id=d.id,
            kind=d.kind,
            channel=d.channel,
            recipient=d.recipient,
            status=d.status,
            attempts=d.attempts,
            message_id=d.message_id,
            application_id=d.application_id,
            created_at=as_utc(d.created_at),
            deliver_by=as_utc(d.deliver_by) if d.deliver_by else None,
            expires_at=as_utc(d.expires_at) if d.expires_at else None,
            delivered_at=as_utc(d.delivered_at) if d.delivered_at else None,
            last_error=d.last_error,
            sla_breached=d.sla_breached_at is not None,
        )
        for d in rows
    ]
