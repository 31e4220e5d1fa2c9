"""Onboarding's worker: learns customers and administrators, folds deliveries into status."""

from __future__ import annotations

from functools import partial

import faust

from services.onboarding import service
from services.onboarding.config import OnboardingSettings
from services.onboarding.models import messaging
from shared.db import Database
from shared.events import (
    BILLING_CUSTOMERS,
    IDENTITY_CREDENTIALS,
    IDENTITY_USERS,
    NOTIFIER_DELIVERIES,
    AdministratorProvisioningRejected,
    CredentialsIssued,
    CustomerRegistered,
    DeliveryFailed,
    DeliverySlaBreached,
    DeliverySucceeded,
    Topic,
    UserActivated,
    UserCreated,
    UserDeleted,
)
from shared.messaging import Handler, Outbox
from shared.worker import WorkerSpec, build_faust_app, periodic


def subscriptions(outbox: Outbox) -> dict[Topic, dict[str, Handler]]:
    return {
        BILLING_CUSTOMERS: {CustomerRegistered.TYPE: service.on_customer_registered},
        IDENTITY_USERS: {
            UserCreated.TYPE: service.on_user_created,
            UserActivated.TYPE: service.on_user_activated,
            UserDeleted.TYPE: service.on_user_deleted,
            AdministratorProvisioningRejected.TYPE: service.on_provisioning_rejected,
        },
        IDENTITY_CREDENTIALS: {CredentialsIssued.TYPE: service.on_credentials_issued},
        NOTIFIER_DELIVERIES: {
            DeliverySucceeded.TYPE: service.on_delivery_succeeded,
            DeliveryFailed.TYPE: partial(service.on_delivery_failed, outbox=outbox),
            DeliverySlaBreached.TYPE: service.on_delivery_sla_breached,
        },
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
            subscriptions=subscriptions(outbox),
            clock=clock,
            background=[periodic("deadline-watch", settings.deadline_check_interval_s, watch.check)],
        )
    )
