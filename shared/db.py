"""Async database access: one engine per process, one session and one commit per unit of work.

SQLite (the embedded default) is shared by a service's api and worker processes, so it runs
in WAL mode with a busy timeout, and write transactions start with `BEGIN IMMEDIATE`: two
processes then queue for the write lock instead of failing on a lock upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite
from sqlalchemy import Engine, MetaData, event, exc, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool
from sqlalchemy.sql import Executable

from shared.problems import Problem

if TYPE_CHECKING:  # Alembic (and Mako) only where a database is migrated: not in an API or a worker
    from alembic.config import Config
    from sqlalchemy.dialects import postgresql, sqlite

    from shared.pg_key_reads import KeyReads


class _OneTripCursor:
    """An aiosqlite cursor that costs one trip to the connection's thread per statement.

    aiosqlite makes a trip (a queue put, a thread switch and a wake-up of the event loop) for
    each of cursor(), execute(), fetchall() and close(); SQLAlchemy calls all four for every
    statement. Here execute() opens the sqlite3 cursor, runs the statement, fetches all its rows
    and closes it in one trip; the rows, `description`, `rowcount` and `lastrowid` are kept
    (sqlite3 keeps the last three on a closed cursor). SQLAlchemy's aiosqlite adapter fetches
    every row right after execute() anyway, so nothing is read sooner than before."""

    arraysize = 1

    def __init__(self, connection: _OneTripConnection) -> None:
        self._connection = connection
        self._rows: list[Any] = []
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    async def __aenter__(self) -> _OneTripCursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    def _run(self, method: str, sql: str, parameters: Any, begin: str | None) -> None:
        if begin is not None:  # the transaction's BEGIN, in the trip of its first statement
            self._connection._conn.execute(begin)
        cursor = self._connection._conn.cursor()
        try:
            getattr(cursor, method)(sql, parameters)
            rows = cursor.fetchall() if cursor.description else []
        finally:
            cursor.close()
            self._connection.note_transaction()
        self._rows = rows
        self.description, self.rowcount, self.lastrowid = cursor.description, cursor.rowcount, cursor.lastrowid

    async def execute(self, sql: str, parameters: Any = None) -> _OneTripCursor:
        begin = self._connection.take_begin()
        await self._connection._execute(
            self._run, "execute", sql, () if parameters is None else parameters, begin
        )
        return self

    async def executemany(self, sql: str, parameters: Any) -> _OneTripCursor:
        begin = self._connection.take_begin()
        await self._connection._execute(self._run, "executemany", sql, parameters, begin)
        return self

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        size = self.arraysize if size is None else size
        taken, self._rows = self._rows[:size], self._rows[size:]
        return taken

    async def fetchall(self) -> list[Any]:
        taken, self._rows = self._rows, []
        return taken

    async def close(self) -> None:
        self._rows = []


class _OneTripConnection(aiosqlite.Connection):
    """aiosqlite's connection with `_OneTripCursor`s: cursor() needs no trip of its own, and
    a transaction's `BEGIN` (`pending_begin`, set when SQLAlchemy begins one) runs in the trip
    of the transaction's first statement rather than in one of its own. A transaction that
    runs no statement then begins none; its COMMIT or ROLLBACK finds none and does nothing."""

    pending_begin: str | None = None
    # Known to be outside any transaction: set in the connection's thread after a statement, a
    # commit or a rollback that left none open; cleared by every other trip. A ROLLBACK then
    # needs no trip: the pool rolls back each connection given back to it, also one whose
    # transaction was just committed, and that cost a trip to the thread per transaction.
    _outside_transaction = False

    def cursor(self) -> _OneTripCursor:  # type: ignore[override]
        return _OneTripCursor(self)

    def take_begin(self) -> str | None:
        begin, self.pending_begin = self.pending_begin, None
        return begin

    def note_transaction(self) -> None:
        """In the connection's thread, after a statement: whether a transaction is open."""
        self._outside_transaction = not self._conn.in_transaction

    async def _execute(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self._outside_transaction = False  # not known until the trip says so
        return await super()._execute(fn, *args, **kwargs)

    def _end(self, end: Any) -> None:
        end()
        self.note_transaction()

    async def commit(self) -> None:
        await self._execute(self._end, self._conn.commit)

    async def rollback(self) -> None:
        if self._outside_transaction:
            return
        await self._execute(self._end, self._conn.rollback)


# Never open a SQLite database file with plain `open()` (or `os.open`) in a process that holds
# connections to it, not even to read its header: closing that descriptor drops all of the
# process's POSIX locks on the file, SQLite's among them (https://sqlite.org/howtocorrupt.html,
# 2.2). Another process's closing connection then believes it is the last one, checkpoints and
# deletes the -wal and -shm files, and this process's connections read on through the old ones,
# blind to every later commit: a worker's outbox relay saw no new row after the APIs restarted
# (tests/integration/test_sqlite_transactions.py shows both). Ask SQLite instead.


def _one_trip_connection(database: str | Path, **kwargs: Any) -> _OneTripConnection:
    """What `aiosqlite.connect` makes, with `_OneTripCursor`s; the same arguments. The
    connection is set up (`_set_up`) in its own thread, in the trip that opens it."""

    def connector() -> sqlite3.Connection:
        connection = sqlite3.connect(str(database), **kwargs)
        try:
            _set_up(connection, busy_timeout_s=kwargs.get("timeout", 5.0))
        except BaseException:
            connection.close()
            raise
        return connection

    connection = _OneTripConnection(connector, 64)
    connection._thread.daemon = True  # as SQLAlchemy's adapter sets it: never block the exit
    return connection


def _set_up(connection: sqlite3.Connection, *, busy_timeout_s: float) -> None:
    """The pragmas of a new connection, run in the connection's own thread (aiosqlite's, not
    the event loop's), so that waiting here blocks nothing else.

    `PRAGMA journal_mode=WAL` can be refused with 'database is locked' at once, without the
    busy handler: the change of journal mode writes the file's header in a transaction that
    begins as a read, and SQLite does not let a read that wants to become a write wait for
    another connection's write lock (two such would wait for each other). So it is tried
    again, after a pause that grows from 1 ms to 100 ms, for as long as a statement would
    wait for a lock (the busy timeout, which `sqlite3.connect` set before any statement); any
    other error, or one after that, is raised."""
    deadline = time.monotonic() + busy_timeout_s
    pause = 0.001
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA synchronous=NORMAL")


def _one_trip(conn: Any) -> _OneTripConnection:
    """The aiosqlite connection under a SQLAlchemy connection of a SQLite engine."""
    connection: _OneTripConnection = conn.connection.dbapi_connection._connection
    return connection


def create_engine(url: str, *, reader: bool = False, **kwargs: Any) -> AsyncEngine:
    """An engine for `url`; on SQLite a `reader` begins its transactions deferred (no write
    lock), the others `BEGIN IMMEDIATE`."""
    parsed = make_url(url)
    kwargs.setdefault("hide_parameters", True)  # error messages must not carry personal data
    if parsed.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_size", 5)
        kwargs.setdefault("max_overflow", 5)
        kwargs.setdefault("pool_pre_ping", True)
        return create_async_engine(url, **kwargs)

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    if reader:  # readers keep a few connections: opening one costs more than most reads
        kwargs.setdefault("pool_size", 4)
        kwargs.setdefault("max_overflow", 4)
    else:
        # Writes of a process take turns (`Database.transaction`), so one kept connection
        # serves them: opening one per transaction (a thread and four pragmas with aiosqlite)
        # cost more than the transaction itself. The overflow is for what does not take the
        # turn (`ping`, migrations); those connections are closed when given back.
        kwargs.setdefault("pool_size", 1)
        kwargs.setdefault("max_overflow", 4)
    engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        # The arguments SQLAlchemy made of the URL, to a connection with one trip a statement.
        return dialect.loaded_dbapi.connect(*cargs, async_creator_fn=_one_trip_connection, **cparams)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The pragmas ran when the connection was opened (`_set_up`, in its thread).
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Sent with the transaction's first statement (`_OneTripConnection.pending_begin`).
        _one_trip(conn).pending_begin = "BEGIN" if reader else "BEGIN IMMEDIATE"

    @event.listens_for(engine.sync_engine, "commit")
    @event.listens_for(engine.sync_engine, "rollback")
    def _on_end(conn: Any) -> None:
        # An invalidated connection (a statement cancelled or broken mid-trip) is being closed:
        # nothing of it to clear. Asking it for its DB-API connection would try to reconnect,
        # which raises PendingRollbackError from within the rollback, and that error would stand
        # in for the one that invalidated it: a cancelled task would not end as cancelled (the
        # outbox relay then went on, and published its batch again).
        if conn.invalidated or conn.closed:
            return
        _one_trip(conn).pending_begin = None  # a transaction that ran no statement began none

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_connection: Any, _record: Any, _state: Any) -> None:
        dbapi_connection._connection.pending_begin = None  # given back to the pool: nothing pending

    return engine


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL, resolved (links followed), so that every process of a
    service names it alike; None for PostgreSQL and for in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    if parsed.query.get("mode") == "memory":  # `file:name?mode=memory&uri=true`
        return None
    return Path(parsed.database).resolve()


