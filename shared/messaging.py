"""At-least-once messaging: the transactional outbox and the idempotent consumer.

Producers never talk to Kafka on a request path: they add the event to the outbox table in the
same transaction as the state change, and a relay publishes it afterwards. Consumers record
each processed `ce_id` in an inbox table in the same transaction as the handler's effects, so a
redelivered message does nothing. What cannot be decoded or validated goes to `<topic>.dlq`
with the reason and its kind in headers, and the consumer goes on; `shared.deadletters` lists
and replays what is there.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import socket
import struct
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from sqlalchemy import (
    URL,
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    func,
    insert,
    make_url,
    select,
    text,
    update,
)
from sqlalchemy import event as sa_event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared import correlation
from shared.clock import Clock
from shared.db import Database, database_unavailable, sqlite_file, upsert_statement
from shared.envelope import (
    Envelope,
    EnvelopeError,
    KafkaRecord,
    ReasonKind,
    decode,
    encode,
    new_event_id,
)
from shared.events import Event, Topic
from shared.logs import redact
from shared.metrics import CONSUMED, DEAD_LETTERS
from shared.problems import Problem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MessagingTables:
    outbox: Table
    inbox: Table

    @classmethod
    def define(cls, metadata: MetaData) -> MessagingTables:
        outbox = Table(
            "outbox",
            metadata,
            Column(
                "seq",
                BigInteger().with_variant(Integer, "sqlite"),
                primary_key=True,
                autoincrement=True,
            ),
            Column("event_id", String(64), nullable=False, unique=True),
            Column("topic", String(200), nullable=False),
            Column("key", String(200), nullable=False),
            Column("headers", Text, nullable=False),
            Column("value", Text, nullable=False),
            Column("created_at", DateTime(timezone=True), nullable=False),
            Column("published_at", DateTime(timezone=True), nullable=True, index=True),
        )
        inbox = Table(
            "inbox",
            metadata,
            Column("consumer", String(100), primary_key=True),
            Column("event_id", String(64), primary_key=True),
            Column("event_type", String(200), nullable=False),
            Column("processed_at", DateTime(timezone=True), nullable=False),
        )
        return cls(outbox=outbox, inbox=inbox)


# What a transaction wrote, as the worker's wakes know it (`wrote`): the outbox's rows wake the relay.
OUTBOX = "outbox"
_WRITTEN = "adgang.written"


def wrote(session: AsyncSession, what: str) -> None:
    """Note that the session's transaction wrote `what` (`OUTBOX`, or a service's own kind of
    row, such as the notifier's deliveries): once a consumer has committed it, the worker wakes
    what waits for that kind (`shared.worker.WorkerSpec.wake_after_commit`), and nothing else."""
    session.info.setdefault(_WRITTEN, set()).add(what)


def _written(session: AsyncSession) -> set[str]:
    """What the session's transaction has noted with `wrote` so far (the set itself, so it
    can be read after the session has closed)."""
    written: set[str] = session.info.setdefault(_WRITTEN, set())
    return written


class Outbox:
    def __init__(self, tables: MessagingTables, clock: Clock) -> None:
        self._table = tables.outbox
        self._clock = clock

    async def add(self, session: AsyncSession, event: Event) -> str:
        """Queue an event in the caller's transaction; returns its `ce_id`. Its commit nudges the
        database's relay (`OutboxNudge`), which publishes it then rather than at its next poll."""
        event_id = new_event_id()
        now = self._clock.now()
        record = encode(event, event_id=event_id, time=now)
        # The request's or the consumed event's correlation id travels on (shared.correlation).
        headers = [(k, v.decode()) for k, v in record.headers] + correlation.extension_headers(event_id)
        await session.execute(
            insert(self._table).values(
                event_id=event_id,
                topic=record.topic,
                key=record.key.decode(),
                headers=json.dumps(headers),
                value=record.value.decode(),
                created_at=now,
                published_at=None,
            )
        )
        wrote(session, OUTBOX)
        await OutboxNudge.on_commit(session)
        return event_id


