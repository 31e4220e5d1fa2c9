"""A customer and the application that waits for it arrive on two topics, handled by two
consumers at once; and a subsidiary may arrive after its group's administrator was made
(S1, S2, S14). Neither may leave an application waiting for ever or a group half granted."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import event, select, text

from services.identity.models import Tenant, User, UserGrant, WaitingApplication, messaging
from services.identity.provisioning import Provisioning, group_of
from shared.clock import FrozenClock, as_utc
from shared.db import Database
from shared.events import AccountRef, ApplicationSubmitted, Contact, CustomerRegistered, UserGrantsChanged
from shared.messaging import Outbox
from shared.sealing import Sealer
from tests.integration.test_activation import envelope_of
from tests.support.waiting import wait_until_async


@pytest.fixture
def database_url(identity_url: str) -> str:
    return identity_url


def customer(cvr: str, parent: str | None, clock: FrozenClock) -> CustomerRegistered:
    return CustomerRegistered(
        cvr=cvr,
        name=f"Firma {cvr}",
        parent_cvr=parent,
        accounts=[AccountRef(account_number=f"1{cvr[:7]}", name="Konto")],
        registered_at=clock.now(),
    )


def application(cvr: str, clock: FrozenClock) -> ApplicationSubmitted:
    return ApplicationSubmitted(
        application_id=uuid.uuid4(),
        cvr=cvr,
        company_name="x",
        contact=Contact(name="Mette Holm", email="mette@example.dk", mobile="+4520123456"),
        submitted_at=clock.now(),
        deliver_by=clock.now() + timedelta(hours=2),
    )


def provisioning(clock: FrozenClock, sealer: Sealer) -> Provisioning:
    return Provisioning(
        outbox=Outbox(messaging, clock), clock=clock, sealer=sealer, code_ttl=timedelta(days=7)
    )


async def test_an_application_racing_its_customer_is_provisioned_not_left_waiting(
    db: Database, clock: FrozenClock, sealer: Sealer
) -> None:
    handlers = provisioning(clock, sealer)
    submitted = application("35657193", clock)

    async def the_application() -> None:
        async with db.transaction() as session:
            await handlers.on_application_submitted(session, envelope_of(submitted, clock))

    async with db.transaction() as session:  # the customer's transaction, not yet committed
        await handlers.on_customer_registered(session, envelope_of(customer("35657193", None, clock), clock))
        racing = asyncio.create_task(the_application())
        if db.engine.dialect.name == "postgresql":
            # The application's transaction must wait for the customer's to end.
            async def waiting_for_the_lock() -> bool:
                async with db.engine.connect() as conn:
                    waits = await conn.scalar(
                        text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                    )
                return bool(waits)

            await wait_until_async(
                waiting_for_the_lock, deadline_s=10, what="the application to wait for the lock"
            )
        assert not racing.done()
    await racing

    async with db.transaction() as session:
        assert list(await session.scalars(select(WaitingApplication))) == []
        admin = await session.scalar(select(User).where(User.tenant_cvr == "35657193"))
    assert admin is not None and admin.role == "administrator"


async def test_a_subsidiary_arriving_after_the_administrator_joins_the_group(
    db: Database, clock: FrozenClock, sealer: Sealer
) -> None:
    handlers = provisioning(clock, sealer)
    async with db.transaction() as session:
        await handlers.on_customer_registered(session, envelope_of(customer("35657193", None, clock), clock))
        await handlers.on_customer_registered(
            session, envelope_of(customer("37826111", "35657193", clock), clock)
        )
        await handlers.on_application_submitted(session, envelope_of(application("35657193", clock), clock))
        admin = await session.scalar(select(User).where(User.tenant_cvr == "35657193"))
        assert admin is not None
        colleague = User(
            id=str(uuid.uuid4()),
            tenant_cvr="35657193",
            username="35657193-abcd",
            name="Jonas",
            email="j@example.dk",
            mobile="+4520304050",
            role="user",
            status="active",
            functions=["invoices"],
            created_at=clock.now(),
        )
        session.add(colleague)
        await session.flush()
        grant = UserGrant.of("37826111", ["13782611"])
        grant.user_id = colleague.id
        session.add(grant)
        start = await session.scalar(
            select(messaging.outbox.c.seq).order_by(messaging.outbox.c.seq.desc()).limit(1)
        )

    async with db.transaction() as session:  # the grandchild comes later on the bus
        await handlers.on_customer_registered(
            session, envelope_of(customer("33112874", "37826111", clock), clock)
        )

    async with db.transaction() as session:
        admin_grants = {
            g.cvr: g.accounts
            for g in await session.scalars(select(UserGrant).where(UserGrant.user_id == admin.id))
        }
        colleague_grants = {
            g.cvr: g.accounts
            for g in await session.scalars(select(UserGrant).where(UserGrant.user_id == colleague.id))
        }
        values = list(
            await session.scalars(select(messaging.outbox.c.value).where(messaging.outbox.c.seq > start))
        )
    assert admin_grants == {"35657193": "all", "37826111": "all", "33112874": "all"}
    assert colleague_grants == {"37826111": ["13782611"]}  # only what an administrator gave
    [changed] = [UserGrantsChanged.model_validate_json(v) for v in values]
    assert str(changed.user_id) == admin.id and {g.cvr for g in changed.grants} == set(admin_grants)


async def test_a_subsidiary_arriving_before_its_parent_joins_with_it(
    db: Database, clock: FrozenClock, sealer: Sealer
) -> None:
    handlers = provisioning(clock, sealer)
    async with db.transaction() as session:
        await handlers.on_customer_registered(session, envelope_of(customer("35657193", None, clock), clock))
        await handlers.on_application_submitted(session, envelope_of(application("35657193", clock), clock))
    for cvr, parent in (("33112874", "37826111"), ("37826111", "35657193")):  # grandchild first
        async with db.transaction() as session:
            await handlers.on_customer_registered(session, envelope_of(customer(cvr, parent, clock), clock))
    async with db.transaction() as session:
        admin = await session.scalar(select(User).where(User.tenant_cvr == "35657193"))
        assert admin is not None
        held = {g.cvr for g in await session.scalars(select(UserGrant).where(UserGrant.user_id == admin.id))}
    assert held == {"35657193", "37826111", "33112874"}


async def test_provisioning_reads_the_group_not_the_whole_customer_register(
    db: Database, clock: FrozenClock, sealer: Sealer
) -> None:
    """The first administrator holds the company and every company below it, parents first
    (S14); finding them reads the group by its parents, never every customer's row."""
    handlers = provisioning(clock, sealer)
    group = [("35657193", None), ("37826111", "35657193"), ("29403473", "35657193"), ("25313763", "29403473")]
    others = [("10150817", None), ("12345674", "10150817")]
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(" ".join(statement.split()))

    async with db.transaction() as session:
        for cvr, parent in group + others:
            await handlers.on_customer_registered(session, envelope_of(customer(cvr, parent, clock), clock))
    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        async with db.transaction() as session:
            await handlers.on_application_submitted(session, envelope_of(application("35657193", clock), clock))
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", seen)

    async with db.transaction() as session:
        admin = await session.scalar(select(User).where(User.tenant_cvr == "35657193"))
        assert admin is not None
        grants = list(await session.scalars(select(UserGrant).where(UserGrant.user_id == admin.id)))
        # Parents first, a parent's subsidiaries in CVR order.
        order = [c.cvr for c in await group_of(session, "35657193")]
    assert order == ["35657193", "29403473", "37826111", "25313763"]
    assert sorted(g.cvr for g in grants) == sorted(order)  # the other group is not held
    whole_register = [s for s in statements if "FROM companies" in s and "WHERE" not in s.split("FROM companies")[1]]
    assert whole_register == [], whole_register


