"""Identity's HTTP routes for support staff (S3, S13)."""

# Routes close over local dependencies, so annotations are evaluated eagerly (no __future__ import).
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel

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
    status: str
    functions: list[str]
    created_at: datetime
    activated_at: datetime | None


class AuditOut(BaseModel):
    id: str
    at: datetime
    actor_id: str
    actor_role: str
    action: str
    target_user_id: str | None
    tenant_cvr: str | None
    client_address: str | None


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
        return [
            SupportUserOut(
                id=u.id,
                username=u.username,
                name=u.name,
                email=u.email,
                role=u.role,
                status=u.status,
                functions=list(u.functions),
                created_at=as_utc(u.created_at),
                activated_at=as_utc(u.activated_at) if u.activated_at else None,
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

    @router.get("/v1/support/audit", response_model=list[AuditOut], summary="The audit trail (staff only)")
    async def audit(
        claims: Claims,
        cvr: Annotated[str | None, Query(pattern=r"^\d{8}$")] = None,
        user_id: Annotated[str | None, Query(max_length=36)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[AuditOut]:
        async with db.transaction() as session:
            staff = await support.staff(session, claims)
            entries = await support.audit_entries(session, staff, cvr=cvr, user_id=user_id, limit=limit)
        return [
            AuditOut(
                id=e.id,
                at=as_utc(e.at),
                actor_id=e.actor_id,
                actor_role=e.actor_role,
                action=e.action,
                target_user_id=e.target_user_id,
                tenant_cvr=e.tenant_cvr,
                client_address=e.client_address,
            )
            for e in entries
        ]

    return router