def _sent_by(ancillary: list[tuple[int, int, bytes]], trusted: frozenset[int]) -> Iterator[bool]:
    """For the credentials the kernel attached to a datagram (`SCM_CREDENTIALS`), whether
    its sender ran as one of the `trusted` users."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS and len(data) >= 12:
            _pid, uid, _gid = struct.unpack("iII", data[:12])
            yield uid in trusted


class OutboxNudge:
    """The nudge a commit of outbox rows gives its database's relay, across processes: an API's
    transaction writes the rows, the relay runs in the service's worker, and without a nudge
    the rows wait for its next poll (`outbox_poll_interval_s`).

    PostgreSQL: `NOTIFY adgang_outbox` in the writing transaction, which the server delivers at
    its commit (and never after a rollback) to every relay that LISTENs on the same database,
    on any host. SQLite file: after the commit, one datagram to a Unix socket in Linux's
    abstract namespace named after the database file; one relay of the host binds it (the
    others keep polling and try to bind again now and then, so one takes over when its holder
    stops). The processes sharing a SQLite file share its host, and the datagram needs no file
    beside the database. A nudge is a hint, never the only way: a relay that heard none (none
    was listening, the datagram was dropped, its connection was down) publishes at its next
    poll, as before. A relay that is nudged publishes whatever is pending, in sequence order,
    under the same turn as a poll, so order per key, batches and marks are unchanged.

    An abstract socket has no file permissions: any process of the host's network namespace
    can send to it. The relay takes a datagram only from a process running as its own user,
    root, or the database file's owner (the kernel's credentials on each datagram,
    `SO_PASSCRED`): anyone else's are dropped (`foreign_dropped`), so another user cannot make
    the relay read the outbox over and over. Another user can still bind the address first;
    the relays then poll, which they do anyway.
    """

    CHANNEL = "adgang_outbox"
    # SQLite: the shortest time from a turn that published to one a nudge starts
    # (`OutboxRelay.run_forever`), the relay's usual poll.
    SQLITE_GAP_S = 0.05
    # A relay that found another holding its database's nudge address tries again this often.
    REBIND_S = 5.0

    # The most datagrams one wake of the event loop takes off the socket: the rest wait for
    # the next (asyncio calls the reader again while any are queued).
    DRAIN_AT_ONCE = 64
    # Datagrams dropped because their sender ran as another user (of this process's relays).
    foreign_dropped = 0

    _sender: socket.socket | None = None
    _addresses: dict[URL, bytes | None] = {}

    @classmethod
    def address(cls, url: URL | str) -> bytes | None:
        """The abstract socket address of a SQLite file's nudges; None where there are none
        (PostgreSQL, a database in memory, not Linux)."""
        key = url if isinstance(url, URL) else make_url(url)
        if key not in cls._addresses:
            file = sqlite_file(key.render_as_string(hide_password=False))
            cls._addresses[key] = (
                None
                if file is None or not sys.platform.startswith("linux")
                else b"\0adgang-outbox-" + hashlib.sha256(str(file).encode()).hexdigest()[:40].encode()
            )
        return cls._addresses[key]

    @classmethod
    async def on_commit(cls, session: AsyncSession) -> None:
        """Arrange the nudge for the commit of `session`'s transaction, once per transaction."""
        sync_session = session.sync_session
        transaction = sync_session.get_transaction()
        if transaction is None or sync_session.info.get("outbox_nudge") is transaction:
            return
        sync_session.info["outbox_nudge"] = transaction
        bind = session.get_bind()
        if bind.dialect.name == "postgresql":
            await session.execute(text(f"NOTIFY {cls.CHANNEL}"))  # a write of the transaction, delivered at commit
            return
        address = cls.address(bind.engine.url)
        if address is not None:
            sa_event.listen(sync_session, "after_commit", lambda _session: cls.send(address), once=True)

    @classmethod
    def send(cls, address: bytes) -> None:
        """One datagram, never waiting: no relay listening, or one with nudges queued already
        (its socket's buffer full), is no error."""
        if cls._sender is None:
            cls._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            cls._sender.setblocking(False)
        with contextlib.suppress(OSError):
            cls._sender.sendto(b"1", address)

    @classmethod
    async def listen(
        cls, db: Database, wake: asyncio.Event, *, listening: asyncio.Event | None = None
    ) -> None:
        """Set `wake` whenever a commit nudges `db`'s relays, for as long as it runs; `listening`
        is set while this process hears them. Outages are waited out (the relay polls meanwhile)."""
        listening = listening or asyncio.Event()
        if db.engine.dialect.name == "postgresql":
            await cls._listen_postgres(db, wake, listening)
            return
        address = cls.address(db.engine.url)
        if address is not None:
            await cls._listen_socket(address, wake, listening, cls._trusted_users(db))

    @classmethod
    async def _listen_postgres(cls, db: Database, wake: asyncio.Event, listening: asyncio.Event) -> None:
        failures = 0
        while True:
            try:
                async with db.engine.connect() as connection:
                    raw = (await connection.get_raw_connection()).driver_connection
                    assert raw is not None
                    ended = asyncio.Event()
                    raw.add_termination_listener(lambda _connection, ended=ended: ended.set())
                    await raw.add_listener(cls.CHANNEL, lambda *_: wake.set())
                    listening.set()
                    failures = 0
                    wake.set()  # what was committed while no one listened
                    try:
                        await ended.wait()
                    finally:
                        listening.clear()
                        # Closed rather than given back to the pool, where it would go on listening.
                        await connection.invalidate()
                log.warning("outbox nudges: the database connection ended; listening again")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                log.warning("outbox nudges: cannot listen (%s); the relay polls meanwhile", type(exc).__name__)
                await asyncio.sleep(min(OUTAGE_BACKOFF_MAX_S, 0.5 * 2 ** min(failures - 1, 6)))

    @staticmethod
    def _trusted_users(db: Database) -> frozenset[int]:
        """Whose nudges a relay of `db` takes: its own user's, root's, the database file's owner's."""
        users = {os.geteuid(), 0}
        if db.file is not None:
            with contextlib.suppress(OSError):
                users.add(db.file.stat().st_uid)
        return frozenset(users)

    @classmethod
    async def _listen_socket(
        cls, address: bytes, wake: asyncio.Event, listening: asyncio.Event, trusted: frozenset[int]
    ) -> None:
        loop = asyncio.get_running_loop()
        credentials = socket.CMSG_SPACE(struct.calcsize("iII"))  # struct ucred: pid, uid, gid
        while True:
            receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                receiver.setblocking(False)
                receiver.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
                try:
                    receiver.bind(address)
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        raise
                    # Another relay of this host hears them; ours polls, and tries again later.
                    receiver.close()
                    await asyncio.sleep(cls.REBIND_S)
                    continue

                def drained(receiver: socket.socket = receiver) -> None:
                    nudged = False
                    with contextlib.suppress(BlockingIOError):
                        for _ in range(cls.DRAIN_AT_ONCE):
                            _data, ancillary, _flags, _sender = receiver.recvmsg(64, credentials)
                            if any(_sent_by(ancillary, trusted)):
                                nudged = True
                            else:
                                cls.foreign_dropped += 1
                    if nudged:
                        wake.set()

                loop.add_reader(receiver.fileno(), drained)
                listening.set()
                try:
                    await asyncio.Future()  # until cancelled
                finally:
                    listening.clear()
                    loop.remove_reader(receiver.fileno())
            finally:
                receiver.close()


