"""Onboarding's routes: the public application form (S1), an application's status (S2), and a
company's applications for support staff (S3, S13). The use cases are in
`services.onboarding.service`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse

from services.onboarding.deps import ApplicationsDep, current_staff, rate_limited
from services.onboarding.schemas import (
    ApplicationAccepted,
    ApplicationIn,
    ApplicationOut,
    SupportApplicationOut,
)
from services.onboarding.service import NewApplication
from shared.clock import as_utc
from shared.problems import PROBLEM

router = APIRouter()


@router.post(
    "/v1/applications",
    status_code=202,
    response_model=ApplicationAccepted,
    tags=["applications"],
    summary="Apply for self-service access (S1)",
    description=(
        "409 `admin-exists` when the company, or the company above it in its group (S14), has an "
        "administrator; where it is the company's own, activated one, the problem says "
        "`takeover_available: true`, and the same application with `takeover: true` is accepted as a "
        'takeover (202 with `kind: "takeover"`). 409 `application-pending` while an application '
        "for the CVR is in flight; "
        "429 past the per-client limit or the limit of letters per CVR. An administrator login "
        "that was never activated does not block: a new application replaces it with a new letter."
    ),
    responses={403: PROBLEM, 409: PROBLEM, 422: PROBLEM, 429: PROBLEM},
    dependencies=[Depends(rate_limited)],
)
async def apply(body: ApplicationIn, applications: ApplicationsDep) -> JSONResponse:
    application = await applications.submit(
        NewApplication(
            cvr=body.cvr,
            company_name=body.company_name,
            contact_name=body.contact.name,
            contact_email=body.contact.email,
            contact_mobile=body.contact.mobile,
            language=body.language,
            takeover=body.takeover,
        )
    )
    accepted = ApplicationAccepted(
        id=application.id,
        status=application.status,
        deliver_by=application.deliver_by,
        kind=application.kind,  # type: ignore[arg-type]
    )
    return JSONResponse(
        accepted.model_dump(mode="json"),
        status_code=202,
        headers={"Location": f"/v1/applications/{application.id}"},
    )


@router.get(
    "/v1/applications/{application_id}",
    response_model=ApplicationOut,
    tags=["applications"],
    summary="An application's status",
    responses={404: PROBLEM},
)
async def status(
    application_id: Annotated[str, Path(max_length=36)], applications: ApplicationsDep
) -> ApplicationOut:
    application = await applications.status(application_id)
    return ApplicationOut(
        id=application.id,
        cvr=application.cvr,
        kind=application.kind,  # type: ignore[arg-type]
        status=application.status,  # type: ignore[arg-type]
        status_detail=application.status_detail,
        submitted_at=as_utc(application.submitted_at),
        deliver_by=as_utc(application.deliver_by),
        delivered_at=as_utc(application.delivered_at) if application.delivered_at else None,
    )


@router.get(
    "/v1/support/applications",
    response_model=list[SupportApplicationOut],
    tags=["support"],
    summary="A company's applications, newest first (S3, S13; support staff only)",
    description=(
        "For support: what the company applied for, whether its letter arrived, and whether the "
        "login from it was withdrawn. 401 without a valid access token, 403 for a login that is "
        "not support staff's."
    ),
    responses={401: PROBLEM, 403: PROBLEM, 422: PROBLEM},
    dependencies=[Depends(current_staff)],
)
async def support_applications(
    cvr: Annotated[str, Query(pattern=r"^[0-9]{8}$", description="The company's CVR number, 8 digits")],
    applications: ApplicationsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> list[SupportApplicationOut]:
    return [
        SupportApplicationOut(
            id=a.id,
            cvr=a.cvr,
            company_name=a.company_name,
            contact_name=a.contact_name,
            language=a.language,
            status=a.status,  # type: ignore[arg-type]
            status_detail=a.status_detail,
            submitted_at=as_utc(a.submitted_at),
            deliver_by=as_utc(a.deliver_by),
            delivered_at=as_utc(a.delivered_at) if a.delivered_at else None,
            sla_breached_at=as_utc(a.sla_breached_at) if a.sla_breached_at else None,
            admin_removed_at=as_utc(a.admin_removed_at) if a.admin_removed_at else None,
        )
        for a in await applications.of_company(cvr, limit=limit)
    ]
