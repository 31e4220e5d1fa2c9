"""A user's own profile: their language, password, email and mobile number, and their sessions.

- The language is used for every message to the user (codes, notices, order and invoice
  emails) and by the portal after login; other services hear of it in `UserDetailsChanged`.
- A new password needs the current one; a wrong one counts towards the login lockout like a
  failed login (`Lockout.reserve_try`), so a copied access token is no way round it. The other
  sessions end, the one that changed it goes on, and the user is told by email.
- A new email or mobile number takes effect only when the code sent to it comes back: a login's
  codes must not go to an address nobody proved is theirs. The address the login had is told:
  the old email always, and the old mobile number by SMS when the mobile number changed.
- The sessions list shows the user's live sessions; they end any of them (`SessionEnded`, so
  billing refuses its tokens at once). Another user's session is never found (404).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from ua_parser import parse as parse_user_agent

from services.identity.audit import AuditTrail
from services.identity.credentials import (
    code_requested,
    contact_details_changed,
    credential_changed,
    user_details_changed,
    withdraw_contact_changes,
)
from services.identity.lockout import PasswordTry
from services.identity.login import withdraw_sent_codes
from services.identity.models import ContactChange, LoginSession, LoginThrottle, User
from services.identity.sessions import Sessions
from shared.clock import Clock, as_utc
from shared.events import SessionEndReason
from shared.messaging import Outbox
from shared.problems import Conflict, InvalidFields, NotFound, Problem, TooManyRequests
from shared.sealing import Sealer

CONTACT_PURPOSES = {"email": "confirm_new_email", "mobile": "confirm_new_mobile"}
CONTACT_CHANNELS = {"email": "email", "mobile": "sms"}



class WrongCurrentPassword(InvalidFields):
    """A 422 of its own type: the field is well formed, but not the login's password."""

    type_suffix = "wrong-current-password"
    title = "The current password is not correct"


class PasswordChangedMeanwhile(Conflict):
    type_suffix = "password-changed-meanwhile"
    title = "The password was changed meanwhile"


class InvalidConfirmationCode(Problem):
    status = 400
    type_suffix = "invalid-confirmation-code"
    title = "The confirmation code is not correct"


class ContactChangeRestartRequired(Problem):
    status = 410
    type_suffix = "contact-change-restart-required"
    title = "The change must be started again"


class ContactChangeDone(Conflict):
    type_suffix = "contact-change-done"
    title = "The change is already made"


def describe_device(user_agent: str | None) -> str:
    """What a person calls the browser or app of a session: "Chrome on Windows", "Mobile Safari
    on iOS (iPhone)". ua-parser (the maintained uap-core rules) reads the user agent; an agent
    it does not know is shown as it came, shortened, and a session without one as unknown."""
    if not user_agent:
        return "unknown"
    parsed = parse_user_agent(user_agent)
    browser = parsed.user_agent.family if parsed.user_agent else None
    system = parsed.os.family if parsed.os else None
    device = parsed.device.family if parsed.device and parsed.device.family != "Other" else None
    if browser is None and system is None:
        return user_agent[:60]
    description = " on ".join(part for part in (browser, system) if part)
    if device and device not in description:
        description += f" ({device})"
    return description


def _code_context(change_id: str) -> str:
    return f"contact-change:{change_id}"


