"""Identity's HTTP routes for delegated administration (S4, S5, S12, S14)."""

# Routes close over local dependencies, so annotations are evaluated eagerly (no __future__ import).
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.admin import Administration, NewUser, RequestedGrant, UserChanges
from services.identity.domain import lifecycle_status
from services.identity.models import User, UserGrant
from services.identity.support import AuditTrail
from shared.clock import as_utc
from shared.db import Database
from shared.events import Function
from shared.problems import MEDIA_TYPE
from shared.ratelimit import client_address
from shared.tokens import AccessClaims
from shared.validation import CvrNumber, DanishMobile, EmailAddress

PROBLEM = {"content": {MEDIA_TYPE: {}}, "description": "problem+json"}
UserId = Annotated[str, Path(max_length=36)]


class GrantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cvr: CvrNumber = Field(max_length=16)
    accounts: Literal["all"] | list[Annotated[str, Field(pattern=r"^\d{6,12}$")]] = Field(
        description='"all" (full access, S5.5) or the account numbers the user may use (limited access)'
    )


class UserIn(BaseModel):
    """The create-user wizard (S5): details, companies, accounts, functions."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    email: EmailAddress = Field(max_length=320, description="The login email is sent here (S6)")
    mobile: DanishMobile = Field(max_length=32, description="Danish mobile number; login codes go here (S7)")
    grants: list[GrantIn] = Field(max_length=200)
    functions: list[Function] = Field(max_length=5)
    language: Literal["da", "en"] = Field(
        default="da", description="The user's codes, notices and emails (the login email too) are in it"
    )


class UserPatch(BaseModel):
    """Change details, companies, accounts or functions; absent fields stay as they are."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: EmailAddress | None = Field(default=None, max_length=320)
    mobile: DanishMobile | None = Field(default=None, max_length=32)
    grants: list[GrantIn] | None = Field(default=None, max_length=200)
    functions: list[Function] | None = Field(default=None, max_length=5)


class GrantOut(BaseModel):
    cvr: str
    accounts: Literal["all"] | list[str]


class UserOut(BaseModel):
    id: str
    username: str
    name: str
    email: str
    mobile: str
    role: str
    status: Literal["pending", "active", "disabled", "expired"] = Field(
        description="`expired`: never activated, and the activation code has expired; "
        "resend-activation sends a new code with a new expiry"
    )
    grants: list[GrantOut]
    functions: list[str]
    created_at: datetime
    activated_at: datetime | None
    login_locked_until: datetime | None = Field(
        default=None,
        description="Failed passwords have locked the username until then; POST .../unlock lifts the lock",
    )
    expires_at: datetime | None = Field(
        default=None,
        description="A login not yet activated (`pending` or `expired`): when its activation code "
        "stops working (or stopped); resend-activation emails a new code with a new expiry",
    )
    activation_expires_at: datetime | None = Field(
        default=None, deprecated=True, description="The same as `expires_at`; kept for older clients"
    )
    language: Literal["da", "en"] = Field(
        default="da", description="The language of the user's codes, notices and emails, and of their portal"
    )


class CompanyOut(BaseModel):
    cvr: str
    name: str
    parent_cvr: str | None
    accounts: list[str]
    all_accounts: bool = Field(description="Whether you hold every account, and so may grant 'all'")


def _out(user: User, grants: list[UserGrant], now: datetime, locked_until: datetime | None = None) -> UserOut:
    not_activated = user.status == "pending" and user.activation_expires_at is not None
    expires_at = as_utc(user.activation_expires_at) if not_activated and user.activation_expires_at else None
    return UserOut(
        id=user.id,
        username=user.username,
        name=user.name,
        email=user.email,
        mobile=user.mobile,
        role=user.role,
        status=lifecycle_status(user.status, expires_at, now),  # type: ignore[arg-type]
        grants=[GrantOut(cvr=g.cvr, accounts=g.accounts) for g in grants],
        functions=list(user.functions),
        created_at=as_utc(user.created_at),
        activated_at=as_utc(user.activated_at) if user.activated_at else None,
        login_locked_until=locked_until,
        expires_at=expires_at,
        activation_expires_at=expires_at,
        language=user.language or "da",  # type: ignore[arg-type]
    )


