"""Onboarding's use cases: the application form (S1), an application's status (S2), and a
company's applications for support (S3, S13). Each is one transaction; the refusals and their
texts live here.

What other services report is folded in by `services.onboarding.projections`; applications that
miss their deadline are failed by `services.onboarding.deadline`."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.onboarding.domain import IN_FLIGHT, AdministratorStatus, ApplicationStatus
from services.onboarding.models import Application, KnownAdministrator, KnownCustomer
from shared.clock import Clock, as_utc
from shared.db import Database
from shared.events import ApplicationSubmitted, Contact
from shared.messaging import Outbox
from shared.problems import Conflict, NotFound, Problem, TooManyRequests


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


@dataclass(frozen=True)
class Applications:
    """The application form's use cases, built once by `services.onboarding.bootstrap`."""

    db: Database
    outbox: Outbox
    clock: Clock
    deadline: timedelta  # when the letter must be in the company's e-Boks (S2)
    letters: LetterLimit = LetterLimit()

    async def submit(self, app: NewApplication) -> Application:
        """Store the application and `ApplicationSubmitted` in one transaction (S1, S2).

        A pending administrator login (letter sent, never activated) does not block the company:
        anyone may apply for any CVR, so that login may be a stranger's. Identity withdraws it and
        issues a new letter; authority comes from the letter, whose code the activator needs (S2)."""
        async with self.db.transaction() as session:
            return await self._submit(session, app)

    async def _submit(self, session: AsyncSession, app: NewApplication) -> Application:
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
            raise AdminExists(
                admin_exists_detail(app.cvr), recovery="contact-support", takeover_available=True
            )
        if active is not None:
            kind = "takeover"  # whoever reads the company's e-Boks may take over, after a notice period
        holder = await group_holder(session, customer, now=self.clock.now())
        if holder is not None:
            group, status = holder
            # The group's company by name and CVR, so a client can say in its own words whom to ask.
            raise AdminExists(
                held_by_group_detail(app.cvr, group, status),
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

        now = self.clock.now()
        # Applications that may have sent a letter; a failed or rejected one sent none. A takeover
        # whose letter failed counts all the same: identity told the administrators by email and
        # SMS when it recorded it, and a stranger must not have them texted without end. Racing
        # requests cannot both pass: only one application may be in flight (the partial unique index).
        recent = list(
            await session.scalars(
                select(Application.submitted_at)
                .where(
                    Application.cvr == app.cvr,
                    Application.submitted_at > now - self.letters.window,
                    or_(
                        Application.status.not_in([ApplicationStatus.failed, ApplicationStatus.rejected]),
                        and_(Application.kind == "takeover", Application.status == ApplicationStatus.failed),
                    ),
                )
                .order_by(Application.submitted_at.desc())
                .limit(self.letters.per_cvr)
            )
        )
        if len(recent) >= self.letters.per_cvr:
            again_at = as_utc(recent[-1]) + self.letters.window
            raise TooManyRequests(
                _too_many_letters_detail(app.cvr, self.letters, again_at),
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
            deliver_by=now + self.deadline,
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
        await self.outbox.add(
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

    async def status(self, application_id: str) -> Application:
        """An application by its random id: public, as the form's receipt (S2)."""
        async with self.db.transaction() as session:
            application = await session.get(Application, application_id)
        if application is None:
            raise NotFound(f"There is no application with id {application_id}.")
        return application

    async def of_company(self, cvr: str, *, limit: int) -> list[Application]:
        """A company's applications, newest first, for support (S3, S13)."""
        async with self.db.reading() as session:
            return list(
                await session.scalars(
                    select(Application)
                    .where(Application.cvr == cvr)
                    .order_by(Application.submitted_at.desc(), Application.id.desc())
                    .limit(limit)
                )
            )


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


def admin_exists_detail(cvr: str) -> str:
    return (
        f"CVR {cvr} already has an administrator for self-service. Ask that administrator to create "
        "a login for you. If nobody knows that login any more (for example because the only "
        "administrator has left the company), whoever can read the company's e-Boks can take over the "
        'administration: apply again with "takeover": true. A letter to the e-Boks carries a code that '
        "works after a notice period, in which the current administrators are told by email and SMS "
        "and may cancel it; once it is used they are disabled. Or contact support: support deletes the "
        "old login, and the company then applies again."
    )


def held_by_group_detail(cvr: str, group: KnownCustomer, status: str) -> str:
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
