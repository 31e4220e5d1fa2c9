"""Billing's parts, built once: the API, the worker, the command line and the tests all get
them from `build` (tests pass their clock and JWKS client through its keyword arguments)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from services.billing.catalogue import Catalogue
from services.billing.changes import Changes
from services.billing.config import BillingSettings
from services.billing.demo import DemoData
from services.billing.invoicing import InvoiceRun, Invoicing
from services.billing.models import messaging
from services.billing.ordering import Ordering
from services.billing.registry import Registry
from services.billing.revocations import Revocations
from shared.clock import Clock
from shared.db import Database
from shared.messaging import Outbox
from shared.tokens import TokenVerifier

if TYPE_CHECKING:  # the API's JWKS client; a worker never fetches keys
    import httpx


@dataclass(frozen=True)
class BillingParts:
    settings: BillingSettings
    db: Database
    outbox: Outbox
    clock: Clock
    verifier: TokenVerifier
    # Users' documents and the notifier's each have their own render slots: a user asking for
    # long invoices in parallel must not hold up the delivery of every company's invoices.
    user_renders: anyio.CapacityLimiter
    notifier_renders: anyio.CapacityLimiter
    document_reader_token: str | None
    revocations: Revocations
    catalogue: Catalogue
    registry: Registry
    invoicing: Invoicing
    invoice_run: InvoiceRun
    ordering: Ordering
    changes: Changes
    demo: DemoData


def build(
    settings: BillingSettings | None = None,
    *,
    clock: Clock | None = None,
    jwks_client: httpx.AsyncClient | None = None,
) -> BillingParts:
    settings = settings or BillingSettings()
    clock = clock or settings.clock()
    db = Database(settings.db_url)
    outbox = Outbox(messaging, clock)
    revocations = Revocations(db=db, clock=clock, ended_sessions_kept=settings.ended_sessions_kept)
    registry = Registry(outbox=outbox, clock=clock)
    invoicing = Invoicing(outbox=outbox, clock=clock, payment_days=settings.invoice_payment_days)
    reader_token = settings.document_reader_token
    return BillingParts(
        settings=settings,
        db=db,
        outbox=outbox,
        clock=clock,
        # Access tokens are identity's; billing verifies them against its JWKS (S7, S12).
        verifier=settings.token_verifier(client=jwks_client, is_revoked=revocations.is_revoked),
        user_renders=anyio.CapacityLimiter(settings.document_render_concurrency),
        notifier_renders=anyio.CapacityLimiter(settings.document_render_concurrency),
        document_reader_token=reader_token.get_secret_value() if reader_token else None,
        revocations=revocations,
        catalogue=Catalogue(db=db),
        registry=registry,
        invoicing=invoicing,
        invoice_run=InvoiceRun(db=db, invoicing=invoicing, clock=clock),
        ordering=Ordering(db=db, outbox=outbox, clock=clock),
        changes=Changes(db=db, outbox=outbox, clock=clock),
        demo=DemoData(
            db=db,
            registry=registry,
            invoicing=invoicing,
            clock=clock,
            enabled=settings.seeds_demo_data,
            extra=settings.demo_extra_customers,
            size=settings.demo_size,
        ),
    )
