"""A write transaction on SQLite (`shared.db`): its `BEGIN IMMEDIATE` goes to aiosqlite's thread
with its first statement, in one trip, and still takes the write lock before that statement
runs; a transaction that runs no statement begins none, and one whose first statement fails
leaves none open behind it. A new connection waits for a lock its WAL pragma meets, every new
connection of the writer and the readers has the same pragmas, and a process's connections keep
seeing what other processes commit."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError, OperationalError

from shared.db import Database
from tests.conftest import BACKEND
from tests.support.waiting import wait_until_async

pytestmark = pytest.mark.skipif(BACKEND != "sqlite", reason="how SQLite's transactions begin")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'one.db'}")
    async with database.transaction() as session:
        await session.execute(text("CREATE TABLE t (n INTEGER)"))
    yield database
    await database.dispose()


def another_writer_can_begin(db: Database) -> bool:
    """Whether another connection to the file gets the write lock now (not waiting for it)."""
    assert db.file is not None
    other = sqlite3.connect(db.file, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError:
        return False
    else:
        other.execute("ROLLBACK")
        return True
    finally:
        other.close()


async def test_the_write_lock_is_taken_with_the_first_statement_in_one_trip(
    db: Database, monkeypatch
) -> None:
    trips: list[object] = []
    execute = aiosqlite.Connection._execute

    async def counting(self, fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        trips.append(fn)
        return await execute(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    async with db.transaction() as session:
        assert another_writer_can_begin(db)  # nothing run yet: nothing locked
        await session.execute(text("SELECT count(*) FROM t"))
        assert len(trips) == 1  # BEGIN IMMEDIATE and the read, together
        assert not another_writer_can_begin(db)  # the write lock is this transaction's, read or not
        await session.execute(text("INSERT INTO t VALUES (1)"))
    assert len(trips) == 3  # and the insert, and the commit (the pool's rollback after it needs none)
    assert another_writer_can_begin(db)


async def test_a_transaction_without_statements_begins_none_and_the_next_one_begins(db: Database) -> None:
    async with db.transaction():
        pass
    assert another_writer_can_begin(db)
    async with db.transaction() as session:
        await session.execute(text("INSERT INTO t VALUES (2)"))
        assert not another_writer_can_begin(db)
    async with db.reading() as session:
        assert await session.scalar(text("SELECT count(*) FROM t")) == 1


async def test_a_first_statement_that_fails_leaves_no_transaction_open(db: Database) -> None:
    with pytest.raises(OperationalError):
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO missing VALUES (1)"))
    assert another_writer_can_begin(db)
    async with db.transaction() as session:  # the kept connection begins again
        await session.execute(text("INSERT INTO t VALUES (3)"))
    async with db.reading() as session:
        assert await session.scalar(text("SELECT n FROM t")) == 3


async def test_a_transaction_cancelled_in_its_statement_ends_cancelled_and_keeps_nothing(db: Database) -> None:
    """A task stopped while its statement waits in aiosqlite's thread: SQLAlchemy invalidates the
    connection, and the rollback that follows must not hide the cancellation behind an error of
    its own (a worker's relay, stopped while marking its batch, then went on and sent it again)."""
    assert db.file is not None
    holder = sqlite3.connect(db.file, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the statement below waits for the write lock
    sent: list[str] = []
    listener = lambda _conn, _cursor, statement, *_: sent.append(statement)  # noqa: E731
    event.listen(db.engine.sync_engine, "before_cursor_execute", listener)

    async def insert() -> None:
        async with db.transaction() as session:
            await session.execute(text("INSERT INTO t VALUES (4)"))

    task = asyncio.create_task(insert())
    try:
        await wait_until_async(_async(lambda: sent), deadline_s=10, what="the insert in its trip", poll_s=0.01)
        task.cancel()
    finally:
        holder.rollback()
        holder.close()
        event.remove(db.engine.sync_engine, "before_cursor_execute", listener)
    with pytest.raises(asyncio.CancelledError):
        await task
    async with db.transaction() as session:  # the writer goes on, on a new connection
        await session.execute(text("INSERT INTO t VALUES (5)"))
    async with db.reading() as session:
        assert (await session.execute(text("SELECT n FROM t"))).scalars().all() == [5]


def _async(check: Any) -> Any:
    async def checked() -> Any:
        return check()

    return checked


# A new connection puts the file in WAL mode (`PRAGMA journal_mode=WAL`). When that pragma meets
# a lock it cannot wait for, SQLite answers 'database is locked' at once, whatever the busy
# timeout: here a file not yet in WAL mode whose write lock another connection holds (the
# journal mode is changed in a write to the file's header, and a read that wants to become a
# write does not wait, lest two such wait for each other). The connection waits for the lock
# as a statement does and is made once the other connection commits.


class _Refusals:
    """When a WAL pragma is refused, the refusal is kept and `holder` commits (in that thread)."""

    holder: sqlite3.Connection
    seen: list[str]

    @classmethod
    def run(cls, execute: Any, sql: str, parameters: Any) -> Any:
        try:
            return execute(sql, parameters)
        except sqlite3.OperationalError as error:
            if sql == "PRAGMA journal_mode=WAL" and cls.holder.in_transaction:
                cls.seen.append(str(error))
                cls.holder.execute("COMMIT")
            raise


class _Cursor(sqlite3.Cursor):
    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        return _Refusals.run(super().execute, sql, parameters)


class _Connection(sqlite3.Connection):
    def cursor(self, factory: Any = _Cursor) -> Any:
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        return _Refusals.run(super().execute, sql, parameters)


async def test_a_connection_waits_for_a_lock_the_wal_pragma_meets_and_is_made(
    tmp_path: Path, monkeypatch
) -> None:
    file = tmp_path / "new.db"
    with contextlib.closing(sqlite3.connect(file)) as first:
        first.execute("CREATE TABLE t (n INTEGER)")
        first.commit()
    holder = sqlite3.connect(file, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    _Refusals.holder, _Refusals.seen = holder, []
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *args, **kwargs: connect(*args, factory=_Connection, **kwargs))
    database = Database(f"sqlite+aiosqlite:///{file}")
    try:
        async with database.reading() as session:
            assert await session.scalar(text("SELECT count(*) FROM t")) == 1  # the holder's row
        assert _Refusals.seen == ["database is locked"]  # the lock was met, at once
        with contextlib.closing(connect(file)) as other:
            assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        await database.dispose()
        holder.close()


# A process that holds connections to a SQLite file must never open the file itself (plain
# `open()`): closing that descriptor drops all of the process's POSIX locks on the file,
# SQLite's among them (https://sqlite.org/howtocorrupt.html, 2.2). Another process's closing
# connection then believes it is the last one: it checkpoints and deletes the -wal and -shm
# files, and this process's connections go on reading through the old ones, blind to every
# later commit (a worker's relay saw no new outbox row after the APIs restarted).

_COMMIT_AND_CLOSE = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("INSERT INTO t VALUES (?)", (int(sys.argv[2]),))
connection.close()
"""


def commit_in_another_process(file: Path, n: int) -> None:
    """Another process opens the file, commits a row and closes its connection."""
    subprocess.run([sys.executable, "-c", _COMMIT_AND_CLOSE, str(file), str(n)], check=True, timeout=60)


async def count(db: Database) -> int:
    async with db.reading() as session:
        return int(await session.scalar(text("SELECT count(*) FROM t")) or 0)


async def test_connections_see_what_another_process_commits_after_it_came_and_went(db: Database) -> None:
    assert db.file is not None
    async with db.transaction() as session:  # the writer's connection, kept by the pool
        await session.execute(text("INSERT INTO t VALUES (1)"))
    assert await count(db) == 1  # a reader's connection is opened now, and kept

    commit_in_another_process(db.file, 2)  # closes while this process's connections are open
    assert await count(db) == 2
    commit_in_another_process(db.file, 3)
    assert await count(db) == 3
    assert db.file.with_name(db.file.name + "-wal").exists()  # never taken for the last connection


async def test_closing_a_plain_descriptor_of_the_file_loses_the_locks_of_its_connections(
    db: Database,
) -> None:
    """Why the rule above: what happens when it is broken (and so what a test of it sees)."""
    assert db.file is not None
    assert await count(db) == 0
    with db.file.open("rb") as plain:
        plain.read(100)

    commit_in_another_process(db.file, 1)  # taken for the last connection: checkpoint, delete
    assert not db.file.with_name(db.file.name + "-wal").exists()
    assert await count(db) == 1
    commit_in_another_process(db.file, 2)  # into new -wal and -shm files this process never sees
    assert await count(db) == 1  # a new transaction, and the second commit is not seen


async def test_every_new_connection_is_set_up_alike(db: Database) -> None:
    """A fresh connection of the writer's engine and of the readers' is in WAL mode, waits 30 s
    for a lock (`sqlite3.connect`'s timeout, no pragma), keeps `synchronous=NORMAL` and refuses
    a row whose foreign key points nowhere."""
    async with db.transaction() as session:
        await session.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        await session.execute(text("CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES parent)"))
    readers = db._readers.kw["bind"]
    for engine in (db.engine, readers):
        await engine.dispose()  # the next connection is a new one
        async with engine.connect() as conn:
            pragmas = [
                (await conn.execute(text(f"PRAGMA {name}"))).scalar()
                for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
            ]
            assert pragmas == ["wal", 30000, 1, 1], (engine is readers, pragmas)
            with pytest.raises(IntegrityError, match="FOREIGN KEY"):
                await conn.execute(text("INSERT INTO child (id, parent) VALUES (1, 42)"))
