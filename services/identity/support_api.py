"""Identity's HTTP routes for support staff (S3, S13)."""

# Routes close over local dependencies, so annotations are evaluated eagerly (no __future__ import).
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.identity.admin import Administration
from services.identity.audit import AuditFilter, Cursor, company_entries
from services.identity.domain import lifecycle_status
from services.identity.models import AuditEntry, User
from services.identity.support import Support
from shared.clock import as_utc
from shared.db import Database
from shared.problems import MEDIA_TYPE
from shared.ratelimit import client_address
from shared.tokens import AccessClaims

PROBLEM = {"content": {MEDIA_TYPE: {}}, "description": "problem+json"}


class SupportUserOut(BaseModel):
    id: str
    username: str
    name: str
    email: str
    role: str
    status: str = Field(description="`pending`, `active`, `disabled`, or `expired` (never activated, code expired)")
    functions: list[str]
    created_at: datetime
    activated_at: datetime | None
    expires_at: datetime | None = Field(
        default=None, description="A login not yet activated: when its activation code stops (or stopped) working"
    )
    login_locked_until: datetime | None = Field(
        default=None,
        description="Failed passwords have locked the username until then; POST .../unlock lifts the lock",
    )


class LetterOut(BaseModel):
    """The new letter, on its way to the company's e-Boks."""

    user_id: str
    username: str
    recipient_cvr: str
    expires_at: datetime = Field(description="When the new activation code expires")
    deliver_by: datetime = Field(description="When the letter is due in the company's e-Boks (S2)")


class AuditOut(BaseModel):
    id: str
    at: datetime
    actor_id: str | None = Field(description="Who acted; none for a login tried with a username nobody has")
    actor_role: str | None
    action: str = Field(description="What was done: the actions are listed in docs/identity.md, Audit trail")
    target_user_id: str | None
    tenant_cvr: str | None = Field(
        description="The company: an identity entry's tenant, a billing entry's company changed"
    )
    client_address: str | None
    source: Literal["identity", "billing"] = "identity"
    subject_username: str | None = Field(
        default=None, description="The username a login was tried with, when no user has it"
    )
    account_number: str | None = Field(default=None, description="The account a billing change concerns")
    target: str | None = Field(
        default=None, description="What a billing change changed: an order, a subscription, an account, a company"
    )
    details: dict[str, Any] = Field(default_factory=dict)
    cursor: str = Field(description="Send as `before` for the entries after this one (the next page)")

    @classmethod
    def of(cls, entry: AuditEntry) -> "AuditOut":
        return cls(
            id=entry.id,
            at=as_utc(entry.at),
            actor_id=entry.actor_id,
            actor_role=entry.actor_role,
            action=entry.action,
            target_user_id=entry.target_user_id,
            tenant_cvr=entry.tenant_cvr,
            client_address=entry.client_address,
            source=entry.source,  # type: ignore[arg-type]
            subject_username=entry.subject_username,
            account_number=entry.account_number,
            target=entry.target,
            details=entry.details or {},
            cursor=Cursor.of(entry).encode(),
        )


AUDIT_PAGING = (
    "Newest first. Filters: `from` (inclusive) and `to` (exclusive), ISO 8601 times (without a "
    "zone: UTC); `action`, a prefix of the action (`login.` gives every login entry); `user_id`, "
    "entries where that user acted or was acted on. Paging: at most `limit` entries; the next "
    "page is `before=` the `cursor` of the last entry. A bad filter is a 422 naming it."
)


class AuditQuery(BaseModel):
    """The filters and page both audit reads take."""

    model_config = ConfigDict(populate_by_name=True)

    since: datetime | None = Field(default=None, alias="from")
    to: datetime | None = None
    action: str | None = Field(default=None, pattern=r"^[a-z0-9_.-]{1,50}$")
    user_id: str | None = Field(default=None, max_length=36)
    before: str | None = Field(default=None, max_length=200)

    def filter(self, *, limit: int, cvr: str | None = None) -> AuditFilter:
        return AuditFilter.checked(
            limit=limit,
            since=self.since,
            until=self.to,
            action=self.action,
            user_id=self.user_id,
            cvr=cvr,
            before=self.before,
        )


