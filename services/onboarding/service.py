"""Onboarding's use cases: submit an application (S1) and fold what other services report."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.onboarding.domain import IN_FLIGHT, AdministratorStatus, ApplicationStatus, may_move
from services.onboarding.models import Application, KnownAdministrator, KnownCustomer
from shared.clock import Clock, as_utc
from shared.db import Database
from shared.envelope import Envelope
from shared.events import (
    AdministratorProvisioningRejected,
    ApplicationFailed,
    ApplicationSubmitted,
    Contact,
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
from shared.problems import Conflict, NotFound, Problem, TooManyRequests

log = logging.getLogger(__name__)


class NotACustomer(Problem):
    status = 403
    type_suffix = "not-a-customer"
    title = "Not a customer"


class AdminExists(Conflict):
    type_suffix = "admin-exists"
    title = "The company already has an administrator"


class ApplicationPending(Conflict):
    type_suffix = "application-pending"
    title = "An application is already being processed"


@dataclass(frozen=True)
class NewApplication:
    cvr: str
    company_name: str
    contact_name: str
    contact_email: str
    contact_mobile: str
    language: str
    takeover: bool = False


@dataclass(frozen=True)
class LetterLimit:
    """How many applications — each one a letter to the company's e-Boks — one CVR may have in a
    window, whoever sends them: the form is public, and the letters must not become spam."""

    per_cvr: int = 3
    window: timedelta = timedelta(hours=24)


async def submit_application(
    session: AsyncSession,
    outbox: Outbox,
    clock: Clock,
    app: NewApplication,
    *,
    deadline: timedelta,
    limit: LetterLimit | None = None,
) -> Application:
    """Store the application and `ApplicationSubmitted` in one transaction (S1, S2).

    A pending administrator login (letter sent, never activated) does not block the company:
    anyone may apply for any CVR, so that login may be a stranger's. Identity withdraws it and
    issues a new letter; authority comes from the letter, whose code the activator needs (S2)."""
    limit = limit or LetterLimit()
    customer = await session.get(KnownCustomer, app.cvr)
    if customer is None:
        raise NotACustomer(
            f"CVR {app.cvr} is not registered as a business customer, so it cannot apply for "
            "self-service access. If the company has just become a customer, try again later."
        )
    active = await session.scalar(
        select(KnownAdministrator.user_id)
        .where(KnownAdministrator.cvr == app.cvr, KnownAdministrator.status == AdministratorStatus.active)
        .limit(1)
    )
    kind = "application"
    if active is not None and not app.takeover:
        raise AdminExists(_admin_exists_detail(app.cvr), recovery="contact-support", takeover_available=True)
    if active is not None:
        kind = "takeover"  # whoever reads the company's e-Boks may take over, after a notice period
    holder = await group_holder(session, customer, now=clock.now())
    if holder is not None:
        group, status = holder
        # The group's company by name and CVR, so a client can say in its own words whom to ask.
        raise AdminExists(
            _held_by_group_detail(app.cvr, group, status),
            recovery="ask-group-administrator",
            group_cvr=group.cvr,
            group_name=group.name,
        )
    pending = await session.scalar(
        select(Application)
        .where(Application.cvr == app.cvr, Application.status.in_(list(IN_FLIGHT)))
        .limit(1)
    )
    if pending is not None:
        raise ApplicationPending(_pending_detail(pending))

    now = clock.now()
    # Applications that may have sent a letter; a failed or rejected one sent none. A takeover
    # whose letter failed counts all the same: identity told the administrators by email and
    # SMS when it recorded it, and a stranger must not have them texted without end. Racing
    # requests cannot both pass: only one application may be in flight (the partial unique index).
    recent = list(
        await session.scalars(
            select(Application.submitted_at)
            .where(
                Application.cvr == app.cvr,
                Application.submitted_at > now - limit.window,
                or_(
                    Application.status.not_in([ApplicationStatus.failed, ApplicationStatus.rejected]),
                    and_(Application.kind == "takeover", Application.status == ApplicationStatus.failed),
                ),
            )
            .order_by(Application.submitted_at.desc())
            .limit(limit.per_cvr)
        )
    )
    if len(recent) >= limit.per_cvr:
        again_at = as_utc(recent[-1]) + limit.window
        raise TooManyRequests(
            _too_many_letters_detail(app.cvr, limit, again_at),
            retry_after=max(1, int((again_at - now).total_seconds()) + 1),
        )

    application = Application(
        id=str(uuid.uuid4()),
        cvr=app.cvr,
        company_name=app.company_name,
        contact_name=app.contact_name,
        contact_email=app.contact_email,
        contact_mobile=app.contact_mobile,
        language=app.language,
        kind=kind,
        status=ApplicationStatus.received,
        submitted_at=now,
        deliver_by=now + deadline,
        updated_at=now,
    )
    session.add(application)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent application for the same CVR won the race
        raise ApplicationPending(
            f"An application for CVR {app.cvr} is already being processed. Its letter will arrive "
            "in the company's e-Boks."
        ) from exc
    await outbox.add(
        session,
        ApplicationSubmitted(
            application_id=uuid.UUID(application.id),
            cvr=app.cvr,
            company_name=customer.name,
            contact=Contact(name=app.contact_name, email=app.contact_email, mobile=app.contact_mobile),
            language=app.language,  # type: ignore[arg-type]
            submitted_at=now,
            deliver_by=application.deliver_by,
            # What was asked for: identity decides again with its own data (this projection may
            # lag behind an activation), and makes a takeover only of an activated administrator.
            takeover=app.takeover,
        ),
    )
    return application


async def group_holder(
    session: AsyncSession, customer: KnownCustomer, *, now: datetime
) -> tuple[KnownCustomer, str] | None:
    """The nearest company above `customer` in its group (parent, grandparent, ...) that has a
    live administrator, who holds `customer` too (S14), and that administrator's status. A
    pending login whose letter code expired unused holds nothing: nobody can activate it."""
    seen = {customer.cvr}
    parent_cvr = customer.parent_cvr
    while parent_cvr and parent_cvr not in seen:  # a cycle in bad data must not hang the form
        seen.add(parent_cvr)
        parent = await session.get(KnownCustomer, parent_cvr)
        statuses = {
            admin.status
            for admin in await session.scalars(
                select(KnownAdministrator).where(KnownAdministrator.cvr == parent_cvr)
            )
            if not (
                admin.status == AdministratorStatus.pending
                and admin.expires_at is not None
                and as_utc(admin.expires_at) <= now
            )
        }
        if statuses:
            group = parent or KnownCustomer(cvr=parent_cvr, name=f"CVR {parent_cvr}", parent_cvr=None)
            status = (
                AdministratorStatus.active
                if AdministratorStatus.active in statuses
                else AdministratorStatus.pending
            )
            return group, status
        parent_cvr = parent.parent_cvr if parent else None
    return None


def _admin_exists_detail(cvr: str) -> str:
    return (
        f"CVR {cvr} already has an administrator for self-service. Ask that administrator to create "
        "a login for you. If nobody knows that login any more (for example because the only "
        "administrator has left the company), whoever can read the company's e-Boks can take over the "
        'administration: apply again with "takeover": true. A letter to the e-Boks carries a code that '
        "works after a notice period, in which the current administrators are told by email and SMS "
        "and may cancel it; once it is used they are disabled. Or contact support: support deletes the "
        "old login, and the company then applies again."
    )


def _held_by_group_detail(cvr: str, group: KnownCustomer, status: str) -> str:
    whose = (
        f"{group.name} (CVR {group.cvr}) has an administrator for self-service, who"
        if status == AdministratorStatus.active
        else f"An administrator login for {group.name} (CVR {group.cvr}) has been sent to that company's "
        "e-Boks; once activated, it"
    )
    detail = (
        f"CVR {cvr} belongs to the group of {group.name} (CVR {group.cvr}). {whose} holds every company "
        f"of the group, CVR {cvr} included. Ask the administrator of {group.name} to create a login "
        "for you with access to this company: no application and no call to support is needed."
    )
    if status != AdministratorStatus.active:
        detail += (
            f" If nobody at {group.name} asked for that login, {group.name} can apply again: a new "
            "application replaces a login that was never activated."
        )
    return detail


def _too_many_letters_detail(cvr: str, limit: LetterLimit, again_at: datetime) -> str:
    hours = int(limit.window.total_seconds() // 3600)
    return (
        f"CVR {cvr} has had {limit.per_cvr} applications in the last {hours} hours, and each one sends a "
        "letter to the company's e-Boks. The newest letter's username and activation code work: "
        "whoever activates with them sets and confirms their own mobile number and email. A new "
        f"application can be made from {again_at:%Y-%m-%d %H:%M} UTC."
    )


def _pending_detail(pending: Application) -> str:
    return (
        f"An application for CVR {pending.cvr} (submitted {pending.submitted_at:%Y-%m-%d %H:%M} UTC) is "
        "already being processed. The username and activation code will arrive in the company's "
        "e-Boks; a new application cannot be made until that one is finished."
    )


async def get_application(session: AsyncSession, application_id: str) -> Application:
    application = await session.get(Application, application_id)
    if application is None:
        raise NotFound(f"There is no application with id {application_id}.")
    return application


async def company_applications(session: AsyncSession, cvr: str, *, limit: int) -> list[Application]:
    """A company's applications, newest first, for support (S3, S13)."""
    return list(
        await session.scalars(
            select(Application)
            .where(Application.cvr == cvr)
            .order_by(Application.submitted_at.desc(), Application.id.desc())
            .limit(limit)
        )
    )


