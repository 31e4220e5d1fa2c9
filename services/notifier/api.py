"""Notifier's read-only API: delivery records for support staff (S3, S13), and in development
the local e-Boks, mail and SMS sinks. Routes: `deliveries_api.py`, `sinks_api.py`."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from services.notifier import deliveries_api, sinks_api
from services.notifier.bootstrap import build
from services.notifier.config import NotifierSettings
from shared.clock import Clock
from shared.settings import Environment
from shared.web import create_app


def create_api(
    settings: NotifierSettings | None = None,
    *,
    clock: Clock | None = None,
    jwks_client: httpx.AsyncClient | None = None,
) -> FastAPI:
    settings = settings or NotifierSettings()
    # The records name companies, mail addresses and mobile numbers: support staff's only, in
    # every environment (the portal's support console passes the staff member's token).
    parts = build(settings, clock=clock, jwks_client=jwks_client)
    app = create_app(
        title="Adgang notifier",
        description="Delivery of letters to e-Boks, email and SMS, and their status.",
        settings=settings,
        db=parts.db,
    )
    app.state.parts = parts
    app.include_router(deliveries_api.router)
    if settings.environment is not Environment.production:
        if settings.eboks_transport == "spool":
            app.include_router(sinks_api.eboks_router)
        app.include_router(sinks_api.mail_router)
    return app
