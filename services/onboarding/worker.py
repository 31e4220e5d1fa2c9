"""Onboarding's worker: learns customers and administrators, folds deliveries into status."""

from __future__ import annotations

import faust

from services.onboarding import service
from services.onboarding.config import OnboardingSettings
from services.onboarding.models import messaging
from shared.clock import SystemClock
from shared.db import Database
from shared.events import (
    BILLING_CUSTOMERS,
    IDENTITY_USERS,
    NOTIFIER_DELIVERIES,
    AdministratorProvisioningRejected,
    CustomerRegistered,
    DeliveryFailed,
    DeliverySlaBreached,
    DeliverySucceeded,
    UserActivated,
    UserCreated,
)
from shared.worker import Background, WorkerSpec, build_faust_app

SUBSCRIPTIONS = {
    BILLING_CUSTOMERS: {CustomerRegistered.TYPE: service.on_customer_registered},
    IDENTITY_USERS: {
        UserCreated.TYPE: service.on_user_created,
        UserActivated.TYPE: service.on_user_activated,
        AdministratorProvisioningRejected.TYPE: service.on_provisioning_rejected,
    },
    NOTIFIER_DELIVERIES: {
        DeliverySucceeded.TYPE: service.on_delivery_succeeded,
        DeliveryFailed.TYPE: service.on_delivery_failed,
        DeliverySlaBreached.TYPE: service.on_delivery_sla_breached,
    },
}


def create_worker(settings: OnboardingSettings | None = None) -> faust.App:
    settings = settings or OnboardingSettings()
    db = Database(settings.db_url)
    clock = SystemClock()
    watch = service.ApplicationDeadlineWatch(db=db, clock=clock)
    return build_faust_app(
        WorkerSpec(
            settings=settings,
            db=db,
            tables=messaging,
            subscriptions=SUBSCRIPTIONS,
            clock=clock,
            background=[
                Background("deadline-watch", lambda: watch.run_forever(settings.deadline_check_interval_s))
            ],
        )
    )
