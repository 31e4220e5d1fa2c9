"""Login with two factors (S7): password, then a one-time code by SMS or email; tokens after.

The password step answers the same for an unknown username and a wrong password, takes as
long (a real argon2 verification either way), and counts failures per username whether it
exists or not, so the answers never tell a stranger which usernames exist.

Each try is counted, and refused while its counter is locked, by `lockout.py` before its
password is checked; a completed login opens a session (`sessions.py`).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from services.identity.audit import AuditTrail
from services.identity.config import IdentitySettings
from services.identity.credentials import code_requested
from services.identity.domain import normalise_username
from services.identity.lockout import Lockout, PasswordTry
from services.identity.models import LoginChallenge, PasswordReset, User
from services.identity.sessions import Sessions, TokenPair
from services.identity.totp import accept_totp, use_recovery_code
from shared.clock import Clock, as_utc
from shared.logs import mask_contact
from shared.messaging import Outbox
from shared.metrics import LOGINS
from shared.problems import Problem, TooManyRequests
from shared.sealing import Sealer

SecondFactor = Literal["sms", "email", "totp"]  # what a login's second step may use


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


_USERS, _CHALLENGES = cast(Table, User.__table__), cast(Table, LoginChallenge.__table__)
# The password step's read and write, as Core statements built once.
_PASSWORD_HASH = select(_USERS.c.password_hash, _USERS.c.status).where(_USERS.c.username == bindparam("username"))
_NEW_CHALLENGE = insert(_CHALLENGES).values(
    id=bindparam("id"),
    user_id=bindparam("user_id"),
    created_at=bindparam("created_at"),
    expires_at=bindparam("expires_at"),
    failed_attempts=0,
    sends=0,
    device_id=bindparam("device_id"),
)


def _code_context(challenge_id: str) -> str:
    return f"login-code:{challenge_id}"


@dataclass
class Login:
    settings: IdentitySettings
    outbox: Outbox
    clock: Clock
    sealer: Sealer
    lockout: Lockout  # counts the password tries
    sessions: Sessions  # a completed login opens one
    # Every login's success, failure and lock is in the audit trail (docs/identity.md, Audit trail).
    audit: AuditTrail

    # --- step 1: the password ---------------------------------------------------------

    async def password_hash(self, session: AsyncSession, attempt: PasswordTry) -> str | None:
        """The hash the try's password is checked against: None for a username nobody has, or
        a login that cannot log in (the check then fails, with the same work)."""
        username = normalise_username(attempt.username)
        found = (await session.execute(_PASSWORD_HASH, {"username": username})).one_or_none()
        return found.password_hash if found is not None and found.status in ("active", "disabled") else None

    async def password_checked(
        self,
        session: AsyncSession,
        attempt: PasswordTry,
        right: bool,
        *,
        client_address: str | None,
        checked_hash: str | None = None,
        new_hash: str | None = None,
    ) -> tuple[User, LoginChallenge]:
        """After the password was checked (argon2 runs outside any transaction, the try already
        counted): right, the second step opens; wrong, the failure, and the lock it may have put
        on its counter, are kept in the audit trail and the try is refused. The same work for a
        known username and an unknown one, which is kept without a user (support sees it, no
        company does).

        A right password checked against `checked_hash`, made with other parameters than the
        configured ones, comes with `new_hash`: it replaces the stored hash in this transaction,
        the one that records the success, and only if the stored hash is still the one checked
        (a concurrent login may have replaced it already, or a password change: neither is
        undone)."""
        user = await find_user(session, attempt.username)
        if right:
            assert user is not None
            challenge = await self.start(session, user, attempt)
            if new_hash is not None and checked_hash is not None:
                await replace_password_hash(session, user, checked_hash, new_hash)
            LOGINS.labels("password", "success").inc()
            return user, challenge
        # A wrong password that locks its counter is a lockout; any other, a failure.
        LOGINS.labels("password", "lockout" if attempt.locks else "failure").inc()
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
        await self.lockout.forget_try(session, user, attempt)
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
        # One INSERT, without the ORM's unit of work: the caller reads the challenge only.
        await session.execute(
            _NEW_CHALLENGE,
            {
                "id": challenge.id,
                "user_id": challenge.user_id,
                "created_at": challenge.created_at,
                "expires_at": challenge.expires_at,
                "device_id": challenge.device_id,
            },
        )
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
        login came from a device not trusted yet (`Lockout.trust_device`)."""
        challenge, user = await self.verify_code(session, challenge_id, code, client_address=client_address)
        tokens = await self.sessions.open(session, user, user_agent=user_agent, client_address=client_address)
        device_token = await self.lockout.trust_device(session, challenge, user)
        await self.audit.record(
            session, actor=user, action="login.succeeded", target=user, client_address=client_address
        )
        LOGINS.labels("second_factor", "success").inc()
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
            # The wrong code that uses up the login's tries ends it: a lockout of this login.
            ended = challenge.failed_attempts >= self.settings.otp_max_attempts
            LOGINS.labels("second_factor", "lockout" if ended else "failure").inc()
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


def find_user(session: AsyncSession, username: str):  # noqa: ANN201 - an awaitable of User | None
    return session.scalar(select(User).where(User.username == normalise_username(username)))


async def replace_password_hash(session: AsyncSession, user: User, checked_hash: str, new_hash: str) -> bool:
    """Store `new_hash` (the same password, hashed with the configured parameters) in place of
    `checked_hash`, if that is still the stored hash: a compare-and-set in one UPDATE, which
    PostgreSQL re-checks on the row it locks and SQLite runs with the database locked. Returns
    whether it replaced it."""
    replaced = await session.execute(
        update(User)
        .where(User.id == user.id, User.password_hash == checked_hash)
        .values(password_hash=new_hash)
        .execution_options(synchronize_session=False)
    )
    if replaced.rowcount:  # type: ignore[attr-defined]
        set_committed_value(user, "password_hash", new_hash)  # as stored: nothing more to write
        return True
    return False
