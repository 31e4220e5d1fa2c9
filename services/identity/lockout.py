"""Failed passwords and the lock they lead to (S7), for the login, the password reset and the
change of one's own password alike.

A try is counted before its password is checked, in a transaction that locks the counter, and
forgotten only when the password was right: however many tries arrive at once, no more wrong
passwords are ever checked than the limits allow. Failures are counted per username whether it
exists or not. A device that completed a two-factor login before (its `device_token`) has a
counter of its own, so a stranger who locks the username does not lock out the user on their
own device; a locked-out user can have an unlock code (a device token) emailed.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import Table, bindparam, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.config import IdentitySettings
from services.identity.credentials import code_requested
from services.identity.domain import normalise_username, token_digest
from services.identity.models import LoginChallenge, LoginThrottle, TrustedDevice, User
from shared.clock import Clock, as_utc
from shared.db import Database, upsert_statement
from shared.messaging import Outbox
from shared.problems import TooManyRequests
from shared.sealing import Sealer

log = logging.getLogger(__name__)
UNLOCK_EMAIL_WINDOW = timedelta(days=1)  # `unlock_emails_per_day` counts in it

_THROTTLES = cast(Table, LoginThrottle.__table__)
_throttles = _THROTTLES.c
# A login's counted try on its username's counter, as Core statements built once: the counter's
# new values, and its row deleted when the password was right.
_COUNT_TRY = (
    update(_THROTTLES)
    .where(_throttles.username == bindparam("key"))
    .values(
        failures=bindparam("failures"),
        last_failure_at=bindparam("last_failure_at"),
        locked_until=bindparam("locked_until"),
    )
)
_FORGET_TRIES = delete(_THROTTLES).where(_throttles.username == bindparam("key"))


class Counter(Protocol):
    """What the lock and the delays read and change of a failure counter: a `FailureCounter`
    row (a trusted device's, a username's) or a username's counter as a login's try read it."""

    failures: int
    last_failure_at: datetime | None
    locked_until: datetime | None


@dataclass
class _UsernameCounter:
    """A username's counter as the upsert that locks it returned it (no ORM object): a login's
    try writes it back with one UPDATE (`_COUNT_TRY`)."""

    failures: int
    last_failure_at: datetime | None
    locked_until: datetime | None


_CounterValues = tuple[int, "datetime | None", "datetime | None"]  # failures, last failure, locked until


def _values(counter: Counter) -> _CounterValues:
    return counter.failures, counter.last_failure_at, counter.locked_until


@dataclass(frozen=True)
class PasswordTry:
    """A counted password try: the username, the trusted device whose counter it used, and
    whether this try locks that counter should its password be wrong (the audit's `login.locked`);
    the counter's values before and after it counted the try (`Lockout.give_back_try`)."""

    username: str
    device_id: str | None
    locks: bool = False
    before: _CounterValues | None = None
    counted: _CounterValues | None = None


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


@dataclass
class Lockout:
    settings: IdentitySettings
    outbox: Outbox
    clock: Clock
    sealer: Sealer
    _upserts: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    async def reserve_try(
        self, session: AsyncSession, username: str, device_token: str | None
    ) -> PasswordTry:
        """Count a password try before it is checked, or refuse it (429) while its counter is
        locked or must wait. The counter is the trusted device's when the login comes with a
        valid `device_token` of this username's user, else the username's: read and locked by
        one upsert, written back by one UPDATE (Core statements, without the ORM's unit of work)."""
        now = self.clock.now()
        key = normalise_username(username)
        device = await self._trusted_device(session, key, device_token) if device_token else None
        if device is not None:
            self._refuse_while_throttled(device, now, on_device=True)
            before = _values(device)
            locks = self.count_failure(device)
            return PasswordTry(
                username=key, device_id=device.id, locks=locks, before=before, counted=_values(device)
            )
        row = (await session.execute(self._upsert_counter(session), {"key": key})).one()
        counter = _UsernameCounter(*row)
        self._refuse_while_throttled(counter, now, on_device=False)
        before = _values(counter)
        locks = self.count_failure(counter)
        await session.execute(
            _COUNT_TRY,
            {
                "key": key,
                "failures": counter.failures,
                "last_failure_at": counter.last_failure_at,
                "locked_until": counter.locked_until,
            },
        )
        return PasswordTry(username=key, device_id=None, locks=locks, before=before, counted=_values(counter))

    async def give_back_try(self, session: AsyncSession, attempt: PasswordTry) -> None:
        """The try's password was not checked (`PasswordHashingStopped`, a 503: nothing was
        decided or told): it counts no failure. A counter still as this try left it gets its
        values from before the try back; one that other tries changed since loses this try's
        failure only, its last failure and any lock staying as those tries left them."""
        if attempt.before is None or attempt.counted is None:
            return
        counter: Counter | None
        if attempt.device_id is not None:
            counter = await session.get(TrustedDevice, attempt.device_id, with_for_update=True)
        else:
            counter = await session.get(LoginThrottle, attempt.username, with_for_update=True)
        if counter is None:  # forgotten since (a right password, an administrator's unlock)
            return
        if _same_values(_values(counter), attempt.counted):
            counter.failures, counter.last_failure_at, counter.locked_until = attempt.before
        else:
            counter.failures = max(0, counter.failures - 1)

    def _upsert_counter(self, session: AsyncSession) -> Any:
        """The upsert of `_username_counter` as a Core statement of the session's dialect that
        returns the counter's columns, built once per dialect."""
        dialect = session.get_bind().dialect.name
        statement = self._upserts.get(dialect)
        if statement is None:
            statement = (
                upsert_statement(session, _THROTTLES)
                .values(username=bindparam("key"), failures=0)
                .on_conflict_do_update(index_elements=["username"], set_={"username": bindparam("key")})
                .returning(_throttles.failures, _throttles.last_failure_at, _throttles.locked_until)
            )
            self._upserts[dialect] = statement
        return statement

    def count_failure(self, counter: Counter) -> bool:
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

    def refuse_while_locked(self, counter: Counter) -> None:
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
        # of counters that count nothing cannot delete it before this transaction ends. The
        # row comes back from the same statement (RETURNING), as the session's object.
        throttle = await session.scalar(
            upsert_statement(session, LoginThrottle)
            .values(username=username, failures=0)
            .on_conflict_do_update(index_elements=["username"], set_={"username": username})
            .returning(LoginThrottle),
            execution_options={"populate_existing": True},
        )
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

    def _refuse_while_throttled(self, counter: Counter, now: datetime, *, on_device: bool) -> None:
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

    async def forget_try(self, session: AsyncSession, user: User, attempt: PasswordTry) -> None:
        """The password was right: the try, and the failures before it on its counter, count no more."""
        if attempt.device_id is not None:
            device = await session.get(TrustedDevice, attempt.device_id, with_for_update=True)
            if device is not None:
                device.failures, device.last_failure_at, device.locked_until = 0, None, None
        else:
            await session.execute(_FORGET_TRIES, {"key": user.username})

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


def _same_values(stored: _CounterValues, counted: _CounterValues) -> bool:
    """The counter's values as read back equal those a try wrote (times compared in UTC: SQLite
    gives them back without their zone)."""
    return stored[0] == counted[0] and all(
        (a is None and b is None) or (a is not None and b is not None and as_utc(a) == as_utc(b))
        for a, b in zip(stored[1:], counted[1:], strict=True)
    )


def _failures_are_over(counter: Counter, now: datetime, window: timedelta) -> bool:
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
