"""Identity's worker: learns the customer registry, provisions administrators (S2) and keeps
billing's changes in the audit trail."""

from __future__ import annotations

from functools import partial

import faust

from services.identity.audit import forget_unknown_usernames, keep_billing_entry
from services.identity.config import IdentitySettings
from services.identity.login import forget_old_failures
from services.identity.models import messaging
from services.identity.password_reset import forget_old_resets
from services.identity.service import Provisioning
from services.identity.takeover import TakeoverExpiryWatch
from shared.db import Database
from shared.events import (
    ApplicationFailed,
    ApplicationSubmitted,
    BillingAuditRecorded,
    CustomerRegistered,
)
from shared.messaging import Outbox
from shared.worker import WorkerSpec, build_faust_app, periodic


def create_worker(settings: IdentitySettings | None = None) -> faust.App:
    settings = settings or IdentitySettings()
    clock = settings.clock()
    provisioning = Provisioning(
        outbox=Outbox(messaging, clock),
        clock=clock,
        sealer=settings.sealer(),
        code_ttl=settings.activation_code_ttl,
        takeover_notice_period=settings.takeover_notice_period,
    )
    db = Database(settings.db_url)
    takeover_expiry = TakeoverExpiryWatch(db=db, outbox=Outbox(messaging, clock), clock=clock)
    return build_faust_app(
        WorkerSpec(
            settings=settings,
            db=db,
            tables=messaging,
            handlers={
                CustomerRegistered: provisioning.on_customer_registered,
                ApplicationSubmitted: provisioning.on_application_submitted,
                ApplicationFailed: provisioning.on_application_failed,
                # Billing's changes join the company's audit trail (`GET /v1/audit`).
                BillingAuditRecorded: keep_billing_entry,
            },
            clock=clock,
            background=[
                periodic(
                    "login-counters-purge",
                    settings.login_counters_purge_interval_s,
                    partial(forget_old_failures, db, clock, settings.login_lock_duration),
                ),
                periodic(
                    "password-resets-purge",
                    settings.login_counters_purge_interval_s,
                    partial(forget_old_resets, db, clock),
                ),
                periodic(
                    "audit-unknown-usernames-purge",
                    settings.login_counters_purge_interval_s,
                    partial(forget_unknown_usernames, db, clock, settings.audit_unknown_usernames_retention),
                ),
                periodic("takeover-expiry", settings.takeover_expiry_check_interval_s, takeover_expiry.check),
            ],
        )
    )
