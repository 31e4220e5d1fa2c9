"""Billing's HTTP API. This issue's billing is the customer registry, announced on the bus;
invoices, usage, orders and master data (S8–S11) build on it."""

from __future__ import annotations

from fastapi import FastAPI

from services.billing.config import BillingSettings
from shared.db import Database
from shared.web import create_app


def create_api(settings: BillingSettings | None = None) -> FastAPI:
    settings = settings or BillingSettings()
    db = Database(settings.db_url)
    return create_app(
        title="Adgang billing",
        description="Customers, accounts, invoices and usage of business customers (S8–S11).",
        settings=settings,
        db=db,
    )
