"""Activation of a login with its activation code (S2, S5, S7).

Two kinds of login, two ways to activate:

- **The company's first administrator**, made from an application. Its code came by letter to
  the company's e-Boks (S2), and that letter is the authority: the application form is public,
  so anyone may have filled it in, and its name, email and mobile number are only suggestions.
  Whoever activates with the letter's username and code gives their own mobile number and
  email and confirms both with the codes sent to them (an SMS and an email). Only then is the
  login active, with those details, and the letter's code used.
- **A colleague's login** (its code emailed to the address an administrator gave, S6) and **a
  support login** (its code printed for the operator who made it) activate in one step: code
  and password. Their details were set by someone with authority over them.

Every refusal of the letter's code answers as today: an unknown username, a wrong code and a
blocked code are the same 400, so usernames do not leak.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.credentials import code_requested, credential_changed, user_details_changed
from services.identity.domain import code_matches, hash_code, normalise_username
from services.identity.models import ActivationCode, PendingActivation, User
from shared.clock import Clock, as_utc
from shared.db import lock_for_transaction
from shared.events import UserActivated
from shared.messaging import Outbox
from shared.problems import InvalidFields, NotFound, Problem, TooManyRequests
from shared.sealing import Sealer

log = logging.getLogger(__name__)

_DUMMY_HASH = hash_code("0000-0000-0000-0000-0000")


class InvalidActivation(Problem):
    status = 400
    type_suffix = "invalid-activation-code"
    title = "Username or activation code is not correct"


class ActivationCodeExpired(Problem):
    status = 410
    type_suffix = "activation-code-expired"
    title = "The activation code has expired"


class AlreadyActivated(Problem):
    status = 409
    type_suffix = "already-activated"
    title = "The login is already activated"


class InvalidConfirmationCode(Problem):
    status = 400
    type_suffix = "invalid-confirmation-code"
    title = "A confirmation code is not correct"


class ActivationRestartRequired(Problem):
    status = 410
    type_suffix = "activation-restart-required"
    title = "The activation must be started again"


class TakeoverNoticePeriod(Problem):
    status = 409
    type_suffix = "takeover-notice-period"
    title = "The takeover's notice period has not passed"


class ContactDetailsRequired(InvalidFields):
    """A 422 of its own type, so a client (the portal) can tell "this is the letter's login: ask
    for the person's own email and mobile" from a malformed field without reading words."""

    type_suffix = "contact-details-required"
    title = "The login from the company's letter needs your own email and mobile number"


class ContactDetailsNotAccepted(InvalidFields):
    type_suffix = "contact-details-not-accepted"
    title = "This login's contact details were set by its administrator"


@dataclass(frozen=True)
class ContactDetails:
    """What the person activating gives about themselves; None where they gave nothing."""

    name: str | None = None
    email: str | None = None
    mobile: str | None = None


RESTART = (
    "Start again: POST /v1/activation with the username and activation code from the letter, "
    "a password and your own email and mobile number."
)


def _code_context(activation_id: str, channel: str) -> str:
    return f"activation:{activation_id}:{channel}"


def _one_time_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


