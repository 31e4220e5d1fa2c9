"""Login with two factors (S7): password, then a one-time code by SMS or email; tokens after.

The password step answers the same for an unknown username and a wrong password, takes as
long (a real argon2 verification either way), and counts failures per username whether it
exists or not, so the answers never tell a stranger which usernames exist.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.config import IdentitySettings
from services.identity.domain import normalise_username
from services.identity.models import (
    LoginChallenge,
    LoginSession,
    LoginThrottle,
    RefreshToken,
    User,
    UserGrant,
)
from services.identity.totp import accept_totp, use_recovery_code
from shared.clock import Clock, as_utc
from shared.events import OtpRequested, SessionEnded, SessionEndReason
from shared.messaging import Outbox
from shared.problems import Problem, TooManyRequests
from shared.sealing import Sealer
from shared.tokens import TokenSigner

_hasher = PasswordHasher()
_DUMMY_PASSWORD_HASH = _hasher.hash("an unguessable dummy password to spend the same time")


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


class InvalidRefreshToken(Problem):
    status = 401
    type_suffix = "invalid-refresh-token"
    title = "The refresh token is not valid"


def verify_password(password_hash: str | None, password: str) -> bool:
    """Always one argon2 verification, whether or not there is a hash (equal timing)."""
    try:
        return _hasher.verify(password_hash or _DUMMY_PASSWORD_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def _digest(*parts: str) -> str:
    return hashlib.sha256(":".join(parts).encode()).hexdigest()


def mask(recipient: str) -> str:
    """What the person sees of where the code went: `+45 •• •• •4 56`, `m•••@example.dk`."""
    if "@" in recipient:
        local, _, domain = recipient.partition("@")
        return f"{local[:1]}•••@{domain}"
    return f"{recipient[:3]} •• •• •{recipient[-3]} {recipient[-2:]}"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"  # noqa: S105 - the OAuth token type, not a secret


@dataclass
class Login:
    settings: IdentitySettings
    outbox: Outbox
    clock: Clock
    sealer: Sealer
    signer: TokenSigner

    # --- step 1: the password ---------------------------------------------------------

    async def check_throttle(self, session: AsyncSession, username: str) -> None:
        """Refuse early while a username is locked or must wait (progressive delay)."""
        now = self.clock.now()
        throttle = await session.get(LoginThrottle, normalise_username(username))
        if throttle is None:
            return
        if throttle.locked_until and as_utc(throttle.locked_until) > now:
            wait = int((as_utc(throttle.locked_until) - now).total_seconds()) + 1
            raise TooManyRequests(
                f"Too many failed logins for this username. The login is locked; try again in "
                f"{(wait + 59) // 60} minutes, or ask your administrator to reset it.",
                retry_after=wait,
            )
        free = self.settings.login_free_failures
        if throttle.failures >= free and throttle.last_failure_at is not None:
            delay = timedelta(seconds=min(60, 2 ** (throttle.failures - free)))
            ready_at = as_utc(throttle.last_failure_at) + delay
            if ready_at > now:
                wait = max(1, int((ready_at - now).total_seconds() + 0.999))
                raise TooManyRequests(
                    f"Several failed logins for this username: wait {wait} seconds before trying again.",
                    retry_after=wait,
                )

    async def password_failed(self, session: AsyncSession, username: str) -> None:
        now = self.clock.now()
        key = normalise_username(username)
        throttle = await session.get(LoginThrottle, key, with_for_update=True)
        if throttle is None:
            throttle = LoginThrottle(username=key, failures=0)
            session.add(throttle)
        if throttle.locked_until and as_utc(throttle.locked_until) <= now:
            throttle.failures, throttle.locked_until = 0, None  # the lock has run out
        throttle.failures += 1
        throttle.last_failure_at = now
        if throttle.failures >= self.settings.login_lock_after_failures:
            throttle.locked_until = now + self.settings.login_lock_duration

    async def start(self, session: AsyncSession, user: User) -> LoginChallenge:
        """The password was right: clear the failures and open the second step."""
        now = self.clock.now()
        throttle = await session.get(LoginThrottle, user.username)
        if throttle is not None:
            await session.delete(throttle)
        if user.status == "disabled":
            raise LoginDisabled("This login has been disabled by the company's administrator.")
        challenge = LoginChallenge(
            id=str(uuid.uuid4()),
            user_id=user.id,
            created_at=now,
            expires_at=now + self.settings.login_challenge_ttl,
            failed_attempts=0,
            sends=0,
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
        user = await session.get(User, challenge.user_id)
        if user is None or user.status != "active":
            raise ChallengeInvalid("This login can no longer be completed. Log in again.")
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
        challenge.code_hash = _digest(challenge.id, code)
        challenge.code_channel = channel
        challenge.code_expires_at = now + self.settings.otp_ttl
        challenge.sends += 1
        challenge.last_sent_at = now
        await self.outbox.add(
            session,
            OtpRequested(
                user_id=uuid.UUID(user.id),
                challenge_id=uuid.UUID(challenge.id),
                purpose="login",
                channel=channel,  # type: ignore[arg-type]
                recipient=recipient,
                code=self.sealer.seal(code, context=OtpRequested.sealing_context(uuid.UUID(challenge.id))),
                expires_at=challenge.code_expires_at,
            ),
        )
        return challenge, mask(recipient)

    async def verify_code(self, session: AsyncSession, challenge_id: str, code: str) -> tuple[User, bool]:
        """Returns the user and whether the code was right; a wrong code is counted.

        The code may be the one sent by SMS or email, one from the user's authenticator app
        (TOTP), or one of the user's recovery codes."""
        challenge, user = await self._open_challenge(session, challenge_id)
        now = self.clock.now()
        sent_code_right = (
            challenge.code_hash is not None
            and challenge.code_expires_at is not None
            and as_utc(challenge.code_expires_at) > now
            and hmac.compare_digest(challenge.code_hash, _digest(challenge.id, code))
        )
        right = (
            sent_code_right
            or (code.isdigit() and accept_totp(user, code, self.sealer, now))
            or (not code.isdigit() and await use_recovery_code(session, user, code, now))
        )
        if not right:
            challenge.failed_attempts += 1
            return user, False
        challenge.completed_at = now
        if sent_code_right and challenge.code_channel == "sms" and user.mobile_confirmed_at is None:
            user.mobile_confirmed_at = now  # the number is right: a code sent to it came back (S5.3)
        return user, True

    @staticmethod
    def methods(user: User) -> list[str]:
        return ["sms", "email", *(["totp"] if user.totp_secret else [])]

    # --- tokens ---------------------------------------------------------------------------

    async def open_session(self, session: AsyncSession, user: User) -> TokenPair:
        now = self.clock.now()
        login = LoginSession(
            id=str(uuid.uuid4()),
            user_id=user.id,
            created_at=now,
            expires_at=now + self.settings.refresh_token_ttl,
        )
        session.add(login)
        await session.flush()
        return await self._issue(session, user, login)

    async def _issue(self, session: AsyncSession, user: User, login: LoginSession) -> TokenPair:
        now = self.clock.now()
        refresh = secrets.token_urlsafe(32)
        session.add(
            RefreshToken(
                token_hash=_digest(refresh),
                session_id=login.id,
                created_at=now,
                expires_at=min(now + self.settings.refresh_token_ttl, as_utc(login.expires_at)),
            )
        )
        grants = list(await session.scalars(select(UserGrant).where(UserGrant.user_id == user.id)))
        access = self.signer.sign(
            subject=user.id,
            session_id=login.id,
            tenant=user.tenant_cvr,
            role=user.role,
            grants=[{"cvr": g.cvr, "accounts": g.accounts} for g in grants],
            functions=list(user.functions),
            now=now,
            lifetime=self.settings.access_token_ttl,
        )
        return TokenPair(access, refresh, int(self.settings.access_token_ttl.total_seconds()))

    async def refresh(self, session: AsyncSession, refresh_token: str) -> TokenPair | str:
        """A new pair for a valid refresh token; a reused one ends its whole session.

        Returns the pair, or the reason it was refused (the caller commits, then refuses)."""
        now = self.clock.now()
        stored = await session.get(RefreshToken, _digest(refresh_token), with_for_update=True)
        if stored is None:
            return "unknown"
        login = await session.get(LoginSession, stored.session_id, with_for_update=True)
        assert login is not None
        if stored.used_at is not None:
            # Someone presents a token that was already exchanged: it leaked. End the session.
            if login.ended_at is None:
                await end_login_session(session, self.outbox, login, "refresh-token-reuse", now)
            return "reused"
        if login.ended_at is not None or as_utc(stored.expires_at) <= now:
            return "ended"
        user = await session.get(User, login.user_id)
        if user is None or user.status != "active":
            # Not announced: disabling or deleting a user ends all their sessions and says so
            # (UserDisabled, UserDeleted), and billing then refuses every token of the user.
            login.ended_at, login.end_reason = now, "user-not-active"
            return "ended"
        stored.used_at = now
        return await self._issue(session, user, login)

    async def end_session(self, session: AsyncSession, session_id: str, reason: SessionEndReason) -> None:
        login = await session.get(LoginSession, session_id, with_for_update=True)
        if login is not None and login.ended_at is None:
            await end_login_session(session, self.outbox, login, reason, self.clock.now())

    async def session_is_live(self, session: AsyncSession, session_id: str) -> bool:
        login = await session.get(LoginSession, session_id)
        return login is not None and login.ended_at is None and as_utc(login.expires_at) > self.clock.now()


async def end_login_session(
    session: AsyncSession, outbox: Outbox, login: LoginSession, reason: SessionEndReason, now: datetime
) -> None:
    """End one live session and announce it in the same transaction (`SessionEnded`), so that
    billing refuses the session's access tokens at once rather than when they expire (S12)."""
    login.ended_at, login.end_reason = now, reason
    await outbox.add(
        session,
        SessionEnded(
            user_id=uuid.UUID(login.user_id), session_id=uuid.UUID(login.id), reason=reason, ended_at=now
        ),
    )


def find_user(session: AsyncSession, username: str):  # noqa: ANN201 - an awaitable of User | None
    return session.scalar(select(User).where(User.username == normalise_username(username)))


def expires_at_iso(moment: datetime) -> str:
    return as_utc(moment).isoformat()
