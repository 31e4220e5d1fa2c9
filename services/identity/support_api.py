"""Identity's HTTP routes for support staff (S3, S13)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from services.identity.admin_schemas import AUDIT_PAGING, AuditOut, AuditQuery, LetterOut, SupportUserOut
from services.identity.deps import PathId, StaffDep, SupportDep
from services.identity.domain import lifecycle_status
from services.identity.models import User
from shared.clock import as_utc
from shared.problems import PROBLEM
from shared.web import ClientAddress

router = APIRouter(tags=["support"], responses={401: PROBLEM, 403: PROBLEM})


def _expiry(user: User) -> datetime | None:
    if user.status != "pending" or user.activation_expires_at is None:
        return None
    return as_utc(user.activation_expires_at)


@router.get(
    "/v1/support/companies/{cvr}/users",
    response_model=list[SupportUserOut],
    summary="A company's logins, to find an orphaned administrator (S3; staff only)",
)
async def company_users(
    cvr: Annotated[str, Path(pattern=r"^[0-9]{8}$")], caller: StaffDep, support: SupportDep, client: ClientAddress
) -> list[SupportUserOut]:
    async with caller.transaction() as (session, staff):
        users = await support.company_users(session, staff, cvr, client)
        locked = await support.admin.locked_until(session, users)
    now = support.admin.clock.now()
    return [
        SupportUserOut(
            id=u.id,
            username=u.username,
            name=u.name,
            email=u.email,
            role=u.role,
            status=lifecycle_status(u.status, _expiry(u), now),
            functions=list(u.functions),
            created_at=as_utc(u.created_at),
            activated_at=as_utc(u.activated_at) if u.activated_at else None,
            expires_at=_expiry(u),
            login_locked_until=locked.get(u.username),
        )
        for u in users
    ]


@router.delete(
    "/v1/support/users/{user_id}",
    status_code=204,
    summary="Delete a customer's login, e.g. the orphaned only administrator (S3; staff only)",
    responses={404: PROBLEM},
)
async def delete_user(user_id: PathId, caller: StaffDep, support: SupportDep, client: ClientAddress) -> Response:
    async with caller.transaction() as (session, staff):
        await support.delete_user(session, staff, user_id, client)
    return Response(status_code=204)


@router.post(
    "/v1/support/users/{user_id}/unlock",
    status_code=204,
    summary="Lift the lock that failed passwords put on a customer's login (staff only)",
    responses={404: PROBLEM},
)
async def unlock_user(user_id: PathId, caller: StaffDep, support: SupportDep, client: ClientAddress) -> Response:
    async with caller.transaction() as (session, staff):
        await support.unlock_user(session, staff, user_id, client)
    return Response(status_code=204)


@router.post(
    "/v1/support/users/{user_id}/resend-letter",
    status_code=202,
    summary="Send the company's first administrator a new letter with a new activation code (S3; staff only)",
    description=(
        "For the login made from a company's application while it waits for activation: a new "
        "activation code goes to the company's e-Boks in a new letter (`CredentialsIssued`, as "
        "the first), and the old code stops working. 404 for an unknown id or a staff login; "
        "409 `already-activated` once the login is active (or disabled), 409 "
        "`not-a-letter-login` for a login an administrator made; 429 past "
        "`LETTERS_PER_LOGIN_PER_DAY` letters of the login in 24 hours (the first counts). "
        "Audited as `support.resend-letter`; `GET /v1/deliveries?recipient=<cvr>` at the "
        "notifier shows the letter's delivery."
    ),
    response_model=LetterOut,
    responses={404: PROBLEM, 409: PROBLEM, 429: PROBLEM},
)
async def resend_letter(user_id: PathId, caller: StaffDep, support: SupportDep, client: ClientAddress) -> LetterOut:
    async with caller.transaction() as (session, staff):
        letter = await support.resend_letter(session, staff, user_id, client)
    return LetterOut(
        user_id=str(letter.user_id),
        username=letter.username,
        recipient_cvr=letter.recipient_cvr,
        expires_at=letter.expires_at,
        deliver_by=letter.deliver_by,
    )


@router.get(
    "/v1/support/audit",
    response_model=list[AuditOut],
    summary="The whole audit trail (staff only)",
    description=f"Every entry, of every company and of no company. `cvr`: one company's. {AUDIT_PAGING}",
    responses={422: PROBLEM},
)
async def audit(
    query: Annotated[AuditQuery, Query()],
    caller: StaffDep,
    support: SupportDep,
    cvr: Annotated[str | None, Query(pattern=r"^[0-9]{8}$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AuditOut]:
    wanted = query.filter(limit=limit, cvr=cvr)
    async with caller.transaction() as (session, staff):
        entries = await support.audit_entries(
            session, staff, cvr=cvr, user_id=wanted.user_id, limit=limit, wanted=wanted
        )
    return [AuditOut.of(e) for e in entries]