@dataclass
class Activation:
    outbox: Outbox
    clock: Clock
    sealer: Sealer
    max_failures: int  # wrong activation codes before the code is blocked
    confirmation_ttl: timedelta
    confirmation_max_attempts: int
    restart_cooldown: timedelta

    async def start(
        self,
        session: AsyncSession,
        *,
        username: str,
        code: str,
        password_hash: str,
        details: ContactDetails,
    ) -> User | PendingActivation:
        """Check the activation code: single use, expiring, attempt-limited; a wrong try is
        counted even though it is refused. A colleague's or support login is then active (the
        user is returned); a login from the letter gets codes sent to the activator's own mobile
        and email instead (the pending activation is returned)."""
        now = self.clock.now()
        # The user row is locked first, by every path that changes a pending login (activation,
        # its confirmation, a withdrawal): one order, no deadlock.
        user = await session.scalar(
            select(User).where(User.username == normalise_username(username)).with_for_update()
        )
        activation = None
        if user is not None:
            activation = await session.scalar(
                select(ActivationCode)
                .where(ActivationCode.user_id == user.id, ActivationCode.revoked_at.is_(None))
                .order_by(ActivationCode.created_at.desc())
                .limit(1)
                .with_for_update()
            )
        if user is None or activation is None:
            code_matches(code, _DUMMY_HASH)  # the same work as a real check
            raise self._wrong_code()
        if activation.failed_attempts >= self.max_failures:
            raise self._wrong_code()  # a blocked code answers as a wrong one
        if not code_matches(code, activation.code_hash):
            activation.failed_attempts += 1
            if activation.failed_attempts >= self.max_failures:
                log.warning(
                    "activation code of user %s locked after %d wrong tries", user.id, self.max_failures
                )
            raise self._wrong_code().committing()
        if activation.used_at is not None or user.status != "pending":
            raise AlreadyActivated(
                "This activation code has already been used: the login is active. Log in with the "
                "username and the password chosen at activation."
            )
        from services.identity import takeover as takeovers  # it builds on provisioning, which imports this

        takeover = await takeovers.open_takeover_of(session, user.id, lock=True)
        if as_utc(activation.expires_at) <= now:
            if takeover is not None:  # the takeover ends with its code (as the worker would end it)
                await takeovers.expire(session, self.outbox, takeover, user, now)
            raise ActivationCodeExpired(
                f"The activation code expired at {as_utc(activation.expires_at).isoformat()}: apply again "
                "to receive a new letter; the new application replaces the unused login."
            ).committing()
        if takeover is not None and as_utc(takeover.usable_from) > now:
            # The company's administrators were told and may still cancel it. Said only after
            # the right code, like everything about the login.
            usable_from = as_utc(takeover.usable_from)
            raise TakeoverNoticePeriod(
                "This login takes over the company's administration. Its administrators have been "
                "told and may cancel it until the notice period has passed: the code can be used "
                f"from {usable_from.isoformat()} (the letter says when, in Danish time). "
                "Nothing was used up; come back then.",
                usable_from=usable_from.isoformat(),
            )
        # Only now, with the right code, is it said what kind of login this is: before, the
        # answer would tell a stranger which usernames exist.
        if not user.from_application:
            given = tuple(f for f in ("name", "email", "mobile") if getattr(details, f) is not None)
            if given:
                raise ContactDetailsNotAccepted(
                    "This login's name, email and mobile number were given by the administrator who "
                    "created it; activate with the username, the activation code and a password only, and "
                    "ask that administrator to correct the details if they are wrong.",
                    errors=[{"field": f, "message": "set by the login's administrator; leave it out"} for f in given],
                )
            await self._make_active(session, user, activation, password_hash, now)
            return user
        return await self._send_confirmation_codes(session, user, activation, password_hash, details, now)

    async def _send_confirmation_codes(
        self,
        session: AsyncSession,
        user: User,
        activation: ActivationCode,
        password_hash: str,
        details: ContactDetails,
        now: datetime,
    ) -> PendingActivation:
        missing = tuple(f for f in ("email", "mobile") if getattr(details, f) is None)
        if missing:
            raise ContactDetailsRequired(
                "This login comes from the letter in the company's e-Boks. Give your own email and "
                "Danish mobile number: a code is sent to each to confirm them, and two-factor login "
                "uses them (S7). The contact details of the application are not used.",
                errors=[
                    {"field": f, "message": f"required for the login from the company's letter: your own {f}"}
                    for f in missing
                ],
            )
        assert details.email is not None and details.mobile is not None
        started = list(
            await session.scalars(
                select(PendingActivation)
                .where(PendingActivation.user_id == user.id)
                .order_by(PendingActivation.created_at.desc())
            )
        )
        if started and as_utc(started[0].created_at) + self.restart_cooldown > now:
            ready_at = as_utc(started[0].created_at) + self.restart_cooldown
            retry_after = int((ready_at - now).total_seconds()) + 1
            raise TooManyRequests(
                "Codes were just sent for this login. Use them, or wait "
                f"{retry_after} seconds before starting the activation again.",
                retry_after=retry_after,
            )
        for earlier in started:  # a new start replaces an unfinished one: its codes stop working
            if earlier.ended_at is None:
                earlier.ended_at, earlier.end_reason = now, "replaced"

        activation_id = str(uuid.uuid4())
        sms_code, email_code = _one_time_code(), _one_time_code()
        pending = PendingActivation(
            id=activation_id,
            user_id=user.id,
            activation_code_id=activation.id,
            name=details.name or user.name,
            email=details.email,
            mobile=details.mobile,
            password_hash=password_hash,
            sms_code_hash=self.sealer.digest(sms_code, context=_code_context(activation_id, "sms")),
            email_code_hash=self.sealer.digest(email_code, context=_code_context(activation_id, "email")),
            created_at=now,
            expires_at=now + self.confirmation_ttl,
            failed_attempts=0,
        )
        session.add(pending)
        challenge_id = uuid.UUID(activation_id)
        for purpose, channel, recipient, code in (
            ("confirm_mobile", "sms", details.mobile, sms_code),
            ("confirm_email", "email", details.email, email_code),
        ):
            await self.outbox.add(
                session,
                code_requested(
                    user,
                    self.sealer,
                    challenge_id=challenge_id,
                    purpose=purpose,
                    channel=channel,
                    recipient=recipient,
                    code=code,
                    expires_at=pending.expires_at,
                ),
            )
        log.info("activation %s of user %s: confirmation codes sent", activation_id, user.id)
        return pending

    async def confirm(
        self, session: AsyncSession, activation_id: str, *, sms_code: str, email_code: str
    ) -> User:
        """Both codes right: the login is active with the details they confirmed, and the
        letter's code is used. A wrong pair is counted (and refused); after too many the
        activation must start again with the letter's code."""
        now = self.clock.now()
        user_id = await session.scalar(
            select(PendingActivation.user_id).where(PendingActivation.id == activation_id)
        )
        if user_id is None:
            raise NotFound(f"There is no activation {activation_id}. {RESTART}")
        tenant_cvr = await session.scalar(select(User.tenant_cvr).where(User.id == user_id))
        if tenant_cvr is not None:
            # A takeover's completion disables the company's administrators: the company first,
            # then the user, as provisioning and a cancellation take them (no deadlock).
            await lock_for_transaction(session, "identity.company", tenant_cvr)  # provisioning.COMPANY_LOCK
        user = await session.get(User, user_id, with_for_update=True)
        pending = await session.get(PendingActivation, activation_id, with_for_update=True)
        assert pending is not None  # rows are never deleted while their user is there
        if pending.ended_at is not None:
            match pending.end_reason:
                case "completed":
                    raise self._already_active()
                case "replaced":
                    raise ActivationRestartRequired(
                        "A newer activation of this login was started: use the codes sent for that one "
                        "(the newest SMS and email). These codes no longer work."
                    )
                case "blocked":
                    raise ActivationRestartRequired(
                        f"The codes were entered wrongly {self.confirmation_max_attempts} times and no "
                        f"longer work. {RESTART}"
                    )
            raise self._withdrawn()
        code = await session.get(ActivationCode, pending.activation_code_id, with_for_update=True)
        if user is None or user.status == "deleted" or code is None or code.revoked_at is not None:
            # The login was withdrawn (a newer application, support), or a new code replaced this one.
            pending.ended_at, pending.end_reason = now, "withdrawn"
            raise self._withdrawn().committing()
        if user.status != "pending" or code.used_at is not None:
            raise self._already_active()
        if as_utc(pending.expires_at) <= now:
            raise ActivationRestartRequired(
                f"The codes expired at {as_utc(pending.expires_at).isoformat()}. {RESTART}"
            )
        sms_right = self.sealer.digest_matches(
            sms_code, pending.sms_code_hash, context=_code_context(pending.id, "sms")
        )
        email_right = self.sealer.digest_matches(
            email_code, pending.email_code_hash, context=_code_context(pending.id, "email")
        )
        if not (sms_right and email_right):
            pending.failed_attempts += 1
            left = max(0, self.confirmation_max_attempts - pending.failed_attempts)
            if left == 0:
                pending.ended_at, pending.end_reason = now, "blocked"
                log.warning("activation %s of user %s blocked after wrong codes", pending.id, user.id)
            wrong = tuple(
                f for f, right in (("sms_code", sms_right), ("email_code", email_right)) if not right
            )
            which = " and ".join({"sms_code": "the SMS code", "email_code": "the email code"}[f] for f in wrong)
            then = (
                f"{left} more tries are allowed."
                if left
                else "That was the last try: the codes no longer work. " + RESTART
            )
            raise InvalidConfirmationCode(
                f"{which[0].upper()}{which[1:]} is not correct. Check the latest SMS and email. {then}",
                errors=[{"field": f, "message": "not the code that was sent"} for f in wrong],
            ).committing()
        if as_utc(code.expires_at) <= now:
            raise ActivationCodeExpired(
                f"The activation code from the letter expired at {as_utc(code.expires_at).isoformat()}: apply "
                "again to receive a new letter; the new application replaces the unused login."
            )

        pending.ended_at, pending.end_reason = now, "completed"
        details_changed = (user.name, user.email, user.mobile) != (
            pending.name,
            pending.email,
            pending.mobile,
        )
        user.name, user.email, user.mobile = pending.name, pending.email, pending.mobile
        user.mobile_confirmed_at = now  # a code sent to it came back (S5.3)
        if details_changed:
            # Other services know the login by the application's details (UserCreated).
            await self.outbox.add(session, user_details_changed(user, by_user_id=user.id, at=now))
        await self._make_active(session, user, code, pending.password_hash, now)
        return user

    def _wrong_code(self) -> InvalidActivation:
        # A blocked code and an unknown username answer exactly like a wrong code: a different
        # answer would tell a stranger that the username exists.
        return InvalidActivation(
            "The username or the activation code is not correct. Check both against the letter "
            f"in the company's e-Boks. After {self.max_failures} wrong codes the "
            "code is blocked for good; then apply again for a new letter (a new application "
            "replaces a login that was never activated), or contact support."
        )

    @staticmethod
    def _already_active() -> AlreadyActivated:
        return AlreadyActivated(
            "This login is already active. Log in with the username and the password chosen at activation."
        )

    @staticmethod
    def _withdrawn() -> ActivationRestartRequired:
        return ActivationRestartRequired(
            "This login has been withdrawn or its activation code replaced, so this activation "
            "can no longer be completed: the company applied again (a newer letter is on its way "
            "to the company's e-Boks), support deleted the login, or a new code was sent. Use "
            "the username and activation code of the newest letter."
        )

    async def _make_active(
        self, session: AsyncSession, user: User, code: ActivationCode, password_hash: str, now: datetime
    ) -> None:
        code.used_at = now
        user.password_hash = password_hash
        user.status = "active"
        user.activated_at = now
        user.activation_expires_at = None
        await self.outbox.add(session, credential_changed(user, "password_set", now))
        if user.tenant_cvr is not None:  # staff belong to no company: nothing for other services
            await self.outbox.add(
                session,
                UserActivated(
                    user_id=uuid.UUID(user.id),
                    tenant_cvr=user.tenant_cvr,
                    role=user.role,  # type: ignore[arg-type]
                    activated_at=now,
                ),
            )
        from services.identity import takeover as takeovers  # it builds on provisioning, which imports this

        takeover = await takeovers.open_takeover_of(session, user.id, lock=True)
        if takeover is not None:
            if as_utc(takeover.usable_from) > now:  # start refuses this; a guard, not a path
                raise AssertionError(f"takeover {takeover.id} completed before its notice period passed")
            await takeovers.complete(session, self.outbox, takeover, user, now)


async def end_pending_activations(session: AsyncSession, user_id: str, *, reason: str, at: datetime) -> None:
    """The login is withdrawn: an activation under way for it can no longer be confirmed."""
    for pending in await session.scalars(
        select(PendingActivation).where(
            PendingActivation.user_id == user_id, PendingActivation.ended_at.is_(None)
        )
    ):
        pending.ended_at, pending.end_reason = at, reason
