"""Each service's Alembic migrations build exactly the schema its models describe."""

from __future__ import annotations

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from services.registry import SERVICES
from shared.db import migrate


def _models_metadata(service: str):
    import importlib

    return importlib.import_module(f"services.{service}.models").Base.metadata


@pytest.mark.parametrize("service", list(SERVICES))
def test_migrating_to_head_gives_the_schema_of_the_models(service: str, database_factory) -> None:
    url = database_factory(service)
    migrate(SERVICES[service].migrations, url)
    migrate(SERVICES[service].migrations, url)  # a second run is a no-op

    async def differences() -> list:
        engine = create_async_engine(url)
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), _models_metadata(service))
            )
        await engine.dispose()
        return diff

    assert asyncio.run(differences()) == []


def test_billing_0002_splits_existing_addresses_into_master_data_and_back(database_factory) -> None:
    from datetime import UTC, datetime

    from alembic import command
    from sqlalchemy import text

    from shared.db import alembic_config

    url = database_factory("billing")
    location = SERVICES["billing"].migrations
    migrate(location, url, revision="0001")

    async def run(statement: str, **params: object) -> list:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            rows = list(result) if result.returns_rows else []
        await engine.dispose()
        return rows

    insert = "INSERT INTO customers (cvr, name, address, registered_at) VALUES (:cvr, :name, :address, :at)"
    at = datetime(2026, 1, 1, tzinfo=UTC)
    asyncio.run(run(insert, cvr="35657193", name="Nordlys", address="Havnegade 12, 1058 København K", at=at))
    asyncio.run(run(insert, cvr="22109340", name="Solsikke", address="Postboks 7", at=at))
    asyncio.run(
        run("INSERT INTO accounts (account_number, cvr, name) VALUES ('10000011', '35657193', 'Hoved')")
    )
    migrate(location, url)

    rows = asyncio.run(
        run("SELECT cvr, street, postal_code, city, master_data_version FROM customers ORDER BY cvr")
    )
    assert [tuple(r) for r in rows] == [
        ("22109340", "Postboks 7", "", "", 1),  # not in the usual form: kept whole as the street
        ("35657193", "Havnegade 12", "1058", "København K", 1),
    ]
    [account] = asyncio.run(run("SELECT invoice_format, invoice_format_version FROM accounts"))
    assert tuple(account) == ("paper", 1)

    command.downgrade(alembic_config(location, url), "0001")
    rows = asyncio.run(run("SELECT address FROM customers WHERE cvr = '35657193'"))
    assert rows[0][0] == "Havnegade 12, 1058 København K"
