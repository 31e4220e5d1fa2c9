"""Delegated administration (S4, S5, S12, S14): an administrator manages the logins of their
own company group, granting at most what they hold themselves."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.credentials import (
    contact_details_changed,
    credential_changed,
    issue_activation_code,
    unique_username,
    user_created,
    user_details_changed,
    withdraw_contact_changes,
)
from services.identity.domain import AccessScope
from services.identity.login import withdraw_sent_codes
from services.identity.models import (
    Company,
    LoginSession,
    LoginThrottle,
    RecoveryCode,
    Takeover,
    TrustedDevice,
    User,
    UserGrant,
)
from services.identity.provisioning import COMPANY_LOCK, USER_ADMIN, remove_login
from services.identity.sessions import ReauthenticationRequired, Sessions
from shared.clock import Clock, as_utc
from shared.db import lock_for_transaction
from shared.events import (
    Grant,
    LoginCreated,
    UserDisabled,
    UserEnabled,
    UserGrantsChanged,
)
from shared.messaging import Outbox
from shared.problems import Conflict, Forbidden, InvalidField, NotFound
from shared.sealing import Sealer
from shared.tokens import AccessClaims

NotPermitted = Forbidden


class LastAdministrator(Conflict):
    type_suffix = "last-administrator"
    title = "The company's last administrator"


@dataclass(frozen=True)
class RequestedGrant:
    cvr: str
    accounts: Literal["all"] | list[str]


@dataclass(frozen=True)
class NewUser:
    name: str
    email: str
    mobile: str
    grants: list[RequestedGrant]
    functions: list[str]
    language: str = "da"


@dataclass(frozen=True)
class UserChanges:
    name: str | None = None
    email: str | None = None
    mobile: str | None = None
    grants: list[RequestedGrant] | None = None
    functions: list[str] | None = None


@dataclass(frozen=True)
class GrantableCompany:
    cvr: str
    name: str
    parent_cvr: str | None
    accounts: list[str]
    all_accounts: bool


# The login of an open takeover is the administrators' to cancel (`/v1/takeovers`), not to
# manage like a colleague's: a new code by email or a deletion would go round the notice period.
_TAKING_OVER = select(Takeover.user_id).where(Takeover.status == "open")


def _is_live_admin(user: User) -> bool:
    return user.status == "active" and USER_ADMIN in (user.functions or [])


@dataclass
class Administration:
    outbox: Outbox
    clock: Clock
    sealer: Sealer
    code_ttl: timedelta
    sessions: Sessions

    async def require_recent_login(self, session: AsyncSession, claims: AccessClaims, what: str) -> None:
        """Refuse `what` unless the caller's two-factor login is within the re-authentication
        window: creating a login, re-sending an activation code and changing where a login's
        codes go hand a login to whoever chose the address, so a token copied from a session
        left open must not be enough for them."""
        login = await session.get(LoginSession, claims.sid)
        if login is None or not self.sessions.logged_in_recently(login):
            minutes = self.sessions.reauthentication_minutes
            raise ReauthenticationRequired(
                f"To {what}, your login must be less than {minutes} minutes old. Log in again with "
                "your password and a one-time code, then try again."
            )

    async def administrator(
        self, session: AsyncSession, claims: AccessClaims, *, for_change: bool = False
    ) -> User:
        """The caller, from the database (not the token), if they may administer users.

        `for_change` first locks the caller's company until the transaction ends, so that changes
        within one company run one after another: two administrators disabling each other at
        the same moment cannot both pass the last-administrator check, and an administrator
        whose own access is being narrowed acts either before or after, never in between."""
        if for_change and claims.tenant is not None:
            await lock_for_transaction(session, COMPANY_LOCK, claims.tenant)
        caller = await session.get(User, claims.sub, populate_existing=True)
        if (
            caller is None
            or caller.status != "active"
            or caller.tenant_cvr is None
            or USER_ADMIN not in (caller.functions or [])
        ):
            raise NotPermitted(
                "Only a user with the user administration function can manage logins. Ask your "
                "company's administrator."
            )
        return caller

    async def scope(self, session: AsyncSession, user: User) -> AccessScope:
        """The user's whole access, as stored."""
        grants = await session.scalars(select(UserGrant).where(UserGrant.user_id == user.id))
        return AccessScope.of(user.role, user.functions or [], [(g.cvr, g.accounts) for g in grants])

    async def grantable(self, session: AsyncSession, caller: User) -> list[GrantableCompany]:
        """The companies and accounts the caller holds, and so may grant (wizard steps 4–5)."""
        grants = {
            g.cvr: g for g in await session.scalars(select(UserGrant).where(UserGrant.user_id == caller.id))
        }
        companies = await session.scalars(
            select(Company).where(Company.cvr.in_(list(grants))).order_by(Company.cvr)
        )
        result = []
        for company in companies:
            grant = grants[company.cvr]
            accounts = list(company.account_numbers) if grant.all_accounts else list(grant.account_numbers)
            result.append(
                GrantableCompany(
                    company.cvr, company.name, company.parent_cvr, sorted(accounts), grant.all_accounts
                )
            )
        return result

    async def _check_grants(
        self, session: AsyncSession, caller: User, grants: list[RequestedGrant], functions: list[str]
    ) -> None:
        if not grants:
            raise InvalidField("grants", "choose at least one company the user gets access to")
        held = {c.cvr: c for c in await self.grantable(session, caller)}
        seen: set[str] = set()
        for i, grant in enumerate(grants):
            company = held.get(grant.cvr)
            if company is None:
                raise InvalidField(
                    f"grants[{i}].cvr", f"CVR {grant.cvr} is not a company you can grant access to"
                )
            if grant.cvr in seen:
                raise InvalidField(f"grants[{i}].cvr", f"CVR {grant.cvr} is granted twice")
            seen.add(grant.cvr)
            if grant.accounts == "all":
                if not company.all_accounts:
                    raise InvalidField(
                        f"grants[{i}].accounts",
                        "you hold only some of this company's accounts, so you cannot grant all",
                    )
            else:
                if not grant.accounts:
                    raise InvalidField(f"grants[{i}].accounts", "choose 'all' or at least one account number")
                foreign = sorted(set(grant.accounts) - set(company.accounts))
                if foreign:
                    raise InvalidField(
                        f"grants[{i}].accounts", f"account(s) you cannot grant: {', '.join(foreign)}"
                    )
        missing = sorted(set(functions) - set(caller.functions or []))
        if missing:
            raise InvalidField(
                "functions", f"you cannot grant functions you do not have: {', '.join(missing)}"
            )

    async def list_users(self, session: AsyncSession, caller: User) -> list[tuple[User, list[UserGrant]]]:
        """The logins of the caller's company whose whole access lies within the caller's own;
        the others are left out as if they did not exist."""
        users = list(
            await session.scalars(
                select(User)
                .where(
                    User.tenant_cvr == caller.tenant_cvr,
                    User.status != "deleted",
                    User.id.not_in(_TAKING_OVER),
                )
                .order_by(User.name)
            )
        )
        grants = await session.scalars(select(UserGrant).where(UserGrant.user_id.in_([u.id for u in users])))
        by_user: dict[str, list[UserGrant]] = {}
        for grant in grants:
            by_user.setdefault(grant.user_id, []).append(grant)
        own = await self.scope(session, caller)
        visible = []
        for user in users:
            held = by_user.get(user.id, [])
            if own.covers(
                AccessScope.of(user.role, user.functions or [], [(g.cvr, g.accounts) for g in held])
            ):
                visible.append((user, held))
        return visible

    async def get_user(self, session: AsyncSession, caller: User, user_id: str) -> User:
        """A login the caller may see and act on, locked for the change: of the caller's own
        company group, and with a whole access (role, companies, accounts, functions) that lies
        within the caller's own. Any other id is simply not found: a limited administrator
        learns nothing of the broader logins beside them, and cannot take one over."""
        user = await session.get(User, user_id, with_for_update=True, populate_existing=True)
        if (
            user is None
            or user.tenant_cvr != caller.tenant_cvr
            or user.status == "deleted"
            or await session.scalar(select(_TAKING_OVER.exists().where(Takeover.user_id == user.id)))
            or not (await self.scope(session, caller)).covers(await self.scope(session, user))
        ):
            raise NotFound(f"There is no user {user_id} in your company.")
        return user

    async def locked_until(self, session: AsyncSession, users: list[User]) -> dict[str, datetime]:
        """Until when each of these logins' usernames is locked by failed passwords, where it is."""
        now = self.clock.now()
        throttles = await session.scalars(
            select(LoginThrottle).where(LoginThrottle.username.in_([u.username for u in users]))
        )
        return {
            t.username: as_utc(t.locked_until)
            for t in throttles
            if t.locked_until is not None and as_utc(t.locked_until) > now
        }

    async def unlock(self, session: AsyncSession, caller: User, user_id: str) -> User:
        """Lift a lock that failed passwords put on the user's login, and forget the failures."""
        user = await self.get_user(session, caller, user_id)
        await clear_login_failures(session, user)
        return user

    async def create_user(self, session: AsyncSession, caller: User, new: NewUser) -> User:
        """S5: details, companies, accounts and functions; the colleague gets an email (S6)."""
        await self._check_grants(session, caller, new.grants, new.functions)
        now = self.clock.now()
        user_id = uuid.uuid4()
        username = await unique_username(session, caller.customer_cvr)
        user = User(
            id=str(user_id),
            tenant_cvr=caller.tenant_cvr,
            username=username,
            name=new.name,
            email=new.email,
            mobile=new.mobile,
            role="user",
            status="pending",
            functions=sorted(set(new.functions)),
            language=new.language,
            created_at=now,
        )
        user.grants = [UserGrant.of(g.cvr, g.accounts) for g in new.grants]
        session.add(user)
        await session.flush()
        await self.outbox.add(session, user_created(user, user.grants))
        await self._email_login(session, user, created_by=caller)
        return user

    async def _email_login(self, session: AsyncSession, user: User, *, created_by: User) -> None:
        """A fresh activation code, sealed into the email that tells the user their login (S6),
        in the user's language."""
        code, expires_at = await issue_activation_code(
            session, user.id, now=self.clock.now(), ttl=self.code_ttl
        )
        company = await session.get(Company, user.tenant_cvr)
        user_id = uuid.UUID(user.id)
        await self.outbox.add(
            session,
            LoginCreated(
                user_id=user_id,
                tenant_cvr=user.customer_cvr,
                company_name=company.name if company else str(user.tenant_cvr),
                name=user.name,
                recipient_email=user.email,
                username=user.username,
                activation_code=self.sealer.seal(code, context=LoginCreated.sealing_context(user_id)),
                expires_at=expires_at,
                created_by_name=created_by.name,
                language=user.language,  # type: ignore[arg-type]
            ),
        )

    async def _ensure_not_last_admin(self, session: AsyncSession, target: User, action: str) -> None:
        if not _is_live_admin(target):
            return
        others = await session.scalars(
            select(User).where(
                User.tenant_cvr == target.tenant_cvr, User.id != target.id, User.status == "active"
            )
        )
        if not any(_is_live_admin(u) for u in others):
            raise LastAdministrator(
                f"{target.name} is the company's only active administrator and cannot be {action} through "
                "self-service. Give another user the user administration function first, or contact support."
            )

    async def disable(self, session: AsyncSession, caller: User, user_id: str) -> User:
        user = await self.get_user(session, caller, user_id)
        if user.status == "disabled":
            return user
        await self._ensure_not_last_admin(session, user, "disabled")
        user.status = "disabled"
        await self.sessions.end_all_unannounced(session, user.id, "disabled")
        await self.outbox.add(
            session,
            UserDisabled(
                user_id=uuid.UUID(user.id),
                tenant_cvr=user.customer_cvr,
                by_user_id=uuid.UUID(caller.id),
                disabled_at=self.clock.now(),
            ),
        )
        return user

    async def enable(self, session: AsyncSession, caller: User, user_id: str) -> User:
        user = await self.get_user(session, caller, user_id)
        if user.status != "disabled":
            raise Conflict(f"{user.name}'s login is {user.status}, not disabled.")
        user.status = "active" if user.password_hash else "pending"
        await self.outbox.add(
            session,
            UserEnabled(
                user_id=uuid.UUID(user.id),
                tenant_cvr=user.customer_cvr,
                by_user_id=uuid.UUID(caller.id),
                enabled_at=self.clock.now(),
            ),
        )
        return user

    async def change(self, session: AsyncSession, caller: User, user_id: str, changes: UserChanges) -> User:
        """Details, companies, accounts or functions. A change of access ends the user's
        sessions, so their next token carries exactly the new grants."""
        user = await self.get_user(session, caller, user_id)
        before = (user.name, user.email, user.mobile)
        if changes.name is not None:
            user.name = changes.name
        if changes.email is not None:
            user.email = changes.email
        if changes.mobile is not None and changes.mobile != user.mobile:
            user.mobile, user.mobile_confirmed_at = changes.mobile, None
        if (user.name, user.email, user.mobile) != before:
            await self.outbox.add(
                session, user_details_changed(user, by_user_id=caller.id, at=self.clock.now())
            )
        if (user.email, user.mobile) != before[1:]:
            # Where the login's codes go has changed: tell the user at the addresses they had.
            await self.outbox.add(
                session,
                contact_details_changed(user, old_email=before[1], old_mobile=before[2], at=self.clock.now()),
            )
        if user.email != before[1]:
            await withdraw_sent_codes(session, user.id, "email")
        if user.mobile != before[2]:
            await withdraw_sent_codes(session, user.id, "sms")
        if changes.grants is None and changes.functions is None:
            return user
        current = list(await session.scalars(select(UserGrant).where(UserGrant.user_id == user.id)))
        grants = (
            changes.grants
            if changes.grants is not None
            else [RequestedGrant(g.cvr, g.accounts) for g in current]
        )
        functions = changes.functions if changes.functions is not None else list(user.functions)
        await self._check_grants(session, caller, grants, functions)
        if USER_ADMIN not in functions:
            await self._ensure_not_last_admin(session, user, "demoted")
        for grant in current:
            await session.delete(grant)
        await session.flush()
        for g in grants:  # rows, not `user.grants`: that relationship is never loaded implicitly
            row = UserGrant.of(g.cvr, g.accounts)
            row.user_id = user.id
            session.add(row)
        user.functions = sorted(set(functions))
        await self.sessions.end_all_unannounced(session, user.id, "grants-changed")
        await self.outbox.add(
            session,
            UserGrantsChanged(
                user_id=uuid.UUID(user.id),
                tenant_cvr=user.customer_cvr,
                grants=[Grant(cvr=g.cvr, accounts=g.accounts) for g in grants],
                functions=user.functions,  # type: ignore[arg-type]
                by_user_id=uuid.UUID(caller.id),
                changed_at=self.clock.now(),
            ),
        )
        return user

    async def reset_second_factor(self, session: AsyncSession, caller: User, user_id: str) -> User:
        """The phone with the authenticator is lost: remove TOTP and recovery codes; SMS and
        email codes still work, and the user's sessions end."""
        user = await self.get_user(session, caller, user_id)
        user.totp_secret = user.totp_pending_secret = None
        user.totp_enabled_at = user.totp_last_timecode = None
        await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
        # The lost phone may also be a device trusted to pass a lock on the username.
        await session.execute(delete(TrustedDevice).where(TrustedDevice.user_id == user.id))
        await self.sessions.end_all(session, user.id, "second-factor-reset")
        await withdraw_contact_changes(session, user.id, "second-factor-reset", self.clock.now())
        await self.outbox.add(session, credential_changed(user, "second_factor_reset", self.clock.now()))
        return user

    async def resend_activation(self, session: AsyncSession, caller: User, user_id: str) -> User:
        """A new activation code for a login not yet activated; the old code stops working."""
        user = await self.get_user(session, caller, user_id)
        if user.status != "pending":
            raise Conflict(f"{user.name}'s login is already activated.")
        await self._email_login(session, user, created_by=caller)
        return user

    async def delete(self, session: AsyncSession, caller: User, user_id: str) -> User:
        user = await self.get_user(session, caller, user_id)
        await self._ensure_not_last_admin(session, user, "deleted")
        await self.remove(session, user, reason="deleted-by-administrator")
        return user

    async def remove(self, session: AsyncSession, user: User, *, reason: str) -> None:
        """Delete a login for good: sessions end, codes stop working, the event tells everyone."""
        await self.sessions.end_all_unannounced(session, user.id, "deleted")
        await remove_login(session, self.outbox, user, reason=reason, now=self.clock.now())


async def clear_login_failures(session: AsyncSession, user: User) -> None:
    """An administrator's or support's unlock: the username's failures and lock go, and so do
    those of the user's trusted devices."""
    await session.execute(delete(LoginThrottle).where(LoginThrottle.username == user.username))
    for device in await session.scalars(
        select(TrustedDevice).where(TrustedDevice.user_id == user.id).with_for_update()
    ):
        device.failures, device.last_failure_at, device.locked_until = 0, None, None
