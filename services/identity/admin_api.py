"""Identity's HTTP routes for delegated administration (S4, S5, S12, S14)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.admin import Administration, NewUser, RequestedGrant, UserChanges
from services.identity.admin_schemas import CompanyOut, UserIn, UserOut, UserPatch
from services.identity.audit import AuditTrail
from services.identity.deps import AdministrationDep, AuditDep, Claims, DbDep, PathId
from services.identity.domain import lifecycle_status
from services.identity.models import User, UserGrant
from services.identity.queries import grants_of
from services.identity.schemas import GrantOut
from shared.clock import as_utc
from shared.db import Database
from shared.problems import PROBLEM
from shared.tokens import AccessClaims
from shared.web import ClientAddress

router = APIRouter(tags=["self-service users"], responses={401: PROBLEM, 403: PROBLEM})


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


async def _user_out(session: AsyncSession, admin: Administration, user: User) -> UserOut:
    locked = await admin.locked_until(session, [user])
    return _out(user, await grants_of(session, user.id), admin.clock.now(), locked.get(user.username))


@dataclass(frozen=True)
class UserAction:
    """One administrator action on one user: authorised, done, audited, in one transaction."""

    claims: AccessClaims
    db: Database
    admin: Administration
    audit: AuditTrail
    client: str

    async def __call__(
        self,
        action: str,
        do: Callable[[AsyncSession, User], Awaitable[User]],
        *,
        recent_login_to: str | None = None,
        details: dict[str, str] | None = None,
    ) -> UserOut:
        """`recent_login_to` names an action that needs a recent login (`require_recent_login`)."""
        async with self.db.transaction() as session:
            caller = await self.admin.administrator(session, self.claims, for_change=True)
            if recent_login_to is not None:
                await self.admin.require_recent_login(session, self.claims, recent_login_to)
            user = await do(session, caller)
            await self.audit.record(
                session, actor=caller, action=action, target=user, client_address=self.client, details=details
            )
            return await _user_out(session, self.admin, user)


def _user_action(
    claims: Claims, db: DbDep, admin: AdministrationDep, audit: AuditDep, client: ClientAddress
) -> UserAction:
    return UserAction(claims, db, admin, audit, client)


ActOnUser = Annotated[UserAction, Depends(_user_action)]


@router.get(
    "/v1/companies",
    response_model=list[CompanyOut],
    summary="The companies and accounts you may grant (wizard steps 4 and 5)",
)
async def companies(claims: Claims, db: DbDep, admin: AdministrationDep) -> list[CompanyOut]:
    async with db.transaction() as session:
        caller = await admin.administrator(session, claims)
        held = await admin.grantable(session, caller)
    return [CompanyOut(**c.__dict__) for c in held]


@router.get("/v1/users", response_model=list[UserOut], summary="The self-service users of your company")
async def list_users(claims: Claims, db: DbDep, admin: AdministrationDep) -> list[UserOut]:
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
async def create_user(
    claims: Claims,
    body: UserIn,
    response: Response,
    db: DbDep,
    admin: AdministrationDep,
    audit: AuditDep,
    client: ClientAddress,
) -> UserOut:
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
        await audit.record(session, actor=caller, action="user.create", target=user, client_address=client)
        grants = await grants_of(session, user.id)
    response.headers["Location"] = f"/v1/users/{user.id}"
    return _out(user, grants, admin.clock.now())


@router.get("/v1/users/{user_id}", response_model=UserOut, summary="One user", responses={404: PROBLEM})
async def get_user(claims: Claims, user_id: PathId, db: DbDep, admin: AdministrationDep) -> UserOut:
    async with db.transaction() as session:
        caller = await admin.administrator(session, claims)
        user = await admin.get_user(session, caller, user_id)
        return await _user_out(session, admin, user)


@router.patch(
    "/v1/users/{user_id}",
    response_model=UserOut,
    summary="Change a user; a change of access ends their sessions at once",
    responses={404: PROBLEM, 409: PROBLEM, 422: PROBLEM},
)
async def change_user(
    user_id: PathId, body: UserPatch, act: ActOnUser, admin: AdministrationDep
) -> UserOut:
    changes = UserChanges(
        name=" ".join(body.name.split()) if body.name else None,
        email=body.email,
        mobile=body.mobile,
        grants=None if body.grants is None else [RequestedGrant(g.cvr, g.accounts) for g in body.grants],
        functions=None if body.functions is None else list(body.functions),
    )
    return await act(
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
async def reset_2fa(user_id: PathId, act: ActOnUser, admin: AdministrationDep) -> UserOut:
    return await act(
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
async def resend_activation(user_id: PathId, act: ActOnUser, admin: AdministrationDep) -> UserOut:
    return await act(
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
async def delete_user(
    claims: Claims,
    user_id: PathId,
    db: DbDep,
    admin: AdministrationDep,
    audit: AuditDep,
    client: ClientAddress,
) -> Response:
    async with db.transaction() as session:
        caller = await admin.administrator(session, claims, for_change=True)
        user = await admin.delete(session, caller, user_id)
        await audit.record(session, actor=caller, action="user.delete", target=user, client_address=client)
    return Response(status_code=204)


@router.post(
    "/v1/users/{user_id}/disable",
    response_model=UserOut,
    summary="Disable a user; their sessions end at once",
    responses={404: PROBLEM, 409: PROBLEM},
)
async def disable(user_id: PathId, act: ActOnUser, admin: AdministrationDep) -> UserOut:
    return await act("user.disable", lambda session, caller: admin.disable(session, caller, user_id))


@router.post(
    "/v1/users/{user_id}/enable",
    response_model=UserOut,
    summary="Enable a disabled user",
    responses={404: PROBLEM, 409: PROBLEM},
)
async def enable(user_id: PathId, act: ActOnUser, admin: AdministrationDep) -> UserOut:
    return await act("user.enable", lambda session, caller: admin.enable(session, caller, user_id))


@router.post(
    "/v1/users/{user_id}/unlock",
    response_model=UserOut,
    summary="Lift the lock that failed passwords put on a user's login",
    responses={404: PROBLEM},
)
async def unlock(user_id: PathId, act: ActOnUser, admin: AdministrationDep) -> UserOut:
    return await act("user.unlock", lambda session, caller: admin.unlock(session, caller, user_id))
