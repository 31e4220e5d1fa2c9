"""Identity's HTTP routes for cancelling a takeover of a company's administration: by the link
in the notice an administrator received (no login needed: the link's token is the authority,
single use), or by a logged-in administrator who holds the company."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from services.identity import takeover as takeovers
from services.identity.admin_schemas import CancelTokenIn, TakeoverOut
from services.identity.deps import (
    AdministrationDep,
    CancelLinkRateLimit,
    Claims,
    DbDep,
    PathId,
    SealerDep,
)
from services.identity.models import Company, Takeover, User, UserGrant
from shared.clock import as_utc
from shared.problems import PROBLEM, NotFound
from shared.web import ClientAddress

router = APIRouter(tags=["takeover"])


def _out(
    takeover: Takeover, company_name: str, applicant: User | None, used: bool | None = None
) -> TakeoverOut:
    return TakeoverOut(
        id=takeover.id,
        cvr=takeover.cvr,
        company_name=company_name,
        status=takeover.status,
        requested_at=as_utc(takeover.requested_at),
        usable_from=as_utc(takeover.usable_from),
        expires_at=as_utc(takeover.expires_at),
        applicant_name=applicant.name if applicant else "",
        cancel_link_used=used,
    )


@router.post(
    "/v1/takeovers/lookup",
    response_model=TakeoverOut,
    summary="What a takeover notice's cancel link would cancel (nothing is changed)",
    responses={403: PROBLEM, 404: PROBLEM, 422: PROBLEM, 429: PROBLEM},
    dependencies=[CancelLinkRateLimit],
)
async def lookup(body: CancelTokenIn, db: DbDep, sealer: SealerDep) -> TakeoverOut:
    async with db.transaction() as session:
        found = await takeovers.find_by_token(session, sealer, body.cancel_token.get_secret_value())
        if found is None:
            raise takeovers.unknown_link()
        if found.takeover.status == takeovers.OPEN and not await takeovers.still_administers(
            session, found.notice, found.takeover
        ):
            raise takeovers.revoked_link(found.company_name, found.takeover.cvr)
        applicant = await session.get(User, found.takeover.user_id)
        return _out(found.takeover, found.company_name, applicant, found.notice.used_at is not None)


@router.post(
    "/v1/takeovers/cancel",
    response_model=TakeoverOut,
    summary="Cancel a takeover with the link from its notice (single use)",
    description=(
        "The takeover's login is withdrawn and the letter's code stops working; `TakeoverCancelled` "
        "and the audit record `takeover.cancelled` name the administrator the link was sent to. 404 "
        "`unknown-cancel-link`; 410 `cancel-link-used` (each link works once); 409 `takeover-ended` "
        "(`takeover_status`: cancelled, expired or completed); 403 `cancel-link-revoked` while the "
        "takeover is open but the link's administrator no longer administers the company."
    ),
    responses={403: PROBLEM, 404: PROBLEM, 409: PROBLEM, 410: PROBLEM, 422: PROBLEM, 429: PROBLEM},
    dependencies=[CancelLinkRateLimit],
)
async def cancel_by_link(
    body: CancelTokenIn, db: DbDep, sealer: SealerDep, admin: AdministrationDep, client: ClientAddress
) -> TakeoverOut:
    async with db.transaction() as session:
        found = await takeovers.find_by_token(session, sealer, body.cancel_token.get_secret_value())
        if found is None:
            raise takeovers.unknown_link()
        by = await session.get(User, found.notice.user_id)
        if by is None:
            raise takeovers.unknown_link()
        takeover = await takeovers.cancel(
            session,
            admin.outbox,
            found.takeover.id,
            by=by,
            now=admin.clock.now(),
            client_address=client,
            notice_id=found.notice.id,
        )
        applicant = await session.get(User, takeover.user_id)
        return _out(takeover, found.company_name, applicant, True)


@router.get(
    "/v1/takeovers",
    response_model=list[TakeoverOut],
    summary="The open takeovers of the companies you hold (administrators)",
    responses={401: PROBLEM, 403: PROBLEM},
)
async def open_takeovers(claims: Claims, db: DbDep, admin: AdministrationDep) -> list[TakeoverOut]:
    async with db.transaction() as session:
        caller = await admin.administrator(session, claims)
        found = await takeovers.held_open_takeovers(session, caller)
        return [_out(t, name, await session.get(User, t.user_id)) for t, name in found]


@router.post(
    "/v1/takeovers/{takeover_id}/cancel",
    response_model=TakeoverOut,
    summary="Cancel a takeover of a company you hold (administrators)",
    responses={401: PROBLEM, 403: PROBLEM, 404: PROBLEM, 409: PROBLEM},
)
async def cancel_as_administrator(
    claims: Claims, takeover_id: PathId, db: DbDep, admin: AdministrationDep, client: ClientAddress
) -> TakeoverOut:
    async with db.transaction() as session:
        caller = await admin.administrator(session, claims)
        held = set(await session.scalars(select(UserGrant.cvr).where(UserGrant.user_id == caller.id)))
        takeover = await session.get(Takeover, takeover_id)
        if takeover is None or takeover.cvr not in held:
            raise NotFound(f"There is no takeover {takeover_id} of a company you hold.")
        company = await session.get(Company, takeover.cvr)
        takeover = await takeovers.cancel(
            session, admin.outbox, takeover.id, by=caller, now=admin.clock.now(), client_address=client
        )
        applicant = await session.get(User, takeover.user_id)
        return _out(takeover, company.name if company else f"CVR {takeover.cvr}", applicant)