# --- folding events from other services -----------------------------------------------------


async def on_customer_registered(session: AsyncSession, envelope: Envelope) -> None:
    event = envelope.event
    assert isinstance(event, CustomerRegistered)
    customer = await session.get(KnownCustomer, event.cvr)
    if customer is None:
        session.add(KnownCustomer(cvr=event.cvr, name=event.name, parent_cvr=event.parent_cvr))
    else:
        customer.name, customer.parent_cvr = event.name, event.parent_cvr


async def _move(
    session: AsyncSession,
    application_id: object,
    status: ApplicationStatus,
    at: datetime,
    detail: str | None = None,
) -> Application | None:
    """Move an application forward; returns it only if it moved."""
    if application_id is None:
        return None
    application = await session.get(Application, str(application_id), with_for_update=True)
    if application is None or not may_move(ApplicationStatus(application.status), status):
        return None
    application.status = status
    application.status_detail = detail
    application.updated_at = at
    return application


async def on_user_created(session: AsyncSession, envelope: Envelope) -> None:
    event = envelope.event
    assert isinstance(event, UserCreated)
    if event.role != "administrator":
        return
    if await session.get(KnownAdministrator, str(event.user_id)) is None:
        session.add(
            KnownAdministrator(
                user_id=str(event.user_id),
                cvr=event.tenant_cvr,
                status=AdministratorStatus.pending,
                application_id=str(event.application_id) if event.application_id else None,
                since=event.created_at,
                expires_at=event.activation_expires_at,
            )
        )
    await _move(session, event.application_id, ApplicationStatus.provisioning, event.created_at)


