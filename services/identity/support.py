"""Support's operations (S3, S13): staff find a company's logins and delete an orphaned one,
and every admin and support action is kept in the audit trail."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.admin import Administration, NotPermitted, clear_login_failures
from services.identity.credentials import issue_activation_code
from services.identity.domain import normalise_username
from services.identity.models import AuditEntry, User
from services.identity.service import COMPANY_LOCK
from shared.clock import Clock
from shared.db import lock_for_transaction
from shared.events import AuditRecorded
from shared.messaging import Outbox
from shared.problems import Conflict, NotFound
from shared.tokens import AccessClaims


@dataclass
class AuditTrail:
    outbox: Outbox
    clock: Clock

    async def record(
        self,
        session: AsyncSession,
        *,
        actor: User,
        action: str,
        target: User | None = None,
        tenant_cvr: str | None = None,
        client_address: str | None = None,
    ) -> None:
        entry = AuditEntry(
            id=str(uuid.uuid4()),
            at=self.clock.now(),
            actor_id=actor.id,
            actor_role=actor.role,
            action=action,
            target_user_id=target.id if target else None,
            tenant_cvr=tenant_cvr or (target.tenant_cvr if target else actor.tenant_cvr),
            client_address=client_address,
        )
        session.add(entry)
        await self.outbox.add(
            session,
            AuditRecorded(
                audit_id=uuid.UUID(entry.id),
                actor_id=uuid.UUID(actor.id),
                actor_role=actor.role,  # type: ignore[arg-type]
                action=action,
                target_user_id=uuid.UUID(target.id) if target else None,
                tenant_cvr=entry.tenant_cvr,
                client_address=client_address,
                at=entry.at,
            ),
        )


@dataclass
class Support:
    admin: Administration
    audit: AuditTrail

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

    async def audit_entries(
        self, session: AsyncSession, staff: User, *, cvr: str | None, user_id: str | None, limit: int
    ) -> list[AuditEntry]:
        query = select(AuditEntry).order_by(AuditEntry.at.desc()).limit(limit)
        if cvr:
            query = query.where(AuditEntry.tenant_cvr == cvr)
        if user_id:
            query = query.where((AuditEntry.target_user_id == user_id) | (AuditEntry.actor_id == user_id))
        return list(await session.scalars(query))


async def create_staff(
    session: AsyncSession,
    clock: Clock,
    *,
    username: str,
    name: str,
    email: str,
    mobile: str,
    code_ttl_days: int = 7,
) -> tuple[User, str]:
    """A support login (no company), pending activation; returns it and its activation code."""
    username = normalise_username(username)
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
        created_at=now,
    )
    session.add(user)
    await session.flush()
    code, _ = await issue_activation_code(session, user.id, now=now, ttl=timedelta(days=code_ttl_days))
    return user, code