async def test_two_applications_of_one_company_provisioned_at_once_leave_one_tenant_and_one_administrator(
    db: Database, clock: FrozenClock, sealer: Sealer
) -> None:
    """Two applications for the same CVR, handled at the same moment by two workers with their
    own connections (S1, S2): the company gets one tenant and one pending first administrator,
    whose activation code expires when its letter says; the other login is withdrawn."""
    handlers = provisioning(clock, sealer)
    async with db.transaction() as session:
        await handlers.on_customer_registered(session, envelope_of(customer("35657193", None, clock), clock))
    other_db = Database(db.url)
    try:

        async def provisioned(on: Database) -> None:
            async with on.transaction() as session:
                await handlers.on_application_submitted(session, envelope_of(application("35657193", clock), clock))

        await asyncio.gather(provisioned(db), provisioned(other_db), provisioned(other_db), provisioned(db))
    finally:
        await other_db.dispose()

    async with db.transaction() as session:
        assert len(list(await session.scalars(select(Tenant).where(Tenant.cvr == "35657193")))) == 1
        logins = list(await session.scalars(select(User).where(User.tenant_cvr == "35657193")))
    pending = [u for u in logins if u.status == "pending"]
    assert len(logins) == 4 and len(pending) == 1
    assert pending[0].role == "administrator"
    assert pending[0].activation_expires_at is not None
    assert as_utc(pending[0].activation_expires_at) == clock.now() + timedelta(days=7)