# The longest wait between two tries while the database or the broker is away (a consumer's
# message, the relay, a worker's background job): short, so that work moves again within
# seconds of their return.
OUTAGE_BACKOFF_MAX_S = 5.0


class Publisher(Protocol):
    async def publish(self, records: list[KafkaRecord]) -> None: ...


# The transaction-scoped advisory lock held by the publishing outbox relay (PostgreSQL): "ADGA".
RELAY_LOCK = 0x4144_4741


class OutboxRelay:
    """Publishes unpublished outbox rows in sequence order, then marks them published.

    One relay per database publishes at a time, however many processes run one (every worker of
    a service does): a second relay taking rows while the first waits for the broker would put a
    key's later event on the bus before its earlier one, or send a batch again after it. The
    others find the turn taken and stand by until their next poll. PostgreSQL: a
    transaction-scoped advisory lock (`RELAY_LOCK`). SQLite: an exclusive `flock` on a file
    beside the database (`<database file>.relay.lock`). Either is released by the server or the
    kernel when its holder dies, so a crashed relay never blocks the others.
    """

    def __init__(
        self,
        db: Database,
        tables: MessagingTables,
        publisher: Publisher,
        clock: Clock,
        batch: int = 200,
    ) -> None:
        self._db = db
        self._table = tables.outbox
        self._publisher = publisher
        self._clock = clock
        self._batch = batch
        self._lock_file = None if db.file is None else db.file.with_name(f"{db.file.name}.relay.lock")

    async def run_once(self) -> int:
        """Publish the next batch if this relay has the turn; returns how many rows it sent.

        A batch is marked only after the broker has acknowledged all of it, and only the rows
        read for it are marked. If publishing fails nothing is marked: the next turn (this
        relay's or another's) sends the batch again, from its first row, and the consumers'
        inbox drops what had arrived already.
        """
        if self._db.engine.dialect.name == "postgresql":
            async with self._db.transaction() as session:
                if not await session.scalar(select(func.pg_try_advisory_xact_lock(RELAY_LOCK))):
                    return 0
                rows = (await session.execute(self._pending())).mappings().all()
                if rows:
                    await self._publisher.publish([self._record(row) for row in rows])
                    await self._mark_published(session, rows)
                return len(rows)
        with self._sqlite_turn() as mine:
            if not mine:
                return 0
            # SQLite has one write lock per database: holding it while the broker acknowledges
            # would stall the API behind the broker. Read, publish, then mark, in short steps,
            # all within the turn, so the next relay reads after the marks are committed. The
            # read, most often of nothing, takes a read transaction: the relay polls often, and
            # a poll must not queue behind the writers nor make them wait.
            reading = self._db.reading() if self._lock_file is not None else self._db.transaction()
            async with reading as session:
                rows = (await session.execute(self._pending())).mappings().all()
            if not rows:
                return 0
            await self._publisher.publish([self._record(row) for row in rows])
            async with self._db.transaction() as session:
                await self._mark_published(session, rows)
            return len(rows)

    @contextlib.contextmanager
    def _sqlite_turn(self) -> Iterator[bool]:
        """SQLite: whether this relay has the turn, held until the block ends. The turn is an
        exclusive, non-blocking `flock` on the lock file; an in-memory database, which no other
        process sees, needs none. `flock` locks belong to the open file, so two relays of one
        process exclude each other too, and the kernel drops the lock with the descriptor when
        the process dies, even by SIGKILL."""
        if self._lock_file is None:
            yield True
            return
        fd = os.open(self._lock_file, os.O_RDONLY | os.O_CREAT, 0o644)  # not inherited by children
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
            else:
                yield True
        finally:
            os.close(fd)  # releases the lock

    def _pending(self) -> Select[Any]:
        return (
            select(self._table)
            .where(self._table.c.published_at.is_(None))
            .order_by(self._table.c.seq)
            .limit(self._batch)
        )

    @staticmethod
    def _record(row: Mapping[str, Any]) -> KafkaRecord:
        return KafkaRecord(
            topic=row["topic"],
            key=row["key"].encode(),
            value=row["value"].encode(),
            headers=[(k, v.encode()) for k, v in json.loads(row["headers"])],
        )

    async def _mark_published(self, session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
        await session.execute(
            update(self._table)
            .where(self._table.c.seq.in_([row["seq"] for row in rows]))
            .values(published_at=self._clock.now())
        )

    async def run_forever(
        self, interval: float, wake: asyncio.Event | None = None, nudge: asyncio.Event | None = None
    ) -> None:
        """Take a turn, then, when it found nothing, wait for `wake` (a commit of this process),
        `nudge` (another process's, `OutboxNudge`) or the poll `interval`.

        On a SQLite file a nudge starts a turn no sooner than `OutboxNudge.SQLITE_GAP_S` after
        the last turn that published: each such turn marks its rows in a write transaction, and
        a turn right after every commit of an API would take the database's one write lock just
        when the API's next transaction wants it, which then sleeps in SQLite's busy handler
        with the API's other writes queued behind it. After a quiet spell a nudge is followed
        at once; under a steady stream of commits turns come as often as the poll's."""
        loop = asyncio.get_running_loop()
        paced = self._lock_file is not None
        last_published = -math.inf
        failures = 0
        while True:
            started = loop.time()
            try:
                sent = await self.run_once()
                failures = 0
            except Exception as exc:
                if (task := asyncio.current_task()) is not None and task.cancelling():
                    # Stopped during the turn, and a client reported it as an error of its own
                    # (a producer closed under its send): the relay stops all the same, rather
                    # than take another turn and send the batch whose mark it never made again.
                    raise asyncio.CancelledError from exc
                # Wait a little longer after each failure in a row (the database or the broker
                # away), at most OUTAGE_BACKOFF_MAX_S: the outbox keeps every event meanwhile.
                failures += 1
                if database_unavailable(exc):
                    log.warning("outbox relay: database unavailable (%s); will retry", type(exc).__name__)
                else:
                    log.exception("outbox relay failed; will retry")
                await asyncio.sleep(min(OUTAGE_BACKOFF_MAX_S, interval * 2 ** min(failures - 1, 6)))
                continue
            if sent:
                last_published = started
            # A full turn goes straight on: more may be waiting. After a turn that was not full
            # the outbox held nothing more when it was read, so the relay waits for the next
            # commit's wake or another process's nudge (at once if one came during the turn) or
            # its poll, rather than read the outbox again for nothing.
            if sent >= self._batch:
                continue
            events = [event for event in (wake, nudge) if event is not None]
            if not events:
                await asyncio.sleep(interval)
                continue
            waiters = [asyncio.ensure_future(event.wait()) for event in events]
            try:
                await asyncio.wait(waiters, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            woken = wake is not None and wake.is_set()
            for event in events:
                event.clear()
            if paced and not woken and (gap := last_published + OutboxNudge.SQLITE_GAP_S - loop.time()) > 0:
                await asyncio.sleep(gap)


# A handler takes the session of the consumer's transaction and the envelope of the one event
# class it is registered for: `{CustomerRegistered: registry.on_customer_registered}`.
Handler = Callable[[AsyncSession, Envelope[Any]], Awaitable[None]]
Handlers = Mapping[type[Event], Handler]


def by_topic(handlers: Handlers) -> dict[Topic, dict[type[Event], Handler]]:
    """The handlers of a worker grouped by the topic their event is published on: one
    consumer (and one inbox name, `<service>:<topic>`) per topic."""
    grouped: dict[Topic, dict[type[Event], Handler]] = {}
    for event_class, handler in handlers.items():
        grouped.setdefault(event_class.TOPIC, {})[event_class] = handler
    return grouped



@dataclass(frozen=True)
class DeadLetter:
    """A message a consumer gives up on, as it hands it to its `DeadLetters`: the record as it
    was read, why (a reason a person can read and its kind), which consumer, and where the
    record was read (partition and offset; -1: not known). `dead_letter_record` makes the
    record for `<topic>.dlq` of it."""

    record: KafkaRecord
    reason: str
    kind: ReasonKind
    consumer: str
    partition: int = -1
    offset: int = -1


class DeadLetters(Protocol):
    """Where a consumer's dead letters go (`KafkaPublisher` sends them to `<topic>.dlq`)."""

    async def send(self, letter: DeadLetter) -> None: ...


@dataclass
class ConsumedMessage:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int = -1
    offset: int = -1


@dataclass
class _Handleable:
    """A message of a batch that decoded and has a handler: where its outcome goes."""

    index: int
    message: ConsumedMessage
    envelope: Envelope[Event]
    handler: Handler


class IdempotentConsumer:
    """Decode, de-duplicate by `ce_id` and handle: one transaction per message (`process`), or
    one for the messages of a partition fetched together (`process_batch`).

    After a commit that handled something, `after_commit` is called once with what the
    transaction wrote (`wrote`: `OUTBOX` when a handler added an event), so the worker wakes only
    what has work: the relay after an event was added, not after every message."""

    def __init__(
        self,
        *,
        name: str,
        db: Database,
        tables: MessagingTables,
        handlers: Handlers,
        dead_letters: DeadLetters,
        clock: Clock,
        retries: int = 5,
        backoff: float = 0.5,
        after_commit: Callable[[Set[str]], None] | None = None,
    ) -> None:
        self.name = name
        self._db = db
        self._inbox = tables.inbox
        self._handlers = {event_class.TYPE: handler for event_class, handler in handlers.items()}
        self._dead_letters = dead_letters
        self._clock = clock
        self._retries = retries
        self._backoff = backoff
        self._after_commit = after_commit

    async def process(self, message: ConsumedMessage) -> str:
        """Returns what happened: handled, duplicate, ignored or dead-lettered (counted in
        `adgang_consumed_messages_total`). The handler runs in the message's correlation chain:
        its log lines and the events it adds carry the message's correlation id."""
        correlation_id, event_id = correlation.from_headers(message.headers)
        with correlation.correlated(correlation_id, event_id):
            outcome = await self._process(message)
        CONSUMED.labels(self.name, outcome).inc()
        return outcome

    async def process_batch(self, messages: Sequence[ConsumedMessage]) -> list[str]:
        """Handle messages of one partition, given in offset order, in one transaction: one
        inbox statement for all their `ce_id`s (`_record_in_inbox`: it inserts the new ones'
        rows and tells which they were), the handlers in order, one commit, then `after_commit` once (with what the batch
        wrote). Returns each message's
        outcome, as `process` would (a `ce_id` seen earlier in the batch is a duplicate too).

        If anything in the batch fails — a handler, a constraint, the database — the batch's
        transaction rolls back and its messages are handled one at a time (`process`): each
        with its own retries and dead letter, the database's outages waited for, so a poison
        message costs only itself and nothing is applied twice. Only when this returns is the
        batch done: the caller commits the messages' offsets after it, never before."""
        outcomes: list[str] = [""] * len(messages)
        batch: list[_Handleable] = []
        for index, message in enumerate(messages):
            decoded = self._decode(message)
            handler = None if isinstance(decoded, EnvelopeError) else self._handlers.get(decoded.type)
            if handler is None or isinstance(decoded, EnvelopeError):
                # Dead-lettered or ignored, as `process` does it. A dead letter is sent before
                # the batch's effects are committed, as one message's is sent before the next
                # message is handled; redelivered, it is sent again.
                outcomes[index] = await self.process(message)
                continue
            batch.append(_Handleable(index, message, decoded, handler))
        if len(batch) == 1:
            outcomes[batch[0].index] = await self.process(batch[0].message)
        elif batch:
            written: set[str] = set()
            try:
                handled = await self._handle_batch_once(batch, written)
            except Exception as exc:
                log.warning(
                    "a batch of %d messages from %s[%d] failed (%s); handling them one at a time",
                    len(batch),
                    batch[0].message.topic,
                    batch[0].message.partition,
                    type(exc).__name__,
                )
                for item in batch:
                    outcomes[item.index] = await self.process(item.message)
            else:
                for item, outcome in zip(batch, handled, strict=True):
                    outcomes[item.index] = outcome
                    CONSUMED.labels(self.name, outcome).inc()
                if "handled" in handled and self._after_commit is not None:
                    self._after_commit(written)
        return outcomes

    async def _handle_batch_once(self, batch: Sequence[_Handleable], written: set[str]) -> list[str]:
        """The batch in one transaction; raises (and so rolls back) on any failure. What the
        transaction wrote (`wrote`) is added to `written`."""
        outcomes: list[str] = []
        async with self._db.transaction() as session:
            noted = _written(session)
            # A later copy of an id in this batch is a duplicate of the first.
            first: dict[str, _Handleable] = {}
            for item in batch:
                first.setdefault(item.envelope.id, item)
            recorded = await self._record_in_inbox(session, [item.envelope for item in first.values()])
            new: list[_Handleable] = []
            for item in batch:
                if first.get(item.envelope.id) is item and item.envelope.id in recorded:
                    new.append(item)
                    outcomes.append("handled")
                else:
                    outcomes.append("duplicate")
            for item in new:
                correlation_id, event_id = correlation.from_headers(item.message.headers)
                with correlation.correlated(correlation_id, event_id):
                    await self._run_handler(item.handler, session, item.envelope)
        written |= noted
        return outcomes

    async def _record_in_inbox(self, session: AsyncSession, envelopes: Sequence[Envelope[Event]]) -> set[str]:
        """Insert the inbox rows of `envelopes` (distinct ids) in one statement; returns the ids
        it inserted, so those not among them were handled before. A row already there (or
        being inserted by a concurrent instance's transaction, which the statement waits for on
        PostgreSQL) is left as it is: the inbox's key decides, as a lookup followed by an
        insert did, in one statement instead of two."""
        now = self._clock.now()
        statement = (
            upsert_statement(session, self._inbox)
            .values(
                [
                    {
                        "consumer": self.name,
                        "event_id": envelope.id,
                        "event_type": envelope.type,
                        "processed_at": now,
                    }
                    for envelope in envelopes
                ]
            )
            .on_conflict_do_nothing(index_elements=["consumer", "event_id"])
            .returning(self._inbox.c.event_id)
        )
        return set((await session.scalars(statement)).all())

    def _decode(self, message: ConsumedMessage) -> Envelope[Event] | EnvelopeError:
        try:
            return decode(topic=message.topic, headers=message.headers, value=message.value, key=message.key)
        except EnvelopeError as exc:
            return exc

    async def _process(self, message: ConsumedMessage) -> str:
        envelope = self._decode(message)
        if isinstance(envelope, EnvelopeError):
            await self._dead_letter(message, str(envelope), envelope.kind)
            return "dead-lettered"
        handler = self._handlers.get(envelope.type)
        if handler is None:
            return "ignored"
        attempt = 0  # failures of the handler: the message's budget before the dead-letter topic
        waits = 0  # the database's outages: they never count against the message
        while True:
            written: set[str] = set()
            try:
                outcome = await self._handle_once(handler, envelope, written)
            except Exception as exc:
                if database_unavailable(exc):
                    # The database is away: the message is fine, so wait for the database
                    # rather than dead-letter a valid event. The partition waits, and nothing
                    # is lost; a connection cut in the middle (a server shutting down) counts
                    # as this too, not as a failure of the handler.
                    waits += 1
                    delay = min(OUTAGE_BACKOFF_MAX_S, self._backoff * 2 ** min(waits - 1, 6))
                    log.warning(
                        "database unavailable (%s); retrying %s in %.1fs",
                        type(exc).__name__,
                        envelope.id,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                attempt += 1
                if attempt >= self._retries:
                    log.exception("handler failed %d times, dead-lettering %s", attempt, envelope.id)
                    # The reason names the error type only: messages of database errors can
                    # carry personal data from the event.
                    await self._dead_letter(
                        message, f"handler failed: {type(exc).__name__}", ReasonKind.HANDLER_FAILED
                    )
                    return "dead-lettered"
                log.warning("handler failed (attempt %d), retrying: %s", attempt, type(exc).__name__)
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
            else:
                if outcome == "handled" and self._after_commit is not None:
                    self._after_commit(written)
                return outcome

    async def _handle_once(self, handler: Handler, envelope: Envelope[Event], written: set[str]) -> str:
        """The message in one transaction; what it wrote (`wrote`) is added to `written` once
        it has committed."""
        try:
            async with self._db.transaction() as session:
                noted = _written(session)
                if not await self._record_in_inbox(session, [envelope]):
                    return "duplicate"
                await self._run_handler(handler, session, envelope)
            written |= noted
        except IntegrityError:
            # A concurrent instance recorded the same ce_id first: the unique key decides.
            async with self._db.transaction() as session:
                seen = await session.scalar(
                    select(self._inbox.c.event_id).where(
                        self._inbox.c.consumer == self.name, self._inbox.c.event_id == envelope.id
                    )
                )
            if seen is not None:
                return "duplicate"
            raise
        return "handled"

    @staticmethod
    async def _run_handler(handler: Handler, session: AsyncSession, envelope: Envelope[Event]) -> None:
        try:
            await handler(session, envelope)
        except Problem as refusal:
            # `.committing()` keeps an API's failed try; here it would commit the inbox row
            # with half the handler's work, and the retry would skip the event as a duplicate.
            # A handler's refusal rolls back like any other failure.
            refusal.commits = False
            raise

    async def _dead_letter(self, message: ConsumedMessage, reason: str, kind: ReasonKind) -> None:
        log.warning(
            "dead-lettering message from %s[%d]@%d (%s): %s",
            message.topic,
            message.partition,
            message.offset,
            kind,
            reason,
        )
        letter = DeadLetter(
            record=KafkaRecord(
                topic=message.topic,
                key=message.key or b"",
                value=message.value or b"",
                headers=list(message.headers or ()),
            ),
            reason=reason,
            kind=kind,
            consumer=self.name,
            partition=message.partition,
            offset=message.offset,
        )
        await self._dead_letters.send(letter)
        DEAD_LETTERS.labels(topic=message.topic, consumer=self.name, reason=kind.value).inc()


# The headers a dead letter gets (a replay takes them off again; `dlq_replayed_from` stays, so a
# record that fails again after a replay still says where it was replayed from).
DLQ_REASON = "dlq_reason"
DLQ_REASON_KIND = "dlq_reason_kind"
DLQ_CONSUMER = "dlq_consumer"
DLQ_ORIGINAL_TOPIC = "dlq_original_topic"
DLQ_ORIGINAL_PARTITION = "dlq_original_partition"
DLQ_ORIGINAL_OFFSET = "dlq_original_offset"
DLQ_AT = "dlq_at"
DLQ_VALUE_DROPPED = "dlq_value_dropped"
DLQ_HEADERS_DROPPED = "dlq_headers_dropped"
DLQ_KEY_DROPPED = "dlq_key_dropped"
DLQ_HEADERS = (
    DLQ_HEADERS_DROPPED,
    DLQ_KEY_DROPPED,
    DLQ_REASON,
    DLQ_REASON_KIND,
    DLQ_CONSUMER,
    DLQ_ORIGINAL_TOPIC,
    DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_OFFSET,
    DLQ_AT,
    DLQ_VALUE_DROPPED,
)
# A dead letter carries the value it was given unless that would not fit in a record the
# producer sends (1 MiB, `max.request.size`): a topic configured for larger records would
# otherwise leave the consumer unable to dead-letter, and stuck.
MAX_DEAD_LETTER_VALUE_BYTES = 1024 * 1024 - 64 * 1024


def _header_name(name: object) -> str:
    if isinstance(name, bytes | bytearray):
        return bytes(name).decode(errors="replace")
    return str(name)


def _header_value(value: object) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def _dlq_encoded(dlq: list[tuple[str, str]]) -> list[tuple[str, bytes | None]]:
    return [(name, text.encode()) for name, text in dlq]


def dead_letter_record(letter: DeadLetter, *, at: datetime) -> KafkaRecord:
    """The record for `<topic>.dlq`: the original key, value and headers (names as text, so any
    header the broker delivered can be sent again) plus the reason, its kind and where it came
    from, dead-lettered `at`."""
    record = letter.record
    headers: list[tuple[str, bytes | None]] = []
    for item in record.headers:
        if not isinstance(item, tuple | list) or len(item) != 2:
            continue  # not a header the broker could carry
        name = _header_name(item[0])
        if name not in DLQ_HEADERS:
            headers.append((name, _header_value(item[1])))
    value = record.value
    dlq: list[tuple[str, str]] = [
        (DLQ_REASON, redact(letter.reason)[:4000]),
        (DLQ_REASON_KIND, str(letter.kind)),
        (DLQ_CONSUMER, letter.consumer),
        (DLQ_ORIGINAL_TOPIC, record.topic),
        (DLQ_AT, at.isoformat()),
    ]
    if letter.partition >= 0 and letter.offset >= 0:
        dlq += [(DLQ_ORIGINAL_PARTITION, str(letter.partition)), (DLQ_ORIGINAL_OFFSET, str(letter.offset))]
    # The whole record must fit, its headers and key too: a poison record's headers, or its
    # key, can fill it alone. The value goes first (the headers say what it was); headers that
    # would not fit even without it go instead, counted, and the value stays if it then fits;
    # a key that would not fit alone goes too, its size noted.
    key = record.key

    def fits(value: bytes, headers: list[tuple[str, bytes | None]]) -> bool:
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers + _dlq_encoded(dlq))
        return bool(size <= MAX_DEAD_LETTER_VALUE_BYTES)

    if key and not fits(b"", []):
        dlq.append((DLQ_KEY_DROPPED, str(len(key))))
        key = b""
    if not fits(b"", headers):
        dlq.append((DLQ_HEADERS_DROPPED, str(len(headers))))
        headers = []
    if len(value) > MAX_DEAD_LETTER_VALUE_BYTES or not fits(value, headers):
        dlq.append((DLQ_VALUE_DROPPED, str(len(value))))
        value = b""
    headers += _dlq_encoded(dlq)
    # A header without a value (None) is sent as one: the producer takes it as Kafka does.
    return KafkaRecord(
        topic=f"{record.topic}.dlq",
        key=key,
        value=value,
        headers=cast(list[tuple[str, bytes]], headers),
    )


def headers_list(headers: Any) -> list[tuple[str, bytes]]:
    """Normalise Kafka headers (list of pairs or mapping) into a list of pairs."""
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return [(k, v) for k, v in headers.items()]
    return [(k, v) for k, v in headers]
