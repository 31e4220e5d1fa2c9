"""Billing's HTTP API: invoices and usage (S8), subscriptions and orders (S9), master data and
invoice format (S10), telephony and Personligt Nummer settings (S11), for the companies and
accounts the caller's token grants (S5.4–S5.6, S14). The routes are in the `*_api` modules."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from services.billing import (
    changes_api,
    internal_api,
    invoices_api,
    orders_api,
    telephony_api,
    usage_api,
)
from services.billing.bootstrap import build
from services.billing.config import BillingSettings
from shared.clock import Clock
from shared.web import create_app


def create_api(
    settings: BillingSettings | None = None,
    *,
    clock: Clock | None = None,
    jwks_client: httpx.AsyncClient | None = None,
) -> FastAPI:
    parts = build(settings, clock=clock, jwks_client=jwks_client)
    app = create_app(
        title="Adgang billing",
        description="Invoices and usage (S8), orders (S9), master data and invoice format (S10), "
        "telephony and Personligt Nummer (S11) of business customers, within the caller's grants (S14).",
        settings=parts.settings,
        db=parts.db,
    )
    app.state.parts = parts
    for feature in (invoices_api, usage_api, orders_api, internal_api, changes_api, telephony_api):
        app.include_router(feature.router)
    return app
