"""Identity's provisioning: a company's first administrator from its application (S1, S2),
and the company's place in its group (S14). Activation is in `activation.py`."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.activation import end_pending_activations
from services.identity.credentials import issue_activation_code, unique_username, user_created
from services.identity.domain import lifecycle_status
from services.identity.models import (
    ActivationCode,
    Company,
    Takeover,
    Tenant,
    User,
    UserGrant,
    WaitingApplication,
)
from shared.clock import Clock, as_utc
from shared.db import lock_for_transaction, upsert_statement
from shared.envelope import Envelope
from shared.events import (
    ALL_FUNCTIONS,
    AdministratorProvisioningRejected,
    Applicant,
    ApplicationFailed,
    ApplicationSubmitted,
    CredentialsIssued,
    CustomerRegistered,
    Grant,
    TakeoverCancelled,
    UserDeleted,
    UserGrantsChanged,
)
from shared.logs import mask_contact
from shared.messaging import Outbox
from shared.sealing import Sealer

if TYPE_CHECKING:
    from services.identity.takeover import TakeoverTerms

log = logging.getLogger(__name__)

COMPANY_LOCK = "identity.company"  # a customer and the applications waiting for it

LIVE_STATUSES = ("pending", "active", "disabled")
USER_ADMIN = "user_admin"  # the function that administers the company's logins (S12)


@dataclass
class Provisioning:
    """Creates a company's first administrator from an application (S1, S2), or, asked for a
    takeover of a company whose administrator has activated, one whose code works after a
    notice period (`services/identity/takeover.py`)."""

    outbox: Outbox
    clock: Clock
    sealer: Sealer
    code_ttl: timedelta
    takeover_notice_period: timedelta = timedelta(hours=72)

    async def on_customer_registered(
        self, session: AsyncSession, envelope: Envelope[CustomerRegistered]
    ) -> None:
        await lock_for_transaction(session, COMPANY_LOCK, envelope.event.cvr)  # see on_application_submitted
        ancestors = await self._ancestors(session, envelope.event.parent_cvr)
        for cvr in ancestors:  # child to parent, always in that order: no deadlock
            await lock_for_transaction(session, COMPANY_LOCK, cvr)
        company = await session.get(Company, envelope.event.cvr)
        numbers = [a.account_number for a in envelope.event.accounts]
        is_new = company is None
        if company is None:
            session.add(
                Company(
                    cvr=envelope.event.cvr,
                    name=envelope.event.name,
                    parent_cvr=envelope.event.parent_cvr,
                    account_numbers=numbers,
                )
            )
        else:
            company.name, company.parent_cvr, company.account_numbers = (
                envelope.event.name,
                envelope.event.parent_cvr,
                numbers,
            )
        await session.flush()
        if is_new and ancestors:
            await self._join_groups(session, envelope.event.cvr, ancestors)
        waiting = await session.scalars(
            select(WaitingApplication).where(WaitingApplication.cvr == envelope.event.cvr)
        )
        for application in list(waiting):
            await session.delete(application)
            await self._provision(session, ApplicationSubmitted.model_validate_json(application.event_json))

    async def _ancestors(self, session: AsyncSession, parent_cvr: str | None) -> list[str]:
        return await ancestors_from(session, parent_cvr)

    async def _join_groups(self, session: AsyncSession, cvr: str, ancestors: list[str]) -> None:
        """A subsidiary that arrives after its group's tenant was made (it came later on the
        bus, or was acquired) joins that group: the group's administrators, who hold every
        company of it (S14), get it with all accounts too. Other users keep exactly what an
        administrator gave them."""
        administrators = await session.scalars(
            select(User).where(
                User.tenant_cvr.in_(ancestors), User.role == "administrator", User.status.in_(LIVE_STATUSES)
            )
        )
        # The company brings the subsidiaries that arrived before it (their parent was unknown).
        joining = [c.cvr for c in await group_of(session, cvr)]
        now = self.clock.now()
        for user in list(administrators):
            assert user.tenant_cvr is not None  # administrators belong to a tenant
            grants = list(await session.scalars(select(UserGrant).where(UserGrant.user_id == user.id)))
            held = {g.cvr for g in grants}
            new = [UserGrant.of(c, "all") for c in joining if c not in held]
            if not new:
                continue
            for grant in new:
                grant.user_id = user.id
                session.add(grant)
            grants += new
            await self.outbox.add(
                session,
                UserGrantsChanged(
                    user_id=uuid.UUID(user.id),
                    tenant_cvr=user.tenant_cvr,
                    grants=[Grant(cvr=g.cvr, accounts=g.accounts) for g in grants],
                    functions=list(user.functions),  # type: ignore[arg-type]
                    changed_at=now,
                ),
            )
            log.info("administrator %s now also holds %s, new in the group", user.id, [g.cvr for g in new])

    async def on_application_submitted(
        self, session: AsyncSession, envelope: Envelope[ApplicationSubmitted]
    ) -> None:
        # The customer may be arriving on billing.customers at this very moment, in another
        # consumer's transaction: without the lock both could miss each other, and the
        # application would wait for a company that is already there.
        await lock_for_transaction(session, COMPANY_LOCK, envelope.event.cvr)
        company = await session.get(Company, envelope.event.cvr)
        if company is None:
            # Onboarding saw the customer on billing.customers before we did; wait for it.
            session.add(
                WaitingApplication(
                    application_id=str(envelope.event.application_id),
                    cvr=envelope.event.cvr,
                    event_json=envelope.event.model_dump_json(),
                    received_at=self.clock.now(),
                )
            )
            return
        await self._provision(session, envelope.event, company)

    async def _provision(
        self, session: AsyncSession, event: ApplicationSubmitted, company: Company | None = None
    ) -> None:
        now = self.clock.now()
        company = company or await session.get(Company, event.cvr)
        assert company is not None
        ancestors = await self._ancestors(session, company.parent_cvr)
        for cvr in ancestors:  # child to parent, as on_customer_registered: no deadlock
            await lock_for_transaction(session, COMPANY_LOCK, cvr)
        # Locked, so that an activation confirmed at this moment is either seen here as active,
        # or finds its login withdrawn (services/identity/activation.py locks the user first too).
        # Colleagues given the user administration function administer the company's logins as
        # its first administrator does (S12), and a takeover tells them and disables them. While
        # one of them is active, a letter whose code works at once would give whoever reads the
        # e-Boks an administrator behind their backs: only a takeover may, as for an activated
        # first administrator. Both kinds of login are read and locked in one statement.
        is_administrator = and_(User.role == "administrator", User.status.in_(LIVE_STATUSES))
        is_colleague = and_(User.tenant_cvr == event.cvr, User.role != "administrator", User.status == "active")
        logins = list(
            await session.scalars(
                select(User)
                .where(User.tenant_cvr.in_([event.cvr, *ancestors]), or_(is_administrator, is_colleague))
                .order_by(User.id)
                .with_for_update()
            )
        )
        administrators = [u for u in logins if u.role == "administrator"]
        if any(u.application_id == str(event.application_id) for u in administrators):
            return  # provisioned already (the application came twice)
        own = [u for u in administrators if u.tenant_cvr == event.cvr]
        user_administrators = [u for u in logins if u.role != "administrator"]
        activated = any(u.status != "pending" for u in own) or any(
            USER_ADMIN in (u.functions or []) for u in user_administrators
        )
        # The nearest company above this one whose administrator holds it (S14), if any. A
        # group's login whose code expired unused holds nothing: nobody can activate it.
        holding = [u for u in administrators if not is_expired(u, now)]
        holder = next((cvr for cvr in ancestors if any(u.tenant_cvr == cvr for u in holding)), None)
        if activated and event.takeover:
            await self._take_over(session, event, company, ancestors, now)
            return
        if activated or holder is not None:
            # An administrator who has activated (S3: support deletes it first), or the group's
            # administrator, who holds this company already: ask them for a login.
            holder = None if activated else holder
            await self.outbox.add(
                session,
                AdministratorProvisioningRejected(
                    application_id=event.application_id,
                    cvr=event.cvr,
                    reason="admin-exists",
                    group_cvr=holder,
                    rejected_at=now,
                ),
            )
            log.info(
                "application %s for %s rejected: administrator exists%s",
                event.application_id,
                event.cvr,
                f" in the group of {holder}" if holder else "",
            )
            return
        # Only never-activated logins are left. The application form is public, so such a login
        # may be a stranger's; the company's own application must not be blocked by it. It is
        # withdrawn, and the new letter goes to the same e-Boks (onboarding limits how often).
        for user in own:
            await remove_login(session, self.outbox, user, reason="replaced-by-new-application", now=now)
            log.warning(
                "withdrew pending login %s of %s: application %s replaces it",
                user.id,
                event.cvr,
                event.application_id,
            )

        expires_at = now + self.code_ttl  # the letter's code's, just below
        user = await self._new_first_administrator(session, event, company, now, activation_expires_at=expires_at)
        await self.outbox.add(
            session,
            user_created(user, user.grants, application_id=event.application_id, activation_expires_at=expires_at),
        )
        await send_credentials_letter(
            session,
            self.outbox,
            self.sealer,
            user,
            company_name=company.name,
            now=now,
            code_ttl=self.code_ttl,
            deliver_by=event.deliver_by,
            application_id=event.application_id,
            new_login=True,
        )
        log.info("administrator %s provisioned for application %s", user.id, event.application_id)

    async def _take_over(
        self,
        session: AsyncSession,
        event: ApplicationSubmitted,
        company: Company,
        ancestors: list[str],
        now: datetime,
    ) -> None:
        """A takeover of a company whose administrator has activated (beyond S3): a new
        first-administrator login whose letter code works after the notice period, while the
        administrators are told and may cancel it. One open takeover a company."""
        from services.identity import takeover  # it builds on this module

        open_one = await takeover.open_takeover_of_company(session, event.cvr)
        if open_one is not None and as_utc(open_one.expires_at) <= now:
            user = await session.get(User, open_one.user_id, with_for_update=True)
            assert user is not None
            await takeover.expire(session, self.outbox, open_one, user, now)
            open_one = None
        if open_one is not None:
            await self.outbox.add(
                session,
                AdministratorProvisioningRejected(
                    application_id=event.application_id,
                    cvr=event.cvr,
                    reason="takeover-pending",
                    rejected_at=now,
                ),
            )
            log.info("takeover of %s refused: takeover %s is open", event.cvr, open_one.id)
            return
        terms = takeover.TakeoverTerms(notice_period=self.takeover_notice_period, code_ttl=self.code_ttl)
        expires_at = now + terms.notice_period + terms.code_ttl
        user = await self._new_first_administrator(session, event, company, now, activation_expires_at=expires_at)
        await self.outbox.add(
            session,
            user_created(user, user.grants, application_id=event.application_id, activation_expires_at=expires_at),
        )
        await send_credentials_letter(
            session,
            self.outbox,
            self.sealer,
            user,
            company_name=company.name,
            now=now,
            code_ttl=terms.notice_period + terms.code_ttl,
            deliver_by=event.deliver_by,
            application_id=event.application_id,
            takeover=terms,
            new_login=True,
        )
        await takeover.begin(
            session,
            outbox=self.outbox,
            sealer=self.sealer,
            now=now,
            terms=terms,
            user=user,
            company=company,
            application_id=event.application_id,
            ancestors=ancestors,
        )

    async def _new_first_administrator(
        self,
        session: AsyncSession,
        event: ApplicationSubmitted,
        company: Company,
        now: datetime,
        *,
        activation_expires_at: datetime,
    ) -> User:
        """The pending login of the company's first administrator, from the application, its
        activation code to expire at `activation_expires_at` (the letter's code, issued next:
        written with the login, so that issuing it needs no update of the login)."""
        # The tenant, unless the company has one already: one statement, not a lookup and an insert.
        await session.execute(
            upsert_statement(session, Tenant.__table__)
            .values(cvr=event.cvr, name=company.name, created_at=now)
            .on_conflict_do_nothing(index_elements=["cvr"])
        )
        group = await group_of(session, event.cvr)

        user_id = uuid.uuid4()
        username = await unique_username(session, event.cvr)
        # The application's contact details are suggestions only: whoever activates with the
        # letter's code sets and confirms their own (services/identity/activation.py).
        user = User(
            id=str(user_id),
            tenant_cvr=event.cvr,
            username=username,
            name=event.contact.name,
            email=event.contact.email,
            mobile=event.contact.mobile,
            role="administrator",
            status="pending",
            functions=list(ALL_FUNCTIONS),
            application_id=str(event.application_id),
            language=event.language,
            applied_at=event.submitted_at,
            created_at=now,
            activation_expires_at=activation_expires_at,
        )
        user.grants = [UserGrant.of(c.cvr, "all") for c in group]
        session.add(user)
        await session.flush()
        return user

    async def on_application_failed(
        self, session: AsyncSession, envelope: Envelope[ApplicationFailed]
    ) -> None:
        """Withdraw the login whose letter never arrived: nobody can activate it, and while it
        stands the company could not apply again (S2, S3)."""
        user = await session.scalar(
            select(User)
            .where(User.application_id == str(envelope.event.application_id), User.status == "pending")
            .with_for_update()
        )
        if user is None:  # never provisioned, activated after all, or replaced: nothing to withdraw
            return
        await remove_login(
            session, self.outbox, user, reason="credentials-undeliverable", now=self.clock.now()
        )
        log.warning(
            "withdrew pending login %s: application %s failed (%s)",
            user.id,
            envelope.event.application_id,
            envelope.event.reason,
        )


async def send_credentials_letter(
    session: AsyncSession,
    outbox: Outbox,
    sealer: Sealer,
    user: User,
    *,
    company_name: str,
    now: datetime,
    code_ttl: timedelta,
    deliver_by: datetime,
    application_id: uuid.UUID | None,
    takeover: TakeoverTerms | None = None,
    new_login: bool = False,
) -> CredentialsIssued:
    """A new activation code for the company's first administrator, in a letter to the company's
    e-Boks (S2): `CredentialsIssued` through the outbox, the code sealed. Earlier codes stop
    working. Provisioning sends the application's letter (`application_id`, so onboarding
    follows its delivery); support sends it again without one (S3). `new_login`: the login was
    made in this transaction, so it has no earlier code to stop."""
    assert user.tenant_cvr is not None  # a letter goes to a company
    code, expires_at = await issue_activation_code(
        session, user.id, now=now, ttl=code_ttl, new_login=new_login
    )
    user_id = uuid.UUID(user.id)
    letter = CredentialsIssued(
        user_id=user_id,
        application_id=application_id,
        recipient_cvr=user.tenant_cvr,
        company_name=company_name,
        username=user.username,
        activation_code=sealer.seal(code, context=CredentialsIssued.sealing_context(user_id)),
        expires_at=expires_at,
        deliver_by=deliver_by,
        language=user.language or "da",  # type: ignore[arg-type]
        # So that a company that did not apply knows who did, and when. Until the login is
        # activated, its details are the application's.
        applicant=Applicant(
            name=user.name,
            email=mask_contact(user.email),
            mobile=mask_contact(user.mobile),
            applied_at=as_utc(user.applied_at or user.created_at),
        ),
        takeover_usable_from=now + takeover.notice_period if takeover else None,
        takeover_notice_hours=takeover.notice_hours if takeover else None,
    )
    await outbox.add(session, letter)
    return letter


def is_expired(user: User, now: datetime) -> bool:
    """A pending login whose activation code expired unused (`lifecycle_status`)."""
    expires = as_utc(user.activation_expires_at) if user.activation_expires_at else None
    return lifecycle_status(user.status, expires, now) == "expired"


async def remove_login(
    session: AsyncSession, outbox: Outbox, user: User, *, reason: str, now: datetime
) -> None:
    """Delete a login for good: its codes stop working, an activation under way for it cannot be
    confirmed, and `UserDeleted` tells the other services. (Its sessions, if it has any, are the
    caller's to end: `Administration.remove`.)"""
    user.status = "deleted"
    for code in await session.scalars(
        select(ActivationCode).where(ActivationCode.user_id == user.id, ActivationCode.revoked_at.is_(None))
    ):
        code.revoked_at = now
    await end_pending_activations(session, user.id, reason="withdrawn", at=now)
    if not reason.startswith("takeover-"):
        # Support deleted a takeover's login: the takeover ends with it.
        for open_one in await session.scalars(
            select(Takeover).where(Takeover.user_id == user.id, Takeover.status == "open")
        ):
            open_one.status, open_one.ended_at = "cancelled", now
            await outbox.add(
                session,
                TakeoverCancelled(
                    takeover_id=uuid.UUID(open_one.id),
                    cvr=open_one.cvr,
                    user_id=uuid.UUID(user.id),
                    cancelled_at=now,
                ),
            )
    await outbox.add(
        session,
        UserDeleted(
            user_id=uuid.UUID(user.id),
            tenant_cvr=user.customer_cvr,
            role=user.role,  # type: ignore[arg-type]
            reason=reason,  # type: ignore[arg-type]
            application_id=uuid.UUID(user.application_id) if user.application_id else None,
            deleted_at=now,
        ),
    )


async def ancestors_from(session: AsyncSession, parent_cvr: str | None) -> list[str]:
    """The parent, its parent and so on, as far as identity knows them."""
    chain: list[str] = []
    while parent_cvr and parent_cvr not in chain:
        chain.append(parent_cvr)
        parent = await session.get(Company, parent_cvr)
        parent_cvr = parent.parent_cvr if parent else None
    return chain


async def group_of(session: AsyncSession, root_cvr: str) -> list[Company]:
    """The company and every subsidiary below it, parents first (S8, S14): one query a level
    of the group, by the index on `parent_cvr`, never the whole customer register."""
    root = await session.get(Company, root_cvr)
    if root is None:
        return []
    result: list[Company] = []
    seen: set[str] = set()
    level = [root]
    while level:
        # A cycle in bad data must not hang provisioning: a company is taken once.
        level = [company for company in level if company.cvr not in seen]
        seen.update(company.cvr for company in level)
        result.extend(level)
        if not level:
            break
        children: dict[str, list[Company]] = {}
        for child in await session.scalars(
            select(Company).where(Company.parent_cvr.in_([company.cvr for company in level]))
        ):
            assert child.parent_cvr is not None
            children.setdefault(child.parent_cvr, []).append(child)
        level = [
            child
            for company in level
            for child in sorted(children.get(company.cvr, []), key=lambda c: c.cvr)
        ]
    return result