async def on_credentials_issued(session: AsyncSession, envelope: Envelope) -> None:
    """A new letter for a pending administrator (support sent it again, S3): a new code, with a
    new expiry. A letter for a login not known here (yet, or any more) changes nothing: its
    `UserCreated` carries the expiry of its first letter."""
    event = envelope.event
    assert isinstance(event, CredentialsIssued)
    admin = await session.get(KnownAdministrator, str(event.user_id), with_for_update=True)
    if admin is None or admin.status != AdministratorStatus.pending:
        return
    if admin.expires_at is None or as_utc(admin.expires_at) < event.expires_at:
        admin.expires_at = event.expires_at


async def on_user_activated(session: AsyncSession, envelope: Envelope) -> None:
    event = envelope.event
    assert isinstance(event, UserActivated)
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


async def on_provisioning_rejected(session: AsyncSession, envelope: Envelope) -> None:
    event = envelope.event
    assert isinstance(event, AdministratorProvisioningRejected)
    # Identity saw an administrator this projection does not know of (an activation not here yet,
    # or colleagues given user administration): the same way out as the form's 409, a takeover.
    detail = _admin_exists_detail(event.cvr)
    if event.reason == "takeover-pending":
        detail = (
            "A takeover of the company's administration is already under way; its letter is in the "
            "company's e-Boks. Only one takeover can be open at a time: use that letter's code once its "
            "notice period has passed, or apply again after it has been cancelled or has expired."
        )
    elif event.group_cvr is not None:
        # Identity saw the group's administrator before this projection did (S14).
        group = await session.get(KnownCustomer, event.group_cvr)
        group = group or KnownCustomer(cvr=event.group_cvr, name=f"CVR {event.group_cvr}", parent_cvr=None)
        detail = _held_by_group_detail(event.cvr, group, AdministratorStatus.active)
    await _move(session, event.application_id, ApplicationStatus.rejected, event.rejected_at, detail)


