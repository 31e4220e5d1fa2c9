"""Delivering what was recorded: the dispatcher attempts each pending delivery with retries.

It claims what is due (on PostgreSQL several workers claim at once, each skipping the rows
another holds), gives up one-time codes that expired undelivered (a code not delivered by then is
useless), and hands each delivery to the kind that sends it (`kinds/`, by the delivery's kind
name). A transient failure is tried again after an exponential backoff with jitter; a permanent
one, or the last attempt, ends the delivery as failed. Each outcome is announced through the
outbox (`DeliverySucceeded`, `DeliveryFailed`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.headerregistry import Address
from functools import partial
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier.documents import BillingDocuments
from services.notifier.eboks import EboksTransport
from services.notifier.invoice_transports import EinvoiceTransport, PrintSpool
from services.notifier.kinds import KINDS, AnyKind, EmailTransport, Outlets, Sender, SmsTransport
from services.notifier.models import Delivery
from services.notifier.outcomes import masked_in, outcome_fields, shown
from services.notifier.transport_base import (
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from shared import correlation
from shared.clock import Clock, as_utc
from shared.db import Database, database_unavailable
from shared.events import DeliveryFailed, DeliverySucceeded
from shared.messaging import OUTAGE_BACKOFF_MAX_S, Outbox
from shared.metrics import DELIVERIES, DELIVERY_LATENCY
from shared.sealing import Sealer, SealingError

log = logging.getLogger(__name__)

EXPIRED = "expired before delivery"
# How much of its lease a delivery handed over by the recorder may have used up, waiting for its
# transaction to commit, and still be attempted on it: well within the margin every channel's
# lease has beyond its worst case (services/notifier/config.py, `lease_seconds`). One that waited
# longer is leased anew first, unless another worker has claimed it meanwhile.
HANDOVER_GRACE = timedelta(seconds=5)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_s: float
    max_s: float

    def delay(self, attempts: int) -> timedelta:
        """Exponential backoff with full jitter after `attempts` failed attempts."""
        ceiling = min(self.max_s, self.base_s * 2 ** (attempts - 1))
        return timedelta(seconds=random.uniform(ceiling / 2, ceiling))


class Dispatcher:
    """Attempts the pending deliveries, each by the kind named in it (`KINDS`), with retries."""

    def __init__(
        self,
        *,
        db: Database,
        outbox: Outbox,
        clock: Clock,
        sealer: Sealer,
        eboks: EboksTransport | None,
        sender: Sender,
        retry: RetryPolicy,
        lease: timedelta | Mapping[str, timedelta],
        email: EmailTransport | None = None,
        email_from: Address | None = None,
        sms: SmsTransport | None = None,
        documents: BillingDocuments | None = None,
        einvoice: EinvoiceTransport | None = None,
        printer: PrintSpool | None = None,
        concurrency: int = 8,
        kinds: Iterable[type[AnyKind]] = KINDS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._db = db
        self._outbox = outbox
        self._clock = clock
        outlets = Outlets(
            sealer=sealer,
            sender=sender,
            eboks=eboks,
            email=email,
            email_from=email_from,
            sms=sms,
            documents=documents,
            einvoice=einvoice,
            printer=printer,
        )
        self._kinds: dict[str, AnyKind] = {
            name: kind for kind in (declared.of(outlets) for declared in kinds) for name in kind.names
        }
        self._retry = retry
        self._lease = lease
        self._concurrency = concurrency
        self._sleep = sleep
        self.wake = asyncio.Event()
        # The attempts under way, the slots the recorder holds for deliveries being recorded
        # (`reserve`), and those it recorded claimed, waiting to be started (`release`).
        self._attempts: set[asyncio.Task[None]] = set()
        self._reserved = 0
        self._handed: list[Delivery] = []
        self._handed_wake = asyncio.Event()
        self._running = False

    @property
    def running(self) -> bool:
        """Whether `run_forever` runs: only then does the recorder claim what it records."""
        return self._running

    def reserve(self, channel: str) -> timedelta | None:
        """A slot for a delivery the recorder is about to record: its lease, which the recorder
        writes with it, so that the delivery is claimed in the transaction that records it and
        needs no claim of its own. None while no slot is free or the dispatcher is not running
        (the delivery is then recorded unclaimed, and claimed as before). Every slot reserved
        comes back through `release`."""
        if not self._running or self._busy() >= self._concurrency:
            return None
        lease = self._lease_of(channel)  # before the slot is counted: a wrong channel takes none
        self._reserved += 1
        return lease

    def release(self, reserved: int, claimed: Iterable[Delivery] = ()) -> None:
        """The recorder's transaction ended: `reserved` slots go back, and the deliveries it
        committed claimed (at most that many) are attempted in them. Rolled back, it hands none:
        its rows were never written."""
        self._reserved -= reserved
        if self._running:
            # Stopped, it attempts nothing more: they keep their lease and are claimed once it
            # has run out, as any claimed delivery whose attempt never ended.
            self._handed.extend(claimed)
        self._handed_wake.set()

    @property
    def idle(self) -> bool:
        """Whether every slot is free: no attempt under way, none reserved by a recording
        transaction, none handed over and waiting to be started."""
        return self._busy() == 0

    def _busy(self) -> int:
        return len(self._attempts) + self._reserved + len(self._handed)

    def _lease_of(self, channel: str) -> timedelta:
        return self._lease if isinstance(self._lease, timedelta) else self._lease[channel]

    async def run_forever(self, interval: float) -> None:
        """Dispatch what is due whenever the worker records a delivery (`wake`), and at least
        every `interval` seconds (retries that came due, leases that ran out, deliveries other
        processes recorded). Codes that expired undelivered are looked for at most once an
        `interval`: one that is due is failed by its own attempt anyway (`_attempt`).

        At most `concurrency` attempts run at once, and a delivery is claimed only when a slot
        is free for it, so a lease never runs out while a claimed message waits its turn. A
        slot is refilled as soon as its attempt ends: a delivery recorded while others are
        being sent waits for one slot, not for the slowest attempt of a whole round.

        While it runs, the recorder claims a new delivery in the transaction that records it
        when a slot is free (`reserve`), and hands it over after the commit (`release`): it is
        attempted at once, without a claim transaction. The database is asked for more only
        when the worker recorded one unclaimed (`wake`), when the last claim took all it could
        (more may be due), or at the interval, never after each attempt for nothing."""
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        attempts = self._attempts
        more = True  # what is due in the database is not known yet
        self._running = True
        try:
            while True:
                handed, self._handed = self._handed, []
                for delivery in handed:
                    self._start(delivery, handed_over=True)
                free = self._concurrency - self._busy()
                if free > 0:
                    sweep = loop.time() >= next_sweep
                    if sweep:
                        next_sweep = loop.time() + interval
                    if sweep or more or self.wake.is_set():
                        # Cleared before the claim: a delivery committed after this point wakes
                        # the next round, one committed before it is seen by this claim.
                        self.wake.clear()
                        _, claimed = await self._claim(free, sweep_expired=sweep)
                        for delivery in claimed:
                            self._start(delivery)
                        more = len(claimed) == free
                        if more:
                            # Perhaps more is due: claim again as soon as a slot is free.
                            ended, _ = await asyncio.wait(attempts, return_when=asyncio.FIRST_COMPLETED)
                            self._finished(attempts, ended)
                            continue
                # All that was due is claimed: wait for the next delivery (at once if one was
                # recorded meanwhile), one handed over, a free slot, or the interval, rather than
                # ask the database again for nothing. No slot free: only an attempt's end (or a
                # reservation given back) can change that.
                woken: asyncio.Future[Any] = asyncio.ensure_future(self.wake.wait())
                handed_over: asyncio.Future[Any] = asyncio.ensure_future(self._handed_wake.wait())
                try:
                    waited: set[asyncio.Future[Any]] = {*attempts, handed_over}
                    timeout: float | None = None  # no slot free: the interval cannot claim either
                    if self._busy() < self._concurrency:
                        waited.add(woken)
                        timeout = max(0.0, next_sweep - loop.time())
                    done, _ = await asyncio.wait(waited, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    woken.cancel()
                    handed_over.cancel()
                self._handed_wake.clear()
                self._finished(attempts, done - {woken, handed_over})
        except asyncio.CancelledError:
            for attempt in attempts:
                attempt.cancel()
            raise
        except Exception:
            # Let the attempts under way end (each records its outcome), then fail as before.
            if attempts:
                await asyncio.wait(attempts)
            raise
        finally:
            # Deliveries handed over but not started keep their lease: claimed again once it
            # has run out, as any claimed delivery whose attempt never ended.
            self._running = False
            self._handed = []

    def _start(self, delivery: Delivery, *, handed_over: bool = False) -> None:
        attempt = self._attempt_handed_over(delivery) if handed_over else self._attempt_correlated(delivery)
        self._attempts.add(asyncio.create_task(attempt))

    async def _attempt_handed_over(self, delivery: Delivery) -> None:
        """A delivery the recorder claimed: its lease ran from the moment it was recorded, not
        from its commit. Attempted on that lease while little of it was used up; otherwise
        leased anew first, in one statement that finds the lease the recorder wrote or nothing:
        once it had run out, another worker may have claimed the delivery (and sent it), and
        then this one leaves it alone (S2: a letter is sent once)."""
        lease = self._lease_of(delivery.channel)
        written = delivery.lease_until
        now = self._clock.now()
        if written is None or as_utc(written) - now < lease - HANDOVER_GRACE:
            try:
                async with self._db.transaction() as session:
                    renewed = await session.execute(
                        update(Delivery)
                        .where(
                            Delivery.id == delivery.id,
                            Delivery.status == "pending",
                            Delivery.lease_until == written,
                        )
                        .values(lease_until=now + lease)
                        .execution_options(synchronize_session=False)
                    )
            except Exception as exc:
                if not database_unavailable(exc):
                    raise
                log.warning(
                    "delivery %s: database unavailable (%s) while leasing it anew; claimed once its "
                    "lease has run out",
                    delivery.id,
                    type(exc).__name__,
                )
                return
            if renewed.rowcount != 1:  # type: ignore[attr-defined]
                log.info(
                    "delivery %s was claimed by another worker after its recording's lease ran out",
                    delivery.id,
                )
                return
            delivery.lease_until = now + lease
        await self._attempt_correlated(delivery)

    @staticmethod
    def _finished(attempts: set[asyncio.Task[None]], done: set[Any]) -> None:
        """Free the slots of the attempts that ended; one that failed beyond its own handling
        (recording its outcome failed with the database up) fails the dispatcher."""
        attempts.difference_update(done)
        for attempt in done:
            if (error := attempt.exception()) is not None:
                raise error

    async def dispatch_due(self) -> int:
        """Give up the codes that expired undelivered, then attempt what is due; how many of
        either there were."""
        expired, claimed = await self._dispatch(sweep_expired=True)
        return expired + claimed

    async def _dispatch(self, *, sweep_expired: bool) -> tuple[int, int]:
        # Claim no more than can be sent at once, so a lease never runs out while a claimed
        # message waits its turn.
        expired, claimed = await self._claim(self._concurrency, sweep_expired=sweep_expired)
        await asyncio.gather(*(self._attempt_correlated(delivery) for delivery in claimed))
        return expired, len(claimed)

    async def _claim(self, batch: int, *, sweep_expired: bool = True) -> tuple[int, list[Delivery]]:
        now = self._clock.now()
        not_leased = or_(Delivery.lease_until.is_(None), Delivery.lease_until < now)
        async with self._db.transaction() as session:
            # On PostgreSQL several workers claim at once; each skips the rows another holds.
            lock = session.get_bind().dialect.name == "postgresql"
            expired: list[Delivery] = []
            if sweep_expired:
                expired_query = select(Delivery).where(
                    Delivery.status == "pending",
                    Delivery.expires_at.is_not(None),
                    Delivery.expires_at <= now,
                    not_leased,  # one being attempted right now is settled by its attempt
                )
                if lock:
                    expired_query = expired_query.with_for_update(skip_locked=True)
                expired = list(await session.scalars(expired_query))
                for delivery in expired:
                    await self._give_up(session, delivery, EXPIRED, now)
            query = (
                select(Delivery)
                .where(Delivery.status == "pending", Delivery.next_attempt_at <= now, not_leased)
                .order_by(Delivery.next_attempt_at)
                .limit(batch)
            )
            if lock:
                query = query.with_for_update(skip_locked=True)
            deliveries = list(await session.scalars(query))
            for delivery in deliveries:
                delivery.lease_until = now + self._lease_of(delivery.channel)
            return len(expired), deliveries

    async def _attempt_correlated(self, delivery: Delivery) -> None:
        """An attempt in the chain of the event that asked for it: its log lines and its outcome
        event carry that event's correlation id."""
        with correlation.correlated(delivery.correlation_id):
            await self._attempt(delivery)

    async def _attempt(self, delivery: Delivery) -> None:
        outcome: Callable[[], Awaitable[None]]
        if delivery.expires_at is not None and as_utc(delivery.expires_at) <= self._clock.now():
            outcome = partial(self._failed_attempt, delivery, EXPIRED, permanent=True, attempted=False)
            await self._settle(delivery, outcome)
            return
        try:
            location = await self._send(delivery)
        except TransientDeliveryError as exc:
            outcome = partial(self._failed_attempt, delivery, str(exc), permanent=False)
        except (PermanentDeliveryError, SealingError, ValueError) as exc:
            outcome = partial(self._failed_attempt, delivery, f"{type(exc).__name__}: {exc}", permanent=True)
        except DeliveryError as exc:
            outcome = partial(self._failed_attempt, delivery, str(exc), permanent=False)
        except Exception as exc:  # a bug or an outage must still count as an attempt
            log.exception("delivery %s attempt failed unexpectedly", delivery.id)
            outcome = partial(self._failed_attempt, delivery, f"unexpected {type(exc).__name__}", permanent=False)
        else:
            outcome = partial(self._succeeded, delivery, location)
        await self._settle(delivery, outcome)

    async def _settle(self, delivery: Delivery, outcome: Callable[[], Awaitable[None]]) -> None:
        """Record an attempt's outcome, waiting for the database while it is away: a message
        that went out must be recorded as sent, or it would be sent again once its lease ran
        out (a mail server or an SMS gateway need not recognise it)."""
        waits = 0
        while True:
            try:
                await outcome()
                return
            except Exception as exc:
                if not database_unavailable(exc):
                    raise
                waits += 1
                delay = min(OUTAGE_BACKOFF_MAX_S, 0.5 * 2 ** min(waits - 1, 6))
                log.warning(
                    "delivery %s: database unavailable (%s) while recording the attempt; again in %.1fs",
                    delivery.id,
                    type(exc).__name__,
                    delay,
                )
                await self._sleep(delay)

    async def _send(self, delivery: Delivery) -> str:
        kind = self._kinds.get(delivery.kind)
        if kind is None:
            raise PermanentDeliveryError(f"no way to send a {delivery.kind!r}")
        return await kind.send(delivery)

    async def _succeeded(self, delivery: Delivery, location: str) -> None:
        now = self._clock.now()
        async with self._db.transaction() as session:
            # One statement: a delivery recorded as delivered already (by an attempt whose lease
            # ran out) is left as it is, and no second outcome is announced.
            current = (
                await session.scalars(
                    update(Delivery)
                    .where(Delivery.id == delivery.id, Delivery.status != "delivered")
                    .values(
                        status="delivered",
                        attempts=Delivery.attempts + 1,
                        delivered_at=now,
                        location=location,
                        lease_until=None,
                        last_error=None,
                    )
                    .returning(Delivery),
                    execution_options={"populate_existing": True, "synchronize_session": False},
                )
            ).one_or_none()
            if current is None:
                return
            await self._outbox.add(
                session,
                DeliverySucceeded(
                    **outcome_fields(current),
                    delivered_at=now,
                ),
            )
        DELIVERIES.labels(current.channel, "delivered").inc()
        asked_at = as_utc(current.source_event_time or current.created_at)
        DELIVERY_LATENCY.labels(current.channel).observe(max(0.0, (now - asked_at).total_seconds()))
        log.info(
            "delivered %s to %s %s (attempt %d)",
            current.kind,
            current.channel,
            shown(current),
            current.attempts,
        )

    async def _failed_attempt(
        self, delivery: Delivery, reason: str, *, permanent: bool, attempted: bool = True
    ) -> None:
        now = self._clock.now()
        async with self._db.transaction() as session:
            current = await session.get(Delivery, delivery.id, with_for_update=True)
            assert current is not None
            if current.status != "pending":
                return
            if attempted:
                current.attempts += 1
            if permanent or current.attempts >= self._retry.max_attempts:
                await self._give_up(session, current, reason, now)
            else:
                current.last_error = reason[:1000]
                current.lease_until = None
                current.next_attempt_at = now + self._retry.delay(current.attempts)
                DELIVERIES.labels(current.channel, "retry").inc()
                log.warning(
                    "delivery %s attempt %d failed, next at %s: %s",
                    current.id,
                    current.attempts,
                    current.next_attempt_at.isoformat(),
                    masked_in(current, reason),
                )

    async def _give_up(self, session: AsyncSession, delivery: Delivery, reason: str, now: datetime) -> None:
        delivery.status = "failed"
        delivery.failed_at = now
        delivery.last_error = reason[:1000]
        delivery.lease_until = None
        DELIVERIES.labels(delivery.channel, "failed").inc()
        await self._outbox.add(
            session,
            DeliveryFailed(**outcome_fields(delivery), reason=reason[:500], failed_at=now),
        )
        log.error(
            "delivery %s (%s by %s) failed for good after %d attempts: %s",
            delivery.id,
            delivery.kind,
            delivery.channel,
            delivery.attempts,
            masked_in(delivery, reason),
        )
