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
