"""What the other services report, folded into onboarding's tables.

- `billing.customers`: who may apply (`KnownCustomer`, with its group's parent).
- `identity.users`: which companies have an administrator login, pending or activated
  (`KnownAdministrator`), and how far an application came (provisioning, rejected; its login
  withdrawn or deleted).
- `notifier.deliveries`: whether the letter reached the company's e-Boks (credentials sent, or
  failed with `ApplicationFailed`), and whether it missed its deadline (S2).

Statuses only move forward (`domain.may_move`): events from different topics may arrive in any
order. The worker (`services.onboarding.worker`) maps each event class to its method here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.onboarding.domain import AdministratorStatus, ApplicationStatus, may_move
from services.onboarding.models import Application, KnownAdministrator, KnownCustomer
from services.onboarding.service import admin_exists_detail, held_by_group_detail
from shared.clock import as_utc
from shared.db import upsert_statement
from shared.envelope import Envelope
from shared.events import (
    AdministratorProvisioningRejected,
    ApplicationFailed,
    CredentialsIssued,
    CustomerRegistered,
    DeliveryFailed,
    DeliverySlaBreached,
    DeliverySucceeded,
    UserActivated,
    UserCreated,
    UserDeleted,
)
from shared.messaging import Outbox


@dataclass(frozen=True)
class Projections:
    """The event handlers, built once by `services.onboarding.bootstrap`; each runs in the
    consumer's transaction, with the event recorded in the inbox."""

    outbox: Outbox

    async def on_customer_registered(
        self, session: AsyncSession, envelope: Envelope[CustomerRegistered]
    ) -> None:
        event = envelope.event
        customer = await session.get(KnownCustomer, event.cvr)
        if customer is None:
            session.add(KnownCustomer(cvr=event.cvr, name=event.name, parent_cvr=event.parent_cvr))
        else:
            customer.name, customer.parent_cvr = event.name, event.parent_cvr

    async def on_user_created(self, session: AsyncSession, envelope: Envelope[UserCreated]) -> None:
        event = envelope.event
        if event.role != "administrator":
            return
        # One statement: a login already known (a redelivered event, or its activation came
        # first) is kept as it is.
        await session.execute(
            upsert_statement(session, KnownAdministrator)
            .values(
                user_id=str(event.user_id),
                cvr=event.tenant_cvr,
                status=AdministratorStatus.pending,
                application_id=str(event.application_id) if event.application_id else None,
                since=event.created_at,
                expires_at=event.activation_expires_at,
            )
            .on_conflict_do_nothing(index_elements=["user_id"])
        )
        await _move(session, event.application_id, ApplicationStatus.provisioning, event.created_at)

    async def on_credentials_issued(
        self, session: AsyncSession, envelope: Envelope[CredentialsIssued]
    ) -> None:
        """A new letter for a pending administrator (support sent it again, S3): a new code, with a
        new expiry. A letter for a login not known here (yet, or any more) changes nothing: its
        `UserCreated` carries the expiry of its first letter."""
        event = envelope.event
        admin = await session.get(KnownAdministrator, str(event.user_id), with_for_update=True)
        if admin is None or admin.status != AdministratorStatus.pending:
            return
        if admin.expires_at is None or as_utc(admin.expires_at) < event.expires_at:
            admin.expires_at = event.expires_at

    async def on_user_activated(self, session: AsyncSession, envelope: Envelope[UserActivated]) -> None:
        event = envelope.event
        if event.role != "administrator":
            return
        admin = await session.get(KnownAdministrator, str(event.user_id))
        if admin is None:
            session.add(
                KnownAdministrator(
                    user_id=str(event.user_id),
                    cvr=event.tenant_cvr,
                    status=AdministratorStatus.active,
                    since=event.activated_at,
                )
            )
        else:
            admin.status, admin.since = AdministratorStatus.active, event.activated_at

    async def on_provisioning_rejected(
        self, session: AsyncSession, envelope: Envelope[AdministratorProvisioningRejected]
    ) -> None:
        event = envelope.event
        # Identity saw an administrator this projection does not know of (an activation not here yet,
        # or colleagues given user administration): the same way out as the form's 409, a takeover.
        detail = admin_exists_detail(event.cvr)
        if event.reason == "takeover-pending":
            detail = (
                "A takeover of the company's administration is already under way; its letter is in the "
                "company's e-Boks. Only one takeover can be open at a time: use that letter's code once its "
                "notice period has passed, or apply again after it has been cancelled or has expired."
            )
        elif event.group_cvr is not None:
            # Identity saw the group's administrator before this projection did (S14).
            group = await session.get(KnownCustomer, event.group_cvr)
            group = group or KnownCustomer(
                cvr=event.group_cvr, name=f"CVR {event.group_cvr}", parent_cvr=None
            )
            detail = held_by_group_detail(event.cvr, group, AdministratorStatus.active)
        await _move(session, event.application_id, ApplicationStatus.rejected, event.rejected_at, detail)

    async def on_delivery_succeeded(
        self, session: AsyncSession, envelope: Envelope[DeliverySucceeded]
    ) -> None:
        event = envelope.event
        # The first delivery's time stays (a letter the transport had already delivered).
        await _move(
            session,
            event.application_id,
            ApplicationStatus.credentials_sent,
            event.delivered_at,
            delivered_at=event.delivered_at,
        )

    async def on_delivery_failed(self, session: AsyncSession, envelope: Envelope[DeliveryFailed]) -> None:
        event = envelope.event
        application = await _move(
            session,
            event.application_id,
            ApplicationStatus.failed,
            event.failed_at,
            "The letter could not be delivered to the company's e-Boks. Support has been alerted; the "
            "company can apply again.",
        )
        if application is not None:
            await self.outbox.add(
                session, application_failed(application, "delivery-failed", event.failed_at)
            )

    async def on_user_deleted(self, session: AsyncSession, envelope: Envelope[UserDeleted]) -> None:
        """A login is gone (withdrawn, or deleted by support, S3): its CVR may apply again."""
        event = envelope.event
        admin = await session.get(KnownAdministrator, str(event.user_id))
        if admin is not None:
            await session.delete(admin)
        application_id = event.application_id or (admin.application_id if admin else None)
        if application_id is not None:
            application = await session.get(Application, str(application_id))
            if application is not None and application.admin_removed_at is None:
                application.admin_removed_at = event.deleted_at
                if event.reason == "replaced-by-new-application":
                    application.status_detail = (
                        "The login from this application was withdrawn before it was activated: a newer "
                        "application for the company replaced it. Use the newest letter."
                    )

    async def on_delivery_sla_breached(
        self, session: AsyncSession, envelope: Envelope[DeliverySlaBreached]
    ) -> None:
        event = envelope.event
        if event.application_id is None:
            return
        application = await session.get(Application, str(event.application_id))
        if application is not None and application.sla_breached_at is None:
            application.sla_breached_at = event.detected_at


