"""A forgotten password (S7): the emailed code, then the second factor, then a new password.

1. A request names a username or an email address. Every request makes a reset and answers
   alike, whether or not a login matches, and does the same lookups and the same hashing
   (`_email_code` runs once for nobody when nothing matches): the answer and its work do not
   tell a stranger which usernames or addresses exist. Sending goes through the outbox, in the
   same transaction, so no mail server's time shows either. Each matching active customer login
   gets its own code by email (an address may belong to several logins; the code says which).
2. The right email code binds the reset to its login.
3. A second factor — an SMS code to the confirmed mobile, the authenticator's code or a
   recovery code (the login's own checks, `accept_second_factor`) — with the new password
   (the activation's policy) completes it: the password changes, every session ends, and the
   user is told by email.

Wrong codes are counted on the reset (`otp_max_attempts`) and, like wrong passwords, on a
failure counter (`Lockout.count_failure`) of what was asked for, whether or not a login has it:
the username's, or for an email address the address's own (`counter_key`); while that counter
is locked, no code of the reset is checked. A reset asked for by email also counts its wrong
codes on the usernames of the logins that have the address, but their locks do not refuse it:
that would tell a stranger which addresses belong to a login. The right code of a locked login
is refused all the same. All steps lock the reset's row first, so tries that arrive at
once are decided one after another.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.audit import AuditTrail
from services.identity.config import IdentitySettings
from services.identity.credentials import code_requested, credential_changed, withdraw_contact_changes
from services.identity.domain import normalise_username
from services.identity.lockout import Lockout
from services.identity.login import accept_second_factor, sent_code_matches
from services.identity.models import (
    LoginThrottle,
    PasswordReset,
    PasswordResetCode,
    RecoveryCode,
    User,
)
from services.identity.sessions import Sessions
from shared.clock import Clock, as_utc
from shared.db import Database
from shared.events import OtpRequested
from shared.logs import mask_contact
from shared.messaging import Outbox
from shared.problems import Conflict, NotFound, Problem, TooManyRequests
from shared.sealing import Sealer

log = logging.getLogger(__name__)

RESET_EMAIL_WINDOW = timedelta(days=1)  # `password_reset_emails_per_day` counts in it
# The lookups for a request that matched no login are made for this id, which no user has.
_NOBODY = "00000000-0000-0000-0000-000000000000"


def _email_context(reset_id: str, user_id: str) -> str:
    return f"password-reset:{reset_id}:{user_id}:email"


def _sms_context(reset_id: str) -> str:
    return f"password-reset:{reset_id}:sms"


# The counters of email addresses start with this; no username has it.
ADDRESS_COUNTER_PREFIX = "@"


def counter_key(given: str) -> str:
    """The failure counter the wrong codes of a reset for `given` count on: the normalised
    username, or for an email address `@` and a digest of it (no username has an `@`, and the
    digest keeps addresses strangers typed out of the table), so that an address locks alike
    whether or not a login has it."""
    if "@" not in given:
        return normalise_username(given)
    return ADDRESS_COUNTER_PREFIX + hashlib.blake2b(given.strip().lower().encode(), digest_size=20).hexdigest()


def _one_time_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


def may_reset_by_email(user: User) -> bool:
    """Only an active customer login resets its password itself. A pending login activates with
    its code instead; a disabled one was disabled by its administrator; support staff ask a
    colleague (`adgang staff`), since a staff login reaches every company."""
    return user.status == "active" and user.role != "support" and user.tenant_cvr is not None


class InvalidResetCode(Problem):
    status = 400
    type_suffix = "invalid-reset-code"
    title = "The code is not correct"


class ResetRestartRequired(Problem):
    status = 410
    type_suffix = "reset-restart-required"
    title = "The password reset must be started again"


class ResetCompleted(Problem):
    status = 410
    type_suffix = "reset-completed"
    title = "The password was already changed with this reset"


class ResetStepOutOfOrder(Conflict):
    type_suffix = "reset-step-out-of-order"
    title = "This step of the password reset is not the next one"


class ResetNotPossible(Conflict):
    type_suffix = "reset-not-possible"
    title = "This login cannot reset its password this way"


RESTART = "Ask for a new code: POST /v1/password-reset (the portal's page Forgotten password)."


@dataclass(frozen=True)
class EmailCodeAccepted:
    """The emailed code was right: the login it bound the reset to, and its second factors."""

    user: User
    methods: tuple[str, ...]
    sms_to: str | None


def _ended(end_reason: str | None, max_attempts: int) -> Problem:
    """The refusal of a reset that has ended (completed, replaced, blocked or withdrawn)."""
    if end_reason == "completed":
        return ResetCompleted("The password was already changed with this reset: log in with it.")
    why = {
        "replaced": "A newer reset of this login was asked for: use the code in the newest email.",
        "blocked": f"The code was entered wrongly {max_attempts} times. {RESTART}",
    }
    return ResetRestartRequired(why.get(end_reason or "", f"This reset has ended. {RESTART}"))


def _out_of_order(reset: PasswordReset) -> ResetStepOutOfOrder:
    if reset.email_confirmed_at is not None:
        return ResetStepOutOfOrder(
            "The emailed code was already accepted: go on with the second factor and the new "
            f"password (POST /v1/password-reset/{reset.id}/complete)."
        )
    return ResetStepOutOfOrder(
        f"Type the code from the email first (POST /v1/password-reset/{reset.id}/email-code)."
    )


def _not_possible() -> ResetNotPossible:
    return ResetNotPossible(
        "This login cannot reset its password by itself now (it is not active, or has no "
        "confirmed mobile number for an SMS code). Use the authenticator app or a recovery "
        "code, or ask the company's administrator."
    )


def _too_soon(retry_after: int) -> TooManyRequests:
    return TooManyRequests(
        f"A code was just sent, or as many as allowed. Wait {retry_after} seconds.", retry_after=retry_after
    )


@dataclass
class PasswordResets:
    settings: IdentitySettings
    outbox: Outbox
    clock: Clock
    sealer: Sealer
    lockout: Lockout
    sessions: Sessions
    audit: AuditTrail

    # --- 1: the request -----------------------------------------------------------------

    async def request(self, session: AsyncSession, typed: str, *, client_address: str | None) -> PasswordReset:
        """A new reset for whatever `typed` names; a code goes to each matching login that may
        reset, within its limits. Returns the reset whatever matched."""
        now = self.clock.now()
        given = typed.strip()
        by_email = "@" in given
        reset = PasswordReset(
            id=str(uuid.uuid4()),
            username=counter_key(given),
            created_at=now,
            expires_at=now + self.settings.password_reset_ttl,
            failed_attempts=0,
            sms_sends=0,
        )
        session.add(reset)
        matches = (
            func.lower(User.email) == given.lower() if by_email else User.username == normalise_username(given)
        )
        users = list(await session.scalars(select(User).where(matches).order_by(User.id).with_for_update()))
        candidates: list[User | None] = [*users] or [None]
        for user in candidates:
            await self._email_code(session, reset, user, now, client_address)
        return reset

    async def _email_code(
        self,
        session: AsyncSession,
        reset: PasswordReset,
        user: User | None,
        now: datetime,
        client_address: str | None,
    ) -> None:
        user_id = user.id if user is not None else _NOBODY
        # The same lookups and hashing for every request, a login or none (no enumeration).
        sent = list(
            await session.scalars(
                select(PasswordResetCode.created_at)
                .where(
                    PasswordResetCode.user_id == user_id,
                    PasswordResetCode.created_at > now - RESET_EMAIL_WINDOW,
                )
                .order_by(PasswordResetCode.created_at.desc())
            )
        )
        code = _one_time_code()
        code_hash = self.sealer.digest(code, context=_email_context(reset.id, user_id))
        sealed = self.sealer.seal(code, context=OtpRequested.sealing_context(uuid.UUID(reset.id)))
        if user is None:
            return
        await self.audit.record(
            session, actor=user, action="password.reset-requested", target=user, client_address=client_address
        )
        if not may_reset_by_email(user):
            log.info("password reset asked for user %s, which may not reset by email (%s)", user.id, user.status)
            return
        if len(sent) >= self.settings.password_reset_emails_per_day or (
            sent and now - as_utc(sent[0]) < self.settings.password_reset_email_cooldown
        ):
            log.info("password reset asked for user %s past its email limits: nothing sent", user.id)
            return
        expires_at = now + self.settings.password_reset_code_ttl
        session.add(
            PasswordResetCode(
                id=str(uuid.uuid4()),
                reset_id=reset.id,
                user_id=user.id,
                code_hash=code_hash,
                created_at=now,
                expires_at=expires_at,
            )
        )
        await self.outbox.add(
            session,
            code_requested(
                user,
                self.sealer,
                challenge_id=uuid.UUID(reset.id),
                purpose="reset_password",
                channel="email",
                recipient=user.email,
                code=sealed,
                expires_at=expires_at,
            ),
        )

    # --- 2: the email code --------------------------------------------------------------

    async def _open(self, session: AsyncSession, reset_id: str) -> PasswordReset:
        """The reset, locked, while it may still be used; else refused."""
        reset = await session.get(PasswordReset, reset_id, with_for_update=True, populate_existing=True)
        if reset is None:
            raise NotFound(f"There is no password reset {reset_id}. {RESTART}")
        if reset.ended_at is not None:
            raise _ended(reset.end_reason, self.settings.otp_max_attempts)
        if as_utc(reset.expires_at) <= self.clock.now():
            raise ResetRestartRequired(f"The code or the reset has expired. {RESTART}")
        return reset

    async def _refuse_if_replaced(self, session: AsyncSession, reset: PasswordReset, user_id: str) -> None:
        """Refuse (and end) this reset when a newer one sent the login a code: it replaces this one. (Told by the newer
        code, not by marking this reset: a request holds the user's row and must not wait for a
        reset's, which a step holds while it waits for the user's.)"""
        newer = await session.scalar(
            select(PasswordResetCode.id)
            .where(
                PasswordResetCode.user_id == user_id,
                PasswordResetCode.reset_id != reset.id,
                PasswordResetCode.created_at > reset.created_at,
            )
            .limit(1)
        )
        if newer is not None:
            reset.ended_at, reset.end_reason = self.clock.now(), "replaced"
            raise _ended("replaced", self.settings.otp_max_attempts).committing()

    async def _counters(self, session: AsyncSession, keys: list[str]) -> dict[str, LoginThrottle]:
        """The failure counters of these keys (usernames or `counter_key`s), locked in one order."""
        return {key: await self.lockout.username_counter(session, key) for key in sorted(set(keys))}

    def _locked(self, counter: LoginThrottle) -> bool:
        return counter.locked_until is not None and as_utc(counter.locked_until) > self.clock.now()

    async def _count_wrong(
        self,
        session: AsyncSession,
        reset: PasswordReset,
        counters: list[LoginThrottle],
        *,
        step: str,
        client_address: str | None,
    ) -> NoReturn:
        """A wrong code: counted on the reset and on the usernames' counters, and in the audit
        trail as a failed login of each username (and its lock, when this one locks it), as a
        wrong password at login is; then refused."""
        now = self.clock.now()
        reset.failed_attempts += 1
        owners = {
            u.username: u
            for u in await session.scalars(select(User).where(User.username.in_([c.username for c in counters])))
        }
        for counter in counters:
            locks = self.lockout.count_failure(counter)
            if counter.username.startswith(ADDRESS_COUNTER_PREFIX):
                continue  # an email address's own counter: no login's failure, nothing to audit
            user = owners.get(counter.username)
            kept = [("login.failed", {"step": step})]
            kept += [("login.locked", {"counter": "username"})] if locks else []
            for action, details in kept:
                await self.audit.record(
                    session,
                    actor=user,
                    action=action,
                    target=user,
                    client_address=client_address,
                    details=details,
                    subject_username=None if user is not None else counter.username,
                )
        left = max(0, self.settings.otp_max_attempts - reset.failed_attempts)
        if left == 0:
            reset.ended_at, reset.end_reason = now, "blocked"
            log.warning("password reset %s blocked after wrong codes", reset.id)
        then = (
            f"{left} more tries are allowed."
            if left
            else f"That was the last try: this reset no longer works. {RESTART}"
        )
        raise InvalidResetCode(
            f"The code is not correct or has expired. Check the newest message. {then}",
            errors=[{"field": "code", "message": "not the code that was sent"}],
        ).committing()

    async def confirm_email(
        self, session: AsyncSession, reset_id: str, code: str, *, client_address: str | None = None
    ) -> EmailCodeAccepted:
        """The emailed code: right, it binds the reset to its login and names the second factors
        the login has; wrong, it is counted."""
        reset = await self._open(session, reset_id)
        now = self.clock.now()
        if reset.email_confirmed_at is not None:
            raise _out_of_order(reset)
        if now >= as_utc(reset.created_at) + self.settings.password_reset_code_ttl:
            raise ResetRestartRequired(f"The code or the reset has expired. {RESTART}")
        codes = list(
            await session.scalars(select(PasswordResetCode).where(PasswordResetCode.reset_id == reset.id))
        )
        owners = {
            u.id: u
            for u in await session.scalars(select(User).where(User.id.in_([c.user_id for c in codes])))
        }
        own = reset.username
        assert own is not None  # every request sets it (`counter_key`)
        counters = await self._counters(session, [own, *(u.username for u in owners.values())])
        # Only the counter of what was asked for refuses: it is there whether or not a login is.
        self.lockout.refuse_while_locked(counters[own])
        matched = None
        tried: list[PasswordResetCode | None] = [*codes] or [None]
        for candidate in tried:
            # Every code of the reset is tried (one digest for a reset that sent none).
            right = self.sealer.digest_matches(
                code,
                candidate.code_hash if candidate else "",
                context=_email_context(reset.id, candidate.user_id if candidate else _NOBODY),
            )
            if right and candidate is not None and as_utc(candidate.expires_at) > now:
                matched = candidate
        if matched is None:
            # A locked login's counter is not counted on further: that would only lengthen its lock.
            counted = [c for key, c in counters.items() if key == own or not self._locked(c)]
            await self._count_wrong(
                session, reset, counted, step="password-reset-email-code", client_address=client_address
            )
        # The right code says the login exists; a lock of its username refuses it all the same.
        self.lockout.refuse_while_locked(counters[owners[matched.user_id].username])
        await self._refuse_if_replaced(session, reset, matched.user_id)
        user = await session.get(User, matched.user_id, with_for_update=True, populate_existing=True)
        if user is None or not may_reset_by_email(user):
            reset.ended_at, reset.end_reason = now, "withdrawn"
            raise _not_possible().committing()
        reset.user_id, reset.email_confirmed_at = user.id, now
        return EmailCodeAccepted(
            user=user,
            methods=await self.second_factors(session, user),
            sms_to=mask_contact(user.mobile) if user.mobile_confirmed_at is not None else None,
        )

    @staticmethod
    async def second_factors(session: AsyncSession, user: User) -> tuple[str, ...]:
        """The second factors a reset of this login can use, in the order a client offers them."""
        unused = await session.scalar(
            select(func.count())
            .select_from(RecoveryCode)
            .where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
        )
        return tuple(
            method
            for method, has in (
                ("sms", user.mobile_confirmed_at is not None),
                ("totp", user.totp_secret is not None),
                ("recovery_code", bool(unused)),
            )
            if has
        )

    # --- 3: the second factor and the new password ----------------------------------------

    async def _confirmed(self, session: AsyncSession, reset_id: str) -> tuple[PasswordReset, str]:
        """The reset and the login its email code bound it to; refused before that step."""
        reset = await self._open(session, reset_id)
        if reset.email_confirmed_at is None or reset.user_id is None:
            raise _out_of_order(reset)
        return reset, reset.user_id

    async def username_of(self, session: AsyncSession, reset_id: str) -> str | None:
        """The username of the login a reset was bound to by its email code, for the password
        policy (a password must not contain it); None before that."""
        return await session.scalar(
            select(User.username).join(PasswordReset, PasswordReset.user_id == User.id).where(
                PasswordReset.id == reset_id
            )
        )

    async def send_sms(self, session: AsyncSession, reset_id: str) -> tuple[str, datetime]:
        """A code by SMS to the login's confirmed mobile, as the login sends one (same limits).
        Returns the masked number and when the code expires."""
        reset, user_id = await self._confirmed(session, reset_id)
        now = self.clock.now()
        await self._refuse_if_replaced(session, reset, user_id)
        user = await session.get(User, user_id, with_for_update=True, populate_existing=True)
        if user is None or not may_reset_by_email(user) or user.mobile_confirmed_at is None:
            raise _not_possible()
        if reset.sms_sends >= self.settings.otp_max_sends:
            raise _too_soon(int((as_utc(reset.expires_at) - now).total_seconds()) + 1)
        if reset.sms_last_sent_at is not None:
            ready_at = as_utc(reset.sms_last_sent_at) + self.settings.otp_resend_cooldown
            if ready_at > now:
                raise _too_soon(int((ready_at - now).total_seconds()) + 1)
        code = _one_time_code()
        reset.sms_code_hash = self.sealer.digest(code, context=_sms_context(reset.id))
        reset.sms_code_expires_at = expires_at = now + self.settings.otp_ttl
        reset.sms_sends += 1
        reset.sms_last_sent_at = now
        await self.outbox.add(
            session,
            code_requested(
                user,
                self.sealer,
                challenge_id=uuid.UUID(reset.id),
                purpose="reset_password",
                channel="sms",
                recipient=user.mobile,
                code=code,
                expires_at=reset.sms_code_expires_at,
            ),
        )
        return mask_contact(user.mobile), expires_at

    async def complete(
        self,
        session: AsyncSession,
        reset_id: str,
        *,
        code: str,
        password_hash: str,
        client_address: str | None,
    ) -> User:
        """The second factor right: the new password is the login's, every session of the user
        ends (announced to billing), the user is told by email, and the username's failures
        are forgotten. Wrong: counted."""
        reset, user_id = await self._confirmed(session, reset_id)
        now = self.clock.now()
        await self._refuse_if_replaced(session, reset, user_id)
        username = await session.scalar(select(User.username).where(User.id == user_id))
        counters = list((await self._counters(session, [username] if username else [])).values())
        for counter in counters:
            self.lockout.refuse_while_locked(counter)
        user = await session.get(User, user_id, with_for_update=True, populate_existing=True)
        if user is None or not may_reset_by_email(user):
            reset.ended_at, reset.end_reason = now, "withdrawn"
            raise _not_possible().committing()
        sms_right = sent_code_matches(
            self.sealer,
            code,
            reset.sms_code_hash,
            reset.sms_code_expires_at,
            context=_sms_context(reset.id),
            now=now,
        )
        if not (sms_right or await accept_second_factor(session, user, code, self.sealer, now)):
            await self._count_wrong(
                session, reset, counters, step="password-reset-second-factor", client_address=client_address
            )
        reset.ended_at, reset.end_reason = now, "completed"
        user.password_hash = password_hash
        await self.sessions.end_all(session, user.id, "password-reset")
        await withdraw_contact_changes(session, user.id, "password-reset", now)
        # Logins begun with the old password and still waiting for their second step end too:
        # `Login._open_challenge` refuses those begun before a completed reset.
        # The lock and delays of the username go: its owner has just proved three things.
        await session.execute(delete(LoginThrottle).where(LoginThrottle.username == user.username))
        notice = credential_changed(user, "password_reset", now)
        await self.outbox.add(session, notice)
        await self.audit.record(
            session, actor=user, action="password.reset", target=user, client_address=client_address
        )
        log.info("password of user %s reset", user.id)
        return user


async def forget_old_resets(db: Database, clock: Clock) -> int:
    """Delete resets (and their codes) older than the day the email limit counts in: every
    request makes one, also for unknown names, so they must not fill the table for ever. A
    reset lives `password_reset_ttl` (at most 2 hours), so none of these can still be used."""
    before = clock.now() - RESET_EMAIL_WINDOW
    async with db.transaction() as session:
        old = select(PasswordReset.id).where(PasswordReset.created_at <= before)
        await session.execute(delete(PasswordResetCode).where(PasswordResetCode.reset_id.in_(old)))
        done = await session.execute(delete(PasswordReset).where(PasswordReset.created_at <= before))
    forgotten: int = done.rowcount  # type: ignore[attr-defined]  # DELETE results
    if forgotten:
        log.info("forgot %d password resets older than a day", forgotten)
    return forgotten