def _driver_unavailable_errors() -> tuple[type[BaseException], ...]:
    """asyncpg's own errors that say the server is away, shutting down, starting up or full:
    raised as they are when a connection is opened, wrapped by SQLAlchemy on a live one.
    None until asyncpg is loaded: the engine of a PostgreSQL database loads it when it is
    created, and a process on SQLite does without it (~3 MB)."""
    if "asyncpg" not in sys.modules:
        return ()
    from asyncpg import exceptions as pg

    return (
        pg.PostgresConnectionError,  # the connection is gone or could not be made
        pg.OperatorInterventionError,  # 57P01 admin shutdown, 57P03 cannot connect now, ...
        pg.InsufficientResourcesError,  # 53300 too many connections
    )


def _driver_statement_errors() -> tuple[type[BaseException], ...]:
    """asyncpg's errors that look like an operator's intervention but are about the statement:
    57014, a query cancelled by `statement_timeout` or `pg_cancel_backend`. Waiting would run
    the same query into the same timeout for ever; it fails like any other error."""
    if "asyncpg" not in sys.modules:
        return ()
    from asyncpg import exceptions as pg

    return (pg.QueryCanceledError,)


_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    exc.OperationalError,  # the driver's "cannot reach / locked / gone" (SQLite: database is locked)
    exc.InterfaceError,
    exc.DisconnectionError,
    exc.TimeoutError,  # the pool had no connection to give within its timeout
    ConnectionError,  # asyncpg's connect() raises ConnectionRefusedError as it is
    TimeoutError,  # asyncpg's connect timeout
)


