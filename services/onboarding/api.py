"""Onboarding's HTTP API: the public application form (S1) and application status (S2)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Path
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

from services.onboarding.config import OnboardingSettings
from services.onboarding.models import KnownCustomer, messaging
from services.onboarding.schemas import ApplicationAccepted, ApplicationIn, ApplicationOut
from services.onboarding.service import LetterLimit, NewApplication, get_application, submit_application
from shared.clock import Clock, SystemClock, as_utc
from shared.db import Database
from shared.messaging import Outbox
from shared.problems import MEDIA_TYPE
from shared.ratelimit import SlidingWindowLimiter
from shared.web import create_app

PROBLEM = {"content": {MEDIA_TYPE: {}}, "description": "problem+json"}


async def customer_registry_state(db: Database) -> str:
    """Not ready to take applications before the registry arrived from billing.customers:
    every application would be refused as not-a-customer."""
    async with db.transaction() as session:
        known = await session.scalar(select(func.count()).select_from(KnownCustomer))
    return "ok" if known else "empty: no customers learned from billing.customers yet"


def create_api(settings: OnboardingSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or OnboardingSettings()
    db = Database(settings.db_url)
    clock = clock or SystemClock()
    outbox = Outbox(messaging, clock)
    letters = LetterLimit(per_cvr=settings.applications_per_cvr, window=settings.applications_per_cvr_window)
    rate_limited = SlidingWindowLimiter(settings.rate_limit_per_minute).dependency("applications")
    app = create_app(
        title="Adgang onboarding",
        description="Apply for self-service access (S1); the login arrives in the company's e-Boks (S2).",
        settings=settings,
        db=db,
        readiness_checks={"customer_registry": lambda: customer_registry_state(db)},
    )

    @app.post(
        "/v1/applications",
        status_code=202,
        response_model=ApplicationAccepted,
        tags=["applications"],
        summary="Apply for self-service access (S1)",
        description=(
            "409 `admin-exists` when the company, or the company above it in its group (S14), has an "
            "administrator; 409 `application-pending` while an application for the CVR is in flight; "
            "429 past the per-client limit or the limit of letters per CVR. An administrator login "
            "that was never activated does not block: a new application replaces it with a new letter."
        ),
        responses={403: PROBLEM, 409: PROBLEM, 422: PROBLEM, 429: PROBLEM},
        dependencies=[Depends(rate_limited)],
    )
    async def apply(body: ApplicationIn) -> JSONResponse:
        async with db.transaction() as session:
            application = await submit_application(
                session,
                outbox,
                clock,
                NewApplication(
                    cvr=body.cvr,
                    company_name=body.company_name,
                    contact_name=body.contact.name,
                    contact_email=body.contact.email,
                    contact_mobile=body.contact.mobile,
                    language=body.language,
                ),
                deadline=settings.delivery_deadline,
                limit=letters,
            )
        accepted = ApplicationAccepted(
            id=application.id, status=application.status, deliver_by=application.deliver_by
        )
        return JSONResponse(
            accepted.model_dump(mode="json"),
            status_code=202,
            headers={"Location": f"/v1/applications/{application.id}"},
        )

    @app.get(
        "/v1/applications/{application_id}",
        response_model=ApplicationOut,
        tags=["applications"],
        summary="An application's status",
        responses={404: PROBLEM},
    )
    async def status(application_id: Annotated[str, Path(max_length=36)]) -> ApplicationOut:
        async with db.transaction() as session:
            application = await get_application(session, application_id)
        return ApplicationOut(
            id=application.id,
            cvr=application.cvr,
            status=application.status,  # type: ignore[arg-type]
            status_detail=application.status_detail,
            submitted_at=as_utc(application.submitted_at),
            deliver_by=as_utc(application.deliver_by),
            delivered_at=as_utc(application.delivered_at) if application.delivered_at else None,
        )

    return app
