"""The product catalogue (S9, S11): what a business customer can order, at what monthly fee,
which settings each kind of product has, and the only ways a subscription may be upgraded.

The catalogue is reference data owned by billing; the worker writes it to the database at
start (`Catalogue.load`), so subscriptions and orders refer to products by key. A product is
never removed from `PRODUCTS` while subscriptions use it: it is made `orderable=False`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.billing.models import Product, UpgradePath
from shared.db import Database, lock_for_transaction

# What a billing worker writes at its start (the catalogue, the demo data) is written by one
# worker at a time: several start together when scaled out (docs/operations.md).
STARTUP_LOCK = "worker-start"

ProductKind = Literal["mobile", "broadband", "telephony", "personal_number", "addon"]
# Kinds whose subscriptions have telephony settings (call forwarding, voicemail, caller id).
TELEPHONY_KINDS: frozenset[str] = frozenset({"mobile", "telephony"})


@dataclass(frozen=True)
class CatalogueProduct:
    code: str
    name: str
    kind: ProductKind
    monthly_fee_ore: int
    description: str
    orderable: bool = True


PRODUCTS: tuple[CatalogueProduct, ...] = (
    CatalogueProduct("MOBIL-10", "Mobil Erhverv 10 GB", "mobile", 9_900, "Fri tale og SMS, 10 GB data i EU"),
    CatalogueProduct("MOBIL-50", "Mobil Erhverv 50 GB", "mobile", 14_900, "Fri tale og SMS, 50 GB data i EU"),
    CatalogueProduct("MOBIL-FRI", "Mobil Erhverv Fri Data", "mobile", 22_900, "Fri tale, SMS og data"),
    CatalogueProduct("BB-100", "Erhvervsbredbånd 100/100", "broadband", 29_900, "Fiber 100 Mbit/s"),
    CatalogueProduct("BB-500", "Erhvervsbredbånd 500/500", "broadband", 39_900, "Fiber 500 Mbit/s"),
    CatalogueProduct("BB-1000", "Erhvervsbredbånd 1000/1000", "broadband", 49_900, "Fiber 1 Gbit/s"),
    CatalogueProduct("TLF-FAST", "Fastnet IP", "telephony", 8_900, "Fastnetnummer over internettet"),
    CatalogueProduct("TLF-OMST", "Hostet omstilling", "telephony", 15_900, "Omstilling med kø pr. bruger"),
    CatalogueProduct(
        "PN-BASIS", "Personligt Nummer", "personal_number", 4_900, "Ét nummer der ringer på dine telefoner"
    ),
    CatalogueProduct(
        "PN-PLUS",
        "Personligt Nummer Plus",
        "personal_number",
        7_900,
        "Personligt Nummer med åbningstider og op til 10 telefoner",
    ),
    CatalogueProduct("ROAM-WORLD", "Roaming Verden 5 GB", "addon", 9_900, "5 GB data uden for EU pr. måned"),
)

UPGRADE_PATHS: tuple[tuple[str, str], ...] = (
    ("MOBIL-10", "MOBIL-50"),
    ("MOBIL-10", "MOBIL-FRI"),
    ("MOBIL-50", "MOBIL-FRI"),
    ("BB-100", "BB-500"),
    ("BB-100", "BB-1000"),
    ("BB-500", "BB-1000"),
    ("TLF-FAST", "TLF-OMST"),
    ("PN-BASIS", "PN-PLUS"),
)

BY_CODE: dict[str, CatalogueProduct] = {p.code: p for p in PRODUCTS}


def upgrades_from(code: str) -> list[str]:
    return [to for frm, to in UPGRADE_PATHS if frm == code]


async def sync_catalogue(session: AsyncSession) -> None:
    """Make the database's catalogue equal to this module's (idempotent, at every start)."""
    existing = {p.code: p for p in await session.scalars(select(Product))}
    for position, product in enumerate(PRODUCTS):
        row = existing.get(product.code) or Product(code=product.code)
        row.name, row.kind, row.monthly_fee_ore = product.name, product.kind, product.monthly_fee_ore
        row.description, row.orderable, row.position = product.description, product.orderable, position
        session.add(row)
    for code, row in existing.items():  # a product dropped from PRODUCTS: sell it no more
        if code not in BY_CODE:
            row.orderable = False
    await session.flush()
    await session.execute(delete(UpgradePath))
    session.add_all(UpgradePath(from_code=f, to_code=t) for f, t in UPGRADE_PATHS)
    await session.flush()


class Catalogue:
    def __init__(self, *, db: Database) -> None:
        self.db = db

    async def load(self) -> None:
        """At the worker's start: the catalogue of this module into the database. Workers that
        start together take turns (each would insert the same products)."""
        async with self.db.transaction() as session:
            await lock_for_transaction(session, "billing", STARTUP_LOCK)
            await sync_catalogue(session)