def unavailable_errors() -> tuple[type[BaseException], ...]:
    """The errors that may say the database is away (`database_unavailable` decides), the
    driver's own among them once the process has created its engine (`Database`): an API
    registers its 503 handler for each of them after it built its parts."""
    return (*_UNAVAILABLE_ERRORS, *_driver_unavailable_errors())


# SQLite's primary result codes that say the database cannot be used now, not that the
# statement is wrong: SQLITE_BUSY, SQLITE_LOCKED, SQLITE_NOMEM, SQLITE_READONLY, SQLITE_IOERR,
# SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_PROTOCOL (as PostgreSQL's disk full and out of memory
# are). SQLAlchemy calls "no such table" (SQLITE_ERROR) an OperationalError too, and that is a
# bug to see, not to wait out.
_SQLITE_UNAVAILABLE_CODES = frozenset({5, 6, 7, 8, 10, 13, 14, 15})


def _sqlite_statement_error(error: BaseException | None) -> bool:
    """An SQLite error about the statement or the schema (a missing table or column), however
    SQLAlchemy classed it."""
    code = getattr(error, "sqlite_errorcode", None) if isinstance(error, sqlite3.Error) else None
    return code is not None and code & 0xFF not in _SQLITE_UNAVAILABLE_CODES


# Clients of other peers (HTTP, SMTP): their errors are ConnectionError or TimeoutError, or
# carry one as their cause, yet they say a peer did not answer, never that the database is away.
_OUTBOUND_CLIENTS = frozenset({"httpx", "httpcore", "aiosmtplib", "aiohttp"})