# Where an application may come from to reach a status (`domain.may_move`).
_MOVES_FROM = {new: [old for old in ApplicationStatus if may_move(old, new)] for new in ApplicationStatus}


async def _move(
    session: AsyncSession,
    application_id: object,
    status: ApplicationStatus,
    at: datetime,
    detail: str | None = None,
    *,
    delivered_at: datetime | None = None,
) -> Application | None:
    """Move an application forward, in one statement (it checks the status it comes from and
    changes it at once, so no other transaction moves it in between); returns it only if it
    moved. `delivered_at` is set unless the application has one already."""
    if application_id is None:
        return None
    values: dict[str, Any] = {"status": status, "status_detail": detail, "updated_at": at}
    if delivered_at is not None:
        values["delivered_at"] = func.coalesce(Application.delivered_at, delivered_at)
    moved = await session.scalars(
        update(Application)
        .where(Application.id == str(application_id), Application.status.in_(_MOVES_FROM[status]))
        .values(values)
        .returning(Application),
        # The row it returns refreshes the application if the session holds it already, so the
        # session need not evaluate the criteria against what it holds first.
        execution_options={"populate_existing": True, "synchronize_session": False},
    )
    return moved.one_or_none()


def application_failed(application: Application, reason: str, at: datetime) -> ApplicationFailed:
    """The event that tells identity (it withdraws the pending login) and support."""
    return ApplicationFailed(
        application_id=uuid.UUID(application.id),
        cvr=application.cvr,
        reason=reason,  # type: ignore[arg-type]
        failed_at=at,
    )
