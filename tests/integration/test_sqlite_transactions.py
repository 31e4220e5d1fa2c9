"""A write transaction on SQLite (`shared.db`): its `BEGIN IMMEDIATE` goes to aiosqlite's thread
with its first statement, in one trip, and still takes the write lock before that statement
runs; a transaction that runs no statement begins none, and one whose first statement fails
leaves none open behind it."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from shared.db import Database
from tests.conftest import BACKEND

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
