"""Support's operations (S3, S13): staff find a company's logins and delete an orphaned one,
and every admin and support action is kept in the audit trail."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.admin import Administration, NotPermitted, clear_login_failures
from services.identity.audit import AuditFilter, AuditTrail, all_entries
from services.identity.credentials import issue_activation_code
from services.identity.domain import normalise_username, username_problem
from services.identity.models import ActivationCode, AuditEntry, Company, Takeover, User
from services.identity.provisioning import COMPANY_LOCK, send_credentials_letter
from shared.clock import Clock, as_utc
from shared.db import lock_for_transaction
from shared.events import CredentialsIssued
from shared.problems import Conflict, InvalidField, NotFound, TooManyRequests
from shared.tokens import AccessClaims


class AlreadyActivated(Conflict):
    type_suffix = "already-activated"
    title = "The login is already activated"


class NotALetterLogin(Conflict):
    type_suffix = "not-a-letter-login"
    title = "The login did not come by letter"


class TakeoverLogin(Conflict):
    type_suffix = "takeover-login"
    title = "The login comes from a takeover"


LETTER_WINDOW = timedelta(days=1)


@dataclass
class Support:
    admin: Administration
    audit: AuditTrail
    letters_per_day: int = 3
    letter_deadline: timedelta = timedelta(hours=2)

    async def staff(self, session: AsyncSession, claims: AccessClaims) -> User:
        caller = await session.get(User, claims.sub)
        if caller is None or caller.status != "active" or caller.role != "support":
            raise NotPermitted("Only support staff can do this.")
        return caller

    async def company_users(
        self, session: AsyncSession, staff: User, cvr: str, client: str | None
    ) -> list[User]:
        users = list(
            await session.scalars(
                select(User).where(User.tenant_cvr == cvr, User.status != "deleted").order_by(User.created_at)
            )
        )
        await self.audit.record(
            session, actor=staff, action="support.list-users", tenant_cvr=cvr, client_address=client
        )
        return users

    async def customer_login(self, session: AsyncSession, user_id: str) -> User:
        """A customer's login (never staff), locked for a change; its company's changes wait."""
        user = await session.get(User, user_id)
        if user is None or user.status == "deleted" or user.tenant_cvr is None:
            raise NotFound(f"There is no customer login {user_id}.")
        await lock_for_transaction(session, COMPANY_LOCK, user.tenant_cvr)
        locked = await session.get(User, user_id, with_for_update=True, populate_existing=True)
        if locked is None or locked.status == "deleted":
            raise NotFound(f"There is no customer login {user_id}.")
        return locked

    async def delete_user(self, session: AsyncSession, staff: User, user_id: str, client: str | None) -> User:
        """S3: the only administrator left the company; delete the login so it can apply again."""
        user = await self.customer_login(session, user_id)
        await self.admin.remove(session, user, reason="deleted-by-support")
        await self.audit.record(
            session, actor=staff, action="support.delete-user", target=user, client_address=client
        )
        return user

    async def unlock_user(self, session: AsyncSession, staff: User, user_id: str, client: str | None) -> User:
        """Lift the lock that failed passwords put on a customer's login (the administrator is
        the one locked out, or the company has none to ask)."""
        user = await self.customer_login(session, user_id)
        await clear_login_failures(session, user)
        await self.audit.record(
            session, actor=staff, action="support.unlock-user", target=user, client_address=client
        )
        return user

    async def resend_letter(
        self, session: AsyncSession, staff: User, user_id: str, client: str | None
    ) -> CredentialsIssued:
        """S3: the company's first administrator never got, or lost, the letter from its
        application: a new activation code goes in a new letter to the company's e-Boks, and the
        old code stops working. Only while the login waits for activation, and at most
        `letters_per_day` letters of one login a day, the first one included: each is a letter
        in the company's mailbox."""
        user = await self.customer_login(session, user_id)
        if not user.from_application:
            raise NotALetterLogin(
                f"{user.name}'s login was made by the company's administrator and its code went by "
                f"email, not by letter. Its administrator sends a new code: POST /v1/users/{user.id}/resend-activation."
            )
        if user.status != "pending":
            raise AlreadyActivated(
                f"{user.name}'s login is {user.status}, so there is no letter to send: the activation "
                "code was used. If nobody at the company knows the login any more, delete it "
                f"(DELETE /v1/support/users/{user.id}) and let the company apply again."
            )
        if await session.scalar(
            select(Takeover.id).where(Takeover.user_id == user.id, Takeover.status == "open")
        ):
            raise TakeoverLogin(
                f"{user.name}'s login comes from a takeover of the company's administration; its letter is "
                "not sent again (a new code would go round the notice period the administrators were "
                "given). Once the takeover is cancelled or has expired, the company may apply again."
            )
        now = self.admin.clock.now()
        # Each activation code of a letter login went out in a letter; the company is locked
        # (customer_login), so letters asked for at the same moment are counted one after another.
        sent = list(
            await session.scalars(
                select(ActivationCode.created_at)
                .where(ActivationCode.user_id == user.id, ActivationCode.created_at > now - LETTER_WINDOW)
                .order_by(ActivationCode.created_at.desc())
                .limit(self.letters_per_day)
            )
        )
        if len(sent) >= self.letters_per_day:
            again_at = as_utc(sent[-1]) + LETTER_WINDOW
            raise TooManyRequests(
                f"{self.letters_per_day} letters with this login were sent to CVR {user.tenant_cvr} in "
                "the last 24 hours; the newest one's code works. Another can be sent from "
                f"{again_at:%Y-%m-%d %H:%M} UTC.",
                retry_after=max(1, int((again_at - now).total_seconds()) + 1),
            )
        company = await session.get(Company, user.tenant_cvr)
        letter = await send_credentials_letter(
            session,
            self.admin.outbox,
            self.admin.sealer,
            user,
            company_name=company.name if company else str(user.tenant_cvr),
            now=now,
            code_ttl=self.admin.code_ttl,
            deliver_by=now + self.letter_deadline,
            application_id=None,
        )
        await self.audit.record(
            session, actor=staff, action="support.resend-letter", target=user, client_address=client
        )
        return letter

    async def audit_entries(
        self,
        session: AsyncSession,
        staff: User,
        *,
        cvr: str | None,
        user_id: str | None,
        limit: int,
        wanted: AuditFilter | None = None,
    ) -> list[AuditEntry]:
        """Every entry (S13), newest first; `wanted` adds a period, an action and a page."""
        wanted = wanted or AuditFilter(limit=limit)
        return await all_entries(session, replace(wanted, cvr=cvr, user_id=user_id, limit=limit))


async def create_staff(
    session: AsyncSession,
    clock: Clock,
    *,
    username: str,
    name: str,
    email: str,
    mobile: str,
    code_ttl_days: int = 7,
    language: str = "da",
) -> tuple[User, str]:
    """A support login (no company), pending activation; returns it and its activation code.
    `language` (da or en) is that of its codes and notices, and of its portal."""
    username = normalise_username(username)
    if problem := username_problem(username):
        raise InvalidField("username", problem)
    if await session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"The username {username} is taken.")
    now = clock.now()
    user = User(
        id=str(uuid.uuid4()),
        tenant_cvr=None,
        username=username,
        name=name,
        email=email,
        mobile=mobile,
        role="support",
        status="pending",
        functions=[],
        language=language,
        created_at=now,
    )
    session.add(user)
    await session.flush()
    code, _ = await issue_activation_code(session, user.id, now=now, ttl=timedelta(days=code_ttl_days))
    return user, code
