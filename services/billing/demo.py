"""Deterministic demo data: one group of four companies and one standalone company, with
their accounts, subscriptions and twelve months of usage and the invoices of all but the
newest month; and a large company for benchmarks. Loaded only where settings allow
(`DemoData.load`, when the worker starts).

Every CVR here passes the modulus-11 check. `NOT_A_CUSTOMER_CVR` is valid too but is not a
customer, so a newcomer can see the 403 of S1's application form. Everything generated is
derived from a fixed seed and the account number, so two runs give the same data.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import phonenumbers
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.billing.catalogue import BY_CODE, STARTUP_LOCK
from services.billing.invoicing import COPENHAGEN, Invoicing, last_closed_period, next_month, previous_month
from services.billing.models import Subscription, UsageRecord
from services.billing.registry import Registry
from shared.clock import Clock
from shared.db import Database, lock_for_transaction

log = logging.getLogger(__name__)

SUBSCRIPTION_NAMESPACE = uuid.UUID("8f7b7b2e-2f0e-4c55-8d0b-5a2f7e9c1d34")
HISTORY_MONTHS = 12


@dataclass(frozen=True)
class DemoCompany:
    cvr: str
    name: str
    parent_cvr: str | None
    street: str
    postal_code: str
    city: str
    contact: tuple[str, str, str]  # name, email, phone
    accounts: tuple[tuple[str, str], ...]


DEMO_COMPANIES: tuple[DemoCompany, ...] = (
    DemoCompany(
        "35657193",
        "Nordlys Holding A/S",
        None,
        "Havnegade 12",
        "1058",
        "København K",
        ("Mette Holm", "okonomi@nordlys.example", "+4533124567"),
        (("10000011", "Hovedkonto"), ("10000012", "Direktion")),
    ),
    DemoCompany(
        "37826111",
        "Nordlys Energi A/S",
        "35657193",
        "Vestergade 4",
        "8000",
        "Aarhus C",
        ("Jens Kragh", "faktura@nordlys-energi.example", "+4586123456"),
        (("10000021", "Mobil"), ("10000022", "Bredbånd"), ("10000023", "Fastnet")),
    ),
    DemoCompany(
        "41204559",
        "Nordlys Service ApS",
        "35657193",
        "Kongensgade 88",
        "5000",
        "Odense C",
        ("Sofie Lund", "service@nordlys.example", "+4566123456"),
        (("10000031", "Mobil"), ("10000032", "Servicevogne")),
    ),
    DemoCompany(
        "33112874",
        "Nordlys Vind ApS",
        "37826111",
        "Strandvejen 2",
        "6700",
        "Esbjerg",
        ("Peter Vestergaard", "vind@nordlys.example", "+4575123456"),
        (("10000041", "Mobil"), ("10000042", "M2M-målere")),
    ),
    DemoCompany(
        "22109340",
        "Bageriet Solsikke ApS",
        None,
        "Nørregade 7",
        "4000",
        "Roskilde",
        ("Anne Bager", "anne@solsikke.example", "+4546123456"),
        (("10000051", "Butik"), ("10000052", "Mobil")),
    ),
)

GROUP_PARENT_CVR = "35657193"
STANDALONE_CVR = "22109340"
NOT_A_CUSTOMER_CVR = "44551209"
# The benchmark's large company (`demo_size=large`): at least a million invoice lines.
LARGE_COMPANY_CVR = "29876509"
LARGE_COMPANY_ACCOUNTS = 1_300
LARGE_COMPANY_SUBSCRIPTIONS_PER_ACCOUNT = 20


def generated_companies(count: int) -> list[DemoCompany]:
    """`count` more standalone customers with valid CVRs, the same every time (benchmarks, load tests)."""
    from stdnum.dk import cvr as stdnum_cvr

    companies: list[DemoCompany] = []
    base = 50_000_000
    while len(companies) < count:
        base += 1
        candidate = str(base)
        if stdnum_cvr.is_valid(candidate):
            n = len(companies) + 1
            companies.append(
                DemoCompany(
                    candidate,
                    f"Demo Virksomhed {n} ApS",
                    None,
                    f"Testvej {n}",
                    "2000",
                    "Frederiksberg",
                    ("Demo Kontakt", f"kontakt{n}@demo.example", "+4538123456"),
                    ((f"2{n:07d}", "Mobil"),),
                )
            )
    return companies


def large_company() -> DemoCompany:
    return DemoCompany(
        LARGE_COMPANY_CVR,
        "Storkøbmanden A/S",
        None,
        "Industrivej 1",
        "2600",
        "Glostrup",
        ("Lars Stor", "it@storkobmanden.example", "+4543123456"),
        tuple((f"3{n:07d}", f"Afdeling {n}") for n in range(1, LARGE_COMPANY_ACCOUNTS + 1)),
    )


# --- subscriptions and usage -----------------------------------------------------------------


@dataclass(frozen=True)
class DemoSubscription:
    account_number: str
    identifier: str
    product_code: str


@dataclass(frozen=True)
class Tariff:
    category: str
    unit: str
    ore_per_unit: int
    low: int
    high: int


# Metered usage beyond the plan, per kind of product: what it costs and a plausible month.
TARIFFS: dict[str, tuple[Tariff, ...]] = {
    "mobile": (
        Tariff("calls", "minutes", 149, 0, 240),  # calls abroad and to service numbers
        Tariff("sms", "messages", 50, 0, 60),  # SMS abroad
        Tariff("data", "MB", 10, 0, 1_500),  # data outside the EU
    ),
    "telephony": (Tariff("calls", "minutes", 19, 40, 2_400),),
    "personal_number": (Tariff("calls", "minutes", 19, 10, 600),),
    "broadband": (),
    "addon": (),
}


def _profile(account_name: str) -> list[str]:
    """Which products an account holds, from what the account is for."""
    lowered = account_name.lower()
    if "bredbånd" in lowered:
        return ["BB-500", "BB-100"]
    if "fastnet" in lowered:
        return ["TLF-FAST", "TLF-FAST", "TLF-OMST", "PN-BASIS"]
    if "m2m" in lowered:
        return ["MOBIL-10", "MOBIL-10", "MOBIL-10"]
    if "butik" in lowered:
        return ["BB-100", "TLF-FAST", "MOBIL-10", "PN-PLUS"]
    return ["MOBIL-10", "MOBIL-50", "MOBIL-50", "MOBIL-FRI", "PN-PLUS"]


def _number(rng: random.Random, used: set[str]) -> str:
    while True:
        candidate = f"+4528{rng.randrange(0, 1_000_000):06d}"
        if candidate not in used and phonenumbers.is_valid_number(phonenumbers.parse(candidate)):
            used.add(candidate)
            return candidate


def demo_subscriptions(company: DemoCompany, *, per_account: int | None = None) -> list[DemoSubscription]:
    """The subscriptions of a company's accounts; the same numbers every run."""
    rng = random.Random(f"subscriptions:{company.cvr}")
    used: set[str] = set()
    result = []
    for account_number, account_name in company.accounts:
        products = _profile(account_name)
        if per_account is not None:
            products = [products[i % len(products)] for i in range(per_account)]
        for code in products:
            identifier = f"BB-{rng.randrange(10**7, 10**8)}" if code.startswith("BB-") else _number(rng, used)
            result.append(DemoSubscription(account_number, identifier, code))
    return result


