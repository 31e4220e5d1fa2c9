"""Onboarding's worker: learns customers and administrators, folds deliveries into status."""

from __future__ import annotations

from functools import partial

import faust

from services.onboarding import service
from services.onboarding.config import OnboardingSettings
from services.onboarding.models import messaging
from shared.db import Database
from shared.events import (
    AdministratorProvisioningRejected,
    CredentialsIssued,
    CustomerRegistered,
    DeliveryFailed,
    DeliverySlaBreached,
    DeliverySucceeded,
    UserActivated,
    UserCreated,
    UserDeleted,
)
from shared.messaging import Handlers, Outbox
from shared.worker import WorkerSpec, build_faust_app, periodic


def handlers(outbox: Outbox) -> Handlers:
    return {
        CustomerRegistered: service.on_customer_registered,
        UserCreated: service.on_user_created,
        UserActivated: service.on_user_activated,
        UserDeleted: service.on_user_deleted,
        AdministratorProvisioningRejected: service.on_provisioning_rejected,
        CredentialsIssued: service.on_credentials_issued,
        DeliverySucceeded: service.on_delivery_succeeded,
        DeliveryFailed: partial(service.on_delivery_failed, outbox=outbox),
        DeliverySlaBreached: service.on_delivery_sla_breached,
    }


def create_worker(settings: OnboardingSettings | None = None) -> faust.App:
    settings = settings or OnboardingSettings()
    db = Database(settings.db_url)
    clock = settings.clock()
    outbox = Outbox(messaging, clock)
    watch = service.ApplicationDeadlineWatch(db=db, outbox=outbox, clock=clock)
    return build_faust_app(
        WorkerSpec(
            settings=settings,
            db=db,
            tables=messaging,
            handlers=handlers(outbox),
            clock=clock,
            background=[periodic("deadline-watch", settings.deadline_check_interval_s, watch.check)],
        )
    )
