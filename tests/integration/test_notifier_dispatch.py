"""The notifier's delivery of letters (S2): retries with backoff, a final failure, the
2-hour deadline watch that survives restarts, and one letter per event however often it comes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select

from services.notifier.directory import on_user_created
from services.notifier.dispatch import Dispatcher, RetryPolicy
from services.notifier.eboks import SpoolTransport
from services.notifier.kinds import Sender
from services.notifier.memo import parse_memo_message
from services.notifier.models import Delivery, messaging
from services.notifier.recording import DELIVERIES, Recorder
from services.notifier.sla import SlaWatch
from services.notifier.transport_base import DeliveryReceipt, TransientDeliveryError
from shared.clock import FrozenClock
from shared.db import Database
from shared.envelope import decode, encode
from shared.events import CredentialsIssued, Grant, UserCreated
from shared.messaging import ConsumedMessage, IdempotentConsumer, Outbox, by_topic
from shared.sealing import Sealer
from tests.support.dead_letters import KeptDeadLetters
from tests.support.waiting import wait_until_async

CVR = "22109340"
CODE = "AB12-CD34-EF56-GH78-JK9M"


class FlakyEboks:
    """Fails the first `failures` deliveries, then writes to a real spool."""

    name = "flaky"

    def __init__(self, spool: SpoolTransport, failures: int) -> None:
        self.spool = spool
        self.failures = failures
        self.calls = 0

    async def deliver(self, *, recipient_cvr: str, message_uuid: UUID, document: bytes) -> DeliveryReceipt:
        self.calls += 1
        if self.calls <= self.failures:
            raise TransientDeliveryError("e-Boks answered 503")
        return await self.spool.deliver(
            recipient_cvr=recipient_cvr, message_uuid=message_uuid, document=document
        )


class HeldEboks:
    """Writes to a real spool, but holds every letter until released (`hold_all`) or only the
    first one."""

    name = "held"

    def __init__(self, spool: SpoolTransport, *, hold_all: bool = False) -> None:
        self.spool = spool
        self.hold_all = hold_all
        self.release = asyncio.Event()
        self.held: list[UUID] = []
        self.delivered: list[UUID] = []

    async def deliver(self, *, recipient_cvr: str, message_uuid: UUID, document: bytes) -> DeliveryReceipt:
        if self.hold_all or not self.held:
            self.held.append(message_uuid)
            await self.release.wait()
        receipt = await self.spool.deliver(recipient_cvr=recipient_cvr, message_uuid=message_uuid, document=document)
        self.delivered.append(message_uuid)
        return receipt


async def until(check: Callable[[], bool], what: str) -> None:
    async def checked() -> bool:
        return check()

    await wait_until_async(checked, deadline_s=10, what=what, poll_s=0.01)


@pytest.fixture
def database_url(notifier_url: str) -> str:
    return notifier_url


def credentials_envelope(sealer: Sealer, clock: FrozenClock, event_id: str | None = None):
    user_id = uuid.uuid4()
    event = CredentialsIssued(
        user_id=user_id,
        application_id=uuid.uuid4(),
        recipient_cvr=CVR,
        company_name="Bageriet Solsikke ApS",
        username=f"{CVR}-abcd",
        activation_code=sealer.seal(CODE, context=CredentialsIssued.sealing_context(user_id)),
        expires_at=clock.now() + timedelta(days=7),
        deliver_by=clock.now() + timedelta(hours=2),
    )
    record = encode(event, event_id=event_id or str(uuid.uuid4()), time=clock.now())
    return decode(topic=record.topic, headers=record.headers, value=record.value)


def dispatcher(
    db: Database, clock: FrozenClock, sealer: Sealer, eboks, max_attempts: int = 3, concurrency: int = 8
) -> Dispatcher:
    return Dispatcher(
        db=db,
        outbox=Outbox(messaging, clock),
        clock=clock,
        sealer=sealer,
        eboks=eboks,
        sender=Sender(cvr="29311005", name="Adgang Erhverv", portal_url="https://example.dk"),
        retry=RetryPolicy(max_attempts=max_attempts, base_s=2, max_s=60),
        lease=timedelta(seconds=20),
        concurrency=concurrency,
    )


async def outbox_types(db: Database) -> list[str]:
    async with db.transaction() as session:
        rows = (
            await session.execute(select(messaging.outbox.c.headers).order_by(messaging.outbox.c.seq))
        ).scalars()
        return [dict(json.loads(h))["ce_type"].split(".")[-2] for h in rows]


async def record(db: Database, clock: FrozenClock, envelope) -> None:
    async with db.transaction() as session:
        await Recorder(clock).record(session, envelope)


async def test_a_transient_failure_is_retried_after_a_backoff_and_then_delivered(
    db, clock, sealer, tmp_path: Path
) -> None:
    eboks = FlakyEboks(SpoolTransport(tmp_path), failures=1)
    sender = dispatcher(db, clock, sealer, eboks)
    await record(db, clock, credentials_envelope(sealer, clock))

    assert await sender.dispatch_due() == 1
    assert await sender.dispatch_due() == 0, "the retry must wait for its backoff"
    clock.advance(timedelta(seconds=2))
    assert await sender.dispatch_due() == 1

    [letter] = list((tmp_path / CVR).glob("*.xml"))
    memo = parse_memo_message(letter.read_bytes())
    assert CODE in memo.content.decode() and memo.recipient_cvr == CVR
    async with db.transaction() as session:
        delivery = await session.scalar(select(Delivery))
    assert delivery is not None and delivery.status == "delivered" and delivery.attempts == 2
    assert await outbox_types(db) == ["DeliverySucceeded"]


async def test_a_delivery_that_keeps_failing_ends_as_delivery_failed(
    db, clock, sealer, tmp_path: Path
) -> None:
    eboks = FlakyEboks(SpoolTransport(tmp_path), failures=100)
    sender = dispatcher(db, clock, sealer, eboks, max_attempts=3)
    await record(db, clock, credentials_envelope(sealer, clock))
    for _ in range(3):
        await sender.dispatch_due()
        clock.advance(timedelta(minutes=5))
    assert eboks.calls == 3
    assert await outbox_types(db) == ["DeliveryFailed"]
    assert await sender.dispatch_due() == 0


async def test_the_same_event_twice_gives_one_delivery_and_one_letter(
    db, clock, sealer, tmp_path: Path
) -> None:
    envelope = credentials_envelope(sealer, clock)
    await record(db, clock, envelope)
    await record(db, clock, envelope)
    sender = dispatcher(db, clock, sealer, SpoolTransport(tmp_path))
    assert await sender.dispatch_due() == 1
    assert len(list((tmp_path / CVR).glob("*.xml"))) == 1


async def test_a_letter_written_before_a_crash_is_not_written_again(
    db, clock, sealer, tmp_path: Path
) -> None:
    """The spool write succeeded but the worker died before recording it: the retry finds the
    same messageUUID in the spool and does not write a second letter."""
    envelope = credentials_envelope(sealer, clock)
    await record(db, clock, envelope)
    spool = SpoolTransport(tmp_path)
    first = dispatcher(db, clock, sealer, spool)
    async with db.transaction() as session:
        delivery = await session.scalar(select(Delivery))
    assert delivery is not None
    await first._send(delivery)  # the write, without the bookkeeping that a crash lost
    letter = next((tmp_path / CVR).glob("*.xml"))
    before = letter.read_bytes()

    assert await dispatcher(db, clock, sealer, spool).dispatch_due() == 1
    assert list((tmp_path / CVR).glob("*.xml")) == [letter]
    assert letter.read_bytes() == before


async def test_a_missed_deadline_is_announced_once_even_across_restarts(
    db, clock, sealer, tmp_path, caplog
) -> None:
    eboks = FlakyEboks(SpoolTransport(tmp_path), failures=100)
    await record(db, clock, credentials_envelope(sealer, clock))
    await dispatcher(db, clock, sealer, eboks, max_attempts=50).dispatch_due()

    watch = SlaWatch(db=db, outbox=Outbox(messaging, clock), clock=clock)
    assert await watch.check() == 0
    clock.advance(timedelta(hours=2, seconds=1))
    with caplog.at_level(logging.ERROR):
        assert await watch.check() == 1
    assert "deadline breached" in caplog.text
    assert await watch.check() == 0
    restarted = SlaWatch(db=db, outbox=Outbox(messaging, clock), clock=clock)
    assert await restarted.check() == 0
    assert await outbox_types(db) == ["DeliverySlaBreached"]


async def test_a_delivered_letter_never_breaches_its_deadline(db, clock, sealer, tmp_path) -> None:
    await record(db, clock, credentials_envelope(sealer, clock))
    await dispatcher(db, clock, sealer, SpoolTransport(tmp_path)).dispatch_due()
    clock.advance(timedelta(hours=3))
    assert await SlaWatch(db=db, outbox=Outbox(messaging, clock), clock=clock).check() == 0


async def leased(db: Database) -> int:
    async with db.reading() as session:
        return len(list(await session.scalars(select(Delivery).where(Delivery.lease_until.is_not(None)))))


async def recorded_outcomes(db: Database, n: int) -> None:
    async def enough() -> bool:
        return len(await outbox_types(db)) >= n

    await wait_until_async(enough, deadline_s=10, what=f"{n} outcomes recorded", poll_s=0.01)


@contextlib.asynccontextmanager
async def dispatching(sender: Dispatcher):
    """The worker's dispatcher loop; its poll never comes within a test, so what it sends a wake
    (a recorded delivery, as the worker's consumer gives one) or a free slot made it send."""
    task = asyncio.create_task(sender.run_forever(interval=3600))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_delivery_recorded_while_another_is_being_sent_does_not_wait_for_it(
    db, clock, sealer, tmp_path: Path
) -> None:
    eboks = HeldEboks(SpoolTransport(tmp_path))
    sender = dispatcher(db, clock, sealer, eboks, concurrency=2)
    await record(db, clock, credentials_envelope(sealer, clock))
    async with dispatching(sender):
        await until(lambda: len(eboks.held) == 1, "the first letter being sent")
        await record(db, clock, credentials_envelope(sealer, clock))
        sender.wake.set()
        await until(lambda: len(eboks.delivered) == 1, "the second letter sent while the first is held")
        eboks.release.set()
        await until(lambda: len(eboks.delivered) == 2, "the first letter sent once released")
        await recorded_outcomes(db, 2)
    assert eboks.delivered[1] == eboks.held[0]
    assert await outbox_types(db) == ["DeliverySucceeded", "DeliverySucceeded"]


async def test_no_more_are_claimed_than_are_sent_at_once_and_a_free_slot_takes_the_next(
    db, clock, sealer, tmp_path: Path
) -> None:
    eboks = HeldEboks(SpoolTransport(tmp_path), hold_all=True)
    sender = dispatcher(db, clock, sealer, eboks, concurrency=2)
    for _ in range(3):
        await record(db, clock, credentials_envelope(sealer, clock))
    async with dispatching(sender):
        await until(lambda: len(eboks.held) == 2, "two letters being sent")
        # The third is not leased while it cannot be sent: its lease would run out waiting.
        assert await leased(db) == 2
        eboks.hold_all = False
        eboks.release.set()
        await until(lambda: len(eboks.delivered) == 3, "all three letters sent")
        await recorded_outcomes(db, 3)
    assert len(set(eboks.delivered)) == 3
    assert await outbox_types(db) == ["DeliverySucceeded"] * 3


async def test_the_worker_wakes_the_dispatcher_after_a_delivery_is_recorded_and_not_after_a_directory_update(
    db, clock, sealer
) -> None:
    """The consumer names what its commit wrote; the notifier's worker wakes its dispatcher for
    `DELIVERIES` only (`services.notifier.worker`): a wake after every message cost a claim
    transaction that found nothing."""
    written: list[set[str]] = []
    consumers = {
        topic: IdempotentConsumer(
            name=f"notifier:{topic.name}",
            db=db,
            tables=messaging,
            handlers=handlers,
            dead_letters=KeptDeadLetters(),
            clock=clock,
            after_commit=lambda what: written.append(set(what)),
        )
        for topic, handlers in by_topic({CredentialsIssued: Recorder(clock).record, UserCreated: on_user_created}).items()
    }
    user = UserCreated(
        user_id=uuid.uuid4(),
        tenant_cvr=CVR,
        username=f"{CVR}-abcd",
        name="Karen Bager",
        email="karen@example.dk",
        mobile="+4520202020",
        role="administrator",
        grants=[Grant(cvr=CVR, accounts="all")],
        functions=["user_admin"],
        created_at=clock.now(),
    )

    for event in (credentials_envelope(sealer, clock).event, user):
        record = encode(event, event_id=str(uuid.uuid4()), time=clock.now())
        consumed = ConsumedMessage(topic=record.topic, key=record.key, value=record.value, headers=record.headers)
        assert await consumers[event.TOPIC].process(consumed) == "handled"

    assert written == [{DELIVERIES}, set()]


def claim_statements(statements: list[str]) -> list[str]:
    """The dispatcher's claims among `statements`: its reads of what is due."""
    return [
        sql
        for sql in statements
        if sql.lstrip().upper().startswith("SELECT") and "FROM deliveries" in sql and "next_attempt_at <=" in sql
    ]


@contextlib.contextmanager
def seen_statements(db: Database):
    statements: list[str] = []

    def seen(_conn, _cursor, statement: str, *_args) -> None:
        statements.append(statement)

    sa_event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        yield statements
    finally:
        sa_event.remove(db.engine.sync_engine, "before_cursor_execute", seen)


async def record_claiming(db: Database, clock: FrozenClock, sender: Dispatcher, envelope, *, fail: bool = False) -> None:
    """Record as the worker does: the recorder claims in its transaction what the running
    dispatcher has a slot for. `fail`: the transaction then fails and rolls back."""
    with contextlib.suppress(LookupError):
        async with db.transaction() as session:
            await Recorder(clock, claims=sender).record(session, envelope)
            if fail:
                raise LookupError("the consumer's transaction failed after recording")


async def test_a_delivery_recorded_with_a_slot_free_is_claimed_by_its_own_transaction_and_sent_once(
    db, clock, sealer, tmp_path: Path
) -> None:
    """While the dispatcher runs, the recorder writes a new delivery leased and hands it over
    after the commit: it is sent without a claim of its own, once, however often its event
    comes; the dispatcher is not woken to ask the database for it."""
    spool = SpoolTransport(tmp_path)
    sender = dispatcher(db, clock, sealer, spool, concurrency=2)
    envelope = credentials_envelope(sealer, clock)
    with seen_statements(db) as statements:
        async with dispatching(sender):
            # Its first claim, of what was recorded before it ran: the only one.
            await until(lambda: len(claim_statements(statements)) == 1, "the dispatcher's first claim")
            await record_claiming(db, clock, sender, envelope)
            assert not sender.wake.is_set()
            await recorded_outcomes(db, 1)
            await record_claiming(db, clock, sender, envelope)  # the same event again
            await record_claiming(db, clock, sender, credentials_envelope(sealer, clock))
            await recorded_outcomes(db, 2)
    assert len(claim_statements(statements)) == 1
    assert len(list((tmp_path / CVR).glob("*.xml"))) == 2
    assert await outbox_types(db) == ["DeliverySucceeded", "DeliverySucceeded"]
    assert await leased(db) == 0


async def test_the_recorder_claims_no_more_than_the_free_slots_and_a_rolled_back_recording_hands_nothing_over(
    db, clock, sealer, tmp_path: Path
) -> None:
    eboks = HeldEboks(SpoolTransport(tmp_path))
    sender = dispatcher(db, clock, sealer, eboks, concurrency=1)
    async with dispatching(sender):
        await until(lambda: sender.running, "the dispatcher running")
        # Rolled back: nothing was written, nothing is sent, and its slot is free again.
        await record_claiming(db, clock, sender, credentials_envelope(sealer, clock), fail=True)
        await record_claiming(db, clock, sender, credentials_envelope(sealer, clock))
        await until(lambda: len(eboks.held) == 1, "the first letter being sent")
        # No slot free: recorded unclaimed, and the dispatcher is woken to claim it later.
        await record_claiming(db, clock, sender, credentials_envelope(sealer, clock))
        assert await leased(db) == 1
        sender.wake.set()  # as the worker does after a commit that recorded one unclaimed
        eboks.release.set()
        await until(lambda: len(eboks.delivered) == 2, "both letters sent")
        await recorded_outcomes(db, 2)
    async with db.reading() as session:
        assert len(list(await session.scalars(select(Delivery)))) == 2
    assert len(set(eboks.delivered)) == 2


async def test_a_delivery_claimed_at_recording_whose_worker_stopped_is_sent_once_its_lease_ran_out(
    db, clock, sealer, tmp_path: Path
) -> None:
    eboks = HeldEboks(SpoolTransport(tmp_path), hold_all=True)
    sender = dispatcher(db, clock, sealer, eboks)
    async with dispatching(sender):
        await until(lambda: sender.running, "the dispatcher running")
        await record_claiming(db, clock, sender, credentials_envelope(sealer, clock))
        await until(lambda: len(eboks.held) == 1, "the letter being sent")
    # The worker stopped mid-attempt: nobody else takes the delivery while its lease lasts.
    spool = SpoolTransport(tmp_path)
    other = dispatcher(db, clock, sealer, spool)
    assert await other.dispatch_due() == 0
    clock.advance(timedelta(seconds=21))
    assert await other.dispatch_due() == 1
    assert len(list((tmp_path / CVR).glob("*.xml"))) == 1
    assert await outbox_types(db) == ["DeliverySucceeded"]


async def test_a_delivery_whose_recording_outlasted_its_lease_is_not_sent_twice(
    db, clock, sealer, tmp_path: Path
) -> None:
    """The lease the recorder writes runs from the moment of recording: a consumer transaction
    that took longer than that (a slow batch, a lock waited for) commits a delivery whose lease
    has run out, which another worker may claim at once. The one handed over must not be sent
    as well: the letter goes out once."""
    eboks = HeldEboks(SpoolTransport(tmp_path), hold_all=True)
    sender = dispatcher(db, clock, sealer, eboks)
    other_eboks = FlakyEboks(SpoolTransport(tmp_path), failures=0)
    other = dispatcher(db, clock, sealer, other_eboks)
    async with dispatching(sender):
        await until(lambda: sender.running, "the dispatcher running")
        async with db.transaction() as session:
            await Recorder(clock, claims=sender).record(session, credentials_envelope(sealer, clock))
            clock.advance(timedelta(seconds=21))  # the transaction outlasts the 20 s lease
        # Another worker finds the delivery's lease run out and claims it, unless this one
        # leased it anew first: either may send it, not both.
        await other.dispatch_due()
        eboks.release.set()
        await recorded_outcomes(db, 1)
        await until(lambda: sender.idle, "the handed-over delivery settled")
    # Counted at the transports: the spool's hard link would hide a second write of a letter.
    assert len(eboks.delivered) + other_eboks.calls == 1
    assert len(list((tmp_path / CVR).glob("*.xml"))) == 1
    assert await outbox_types(db) == ["DeliverySucceeded"]


async def test_many_recordings_at_once_some_rolled_back_leave_every_slot_free_and_send_each_letter_once(
    db, clock, sealer, tmp_path: Path
) -> None:
    """Recordings fired in parallel, every third rolled back, against two slots: each committed
    letter is sent once, and once all is settled every slot is free again (none leaked, none
    counted twice), so the dispatcher still claims what is recorded unclaimed afterwards."""
    spool = SpoolTransport(tmp_path)
    sender = dispatcher(db, clock, sealer, spool, concurrency=2)
    async with dispatching(sender):
        await until(lambda: sender.running, "the dispatcher running")

        async def recorded(n: int) -> None:
            await record_claiming(db, clock, sender, credentials_envelope(sealer, clock), fail=n % 3 == 0)
            sender.wake.set()  # as the worker does after a commit (one recorded unclaimed)

        await asyncio.gather(*(recorded(n) for n in range(24)))
        await recorded_outcomes(db, 16)
        await until(lambda: sender.idle, "every slot free again")
        # Recorded without the dispatcher's slots (as another process would): still claimed.
        await record(db, clock, credentials_envelope(sealer, clock))
        sender.wake.set()
        await recorded_outcomes(db, 17)
    assert len(list((tmp_path / CVR).glob("*.xml"))) == 17
    assert await outbox_types(db) == ["DeliverySucceeded"] * 17
    assert await leased(db) == 0


async def test_a_delivery_whose_recording_outlasted_its_lease_is_leased_anew_and_sent_when_nobody_took_it(
    db, clock, sealer, tmp_path: Path
) -> None:
    """The same slow recording, with no other worker about: the delivery is leased anew and
    sent at once, not left waiting for the dispatcher's next round."""
    spool = SpoolTransport(tmp_path)
    sender = dispatcher(db, clock, sealer, spool)
    async with dispatching(sender):
        await until(lambda: sender.running, "the dispatcher running")
        async with db.transaction() as session:
            await Recorder(clock, claims=sender).record(session, credentials_envelope(sealer, clock))
            clock.advance(timedelta(seconds=21))
        await recorded_outcomes(db, 1)
    assert not sender.wake.is_set()
    assert len(list((tmp_path / CVR).glob("*.xml"))) == 1
    assert await outbox_types(db) == ["DeliverySucceeded"]
    assert await leased(db) == 0


async def test_a_recording_whose_commit_fails_hands_nothing_over_and_gives_its_slot_back(
    db, clock, sealer, tmp_path: Path
) -> None:
    """The slot was promised and the delivery written claimed, then the commit fails: nothing
    is sent, the slot comes back, and the event's next recording is sent once."""
    spool = SpoolTransport(tmp_path)
    sender = dispatcher(db, clock, sealer, spool, concurrency=1)
    envelope = credentials_envelope(sealer, clock)

    def refused(_session) -> None:
        raise LookupError("the commit failed")

    async with dispatching(sender):
        await until(lambda: sender.running, "the dispatcher running")
        with pytest.raises(LookupError):
            async with db.transaction() as session:
                sa_event.listen(session.sync_session, "before_commit", refused)
                await Recorder(clock, claims=sender).record(session, envelope)
        await until(lambda: sender.idle, "the slot given back")
        assert await outbox_types(db) == []
        await record_claiming(db, clock, sender, envelope)  # the event, redelivered
        await recorded_outcomes(db, 1)
    assert len(list((tmp_path / CVR).glob("*.xml"))) == 1
    assert await outbox_types(db) == ["DeliverySucceeded"]


async def test_a_burst_of_failed_attempts_of_handed_over_deliveries_frees_every_slot_and_each_is_sent_once_later(
    db, clock, sealer, tmp_path: Path
) -> None:
    """Deliveries recorded at once, claimed by their recordings or not, and every first attempt
    fails: each failure gives its slot back, and the retries, once due, are each sent once."""
    eboks = FlakyEboks(SpoolTransport(tmp_path), failures=6)
    sender = dispatcher(db, clock, sealer, eboks, max_attempts=3, concurrency=2)
    async with dispatching(sender):
        await until(lambda: sender.running, "the dispatcher running")

        async def recorded() -> None:
            await record_claiming(db, clock, sender, credentials_envelope(sealer, clock))
            sender.wake.set()  # as the worker does after a commit (one recorded unclaimed)

        await asyncio.gather(*(recorded() for _ in range(6)))
        await until(lambda: eboks.calls == 6 and sender.idle, "every first attempt failed, every slot free")
        assert await outbox_types(db) == []
        clock.advance(timedelta(seconds=61))  # every retry due
        sender.wake.set()
        await recorded_outcomes(db, 6)
        await until(lambda: sender.idle, "every slot free again")
    assert eboks.calls == 12
    assert len(list((tmp_path / CVR).glob("*.xml"))) == 6
    assert await outbox_types(db) == ["DeliverySucceeded"] * 6
    assert await leased(db) == 0


async def test_a_slot_asked_for_a_channel_without_a_lease_is_refused_and_not_taken(
    db, clock, sealer, tmp_path: Path
) -> None:
    """A reservation that fails takes no slot: none is lost for good."""
    sender = Dispatcher(
        db=db,
        outbox=Outbox(messaging, clock),
        clock=clock,
        sealer=sealer,
        eboks=SpoolTransport(tmp_path),
        sender=Sender(cvr="29311005", name="Adgang Erhverv", portal_url="https://example.dk"),
        retry=RetryPolicy(max_attempts=3, base_s=2, max_s=60),
        lease={"eboks": timedelta(seconds=20)},
        concurrency=1,
    )
    async with dispatching(sender):
        await until(lambda: sender.running, "the dispatcher running")
        with pytest.raises(KeyError):
            sender.reserve("sms")
        assert sender.idle
        # The one slot is free: a recording is handed over, and sent without a wake.
        await record_claiming(db, clock, sender, credentials_envelope(sealer, clock))
        await recorded_outcomes(db, 1)
        await until(lambda: sender.idle, "the slot free again")
    assert not sender.wake.is_set()
    assert len(list((tmp_path / CVR).glob("*.xml"))) == 1
