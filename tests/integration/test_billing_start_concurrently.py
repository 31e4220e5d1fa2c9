"""Several billing workers start at once (`adgang run --instances`, compose replicas): each syncs
the catalogue and loads the demo data at its start. They must neither crash on each other's rows
nor announce a customer twice (docs/operations.md "Scaling each part")."""

from __future__ import annotations

import asyncio
from collections import Counter

from sqlalchemy import func, select, text

from services.billing.bootstrap import build
from services.billing.catalogue import PRODUCTS, UPGRADE_PATHS
from services.billing.demo import DEMO_COMPANIES
from services.billing.models import Customer, Product, UpgradePath
from shared.db import Database
from tests.integration.billing_fixtures import billing_settings

EXTRA = 40
WORKERS = 3


def test_billing_workers_starting_together_sync_the_catalogue_and_seed_the_customers_once(
    migrated_database,
) -> None:
    asyncio.run(start_together(migrated_database("billing")))


async def start_together(url: str) -> None:
    settings = billing_settings(url).model_copy(
        update={"demo_extra_customers": EXTRA, "seed_demo_data": True}
    )
    # One engine each, as separate processes have.
    workers = [build(settings) for _ in range(WORKERS)]
    try:
        await asyncio.gather(*(parts.catalogue.load() for parts in workers))
        await asyncio.gather(*(parts.demo.load() for parts in workers))
    finally:
        for parts in workers:
            await parts.db.dispose()

    db = Database(url)
    try:
        async with db.transaction() as session:
            customers = await session.scalar(select(func.count()).select_from(Customer))
            products = await session.scalar(select(func.count()).select_from(Product))
            paths = await session.scalar(select(func.count()).select_from(UpgradePath))
            announced = Counter(
                key
                for (key,) in await session.execute(
                    text("SELECT key FROM outbox WHERE topic = 'billing.customers'")
                )
            )
    finally:
        await db.dispose()
    assert customers == len(DEMO_COMPANIES) + EXTRA
    assert (products, paths) == (len(PRODUCTS), len(UPGRADE_PATHS))
    assert len(announced) == customers and set(announced.values()) == {1}, announced
