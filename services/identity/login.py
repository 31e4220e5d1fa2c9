"""Login with two factors (S7): password, then a one-time code by SMS or email; tokens after.

The password step answers the same for an unknown username and a wrong password, takes as
long (a real argon2 verification either way), and counts failures per username whether it
exists or not, so the answers never tell a stranger which usernames exist.

A try is counted before its password is checked, in a transaction that locks the counter, and
forgotten only when the password was right: however many tries arrive at once, no more wrong
passwords are ever checked than the limits allow. A device that completed a two-factor login
before (its `device_token`) has a counter of its own, so a stranger who locks the username
does not lock out the user on their own device.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.audit import AuditTrail
from services.identity.config import IdentitySettings
from services.identity.credentials import code_requested
from services.identity.domain import normalise_username, token_digest
from services.identity.models import (
    FailureCounter,
    LoginChallenge,
    LoginThrottle,
    PasswordReset,
    TrustedDevice,
    User,
)
from services.identity.sessions import Sessions, TokenPair
from services.identity.totp import accept_totp, use_recovery_code
from shared.clock import Clock, as_utc
from shared.db import Database, upsert_statement
from shared.logs import mask_contact
from shared.messaging import Outbox
from shared.problems import Problem, TooManyRequests
from shared.sealing import Sealer

log = logging.getLogger(__name__)
SecondFactor = Literal["sms", "email", "totp"]  # what a login's second step may use
UNLOCK_EMAIL_WINDOW = timedelta(days=1)  # `unlock_emails_per_day` counts in it


class InvalidCredentials(Problem):
    status = 401
    type_suffix = "invalid-credentials"
    title = "Username or password is not correct"


class LoginDisabled(Problem):
    status = 403
    type_suffix = "login-disabled"
    title = "The login is disabled"


class ChallengeInvalid(Problem):
    status = 401
    type_suffix = "invalid-challenge"
    title = "The login has expired or is unknown"


class InvalidCode(Problem):
    status = 401
    type_suffix = "invalid-code"
    title = "The one-time code is not correct"


@dataclass(frozen=True)
class PasswordTry:
    """A counted password try: the username, the trusted device whose counter it used, and
    whether this try locks that counter should its password be wrong (the audit's `login.locked`)."""

    username: str
    device_id: str | None
    locks: bool = False


def _new_device(user: User, now: datetime, *, lifetime: timedelta, origin: str) -> tuple[TrustedDevice, str]:
    """A trusted device for the user and its token (256 bits, given once; only its hash is kept)."""
    token = secrets.token_urlsafe(32)
    device = TrustedDevice(
        id=str(uuid.uuid4()),
        user_id=user.id,
        token_hash=token_digest(token),
        created_at=now,
        last_used_at=now,
        expires_at=now + lifetime,
        failures=0,
        origin=origin,
    )
    return device, token


def _code_context(challenge_id: str) -> str:
    return f"login-code:{challenge_id}"


@dataclass
class Login:
    settings: IdentitySettings
    outbox: Outbox
    clock: Clock
    sealer: Sealer
    sessions: Sessions  # a completed login opens one
    # Every login's success, failure and lock is in the audit trail (docs/identity.md, Audit trail).
    audit: AuditTrail

    # --- step 1: the password ---------------------------------------------------------

    async def reserve_try(
        self, session: AsyncSession, username: str, device_token: str | None
    ) -> PasswordTry:
        """Count a password try before it is checked, or refuse it (429) while its counter is
        locked or must wait. The counter is the trusted device's when the login comes with a
        valid `device_token` of this username's user, else the username's."""
        now = self.clock.now()
        key = normalise_username(username)
        device = await self._trusted_device(session, key, device_token) if device_token else None
        counter: FailureCounter = device if device is not None else await self._username_counter(session, key)
        self._refuse_while_throttled(counter, now, on_device=device is not None)
        locks = self.count_failure(counter)
        return PasswordTry(username=key, device_id=device.id if device is not None else None, locks=locks)

    def count_failure(self, counter: FailureCounter) -> bool:
        """One more failure on the counter; the lock follows at `login_lock_after_failures`.
        True when this failure is the one that locks it."""
        now = self.clock.now()
        if _failures_are_over(counter, now, self.settings.login_lock_duration):
            counter.failures, counter.locked_until = 0, None
        counter.failures += 1
        counter.last_failure_at = now
        locks = counter.failures >= self.settings.login_lock_after_failures
        if locks:
            counter.locked_until = now + self.settings.login_lock_duration
        return locks

    async def username_counter(self, session: AsyncSession, username: str) -> LoginThrottle:
        """The username's failure counter, locked for this transaction, for a code that stands in
        for the password (a password reset): its wrong codes count towards the same lock."""
        return await self._username_counter(session, normalise_username(username))

    def refuse_while_locked(self, counter: FailureCounter) -> None:
        """429 while failures lock the counter (no delays: those pace password guesses)."""
        now = self.clock.now()
        if counter.locked_until is not None and as_utc(counter.locked_until) > now:
            wait = max(1, int((as_utc(counter.locked_until) - now).total_seconds() + 0.999))
            raise TooManyRequests(
                f"Failed passwords or codes have locked this login for {wait} more seconds. Try again "
                "then, or ask your administrator to unlock it.",
                retry_after=wait,
            )

    async def _username_counter(self, session: AsyncSession, username: str) -> LoginThrottle:
        """The username's counter, locked for this transaction (made first if there is none;
        concurrent first tries make it once)."""
        # DO UPDATE, not DO NOTHING: it locks an existing counter at once, so the worker's purge
        # of counters that count nothing cannot delete it before the SELECT below locks it.
        await session.execute(
            upsert_statement(session, LoginThrottle)
            .values(username=username, failures=0)
            .on_conflict_do_update(index_elements=["username"], set_={"username": username})
        )
        throttle = await session.get(LoginThrottle, username, with_for_update=True, populate_existing=True)
        assert throttle is not None
        return throttle

    async def request_unlock(self, session: AsyncSession, username: str) -> None:
        """While failed passwords lock an active user's username, email the user an unlock code:
        a device token of its own, valid `unlock_code_ttl`, that passes the lock with the right
        password (and then the second factor). Only the user's mailbox gets it, so a stranger who
        keeps renewing the lock cannot keep the user out. At most one email per lock duration and
        `unlock_emails_per_day`, whoever asks; nothing is said about whether one was sent."""
        now = self.clock.now()
        key = normalise_username(username)
        throttle = await session.get(LoginThrottle, key, with_for_update=True)
        if throttle is None or throttle.locked_until is None or as_utc(throttle.locked_until) <= now:
            return
        user = await session.scalar(select(User).where(User.username == key).with_for_update())
        if user is None or user.status != "active":
            return
        sent = list(
            await session.scalars(
                select(TrustedDevice.created_at)
                .where(
                    TrustedDevice.user_id == user.id,
                    TrustedDevice.origin == "email",
                    TrustedDevice.created_at > now - UNLOCK_EMAIL_WINDOW,
                )
                .order_by(TrustedDevice.created_at.desc())
            )
        )
        if len(sent) >= self.settings.unlock_emails_per_day or (
            sent and now - as_utc(sent[0]) < self.settings.login_lock_duration
        ):
            return
        device, token = _new_device(user, now, lifetime=self.settings.unlock_code_ttl, origin="email")
        session.add(device)
        device_id = uuid.UUID(device.id)
        await self.outbox.add(
            session,
            code_requested(
                user,
                self.sealer,
                challenge_id=device_id,
                purpose="unlock_login",
                channel="email",
                recipient=user.email,
                code=token,
                expires_at=device.expires_at,
            ),
        )

    async def _trusted_device(self, session: AsyncSession, username: str, token: str) -> TrustedDevice | None:
        """The live trusted device of this token, if it belongs to this username's user."""
        device = await session.scalar(
            select(TrustedDevice)
            .join(User, User.id == TrustedDevice.user_id)
            .where(TrustedDevice.token_hash == token_digest(token), User.username == username)
            .with_for_update(of=TrustedDevice)
        )
        if device is None or as_utc(device.expires_at) <= self.clock.now():
            return None
        return device

    def _refuse_while_throttled(self, counter: FailureCounter, now: datetime, *, on_device: bool) -> None:
        if counter.locked_until and as_utc(counter.locked_until) > now:
            wait = int((as_utc(counter.locked_until) - now).total_seconds()) + 1
            if on_device:
                raise TooManyRequests(
                    "Too many failed logins from this device. It is locked; try again in "
                    f"{(wait + 59) // 60} minutes, or ask your administrator to unlock your login.",
                    retry_after=wait,
                )
            raise TooManyRequests(
                f"Too many failed logins for this username. The login is locked; try again in "
                f"{(wait + 59) // 60} minutes. A browser or app you have logged in with before is not "
                "stopped by this lock; from another, have an unlock code emailed to the login's address "
                "(POST /v1/login/unlock) or ask your administrator to unlock it.",
                retry_after=wait,
            )
        free = self.settings.login_free_failures
        if counter.failures >= free and counter.last_failure_at is not None:
            delay = timedelta(seconds=min(60, 2 ** (counter.failures - free)))
            ready_at = as_utc(counter.last_failure_at) + delay
            if ready_at > now:
                wait = max(1, int((ready_at - now).total_seconds() + 0.999))
                raise TooManyRequests(
                    f"Several failed logins for this username: wait {wait} seconds before trying again.",
                    retry_after=wait,
                )

    async def password_hash(self, session: AsyncSession, attempt: PasswordTry) -> str | None:
        """The hash the try's password is checked against: None for a username nobody has, or
        a login that cannot log in (the check then fails, with the same work)."""
        user = await find_user(session, attempt.username)
        return user.password_hash if user is not None and user.status in ("active", "disabled") else None

    async def password_checked(
        self, session: AsyncSession, attempt: PasswordTry, right: bool, *, client_address: str | None
    ) -> tuple[User, LoginChallenge]:
        """After the password was checked (argon2 runs outside any transaction, the try already
        counted): right, the second step opens; wrong, the failure, and the lock it may have put
        on its counter, are kept in the audit trail and the try is refused. The same work for a
        known username and an unknown one, which is kept without a user (support sees it, no
        company does)."""
        user = await find_user(session, attempt.username)
        if right:
            assert user is not None
            return user, await self.start(session, user, attempt)
        counter = "device" if attempt.device_id is not None else "username"
        kept = [("login.failed", {"step": "password"})]
        kept += [("login.locked", {"counter": counter})] if attempt.locks else []
        for action, details in kept:
            await self.audit.record(
                session,
                actor=user,
                action=action,
                target=user,
                client_address=client_address,
                details=details,
                subject_username=None if user is not None else attempt.username,
            )
        raise InvalidCredentials(
            "The username or the password is not correct. After "
            f"{self.settings.login_lock_after_failures} failed attempts the login is locked for "
            f"{int(self.settings.login_lock_duration.total_seconds() // 60)} minutes."
        ).committing()

    async def start(self, session: AsyncSession, user: User, attempt: PasswordTry) -> LoginChallenge:
        """The password was right: forget the try (and the failures before it) and open the
        second step."""
        now = self.clock.now()
        if attempt.device_id is not None:
            device = await session.get(TrustedDevice, attempt.device_id, with_for_update=True)
            if device is not None:
                device.failures, device.last_failure_at, device.locked_until = 0, None, None
        else:
            await session.execute(delete(LoginThrottle).where(LoginThrottle.username == user.username))
        if user.status == "disabled":
            raise LoginDisabled("This login has been disabled by the company's administrator.")
        challenge = LoginChallenge(
            id=str(uuid.uuid4()),
            user_id=user.id,
            created_at=now,
            expires_at=now + self.settings.login_challenge_ttl,
            failed_attempts=0,
            sends=0,
            device_id=attempt.device_id,
        )
        session.add(challenge)
        return challenge

    # --- step 2: the one-time code ----------------------------------------------------

    async def _open_challenge(self, session: AsyncSession, challenge_id: str) -> tuple[LoginChallenge, User]:
        challenge = await session.get(LoginChallenge, challenge_id, with_for_update=True)
        now = self.clock.now()
        if challenge is None or challenge.completed_at is not None or as_utc(challenge.expires_at) <= now:
            raise ChallengeInvalid(
                "This login is unknown, finished or expired. Log in again with your password."
            )
        if challenge.failed_attempts >= self.settings.otp_max_attempts:
            raise ChallengeInvalid(
                f"The code was entered wrongly {self.settings.otp_max_attempts} times. Log in again with your password."
            )
        # Locked: a recovery code or an authenticator code is used once, also by two logins at once.
        user = await session.get(User, challenge.user_id, with_for_update=True, populate_existing=True)
        if user is None or user.status != "active":
            raise ChallengeInvalid("This login can no longer be completed. Log in again.")
        # A password reset after the password step ends the login too, as it ended every
        # session: whoever knew the old password must not finish it. Checked here rather than
        # by the reset expiring the challenges, which would take their rows after the user's.
        reset_since = await session.scalar(
            select(PasswordReset.id)
            .where(
                PasswordReset.user_id == user.id,
                PasswordReset.end_reason == "completed",
                PasswordReset.ended_at > challenge.created_at,
            )
            .limit(1)
        )
        if reset_since is not None:
            raise ChallengeInvalid(
                "The password was changed after this login began. Log in again with your password."
            )
        return challenge, user

    async def send_code(
        self, session: AsyncSession, challenge_id: str, channel: str
    ) -> tuple[LoginChallenge, str]:
        challenge, user = await self._open_challenge(session, challenge_id)
        now = self.clock.now()
        if challenge.sends >= self.settings.otp_max_sends:
            raise TooManyRequests(
                "No more codes can be sent for this login. Log in again with your password.",
                retry_after=int((as_utc(challenge.expires_at) - now).total_seconds()) + 1,
            )
        if challenge.last_sent_at is not None:
            ready_at = as_utc(challenge.last_sent_at) + self.settings.otp_resend_cooldown
            if ready_at > now:
                wait = int((ready_at - now).total_seconds()) + 1
                raise TooManyRequests(
                    f"A code was just sent. Wait {wait} seconds before asking for another.", retry_after=wait
                )
        code = f"{secrets.randbelow(1_000_000):06d}"
        recipient = user.mobile if channel == "sms" else user.email
        challenge.code_hash = self.sealer.digest(code, context=_code_context(challenge.id))
        challenge.code_channel = channel
        challenge.code_expires_at = now + self.settings.otp_ttl
        challenge.sends += 1
        challenge.last_sent_at = now
        await self.outbox.add(
            session,
            code_requested(
                user,
                self.sealer,
                challenge_id=uuid.UUID(challenge.id),
                purpose="login",
                channel=channel,
                recipient=recipient,
                code=code,
                expires_at=challenge.code_expires_at,
            ),
        )
        return challenge, mask_contact(recipient)

    async def complete(
        self,
        session: AsyncSession,
        challenge_id: str,
        code: str,
        *,
        user_agent: str | None,
        client_address: str | None,
    ) -> tuple[TokenPair, str | None]:
        """The one-time code right: a new session and its tokens, and a device token when the
        login came from a device not trusted yet (`trust_device`)."""
        challenge, user = await self.verify_code(session, challenge_id, code, client_address=client_address)
        tokens = await self.sessions.open(session, user, user_agent=user_agent, client_address=client_address)
        device_token = await self.trust_device(session, challenge, user)
        await self.audit.record(
            session, actor=user, action="login.succeeded", target=user, client_address=client_address
        )
        return tokens, device_token

    async def verify_code(
        self, session: AsyncSession, challenge_id: str, code: str, *, client_address: str | None = None
    ) -> tuple[LoginChallenge, User]:
        """The challenge and its user when the code is right; a wrong code is counted, kept in
        the audit trail and refused.

        The code may be the one sent by SMS or email, one from the user's authenticator app
        (TOTP), or one of the user's recovery codes."""
        challenge, user = await self._open_challenge(session, challenge_id)
        now = self.clock.now()
        sent_code_right = sent_code_matches(
            self.sealer,
            code,
            challenge.code_hash,
            challenge.code_expires_at,
            context=_code_context(challenge.id),
            now=now,
        )
        right = sent_code_right or await accept_second_factor(session, user, code, self.sealer, now)
        if not right:
            challenge.failed_attempts += 1
            await self.audit.record(
                session,
                actor=user,
                action="login.failed",
                target=user,
                client_address=client_address,
                details={"step": "code", "wrong_codes": challenge.failed_attempts},
            )
            raise InvalidCode(
                "The code is not correct or has expired. Check the latest message, or ask for a new code. "
                f"After {self.settings.otp_max_attempts} wrong codes you must log in again."
            ).committing()
        challenge.completed_at = now
        if sent_code_right and challenge.code_channel == "sms" and user.mobile_confirmed_at is None:
            user.mobile_confirmed_at = now  # the number is right: a code sent to it came back (S5.3)
        return challenge, user

    async def trust_device(self, session: AsyncSession, challenge: LoginChallenge, user: User) -> str | None:
        """After a two-factor login: the device it came from stays trusted, or a new device
        token is issued (returned once; only its hash is kept). A user keeps at most
        `trusted_devices_per_user`; the least recently used go first."""
        now = self.clock.now()
        if challenge.device_id is not None:
            device = await session.get(TrustedDevice, challenge.device_id)
            if device is not None:  # trusted on: it is in use
                device.last_used_at = now
                device.expires_at = now + self.settings.trusted_device_ttl
                return None
        device, token = _new_device(user, now, lifetime=self.settings.trusted_device_ttl, origin="login")
        session.add(device)
        await session.flush()
        devices = list(
            await session.scalars(
                select(TrustedDevice)
                .where(TrustedDevice.user_id == user.id)
                .order_by(TrustedDevice.last_used_at.desc(), TrustedDevice.created_at.desc())
            )
        )
        for stale in devices[self.settings.trusted_devices_per_user :]:
            await session.delete(stale)
        return token

    @staticmethod
    def methods(user: User) -> list[SecondFactor]:
        methods: list[SecondFactor] = ["sms", "email"]
        return [*methods, "totp"] if user.totp_secret else methods


def sent_code_matches(
    sealer: Sealer,
    code: str,
    code_hash: str | None,
    expires_at: datetime | None,
    *,
    context: str,
    now: datetime,
) -> bool:
    """Whether `code` is the one-time code that was sent (kept as `code_hash`) and still valid."""
    return (
        code_hash is not None
        and expires_at is not None
        and as_utc(expires_at) > now
        and sealer.digest_matches(code, code_hash, context=context)
    )


async def accept_second_factor(
    session: AsyncSession, user: User, code: str, sealer: Sealer, now: datetime
) -> bool:
    """A fresh code of the user's authenticator app (TOTP), or one of their unused recovery
    codes; either works once (the caller holds the user's row locked)."""
    if code.isdigit():
        return accept_totp(user, code, sealer, now)
    return await use_recovery_code(session, user, code, sealer, now)


async def withdraw_sent_codes(
    session: AsyncSession, user_id: str, channel: Literal["sms", "email"]
) -> None:
    """The codes already sent by `channel` to the user for a login or a password reset not yet
    finished stop working: they went to a number or address the login no longer has. The old
    phone may be the lost one, and a code that came back from it must not log in, nor make the
    new number count as confirmed (S5.3)."""
    await session.execute(
        update(LoginChallenge)
        .where(
            LoginChallenge.user_id == user_id,
            LoginChallenge.completed_at.is_(None),
            LoginChallenge.code_channel == channel,
        )
        .values(code_hash=None, code_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    if channel == "sms":
        await session.execute(
            update(PasswordReset)
            .where(PasswordReset.user_id == user_id, PasswordReset.ended_at.is_(None))
            .values(sms_code_hash=None, sms_code_expires_at=None)
            .execution_options(synchronize_session=False)
        )


def _failures_are_over(counter: FailureCounter, now: datetime, window: timedelta) -> bool:
    """A lock that has run out, or failures a whole lock's length ago, count no more."""
    if counter.locked_until is not None:
        return as_utc(counter.locked_until) <= now
    return counter.last_failure_at is not None and now - as_utc(counter.last_failure_at) >= window


async def forget_old_failures(db: Database, clock: Clock, window: timedelta) -> int:
    """Delete the username counters that count nothing any more, and expired trusted devices:
    tries at unknown usernames must not fill the table for ever."""
    now = clock.now()
    async with db.transaction() as session:
        counters = await session.execute(
            delete(LoginThrottle).where(
                or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until <= now),
                or_(LoginThrottle.last_failure_at.is_(None), LoginThrottle.last_failure_at <= now - window),
            )
        )
        devices = await session.execute(
            delete(TrustedDevice).where(
                TrustedDevice.expires_at <= now,
                # An emailed unlock code is kept for a day after it was sent: it counts against
                # the emails a day (`request_unlock`) also once it has expired.
                or_(TrustedDevice.origin != "email", TrustedDevice.created_at <= now - UNLOCK_EMAIL_WINDOW),
            )
        )
    forgotten: int = counters.rowcount + devices.rowcount  # type: ignore[attr-defined]  # DELETE results
    if forgotten:
        log.info("forgot %d login counters and expired trusted devices", forgotten)
    return forgotten


def find_user(session: AsyncSession, username: str):  # noqa: ANN201 - an awaitable of User | None
    return session.scalar(select(User).where(User.username == normalise_username(username)))

