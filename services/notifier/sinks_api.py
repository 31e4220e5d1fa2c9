"""The local e-Boks, mail and SMS sinks, read over HTTP (development only): what a letter, a mail
or an SMS sent in development looks like when it arrives. `api.py` includes `eboks_router` when
letters go to the spool, and `mail_router` in development."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response

from services.notifier.deps import SettingsDep
from services.notifier.eboks import SpoolTransport
from services.notifier.memo import MemoFormatError, parse_memo_message
from services.notifier.schemas import LetterOut, MailOut, SmsOut
from services.notifier.sinks import MAILBOX_PATTERN, MSISDN_PATTERN, read_mail, read_sms
from shared.problems import NotFound

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

eboks_router = APIRouter(tags=["development"])
mail_router = APIRouter(tags=["development"])


@eboks_router.get(
    "/dev/eboks/{cvr}",
    response_model=list[LetterOut],
    summary="The local e-Boks sink: letters delivered to a company (development only)",
)
async def eboks_inbox(settings: SettingsDep, cvr: Annotated[str, Path(pattern=r"^[0-9]{8}$")]) -> list[LetterOut]:
    letters = []
    for path in SpoolTransport(settings.spool_dir).list_letters(cvr):
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


@eboks_router.get(
    "/dev/eboks/{cvr}/{message_uuid}.xml",
    summary="One letter as the MeMo XML that was delivered (development only)",
    response_class=Response,
    responses={
        200: {"content": {"application/xml": {}}, "description": "MeMo XML"},
        404: {"description": "No such letter"},
    },
)
async def eboks_letter(
    settings: SettingsDep,
    cvr: Annotated[str, Path(pattern=r"^[0-9]{8}$")],
    message_uuid: Annotated[str, Path(max_length=36)],
) -> Response:
    if not _UUID.fullmatch(message_uuid):
        raise NotFound("No such letter.")
    path = settings.spool_dir / cvr / f"{message_uuid}.xml"
    if not path.is_file():
        raise NotFound(f"No letter {message_uuid} for CVR {cvr}.")
    return Response(path.read_bytes(), media_type="application/xml")


@mail_router.get(
    "/dev/mail/{address}",
    response_model=list[MailOut],
    summary="The local mail sink: mails received for an address, oldest first (development only)",
)
async def mail_inbox(
    settings: SettingsDep,
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


@mail_router.get(
    "/dev/sms/{msisdn}",
    response_model=list[SmsOut],
    summary="The local SMS gateway sink: messages received for an E.164 number, oldest first "
    "(development only)",
)
async def sms_inbox(settings: SettingsDep, msisdn: Annotated[str, Path(pattern=MSISDN_PATTERN)]) -> list[SmsOut]:
    messages = await asyncio.to_thread(read_sms, settings.sinks_dir, msisdn)
    return [SmsOut(id=m.id, sender=m.sender, to=m.to, text=m.text, received_at=m.received_at) for m in messages]
