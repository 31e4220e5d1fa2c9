"""The migrations of the own profile keep what was there: logins made before the language was
kept become Danish (they were written to in Danish), and so do the notifier's recipients."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.registry import SERVICES
from shared.db import alembic_config, migrate

AT = datetime(2026, 1, 1, tzinfo=UTC)


def _run(url: str, statement: str, **params: object) -> list:
    async def run() -> list:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            rows = list(result) if result.returns_rows else []
        await engine.dispose()
        return rows

    return asyncio.run(run())


def test_identity_0009_makes_users_without_a_language_danish_and_back(database_factory) -> None:
    url = database_factory("identity")
    location = SERVICES["identity"].migrations
    migrate(location, url, revision="0007")
    insert = (
        "INSERT INTO users (id, tenant_cvr, username, name, email, mobile, role, status, functions, "
        "language, created_at) VALUES (:id, NULL, :username, 'N', 'n@example.dk', '+4520304050', "
        "'support', 'active', '[]', :language, :at)"
    )
    _run(url, insert, id="u-none", username="staff-none", language=None, at=AT)
    _run(url, insert, id="u-en", username="staff-en", language="en", at=AT)

    migrate(location, url)

    rows = _run(url, "SELECT id, language FROM users ORDER BY id")
    assert [tuple(r) for r in rows] == [("u-en", "en"), ("u-none", "da")]
    command.downgrade(alembic_config(location, url), "0007")
    assert len(_run(url, "SELECT id FROM users")) == 2


def test_notifier_0004_makes_known_recipients_danish(database_factory) -> None:
    url = database_factory("notifier")
    location = SERVICES["notifier"].migrations
    migrate(location, url, revision="0003")
    _run(
        url,
        "INSERT INTO recipients (user_id, tenant_cvr, name, email, functions, status, updated_at) "
        "VALUES ('u1', '22109340', 'N', 'n@example.dk', '[]', 'active', :at)",
        at=AT,
    )

    migrate(location, url)

    assert [tuple(r) for r in _run(url, "SELECT user_id, language FROM recipients")] == [("u1", "da")]