def database_unavailable(error: BaseException) -> bool:
    """Whether `error` says the database cannot be reached now (stopped, restarting, out of
    connections, locked), rather than that the statement or the data is wrong: the caller
    should wait and try again, and an API answers 503 with `Retry-After` (`shared.web`).

    SQLAlchemy wraps what the driver raised on a live connection (`DBAPIError.orig`, whose
    cause is the driver's own error) and marks a connection that broke as invalidated; what
    the driver raises while connecting comes through unwrapped. Each is looked at."""
    chain = list(_causes(error))
    statement_errors = _driver_statement_errors()
    if statement_errors and any(isinstance(cause, statement_errors) for cause in chain):
        return False  # SQLAlchemy calls a cancelled query an OperationalError too
    unavailable = unavailable_errors()
    for current in chain:
        if type(current).__module__.partition(".")[0] in _OUTBOUND_CLIENTS:
            return False
        if isinstance(current, exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, exc.DBAPIError) and _sqlite_statement_error(current.orig):
            return False
        if isinstance(current, unavailable):
            return True
    return False


def _causes(error: BaseException) -> Iterator[BaseException]:
    """`error`, then what it wraps: SQLAlchemy's `orig` (the driver's error), else `__cause__`."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = current.orig if isinstance(current, exc.DBAPIError) else None
        current = orig if isinstance(orig, BaseException) else current.__cause__


# Constraint names every service's tables share, so that migrations name what models declare.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def service_metadata() -> MetaData:
    """A service's own metadata, with the shared naming convention (`Base.metadata`)."""
    return MetaData(naming_convention=NAMING_CONVENTION)


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        # The database file on SQLite (None on PostgreSQL and in memory): processes sharing it
        # coordinate through lock files beside it (the outbox relay's, `shared.messaging`).
        self.file = sqlite_file(url)
        self.engine = create_engine(url)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time. Tasks of one process queue here, in order, instead
        # of in SQLite's busy handler, which sleeps and retries and so stretches every wait.
        self._sqlite_writer = asyncio.Lock() if self.engine.dialect.name == "sqlite" else None
        self._readers = (
            async_sessionmaker(create_engine(url, reader=True), expire_on_commit=False)
            if self._sqlite_writer is not None
            else self.sessions
        )
        self._key_reader: Engine | None = None  # `read_by_key` on a SQLite file, made when first used
        self._key_reads: KeyReads | None = None  # `read_by_key` on PostgreSQL, made when first used

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One session, one transaction: committed when the block ends, rolled back on error,
        except for a `Problem` raised `.committing()`: that refusal keeps what the transaction
        recorded (a failed try counted) and is raised after the commit."""
        async with contextlib.AsyncExitStack() as stack:
            if self._sqlite_writer is not None:
                await stack.enter_async_context(self._sqlite_writer)
            session = await stack.enter_async_context(self.sessions())
            refusal: Problem | None = None
            async with session.begin():
                try:
                    yield session
                except Problem as problem:
                    if not problem.commits:
                        raise
                    refusal = problem
            if refusal is not None:
                raise refusal

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncSession]:
        """A transaction for reads only: on SQLite it neither waits for nor blocks the writer
        (WAL gives it a snapshot), so reading APIs stay fast while workers write."""
        async with self._readers() as session, session.begin():
            yield session

    async def read_by_key(
        self, statement: Executable, parameters: dict[str, Any] | None = None
    ) -> Sequence[tuple[Any, ...]]:
        """The rows of one small read by primary key or unique index, each a tuple in the order
        of the statement's columns, as one statement (one snapshot of what was committed before
        it), for what runs on every request (billing's revocation check).

        On a SQLite file it runs right here, in the event loop's thread, on a connection of
        its own that only reads: a lookup by key takes microseconds there, where a hand-off to
        aiosqlite's thread and back costs a hundred times more. WAL readers do not wait for the
        writer; should the file be busy all the same (recovering its WAL after a crash), the
        read waits at most 50 ms before it goes the usual way. On PostgreSQL it is one trip to
        the server on a connection of its own that only reads, the statement compiled once and
        prepared once per connection (`shared.pg_key_reads`), with SQLAlchemy's errors; a
        statement expanded per call (`IN` of a list), another driver and SQLite in memory
        (tests) go through the engine."""
        if self.engine.dialect.driver == "asyncpg":
            if self._key_reads is None:
                from shared.pg_key_reads import KeyReads  # asyncpg: loaded where PostgreSQL is used

                self._key_reads = KeyReads(self.engine)
            rows = await self._key_reads.read(statement, parameters or {})
            if rows is not None:
                return rows
        if self.file is None:
            bind = self._readers.kw.get("bind") or self.engine
            async with bind.connect() as conn:
                return [tuple(row) for row in (await conn.execute(statement, parameters)).all()]
        if self._key_reader is None:
            self._key_reader = _key_reader(self.file)
        try:
            with self._key_reader.connect() as conn:
                return [tuple(row) for row in conn.execute(statement, parameters).all()]
        except exc.OperationalError as error:
            if not database_unavailable(error):
                raise
        async with self.reading() as session:
            return [tuple(row) for row in (await session.execute(statement, parameters)).all()]

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._key_reads is not None:
            await self._key_reads.close()
        if self._key_reader is not None:
            self._key_reader.dispose()
        if self._readers is not self.sessions:
            bind = self._readers.kw.get("bind")
            if bind is not None:
                await bind.dispose()


def _key_reader(file: Path) -> Engine:
    """A synchronous engine of one SQLite file that only reads: each statement in autocommit
    (no BEGIN: every read sees what was committed before it), a busy wait of at most 50 ms."""
    engine = create_sync_engine(
        f"sqlite:///{file}", connect_args={"timeout": 0.05}, pool_size=1, max_overflow=0, hide_parameters=True
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # autocommit: no transaction kept open
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    return engine


async def lock_for_transaction(session: AsyncSession, namespace: str, key: str) -> None:
    """Serialise the transactions that touch `key` of `namespace` until this one ends.

    Two consumers of different topics run concurrently; where each reads what the other writes
    (a customer and the application that waits for it) they must not both decide on a snapshot
    without the other's work. PostgreSQL: a transaction-scoped advisory lock. SQLite needs
    none: its transactions already run one at a time (`BEGIN IMMEDIATE` and the writer queue).
    """
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return
    digest = hashlib.sha256(f"{namespace}:{key}".encode()).digest()
    await session.execute(
        text("SELECT pg_advisory_xact_lock(:key)"), {"key": int.from_bytes(digest[:8], "big", signed=True)}
    )


def upsert_statement(session: AsyncSession, table: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT for `table` in the session's dialect, which can take `ON CONFLICT` clauses
    (both PostgreSQL and SQLite have them, with the same SQLAlchemy spelling)."""
    # Each dialect's module is imported by the process that uses it (PostgreSQL's is ~2 MB).
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)


def alembic_config(script_location: Path, url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(script_location: Path, url: str, revision: str = "head") -> None:
    """Upgrade a service's database (synchronous; call from outside the event loop)."""
    from alembic import command

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(script_location, url), revision)


def run_migrations_env(target_metadata: Any) -> None:
    """The body of every service's Alembic `env.py`: online, async, batch mode for SQLite."""
    from alembic import context

    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is not set"

    def do_run(connection: Any) -> None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run_async() -> None:
        engine = create_async_engine(url, poolclass=NullPool)
        async with engine.connect() as connection:
            await connection.run_sync(do_run)
            await connection.commit()
        await engine.dispose()

    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
    else:
        asyncio.run(run_async())
