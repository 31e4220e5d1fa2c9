"""Onboarding's parts, built once: the API, the worker and the tests all get them from `build`.

Tests pass their fakes through the same keyword arguments (a frozen clock, a JWKS client that
serves test keys)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.onboarding.config import OnboardingSettings
from services.onboarding.deadline import ApplicationDeadlineWatch
from services.onboarding.models import messaging, rate_limit_hits
from services.onboarding.projections import Projections
from services.onboarding.service import Applications, LetterLimit
from shared.clock import Clock
from shared.db import Database
from shared.messaging import Outbox
from shared.ratelimit import RateLimit
from shared.staff import staff_bearer
from shared.tokens import AccessClaims

if TYPE_CHECKING:  # the API's JWKS client (a worker never fetches keys), its requests
    import httpx
    from starlette.requests import Request


@dataclass(frozen=True)
class OnboardingParts:
    settings: OnboardingSettings
    db: Database
    outbox: Outbox
    clock: Clock
    # FastAPI dependencies (`services.onboarding.deps`): a support login's verified token (S13),
    # and the per-address limit of the public form (counted in onboarding's database, so it
    # holds across every instance of the API).
    current_staff: Callable[..., Awaitable[AccessClaims]]
    rate_limited: Callable[[Request], Awaitable[None]]
    applications: Applications
    projections: Projections
    deadline_watch: ApplicationDeadlineWatch


def build(
    settings: OnboardingSettings | None = None,
    *,
    clock: Clock | None = None,
    jwks_client: httpx.AsyncClient | None = None,
) -> OnboardingParts:
    settings = settings or OnboardingSettings()
    db = Database(settings.db_url)
    clock = clock or settings.clock()
    outbox = Outbox(messaging, clock)
    return OnboardingParts(
        settings=settings,
        db=db,
        outbox=outbox,
        clock=clock,
        current_staff=staff_bearer(settings.token_verifier(client=jwks_client), clock),
        rate_limited=RateLimit(
            "applications",
            settings.rate_limit_per_minute,
            db=db,
            table=rate_limit_hits,
            clock=clock,
            what="applications",
        ).dependency(),
        applications=Applications(
            db=db,
            outbox=outbox,
            clock=clock,
            deadline=settings.delivery_deadline,
            letters=LetterLimit(
                per_cvr=settings.applications_per_cvr, window=settings.applications_per_cvr_window
            ),
        ),
        projections=Projections(outbox=outbox),
        deadline_watch=ApplicationDeadlineWatch(db=db, outbox=outbox, clock=clock),
    )
