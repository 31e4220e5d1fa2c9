"""Identity's HTTP route for a company's audit trail, read by its administrators (S13)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.identity.admin_schemas import AUDIT_PAGING, AuditOut, AuditQuery
from services.identity.audit import company_entries
from services.identity.deps import AdministrationDep, Claims, DbDep
from shared.problems import PROBLEM

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
    claims: Claims,
    query: Annotated[AuditQuery, Query()],
    db: DbDep,
    admin: AdministrationDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[AuditOut]:
    wanted = query.filter(limit=limit)
    async with db.transaction() as session:
        caller = await admin.administrator(session, claims)
        entries = await company_entries(session, admin, caller, wanted)
    return [AuditOut.of(e) for e in entries]