async def on_delivery_succeeded(session: AsyncSession, envelope: Envelope) -> None:
    event = envelope.event
    assert isinstance(event, DeliverySucceeded)
    application = await _move(
        session, event.application_id, ApplicationStatus.credentials_sent, event.delivered_at
    )
    if application is not None and application.status == ApplicationStatus.credentials_sent:
        application.delivered_at = application.delivered_at or event.delivered_at


async def on_delivery_failed(session: AsyncSession, envelope: Envelope, *, outbox: Outbox) -> None:
    event = envelope.event
    assert isinstance(event, DeliveryFailed)
    application = await _move(
        session,
        event.application_id,
        ApplicationStatus.failed,
        event.failed_at,
        "The letter could not be delivered to the company's e-Boks. Support has been alerted; the "
        "company can apply again.",
    )
    if application is not None:
        await outbox.add(session, _failed(application, "delivery-failed", event.failed_at))


def _failed(application: Application, reason: str, at: datetime) -> ApplicationFailed:
    return ApplicationFailed(
        application_id=uuid.UUID(application.id),
        cvr=application.cvr,
        reason=reason,  # type: ignore[arg-type]
        failed_at=at,
    )


async def on_user_deleted(session: AsyncSession, envelope: Envelope) -> None:
    """A login is gone (withdrawn, or deleted by support, S3): its CVR may apply again."""
    event = envelope.event
    assert isinstance(event, UserDeleted)
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


async def on_delivery_sla_breached(session: AsyncSession, envelope: Envelope) -> None:
    event = envelope.event
    assert isinstance(event, DeliverySlaBreached)
    if event.application_id is None:
        return
    application = await session.get(Application, str(event.application_id))
    if application is not None and application.sla_breached_at is None:
        application.sla_breached_at = event.detected_at


class ApplicationDeadlineWatch:
    """Fails applications still in flight after `deliver_by` (S2: 2 hours), once.

    Identity never provisioned them (its worker was down for hours, or the event was
    dead-lettered), so no letter is on its way. Failing them says so, and lets the company
    apply again instead of being told forever that an application is in flight.
    """

    def __init__(self, *, db: Database, outbox: Outbox, clock: Clock) -> None:
        self._db = db
        self._outbox = outbox
        self._clock = clock

    async def check(self) -> int:
        now = self._clock.now()
        async with self._db.transaction() as session:
            overdue = list(
                await session.scalars(
                    select(Application).where(
                        Application.status.in_(list(IN_FLIGHT)), Application.deliver_by < now
                    )
                )
            )
            for application in overdue:
                application.status = ApplicationStatus.failed
                application.status_detail = (
                    "No login was issued before the deadline. Support has been alerted; the company "
                    "can apply again."
                )
                application.updated_at = now
                await self._outbox.add(session, _failed(application, "deadline-missed", now))
                log.error(
                    "application %s for CVR %s missed its deadline %s without a letter",
                    application.id,
                    application.cvr,
                    as_utc(application.deliver_by).isoformat(),
                )
        return len(overdue)