def admin_router(
    *,
    db: Database,
    admin: Administration,
    audit: AuditTrail,
    current_claims: Callable[..., Awaitable[AccessClaims]],
) -> APIRouter:
    router = APIRouter(tags=["self-service users"], responses={401: PROBLEM, 403: PROBLEM})
    Claims = Annotated[AccessClaims, Depends(current_claims)]

    async def act(
        claims: AccessClaims,
        request: Request,
        action: str,
        do: Callable[[AsyncSession, User], Awaitable[User]],
        *,
        recent_login_to: str | None = None,
        details: dict[str, str] | None = None,
    ) -> UserOut:
        """One administrator action on one user: authorised, done, audited, in one transaction.
        `recent_login_to` names an action that needs a recent login (`require_recent_login`)."""
        async with db.transaction() as session:
            caller = await admin.administrator(session, claims, for_change=True)
            if recent_login_to is not None:
                await admin.require_recent_login(session, claims, recent_login_to)
            user = await do(session, caller)
            await audit.record(
                session,
                actor=caller,
                action=action,
                target=user,
                client_address=client_address(request),
                details=details,
            )
            return await out(session, user)

    async def out(session: AsyncSession, user: User) -> UserOut:
        locked = await admin.locked_until(session, [user])
        return _out(user, await grants_of(session, user.id), admin.clock.now(), locked.get(user.username))

    async def grants_of(session: AsyncSession, user_id: str) -> list[UserGrant]:
        return list(await session.scalars(select(UserGrant).where(UserGrant.user_id == user_id)))

    @router.get(
        "/v1/companies",
        response_model=list[CompanyOut],
        summary="The companies and accounts you may grant (wizard steps 4 and 5)",
    )
    async def companies(claims: Claims) -> list[CompanyOut]:
        async with db.transaction() as session:
            caller = await admin.administrator(session, claims)
            held = await admin.grantable(session, caller)
        return [CompanyOut(**c.__dict__) for c in held]

    @router.get("/v1/users", response_model=list[UserOut], summary="The self-service users of your company")
    async def list_users(claims: Claims) -> list[UserOut]:
        async with db.transaction() as session:
            caller = await admin.administrator(session, claims)
            users = await admin.list_users(session, caller)
            locked = await admin.locked_until(session, [u for u, _ in users])
        now = admin.clock.now()
        return [_out(u, g, now, locked.get(u.username)) for u, g in users]

    @router.post(
        "/v1/users",
        status_code=201,
        response_model=UserOut,
        summary="Create a self-service user; they are emailed their login (S5, S6)",
        responses={422: PROBLEM},
    )
    async def create_user(claims: Claims, body: UserIn, response: Response, request: Request) -> UserOut:
        async with db.transaction() as session:
            caller = await admin.administrator(session, claims, for_change=True)
            await admin.require_recent_login(session, claims, "create a login")
            user = await admin.create_user(
                session,
                caller,
                NewUser(
                    name=" ".join(body.name.split()),
                    email=body.email,
                    mobile=body.mobile,
                    grants=[RequestedGrant(g.cvr, g.accounts) for g in body.grants],
                    functions=list(body.functions),
                    language=body.language,
                ),
            )
            await audit.record(
                session,
                actor=caller,
                action="user.create",
                target=user,
                client_address=client_address(request),
            )
            grants = await grants_of(session, user.id)
        response.headers["Location"] = f"/v1/users/{user.id}"
        return _out(user, grants, admin.clock.now())

    @router.get("/v1/users/{user_id}", response_model=UserOut, summary="One user", responses={404: PROBLEM})
    async def get_user(claims: Claims, user_id: UserId) -> UserOut:
        async with db.transaction() as session:
            caller = await admin.administrator(session, claims)
            user = await admin.get_user(session, caller, user_id)
            return await out(session, user)

    @router.patch(
        "/v1/users/{user_id}",
        response_model=UserOut,
        summary="Change a user; a change of access ends their sessions at once",
        responses={404: PROBLEM, 409: PROBLEM, 422: PROBLEM},
    )
    async def change_user(claims: Claims, user_id: UserId, body: UserPatch, request: Request) -> UserOut:
        changes = UserChanges(
            name=" ".join(body.name.split()) if body.name else None,
            email=body.email,
            mobile=body.mobile,
            grants=None if body.grants is None else [RequestedGrant(g.cvr, g.accounts) for g in body.grants],
            functions=None if body.functions is None else list(body.functions),
        )
        return await act(
            claims,
            request,
            "user.change",
            lambda session, caller: admin.change(session, caller, user_id, changes),
            recent_login_to="change where a login's codes go (mobile or email)"
            if body.email is not None or body.mobile is not None
            else None,
        )

    @router.post(
        "/v1/users/{user_id}/reset-2fa",
        response_model=UserOut,
        summary="Remove the user's authenticator app and recovery codes (lost phone)",
        responses={404: PROBLEM},
    )
    async def reset_2fa(claims: Claims, user_id: UserId, request: Request) -> UserOut:
        return await act(
            claims,
            request,
            "second-factor.changed",
            lambda session, caller: admin.reset_second_factor(session, caller, user_id),
            details={"change": "reset-by-administrator"},
        )

    @router.post(
        "/v1/users/{user_id}/resend-activation",
        response_model=UserOut,
        summary="Email a new activation code to a user who has not activated yet",
        responses={404: PROBLEM, 409: PROBLEM},
    )
    async def resend_activation(claims: Claims, user_id: UserId, request: Request) -> UserOut:
        return await act(
            claims,
            request,
            "user.resend-activation",
            lambda session, caller: admin.resend_activation(session, caller, user_id),
            recent_login_to="send a new activation code",
        )

    @router.delete(
        "/v1/users/{user_id}",
        status_code=204,
        summary="Delete a user; their sessions end at once",
        responses={404: PROBLEM, 409: PROBLEM},
    )
    async def delete_user(claims: Claims, user_id: UserId, request: Request) -> Response:
        async with db.transaction() as session:
            caller = await admin.administrator(session, claims, for_change=True)
            user = await admin.delete(session, caller, user_id)
            await audit.record(
                session,
                actor=caller,
                action="user.delete",
                target=user,
                client_address=client_address(request),
            )
        return Response(status_code=204)

    @router.post(
        "/v1/users/{user_id}/disable",
        response_model=UserOut,
        summary="Disable a user; their sessions end at once",
        responses={404: PROBLEM, 409: PROBLEM},
    )
    async def disable(claims: Claims, user_id: UserId, request: Request) -> UserOut:
        return await act(
            claims, request, "user.disable", lambda session, caller: admin.disable(session, caller, user_id)
        )

    @router.post(
        "/v1/users/{user_id}/enable",
        response_model=UserOut,
        summary="Enable a disabled user",
        responses={404: PROBLEM, 409: PROBLEM},
    )
    async def enable(claims: Claims, user_id: UserId, request: Request) -> UserOut:
        return await act(
            claims, request, "user.enable", lambda session, caller: admin.enable(session, caller, user_id)
        )

    @router.post(
        "/v1/users/{user_id}/unlock",
        response_model=UserOut,
        summary="Lift the lock that failed passwords put on a user's login",
        responses={404: PROBLEM},
    )
    async def unlock(claims: Claims, user_id: UserId, request: Request) -> UserOut:
        return await act(
            claims, request, "user.unlock", lambda session, caller: admin.unlock(session, caller, user_id)
        )

    return router
