"""Onboarding's worker: learns customers and administrators, folds deliveries into status, and
fails applications that miss their deadline."""

from __future__ import annotations

import faust

from services.onboarding.bootstrap import OnboardingParts, build
from services.onboarding.config import OnboardingSettings
from services.onboarding.models import messaging
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
from shared.messaging import Handlers
from shared.worker import WorkerSpec, build_faust_app, periodic


def handlers(parts: OnboardingParts) -> Handlers:
    projections = parts.projections
    return {
        CustomerRegistered: projections.on_customer_registered,
        UserCreated: projections.on_user_created,
        UserActivated: projections.on_user_activated,
        UserDeleted: projections.on_user_deleted,
        AdministratorProvisioningRejected: projections.on_provisioning_rejected,
        CredentialsIssued: projections.on_credentials_issued,
        DeliverySucceeded: projections.on_delivery_succeeded,
        DeliveryFailed: projections.on_delivery_failed,
        DeliverySlaBreached: projections.on_delivery_sla_breached,
    }


def create_worker(settings: OnboardingSettings | None = None) -> faust.App:
    parts = build(settings)
    return build_faust_app(
        WorkerSpec(
            settings=parts.settings,
            db=parts.db,
            tables=messaging,
            handlers=handlers(parts),
            clock=parts.clock,
            background=[
                periodic(
                    "deadline-watch", parts.settings.deadline_check_interval_s, parts.deadline_watch.check
                )
            ],
        )
    )
