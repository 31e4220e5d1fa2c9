"""Billing's worker: seeds the demo customer registry at first start and relays its outbox."""

from __future__ import annotations

import faust

from services.billing.config import BillingSettings
from services.billing.models import messaging
from services.billing.service import seed_demo_customers
from shared.clock import SystemClock
from shared.db import Database
from shared.events import IDENTITY_USERS
from shared.messaging import Outbox
from shared.worker import WorkerSpec, build_faust_app


def create_worker(settings: BillingSettings | None = None) -> faust.App:
    settings = settings or BillingSettings()
    db = Database(settings.db_url)
    clock = SystemClock()
    outbox = Outbox(messaging, clock)

    async def seed() -> None:
        if settings.seeds_demo_data:
            async with db.transaction() as session:
                await seed_demo_customers(session, outbox, clock, extra=settings.demo_extra_customers)

    # Billing follows identity.users for revocations (billing issue); no handler yet, so every
    # event there is acknowledged as ignored. A faust worker needs at least one subscription.
    return build_faust_app(
        WorkerSpec(
            settings=settings,
            db=db,
            tables=messaging,
            subscriptions={IDENTITY_USERS: {}},
            clock=clock,
            on_start=[seed],
        )
    )