def monthly_usage(subscription_id: str, kind: str, period_key: str) -> Iterator[tuple[str, int, str, int]]:
    """(category, quantity, unit, amount in øre) of one subscription in one month."""
    rng = random.Random(f"usage:{subscription_id}:{period_key}")
    for tariff in TARIFFS.get(kind, ()):
        quantity = rng.randint(tariff.low, tariff.high)
        yield tariff.category, quantity, tariff.unit, quantity * tariff.ore_per_unit


def subscription_id_for(account_number: str, identifier: str) -> str:
    return str(uuid.uuid5(SUBSCRIPTION_NAMESPACE, f"{account_number}:{identifier}"))


# --- loading ---------------------------------------------------------------------------------


class DemoData:
    """Loads the demo data through the registry and the invoicing, idempotently."""

    def __init__(
        self,
        *,
        db: Database,
        registry: Registry,
        invoicing: Invoicing,
        clock: Clock,
        enabled: bool,
        extra: int = 0,
        size: Literal["small", "large"] = "small",
    ) -> None:
        self.db = db
        self.registry = registry
        self.invoicing = invoicing
        self.clock = clock
        self.enabled = enabled
        self.extra = extra
        self.size = size

    async def load(self) -> None:
        """At the worker's start: all demo data, where the settings allow it. Workers that start
        together take turns: the first seeds, the others find it there."""
        if self.enabled:
            async with self.db.transaction() as session:
                await lock_for_transaction(session, "billing", STARTUP_LOCK)
                await self.seed(session, extra=self.extra, size=self.size)

    async def seed(self, session: AsyncSession, *, extra: int = 0, size: str = "small") -> None:
        """All demo data, idempotently: the small set always, the large company for `size=large`."""
        await self.seed_customers(session, extra=extra)
        for company in DEMO_COMPANIES:
            await self.seed_activity(session, company)
        if size == "large":
            company = large_company()
            await self.registry.register(session, company)
            if await self.seed_activity(
                session, company, per_account=LARGE_COMPANY_SUBSCRIPTIONS_PER_ACCOUNT
            ):
                log.info("loaded the large demo company %s", company.cvr)

    async def seed_customers(self, session: AsyncSession, *, extra: int = 0) -> int:
        """Idempotent: registers the demo companies that are not there yet (parents first), and
        `extra` generated standalone companies for benchmarks and load tests."""
        created = 0
        for company in (*DEMO_COMPANIES, *generated_companies(extra)):
            if await self.registry.register(session, company):
                created += 1
        if created:
            log.info("registered %d demo customers", created)
        return created

    async def seed_activity(
        self, session: AsyncSession, company: DemoCompany, *, per_account: int | None = None
    ) -> bool:
        """A company's subscriptions, twelve months of usage and the invoices of all months but
        the newest closed one (the monthly run issues that). False if already there."""
        if await session.scalar(
            select(func.count()).select_from(Subscription).where(Subscription.cvr == company.cvr)
        ):
            return False
        newest = last_closed_period(self.clock)
        periods = [newest]
        while len(periods) < HISTORY_MONTHS:
            periods.append(previous_month(periods[-1]))
        first = periods[-1]
        activated = (datetime(first.year, first.month, 1, tzinfo=COPENHAGEN) - timedelta(days=30)).astimezone(
            UTC
        )
        subscriptions: list[dict[str, Any]] = [
            {
                "id": subscription_id_for(s.account_number, s.identifier),
                "cvr": company.cvr,
                "account_number": s.account_number,
                "identifier": s.identifier,
                "product_code": s.product_code,
                "status": "active",
                "settings": "{}",
                "settings_version": 1,
                "created_at": activated,
                "activated_at": activated,
            }
            for s in demo_subscriptions(company, per_account=per_account)
        ]
        await _insert_batched(session, Subscription, subscriptions)
        usage = [
            {
                "subscription_id": s["id"],
                "identifier": s["identifier"],
                "cvr": company.cvr,
                "account_number": s["account_number"],
                "period": period,
                "category": category,
                "quantity": quantity,
                "unit": unit,
                "amount_ore": amount,
            }
            for period in periods
            for s in subscriptions
            for category, quantity, unit, amount in monthly_usage(
                s["id"], BY_CODE[s["product_code"]].kind, f"{period:%Y-%m}"
            )
        ]
        await _insert_batched(session, UsageRecord, usage)
        accounts = [number for number, _ in company.accounts]
        for period in reversed(periods[1:]):
            await self.invoicing.issue(
                session, period, accounts=accounts, announce=False, issued_on=next_month(period)
            )
        return True


async def _insert_batched(
    session: AsyncSession, model: type, rows: list[dict[str, Any]], batch: int = 5_000
) -> None:
    for start in range(0, len(rows), batch):
        await session.execute(insert(model), rows[start : start + batch])
