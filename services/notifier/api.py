"""Notifier's read-only API: delivery records for support staff (S3, S13), and in development
the local e-Boks, mail and SMS sinks."""

# Routes close over local dependencies, so annotations are evaluated eagerly (no __future__ import).
import asyncio
import re
from datetime import datetime
from typing import Annotated

import httpx
from fastapi import Depends, FastAPI, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from services.notifier.config import NotifierSettings
from services.notifier.memo import MemoFormatError, parse_memo_message
from services.notifier.models import Delivery
from services.notifier.sinks import MAILBOX_PATTERN, MSISDN_PATTERN, read_mail, read_sms
from services.notifier.transports import SpoolTransport
from shared.clock import Clock, as_utc
from shared.db import Database
from shared.problems import MEDIA_TYPE, NotFound
from shared.settings import Environment
from shared.staff import staff_bearer
from shared.web import create_app

PROBLEM = {"content": {MEDIA_TYPE: {}}, "description": "problem+json"}

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class DeliveryOut(BaseModel):
    id: str
    kind: str
    channel: str
    recipient: str
    status: str
    attempts: int
    message_id: str
    application_id: str | None
    created_at: datetime
    deliver_by: datetime | None
    expires_at: datetime | None
    delivered_at: datetime | None
    last_error: str | None
    sla_breached: bool


class LetterOut(BaseModel):
    message_uuid: str
    label: str
    sender_cvr: str
    recipient_cvr: str
    created_at: datetime
    filename: str
    language: str
    text: str


class MailOut(BaseModel):
    message_id: str
    from_: str = Field(alias="from")
    to: str
    subject: str
    date: datetime | None
    text: str


class SmsOut(BaseModel):
    id: str
    sender: str
    to: str
    text: str
    received_at: datetime


def create_api(
    settings: NotifierSettings | None = None,
    *,
    clock: Clock | None = None,
    jwks_client: httpx.AsyncClient | None = None,
) -> FastAPI:
    settings = settings or NotifierSettings()
    db = Database(settings.db_url)
    # The records name companies, mail addresses and mobile numbers: support staff's only, in
    # every environment (the portal's support console passes the staff member's token).
    current_staff = staff_bearer(settings.token_verifier(client=jwks_client), clock or settings.clock())
    app = create_app(
        title="Adgang notifier",
        description="Delivery of letters to e-Boks, email and SMS, and their status.",
        settings=settings,
        db=db,
    )
    development = settings.environment is not Environment.production

    @app.get(
        "/v1/deliveries",
        response_model=list[DeliveryOut],
        tags=["deliveries"],
        summary="Delivery records, newest first: e.g. the letters to a CVR (S3, S13; support staff only)",
        description=(
            "`recipient` is a CVR number for letters (`kind=credentials_letter`), a mail address or "
            "an E.164 mobile number for the rest. 401 without a valid access token, 403 for a login "
            "that is not support staff's."
        ),
        responses={401: PROBLEM, 403: PROBLEM, 422: PROBLEM},
        dependencies=[Depends(current_staff)],
    )
    async def deliveries(
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

    if development and settings.eboks_transport == "spool":
        spool = SpoolTransport(settings.spool_dir)

        @app.get(
            "/dev/eboks/{cvr}",
            response_model=list[LetterOut],
            tags=["development"],
            summary="The local e-Boks sink: letters delivered to a company (development only)",
        )
        async def eboks_inbox(cvr: Annotated[str, Path(pattern=r"^\d{8}$")]) -> list[LetterOut]:
            letters = []
            for path in spool.list_letters(cvr):
                try:
                    memo = parse_memo_message(path.read_bytes())
                except MemoFormatError:
                    continue
                letters.append(
                    LetterOut(
                        message_uuid=str(memo.message_uuid),
                        label=memo.label,
                        sender_cvr=memo.sender_cvr,
                        recipient_cvr=memo.recipient_cvr,
                        created_at=memo.created_at,
                        filename=memo.filename,
                        language=memo.language,
                        text=memo.content.decode("utf-8", "replace"),
                    )
                )
            return letters

        @app.get(
            "/dev/eboks/{cvr}/{message_uuid}.xml",
            tags=["development"],
            summary="One letter as the MeMo XML that was delivered (development only)",
            response_class=Response,
            responses={
                200: {"content": {"application/xml": {}}, "description": "MeMo XML"},
                404: {"description": "No such letter"},
            },
        )
        async def eboks_letter(
            cvr: Annotated[str, Path(pattern=r"^\d{8}$")],
            message_uuid: Annotated[str, Path(max_length=36)],
        ) -> Response:
            if not _UUID.match(message_uuid):
                raise NotFound("No such letter.")
            path = settings.spool_dir / cvr / f"{message_uuid}.xml"
            if not path.is_file():
                raise NotFound(f"No letter {message_uuid} for CVR {cvr}.")
            return Response(path.read_bytes(), media_type="application/xml")

    if development:

        @app.get(
            "/dev/mail/{address}",
            response_model=list[MailOut],
            tags=["development"],
            summary="The local mail sink: mails received for an address, oldest first (development only)",
        )
        async def mail_inbox(
            address: Annotated[str, Path(pattern=MAILBOX_PATTERN, max_length=254)],
        ) -> list[MailOut]:
            mails = await asyncio.to_thread(read_mail, settings.sinks_dir, address)
            return [
                MailOut.model_validate(
                    {
                        "message_id": m.message_id,
                        "from": m.sender,
                        "to": m.to,
                        "subject": m.subject,
                        "date": m.date,
                        "text": m.text,
                    }
                )
                for m in mails
            ]

        @app.get(
            "/dev/sms/{msisdn}",
            response_model=list[SmsOut],
            tags=["development"],
            summary="The local SMS gateway sink: messages received for an E.164 number, oldest first "
            "(development only)",
        )
        async def sms_inbox(msisdn: Annotated[str, Path(pattern=MSISDN_PATTERN)]) -> list[SmsOut]:
            messages = await asyncio.to_thread(read_sms, settings.sinks_dir, msisdn)
            return [
                SmsOut(id=m.id, sender=m.sender, to=m.to, text=m.text, received_at=m.received_at)
                for m in messages
            ]

    return app