def _expiry(user: User) -> datetime | None:
    if user.status != "pending" or user.activation_expires_at is None:
        return None
    return as_utc(user.activation_expires_at)


def support_router(
    *,
    db: Database,
    support: Support,
    current_claims: Callable[..., Awaitable[AccessClaims]],
) -> APIRouter:
    router = APIRouter(tags=["support"], responses={401: PROBLEM, 403: PROBLEM})
    Claims = Annotated[AccessClaims, Depends(current_claims)]

    @router.get(
        "/v1/support/companies/{cvr}/users",
        response_model=list[SupportUserOut],
        summary="A company's logins, to find an orphaned administrator (S3; staff only)",
    )
    async def company_users(
        claims: Claims, cvr: Annotated[str, Path(pattern=r"^\d{8}$")], request: Request
    ) -> list[SupportUserOut]:
        async with db.transaction() as session:
            staff = await support.staff(session, claims)
            users = await support.company_users(session, staff, cvr, client_address(request))
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
    async def delete_user(
        claims: Claims, user_id: Annotated[str, Path(max_length=36)], request: Request
    ) -> Response:
        async with db.transaction() as session:
            staff = await support.staff(session, claims)
            await support.delete_user(session, staff, user_id, client_address(request))
        return Response(status_code=204)

    @router.post(
        "/v1/support/users/{user_id}/unlock",
        status_code=204,
        summary="Lift the lock that failed passwords put on a customer's login (staff only)",
        responses={404: PROBLEM},
    )
    async def unlock_user(
        claims: Claims, user_id: Annotated[str, Path(max_length=36)], request: Request
    ) -> Response:
        async with db.transaction() as session:
            staff = await support.staff(session, claims)
            await support.unlock_user(session, staff, user_id, client_address(request))
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
    async def resend_letter(
        claims: Claims, user_id: Annotated[str, Path(max_length=36)], request: Request
    ) -> LetterOut:
        async with db.transaction() as session:
            staff = await support.staff(session, claims)
            letter = await support.resend_letter(session, staff, user_id, client_address(request))
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
        claims: Claims,
        query: Annotated[AuditQuery, Query()],
        cvr: Annotated[str | None, Query(pattern=r"^\d{8}$")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[AuditOut]:
        wanted = query.filter(limit=limit, cvr=cvr)
        async with db.transaction() as session:
            staff = await support.staff(session, claims)
            entries = await support.audit_entries(
                session, staff, cvr=cvr, user_id=wanted.user_id, limit=limit, wanted=wanted
            )
        return [AuditOut.of(e) for e in entries]

    return router


def audit_router(
    *,
    db: Database,
    admin: Administration,
    current_claims: Callable[..., Awaitable[AccessClaims]],
) -> APIRouter:
    """A company's audit trail for its administrators."""
    router = APIRouter(tags=["audit"], responses={401: PROBLEM, 403: PROBLEM})

    @router.get(
        "/v1/audit",
        response_model=list[AuditOut],
        summary="Your company's audit trail, within your grants (administrators)",
        description=(
            "For a login with the user administration function: logins, failed logins and locks, "
            "second factors, administration and support's actions concerning the logins you may "
            "see, and billing's changes of the companies and accounts you hold. "
            f"{AUDIT_PAGING} Without the function: 403."
        ),
        responses={422: PROBLEM},
    )
    async def company_audit(
        claims: Annotated[AccessClaims, Depends(current_claims)],
        query: Annotated[AuditQuery, Query()],
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> list[AuditOut]:
        wanted = query.filter(limit=limit)
        async with db.transaction() as session:
            caller = await admin.administrator(session, claims)
            entries = await company_entries(session, admin, caller, wanted)
        return [AuditOut.of(e) for e in entries]

    return router
