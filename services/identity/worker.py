"""Identity's worker: learns the customer registry, provisions administrators (S2) and keeps
billing's changes in the audit trail; now and then it forgets old counters and resets and ends
the takeovers whose code was not used in time."""

from __future__ import annotations

import faust

from services.identity.audit import forget_unknown_usernames, keep_billing_entry
from services.identity.bootstrap import IdentityParts, build
from services.identity.config import IdentitySettings
from services.identity.lockout import forget_old_failures
from services.identity.models import messaging
from services.identity.password_reset import forget_old_resets
from shared.events import (
    ApplicationFailed,
    ApplicationSubmitted,
    BillingAuditRecorded,
    CustomerRegistered,
)
from shared.messaging import Handlers
from shared.worker import WorkerSpec, build_faust_app, periodic


def handlers(parts: IdentityParts) -> Handlers:
    return {
        CustomerRegistered: parts.provisioning.on_customer_registered,
        ApplicationSubmitted: parts.provisioning.on_application_submitted,
        ApplicationFailed: parts.provisioning.on_application_failed,
        # Billing's changes join the company's audit trail (`GET /v1/audit`).
        BillingAuditRecorded: keep_billing_entry,
    }


def create_worker(settings: IdentitySettings | None = None) -> faust.App:
    parts = build(settings)
    settings, db, clock = parts.settings, parts.db, parts.clock
    purge_every = settings.login_counters_purge_interval_s
    return build_faust_app(
        WorkerSpec(
            settings=settings,
            db=db,
            tables=messaging,
            handlers=handlers(parts),
            clock=clock,
            background=[
                periodic(
                    "login-counters-purge",
                    purge_every,
                    lambda: forget_old_failures(db, clock, settings.login_lock_duration),
                ),
                periodic("password-resets-purge", purge_every, lambda: forget_old_resets(db, clock)),
                periodic(
                    "audit-unknown-usernames-purge",
                    purge_every,
                    lambda: forget_unknown_usernames(db, clock, settings.audit_unknown_usernames_retention),
                ),
                periodic(
                    "takeover-expiry", settings.takeover_expiry_check_interval_s, parts.takeover_expiry.check
                ),
            ],
        )
    )