@dataclass
class OwnProfile:
    outbox: Outbox
    clock: Clock
    sealer: Sealer
    audit: AuditTrail
    sessions: Sessions
    contact_change_ttl: timedelta
    max_attempts: int
    resend_cooldown: timedelta
    # A wrong current password counts as a failed login: these two say the lock in its refusal.
    lock_after_failures: int
    lock_duration: timedelta
    # Codes to new addresses one user may have sent in 24 hours: each start texts or emails an
    # address the user chooses, so the cooldown alone would let one login send thousands a day.
    changes_per_day: int = 6

    # --- language --------------------------------------------------------------------------

    async def set_language(self, session: AsyncSession, user: User, language: str, client: str | None) -> None:
        if user.language == language:
            return
        user.language = language
        await self._details_changed(session, user)
        await self.audit.record(
            session, actor=user, action="profile.language-changed", target=user, client_address=client
        )

    async def _details_changed(self, session: AsyncSession, user: User) -> None:
        # Support staff belong to no company, and the other services know only customers' logins.
        if user.tenant_cvr is not None:
            await self.outbox.add(session, user_details_changed(user, by_user_id=user.id, at=self.clock.now()))

    # --- password --------------------------------------------------------------------------

    async def refuse_wrong_password(
        self, session: AsyncSession, user: User, attempt: PasswordTry, client: str | None
    ) -> NoReturn:
        """The current password given was wrong (its try counted already, `Lockout.reserve_try`):
        in the audit trail as a failed login, and its lock when this try locks the username."""
        kept = [("login.failed", {"step": "current-password"})]
        kept += [("login.locked", {"counter": "username"})] if attempt.locks else []
        for action, details in kept:
            await self.audit.record(
                session, actor=user, action=action, target=user, client_address=client, details=details
            )
        raise WrongCurrentPassword(
            "The current password is not correct. Failed tries count like failed logins: after "
            f"{self.lock_after_failures} the login is locked for "
            f"{int(self.lock_duration.total_seconds() // 60)} minutes.",
            errors=[{"field": "current_password", "message": "not your current password"}],
        ).committing()

    async def set_password(
        self,
        session: AsyncSession,
        user: User,
        current: LoginSession,
        checked_hash: str | None,
        password_hash: str,
        client: str | None,
    ) -> int:
        """The current password was right (checked against `checked_hash`): the new one replaces
        it, the username's failures are forgotten (as a right password at login does), every
        other session of the user ends, and the user is told by email. Returns how many
        sessions ended."""
        if user.password_hash != checked_hash:
            raise PasswordChangedMeanwhile(
                "Your password was changed by another request at the same moment. Log in with the "
                "password you chose last, or change it again."
            )
        now = self.clock.now()
        await session.execute(delete(LoginThrottle).where(LoginThrottle.username == user.username))
        user.password_hash = password_hash
        ended = await self.end_other_sessions(session, user, current, reason="password-changed")
        await withdraw_contact_changes(session, user.id, "password-changed", now)
        await self.outbox.add(session, credential_changed(user, "password_changed", now))
        await self.audit.record(
            session, actor=user, action="profile.password-changed", target=user, client_address=client
        )
        return ended

    # --- sessions --------------------------------------------------------------------------

    async def live_sessions(self, session: AsyncSession, user: User) -> list[LoginSession]:
        """The user's sessions that have not ended, most recently used first."""
        now = self.clock.now()
        sessions = list(
            await session.scalars(
                select(LoginSession).where(
                    LoginSession.user_id == user.id,
                    LoginSession.ended_at.is_(None),
                    LoginSession.expires_at > now,
                )
            )
        )
        return sorted(sessions, key=lambda s: as_utc(s.last_used_at or s.created_at), reverse=True)

    async def end_own_session(
        self, session: AsyncSession, user: User, session_id: str, client: str | None
    ) -> LoginSession:
        """End one of the user's own live sessions; any other id, another user's session
        included, is not found."""
        login = await session.get(LoginSession, session_id, with_for_update=True)
        if (
            login is None
            or login.user_id != user.id
            or login.ended_at is not None
            or as_utc(login.expires_at) <= self.clock.now()
        ):
            raise NotFound(f"You have no live session {session_id}. Your sessions: GET /v1/me/sessions.")
        await self.sessions.end(session, login, "ended-by-user")
        await self.audit.record(
            session, actor=user, action="profile.session-ended", target=user, client_address=client
        )
        return login

    async def end_other_sessions(
        self,
        session: AsyncSession,
        user: User,
        current: LoginSession,
        *,
        reason: SessionEndReason = "ended-by-user",
        client: str | None = None,
    ) -> int:
        """End every live session of the user but `current`, each announced (`SessionEnded`)."""
        ended = 0
        for listed in await self.live_sessions(session, user):
            if listed.id == current.id:
                continue
            # Locked, as a refresh locks it: a refresh at this moment finds it ended, or comes first.
            login = await session.get(LoginSession, listed.id, with_for_update=True, populate_existing=True)
            if login is None or login.ended_at is not None:
                continue
            await self.sessions.end(session, login, reason)
            ended += 1
        if ended and reason == "ended-by-user":
            await self.audit.record(
                session, actor=user, action="profile.session-ended", target=user, client_address=client
            )
        return ended

    # --- email and mobile ------------------------------------------------------------------

    async def _refuse_past_daily_limit(self, session: AsyncSession, user: User, now: datetime) -> None:
        """429 once the user has had `changes_per_day` codes sent to new addresses in 24 hours,
        either field; the wait is until the oldest of them is a day old."""
        day_ago = now - timedelta(days=1)
        count, oldest = (
            await session.execute(
                select(func.count(), func.min(ContactChange.created_at)).where(
                    ContactChange.user_id == user.id, ContactChange.created_at > day_ago
                )
            )
        ).one()
        if count >= self.changes_per_day:
            wait = int((as_utc(oldest) + timedelta(days=1) - now).total_seconds()) + 1
            raise TooManyRequests(
                f"Codes to a new email or mobile were sent {count} times in the last 24 hours, the most "
                f"a day. Try again in {wait} seconds, or ask your administrator to change it.",
                retry_after=wait,
            )

    async def start_contact_change(
        self, session: AsyncSession, user: User, field: str, value: str
    ) -> ContactChange:
        """Send a code to the new address; nothing changes until it comes back. A new start
        replaces an unfinished change of the same field, not sooner than the resend cooldown
        after the last (each start sends an SMS or email)."""
        now = self.clock.now()
        started = list(
            await session.scalars(
                select(ContactChange)
                .where(ContactChange.user_id == user.id, ContactChange.field == field)
                .order_by(ContactChange.created_at.desc())
            )
        )
        if started and as_utc(started[0].created_at) + self.resend_cooldown > now:
            wait = int((as_utc(started[0].created_at) + self.resend_cooldown - now).total_seconds()) + 1
            raise TooManyRequests(
                f"A code was just sent to change your {field}. Use it, or wait {wait} seconds before "
                "asking for another.",
                retry_after=wait,
            )
        await self._refuse_past_daily_limit(session, user, now)
        for earlier in started:
            if earlier.ended_at is None:
                earlier.ended_at, earlier.end_reason = now, "replaced"
        code = f"{secrets.randbelow(1_000_000):06d}"
        change = ContactChange(
            id=str(uuid.uuid4()),
            user_id=user.id,
            field=field,
            new_value=value,
            code_hash="",
            created_at=now,
            expires_at=now + self.contact_change_ttl,
            failed_attempts=0,
        )
        change.code_hash = self.sealer.digest(code, context=_code_context(change.id))
        session.add(change)
        change_id = uuid.UUID(change.id)
        await self.outbox.add(
            session,
            code_requested(
                user,
                self.sealer,
                challenge_id=change_id,
                purpose=CONTACT_PURPOSES[field],
                channel=CONTACT_CHANNELS[field],
                recipient=value,
                code=code,
                expires_at=change.expires_at,
            ),
        )
        return change

    async def confirm_contact_change(
        self, session: AsyncSession, user: User, change_id: str, code: str, client: str | None
    ) -> ContactChange:
        """The code sent to the new address: right, and the address is the login's (a mobile
        number also confirmed, S5.3), the other services hear of it, and the address the login
        had is told. A wrong code is counted (and refused); after too many the change must start
        again."""
        now = self.clock.now()
        restart = "Start the change again: a new code is sent to the new address."
        change = await session.get(ContactChange, change_id, with_for_update=True)
        if change is None or change.user_id != user.id:
            raise NotFound(f"You have no change {change_id}. {restart}")
        if change.ended_at is not None:
            match change.end_reason or "blocked":
                case "completed":
                    raise ContactChangeDone("This change is already made: GET /v1/me shows it.")
                case "replaced":
                    raise ContactChangeRestartRequired(
                        "A newer change was started: use the code sent for that one. This code no longer works."
                    )
                case "blocked":
                    raise ContactChangeRestartRequired(
                        f"The code was entered wrongly {self.max_attempts} times and no longer works. {restart}"
                    )
            # The password changed or the second factor was reset after the change began.
            raise ContactChangeRestartRequired(
                "Your password or second factor changed after this change began, so its code no "
                f"longer works: a change you did not start is stopped. {restart}"
            )
        if as_utc(change.expires_at) <= now:
            raise ContactChangeRestartRequired(f"The code has expired. {restart}")
        if not self.sealer.digest_matches(code, change.code_hash, context=_code_context(change.id)):
            change.failed_attempts += 1
            left = max(0, self.max_attempts - change.failed_attempts)
            if left == 0:
                change.ended_at, change.end_reason = now, "blocked"
            then = (
                f"{left} more tries are allowed."
                if left
                else "That was the last try: the code no longer works. " + restart
            )
            raise InvalidConfirmationCode(
                f"The code is not correct. Check the latest message to the new address. {then}",
                errors=[{"field": "code", "message": "not the code that was sent"}],
            ).committing()
        change.ended_at, change.end_reason = now, "completed"
        old_email, old_mobile = user.email, user.mobile
        if change.field == "email":
            user.email = change.new_value
        else:
            user.mobile, user.mobile_confirmed_at = change.new_value, now  # the code came back (S5.3)
        await withdraw_sent_codes(session, user.id, CONTACT_CHANNELS[change.field])  # type: ignore[arg-type]
        await self._details_changed(session, user)
        # Where the login's codes go has changed: tell the user at the addresses they had.
        await self.outbox.add(
            session, contact_details_changed(user, old_email=old_email, old_mobile=old_mobile, at=now)
        )
        await self.audit.record(
            session, actor=user, action=f"profile.{change.field}-changed", target=user, client_address=client
        )
        return change
