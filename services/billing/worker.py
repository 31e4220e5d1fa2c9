"""Billing's worker: loads the catalogue (and demo data where allowed) at start, follows
`identity.users` for revocations (and forgets ended sessions once their tokens have expired),
provisions ordered subscriptions, issues each month's invoices, and relays its outbox."""

from __future__ import annotations

import faust

from services.billing.bootstrap import BillingParts, build
from services.billing.config import BillingSettings
from services.billing.models import messaging
from shared.clock import Clock
from shared.events import SessionEnded, UserDeleted, UserDisabled, UserEnabled, UserGrantsChanged
from shared.messaging import Handlers
from shared.worker import Background, WorkerSpec, build_faust_app, periodic


def handlers(parts: BillingParts) -> Handlers:
    """`identity.users`: what ends a user's tokens in billing."""
    revocations = parts.revocations
    return {
        UserDisabled: revocations.on_user_disabled,
        UserEnabled: revocations.on_user_enabled,
        UserGrantsChanged: revocations.on_user_grants_changed,
        UserDeleted: revocations.on_user_deleted,
        SessionEnded: revocations.on_session_ended,
    }


def create_worker(settings: BillingSettings | None = None, *, clock: Clock | None = None) -> faust.App:
    parts = build(settings, clock=clock)
    settings = parts.settings
    background: list[Background] = [
        periodic("order-fulfilment", settings.order_fulfilment_interval_s, parts.ordering.fulfil_pending),
        periodic(
            "ended-sessions-purge",
            settings.ended_sessions_purge_interval_s,
            parts.revocations.purge_ended_sessions,
        ),
    ]
    if settings.invoice_run_enabled:
        background.append(
            periodic("invoice-run", settings.invoice_run_interval_s, parts.invoice_run.run_once)
        )
    return build_faust_app(
        WorkerSpec(
            settings=settings,
            db=parts.db,
            tables=messaging,
            handlers=handlers(parts),
            clock=parts.clock,
            on_start=[parts.catalogue.load, parts.demo.load],
            background=background,
        )
    )
