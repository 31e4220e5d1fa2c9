"""Tests for tests/support/postgres.py against a real, throwaway PostgreSQL server.

Skipped (with the reason) only when PostgreSQL cannot run here at all, e.g. no server
binaries are installed. Under CI (CI set in the environment) that is a failure instead: the
CI script installs PostgreSQL, so a skip there would silently hide the PostgreSQL run.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

# `tests` is not an installed package and pytest's default (rootdir-less) import mode does
# not put the repository root on sys.path; make `tests.support` importable regardless.
_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.support.postgres import PostgresUnavailable, ThrowawayPostgres  # noqa: E402


def _skip_unavailable(exc: PostgresUnavailable) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required under CI but unavailable: {exc}")
    pytest.skip(f"PostgreSQL unavailable: {exc}")


def _start_or_skip() -> ThrowawayPostgres:
    try:
        return ThrowawayPostgres().start()
    except PostgresUnavailable as exc:
        _skip_unavailable(exc)


@pytest.fixture(scope="module")
def pg() -> Iterator[ThrowawayPostgres]:
    server = _start_or_skip()
    try:
        yield server
    finally:
        server.stop()


async def _roundtrip(url: str, label: str) -> list[tuple[int, str]]:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE items (id integer PRIMARY KEY, label text)"))
            await conn.execute(
                text("INSERT INTO items (id, label) VALUES (1, :a), (2, :b)"),
                {"a": label, "b": f"{label}-æøå"},
            )
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT id, label FROM items ORDER BY id"))
            return [(row.id, row.label) for row in rows]
    finally:
        await engine.dispose()


async def test_two_databases_are_independent(pg: ThrowawayPostgres) -> None:
    # create_database is called from inside a running event loop on purpose.
    first = pg.create_database("alpha_db")
    second = pg.create_database("beta_db")

    assert first == f"postgresql+asyncpg://postgres@127.0.0.1:{pg.port}/alpha_db"
    assert second == pg.url_for("beta_db")

    assert await _roundtrip(first, "one") == [(1, "one"), (2, "one-æøå")]
    # Same table name in the other database: only works if they really are separate.
    assert await _roundtrip(second, "two") == [(1, "two"), (2, "two-æøå")]


async def test_server_settings(pg: ThrowawayPostgres) -> None:
    engine = create_async_engine(pg.create_database("settings_db"))
    try:
        async with engine.connect() as conn:
            settings = {
                name: (await conn.execute(text(f"SHOW {name}"))).scalar_one()
                for name in (
                    "fsync",
                    "synchronous_commit",
                    "full_page_writes",
                    "max_connections",
                    "listen_addresses",
                    "server_encoding",
                    "lc_collate",
                )
            }
            user = (await conn.execute(text("SELECT current_user"))).scalar_one()
    finally:
        await engine.dispose()
    assert settings == {
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "200",
        "listen_addresses": "127.0.0.1",
        "server_encoding": "UTF8",
        "lc_collate": "C",
    }
    assert user == "postgres"


def test_create_database_from_sync_code(pg: ThrowawayPostgres) -> None:
    url = pg.create_database("sync_db")

    async def count_tables() -> int:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                result = await conn.execute(
                    text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
                )
                return int(result.scalar_one())
        finally:
            await engine.dispose()

    assert asyncio.run(count_tables()) == 0


def test_duplicate_database_is_an_error(pg: ThrowawayPostgres) -> None:
    pg.create_database("dup_db")
    with pytest.raises(asyncpg.DuplicateDatabaseError):
        pg.create_database("dup_db")


@pytest.mark.parametrize("name", ["", "Upper", "with-dash", "semi;colon", 'quo"te', "a b", "x" * 64, "ø"])
def test_invalid_names_are_rejected(pg: ThrowawayPostgres, name: str) -> None:
    with pytest.raises(ValueError, match="invalid database name"):
        pg.url_for(name)
    with pytest.raises(ValueError, match="invalid database name"):
        pg.create_database(name)


def test_url_for_requires_a_running_server() -> None:
    with pytest.raises(RuntimeError, match="not running"):
        ThrowawayPostgres().url_for("anything")


async def test_refuses_connections_after_stop() -> None:
    server = _start_or_skip()
    with server:  # context manager on an already started server: stops on exit
        port = server.port
        base_dir = server.base_dir
        assert base_dir is not None and base_dir.is_dir()
        url = server.create_database(f"gone_{uuid.uuid4().hex[:8]}")
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", ssl=False)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()

    assert not server.is_running
    assert not base_dir.exists()
    with pytest.raises(OSError):  # ConnectionRefusedError
        await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", ssl=False, timeout=5)
    engine = create_async_engine(url)
    try:
        with pytest.raises(OSError):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()
    server.stop()  # idempotent


def test_context_manager_starts_and_stops() -> None:
    try:
        with ThrowawayPostgres() as server:
            assert server.is_running
            data_dir = server.base_dir
            url = server.create_database("ctx_db")
            assert url.endswith(f":{server.port}/ctx_db")
    except PostgresUnavailable as exc:
        _skip_unavailable(exc)
    assert not server.is_running
    assert data_dir is not None and not data_dir.exists()


async def test_a_stopped_server_refuses_connections_and_starts_again_with_its_data(pg: ThrowawayPostgres) -> None:
    url = pg.create_database(f"kept_{uuid.uuid4().hex[:8]}")
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE kept (id integer PRIMARY KEY)"))
            await conn.execute(text("INSERT INTO kept VALUES (1)"))
        await asyncio.to_thread(pg.stop_server)
        with pytest.raises(OSError):  # ConnectionRefusedError
            await asyncpg.connect(host="127.0.0.1", port=pg.port, user="postgres", ssl=False, timeout=5)
        await asyncio.to_thread(pg.start_server)
        await engine.dispose()  # the old connections were cut by the stop
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT id FROM kept"))).scalar_one() == 1
    finally:
        await engine.dispose()
