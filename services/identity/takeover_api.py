"""Identity's HTTP routes for cancelling a takeover of a company's administration: by the link
in the notice an administrator received (no login needed: the link's token is the authority,
single use), or by a logged-in administrator who holds the company."""

# Routes close over local dependencies, so annotations are evaluated eagerly (no __future__ import).
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from sqlalchemy import select

from services.identity import takeover as takeovers
from services.identity.admin import Administration
from services.identity.models import Company, Takeover, User, UserGrant
from shared.clock import as_utc
from shared.db import Database
from shared.problems import MEDIA_TYPE, Conflict, NotFound, Problem
from shared.ratelimit import SlidingWindowLimiter, client_address
from shared.sealing import Sealer
from shared.tokens import AccessClaims

PROBLEM = {"content": {MEDIA_TYPE: {}}, "description": "problem+json"}


class UnknownCancelLink(Problem):
    status = 404
    type_suffix = "unknown-cancel-link"
    title = "The cancel link is not known"


class CancelLinkUsed(Problem):
    status = 410
    type_suffix = "cancel-link-used"
    title = "The cancel link has been used"


class CancelLinkRevoked(Problem):
    status = 403
    type_suffix = "cancel-link-revoked"
    title = "The cancel link's administrator no longer administers the company"


class TakeoverEnded(Conflict):
    type_suffix = "takeover-ended"
    title = "The takeover has already ended"


class CancelTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cancel_token: SecretStr = Field(
        min_length=1, max_length=200, description="The token of the link in the takeover notice"
    )


class TakeoverOut(BaseModel):
    """A takeover of a company's administration, as the administrators may see it."""

    id: str
    cvr: str
    company_name: str
    status: str = Field(description="`open`, `cancelled`, `expired` or `completed`")
    requested_at: datetime
    usable_from: datetime = Field(description="From then, the letter's code takes over the administration")
    expires_at: datetime = Field(description="The letter's code stops working then")
    applicant_name: str = Field(description="The name given in the application; not proof of anything")
    cancel_link_used: bool | None = Field(
        default=None, description="Only for a lookup by cancel link: whether that link was used"
    )


def _out(takeover: Takeover, company_name: str, applicant: User | None, used: bool | None = None) -> TakeoverOut:
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


def _ended(takeover: Takeover) -> TakeoverEnded:
    what = {
        takeovers.CANCELLED: "was cancelled",
        takeovers.EXPIRED: "expired: its code was not used in time",
        takeovers.COMPLETED: "was completed: the new administrator is active and the former ones are "
        "disabled. If this was not your company's wish, contact support at once",
    }[takeover.status]
    return TakeoverEnded(
        f"The takeover of the administration of CVR {takeover.cvr} {what}; there is nothing to cancel.",
        takeover_status=takeover.status,
    )


def takeover_router(
    *,
    db: Database,
    admin: Administration,
    sealer: Sealer,
    current_claims: Callable[..., Awaitable[AccessClaims]],
    rate_limit_per_minute: int,
) -> APIRouter:
    router = APIRouter(tags=["takeover"])
    Claims = Annotated[AccessClaims, Depends(current_claims)]
    rate_limited = SlidingWindowLimiter(rate_limit_per_minute).dependency("cancel links")

    def revoked(found: takeovers.Found) -> CancelLinkRevoked:
        return CancelLinkRevoked(
            f"This link was sent to a login that no longer administers {found.company_name} (CVR "
            f"{found.takeover.cvr}): it was disabled or deleted, or its user administration or its "
            "access to the company was taken away. An administrator of the company can cancel the "
            "takeover with their own link or in the portal."
        )

    def unknown() -> UnknownCancelLink:
        return UnknownCancelLink(
            "This cancel link is not known. Use the whole link from the newest email or SMS about the "
            "takeover; or log in to the portal, where an administrator can cancel it."
        )

    @router.post(
        "/v1/takeovers/lookup",
        response_model=TakeoverOut,
        summary="What a takeover notice's cancel link would cancel (nothing is changed)",
        responses={403: PROBLEM, 404: PROBLEM, 422: PROBLEM, 429: PROBLEM},
        dependencies=[Depends(rate_limited)],
    )
    async def lookup(body: CancelTokenIn) -> TakeoverOut:
        async with db.transaction() as session:
            found = await takeovers.find_by_token(session, sealer, body.cancel_token.get_secret_value())
            if found is None:
                raise unknown()
            if found.takeover.status == takeovers.OPEN and not await takeovers.still_administers(
                session, found.notice, found.takeover
            ):
                raise revoked(found)
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
        dependencies=[Depends(rate_limited)],
    )
    async def cancel_by_link(body: CancelTokenIn, request: Request) -> TakeoverOut:
        async with db.transaction() as session:
            found = await takeovers.find_by_token(session, sealer, body.cancel_token.get_secret_value())
            if found is None:
                raise unknown()
            by = await session.get(User, found.notice.user_id)
            if by is None:
                raise unknown()
            outcome, takeover = await takeovers.cancel(
                session,
                admin.outbox,
                found.takeover.id,
                by=by,
                now=admin.clock.now(),
                client_address=client_address(request),
                notice_id=found.notice.id,
            )
            applicant = await session.get(User, takeover.user_id)
            result = _out(takeover, found.company_name, applicant, True)
        if outcome == "used":
            raise CancelLinkUsed("This cancel link has been used already; each link works once.")
        if outcome == "revoked":
            raise revoked(found)
        if outcome != takeovers.CANCELLED:
            raise _ended(takeover)
        return result

    @router.get(
        "/v1/takeovers",
        response_model=list[TakeoverOut],
        summary="The open takeovers of the companies you hold (administrators)",
        responses={401: PROBLEM, 403: PROBLEM},
    )
    async def open_takeovers(claims: Claims) -> list[TakeoverOut]:
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
        claims: Claims, takeover_id: Annotated[str, Path(max_length=36)], request: Request
    ) -> TakeoverOut:
        async with db.transaction() as session:
            caller = await admin.administrator(session, claims)
            held = set(await session.scalars(select(UserGrant.cvr).where(UserGrant.user_id == caller.id)))
            takeover = await session.get(Takeover, takeover_id)
            if takeover is None or takeover.cvr not in held:
                raise NotFound(f"There is no takeover {takeover_id} of a company you hold.")
            company = await session.get(Company, takeover.cvr)
            outcome, takeover = await takeovers.cancel(
                session,
                admin.outbox,
                takeover.id,
                by=caller,
                now=admin.clock.now(),
                client_address=client_address(request),
            )
            applicant = await session.get(User, takeover.user_id)
            result = _out(takeover, company.name if company else f"CVR {takeover.cvr}", applicant)
        if outcome != takeovers.CANCELLED:
            raise _ended(takeover)
        return result

    return router
