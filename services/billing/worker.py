"""Billing's worker: loads the catalogue (and demo data where allowed) at start, follows
`identity.users` for revocations (and forgets ended sessions once their tokens have expired),
provisions ordered subscriptions, issues each month's invoices, and relays its outbox."""

from __future__ import annotations

from functools import partial

import faust

from services.billing.access import purge_ended_sessions, revocation_handlers
from services.billing.catalogue import sync_catalogue
from services.billing.config import BillingSettings
from services.billing.invoicing import Invoicing, IssueResult, last_closed_period
from services.billing.models import messaging
from services.billing.ordering import Ordering
from services.billing.service import seed_demo_data
from shared.clock import Clock
from shared.db import Database
from shared.messaging import Outbox
from shared.worker import Background, WorkerSpec, build_faust_app, periodic


class InvoiceRun:
    """The monthly run: issues the newest closed month's invoices of every account not yet
    invoiced for it. Run often; it does the work once."""

    def __init__(self, *, db: Database, invoicing: Invoicing, clock: Clock) -> None:
        self.db = db
        self.invoicing = invoicing
        self.clock = clock

    async def run_once(self) -> IssueResult:
        async with self.db.transaction() as session:
            return await self.invoicing.issue(session, last_closed_period(self.clock))


def create_worker(settings: BillingSettings | None = None, *, clock: Clock | None = None) -> faust.App:
    settings = settings or BillingSettings()
    db = Database(settings.db_url)
    clock = clock or settings.clock()
    outbox = Outbox(messaging, clock)
    invoicing = Invoicing(outbox=outbox, clock=clock, payment_days=settings.invoice_payment_days)
    ordering = Ordering(db=db, outbox=outbox, clock=clock)

    async def prepare() -> None:
        async with db.transaction() as session:
            await sync_catalogue(session)
        if settings.seeds_demo_data:
            async with db.transaction() as session:
                await seed_demo_data(
                    session,
                    outbox,
                    invoicing,
                    clock,
                    extra=settings.demo_extra_customers,
                    size=settings.demo_size,
                )

    background: list[Background] = [
        periodic("order-fulfilment", settings.order_fulfilment_interval_s, ordering.fulfil_pending),
        periodic(
            "ended-sessions-purge",
            settings.ended_sessions_purge_interval_s,
            partial(purge_ended_sessions, db, clock, settings.ended_sessions_kept),
        ),
    ]
    if settings.invoice_run_enabled:
        run = InvoiceRun(db=db, invoicing=invoicing, clock=clock)
        background.append(periodic("invoice-run", settings.invoice_run_interval_s, run.run_once))

    return build_faust_app(
        WorkerSpec(
            settings=settings,
            db=db,
            tables=messaging,
            handlers=revocation_handlers(clock),
            clock=clock,
            on_start=[prepare],
            background=background,
        )
    )
