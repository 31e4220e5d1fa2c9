"""Onboarding's HTTP API: the app, built from onboarding's parts (`bootstrap.build`); the routes
are in `applications_api.py`."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from services.onboarding import applications_api
from services.onboarding.bootstrap import build
from services.onboarding.config import OnboardingSettings
from services.onboarding.models import KnownCustomer
from shared.clock import Clock
from shared.db import Database
from shared.web import create_app


async def customer_registry_state(db: Database) -> str:
    """Not ready to take applications before the registry arrived from billing.customers:
    every application would be refused as not-a-customer."""
    async with db.transaction() as session:
        known = await session.scalar(select(func.count()).select_from(KnownCustomer))
    return "ok" if known else "empty: no customers learned from billing.customers yet"


def create_api(
    settings: OnboardingSettings | None = None,
    *,
    clock: Clock | None = None,
    jwks_client: httpx.AsyncClient | None = None,
) -> FastAPI:
    parts = build(settings, clock=clock, jwks_client=jwks_client)
    app = create_app(
        title="Adgang onboarding",
        description="Apply for self-service access (S1); the login arrives in the company's e-Boks (S2).",
        settings=parts.settings,
        db=parts.db,
        readiness_checks={"customer_registry": lambda: customer_registry_state(parts.db)},
    )
    app.state.parts = parts
    app.include_router(applications_api.router)
    return app
