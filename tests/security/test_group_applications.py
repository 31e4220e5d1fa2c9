"""A subsidiary held by its group's administrator gets no administrator of its own (S14).

The administrator of a company holds every company below it in its group (parent,
grandparent, ...). A subsidiary that applies beside that administrator is refused as
`admin-exists`, told which company of its group to ask, by onboarding — and by identity, should
onboarding's projection lag. The reverse is allowed: a parent may apply while a subsidiary has
its own administrator; the parent's administrator then holds the whole group and the subsidiary
keeps its own. Requests and handlers run in parallel, on the database under test.
"""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select

from services.identity.models import User, UserGrant
from services.onboarding.api import create_api as create_onboarding_api
from services.onboarding.config import OnboardingSettings
from services.onboarding.models import Application, KnownAdministrator, KnownCustomer
from services.onboarding.models import messaging as onboarding_messaging
from services.onboarding.projections import Projections
from shared.clock import FrozenClock, SystemClock
from shared.db import Database
from shared.events import AdministratorProvisioningRejected, CredentialsIssued, CustomerRegistered
from shared.messaging import Outbox
from tests.integration.test_activation import activate_from_letter, envelope_of
from tests.integration.test_login import client, database_url, settings  # noqa: F401
from tests.security.test_reapplication import application, events_of, handlers, letter_of, submit
from tests.support.asgi import AppTransport

HOLDING, ENERGI, VIND, SERVICE = "35657193", "37826111", "33112874", "41204559"

# Onboarding's event handlers, as its worker calls them.
onboarding = Projections(outbox=Outbox(onboarding_messaging, SystemClock()))
GROUP = [  # parent first
    (HOLDING, "Nordlys Holding A/S", None),
    (ENERGI, "Nordlys Energi A/S", HOLDING),
    (SERVICE, "Nordlys Service ApS", HOLDING),
    (VIND, "Nordlys Vind ApS", ENERGI),
]


# --- onboarding -----------------------------------------------------------------------------


def form(cvr: str) -> dict:
    return {
        "cvr": cvr,
        "company_name": "Nordlys",
        "contact": {"name": "Jonas", "email": "jonas@example.dk", "mobile": "20304050"},
    }


@pytest.fixture
async def onboarding_db(onboarding_url: str) -> AsyncIterator[Database]:
    database = Database(onboarding_url)
    async with database.transaction() as session:
        for cvr, name, parent in GROUP:
            session.add(KnownCustomer(cvr=cvr, name=name, parent_cvr=parent))
    yield database
    await database.dispose()


@pytest.fixture
async def apply_client(onboarding_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = create_onboarding_api(OnboardingSettings(database_url=onboarding_db.url, rate_limit_per_minute=0))
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://onboarding") as http:
        yield http


async def administrator(db: Database, cvr: str, status: str) -> None:
    async with db.transaction() as session:
        session.add(
            KnownAdministrator(user_id=str(uuid.uuid4()), cvr=cvr, status=status, since=datetime.now(UTC))
        )


async def stored_applications(db: Database) -> list[str]:
    async with db.transaction() as session:
        return list(await session.scalars(select(Application.cvr)))


async def test_subsidiaries_held_by_the_group_administrator_are_refused_naming_the_group(
    apply_client, onboarding_db
) -> None:
    await administrator(onboarding_db, HOLDING, "active")

    answers = await asyncio.gather(
        *(apply_client.post("/v1/applications", json=form(cvr)) for cvr in (ENERGI, VIND, SERVICE) * 3)
    )

    assert {a.status_code for a in answers} == {409}, [a.text for a in answers]
    for answer in answers:
        problem = answer.json()
        assert problem["type"].endswith("/admin-exists")
        assert "Nordlys Holding A/S (CVR 35657193)" in problem["detail"]
        assert "Ask the administrator of Nordlys Holding A/S to create a login" in problem["detail"]
        assert "no application and no call to support is needed" in problem["detail"]
        # ... and by name and CVR, for a client to say it in its own words (the portal, in Danish).
        assert (problem["group_cvr"], problem["group_name"]) == (HOLDING, "Nordlys Holding A/S")
    assert await stored_applications(onboarding_db) == []


async def test_a_pending_group_administrator_holds_the_subsidiaries_too(apply_client, onboarding_db) -> None:
    await administrator(onboarding_db, ENERGI, "pending")
    refused = await apply_client.post("/v1/applications", json=form(VIND))
    assert refused.status_code == 409 and refused.json()["type"].endswith("/admin-exists")
    assert (
        "Nordlys Energi A/S (CVR 37826111)" in refused.json()["detail"]
        and "e-Boks" in refused.json()["detail"]
    )
    # A sister company outside Energi's part of the group is not held by it.
    assert (await apply_client.post("/v1/applications", json=form(SERVICE))).status_code == 202


async def test_a_parent_may_apply_while_a_subsidiary_has_its_own_administrator(
    apply_client, onboarding_db
) -> None:
    await administrator(onboarding_db, ENERGI, "active")
    assert (await apply_client.post("/v1/applications", json=form(HOLDING))).status_code == 202


async def test_onboarding_folds_identitys_group_refusal_naming_the_group(apply_client, onboarding_db) -> None:
    """Identity saw the group's administrator before onboarding's projection did."""
    accepted = (await apply_client.post("/v1/applications", json=form(VIND))).json()
    rejection = AdministratorProvisioningRejected(
        application_id=uuid.UUID(accepted["id"]),
        cvr=VIND,
        reason="admin-exists",
        group_cvr=HOLDING,
        rejected_at=datetime.now(UTC),
    )
    async with onboarding_db.transaction() as session:
        await onboarding.on_provisioning_rejected(session, envelope_of(rejection, FrozenClock()))
    status = (await apply_client.get(f"/v1/applications/{accepted['id']}")).json()
    assert status["status"] == "rejected"
    assert "Nordlys Holding A/S (CVR 35657193)" in status["status_detail"]


# --- identity -------------------------------------------------------------------------------


async def register_group(db: Database, clock: FrozenClock, sealer) -> None:
    async with db.transaction() as session:
        for cvr, name, parent in GROUP:
            event = CustomerRegistered(
                cvr=cvr, name=name, parent_cvr=parent, accounts=[], registered_at=clock.now()
            )
            await handlers(clock, sealer).on_customer_registered(session, envelope_of(event, clock))


async def administrators(db: Database) -> dict[str, User]:
    async with db.transaction() as session:
        users = await session.scalars(
            select(User).where(User.role == "administrator", User.status != "deleted")
        )
        return {u.tenant_cvr or "": u for u in users}


async def held_by(db: Database, user: User) -> set[str]:
    async with db.transaction() as session:
        return set(await session.scalars(select(UserGrant.cvr).where(UserGrant.user_id == user.id)))


@pytest.mark.parametrize("status", ["pending", "active"])
async def test_identity_refuses_a_subsidiary_its_groups_administrator_holds_even_if_onboarding_let_it_through(
    db, clock, sealer, client, status: str
) -> None:
    await register_group(db, clock, sealer)
    parent = application(clock, cvr=ENERGI)
    await submit(db, clock, sealer, parent)
    if status == "active":
        assert (
            await activate_from_letter(client, db, sealer, *await letter_of(db, sealer, parent))
        ).status_code == 200

    grandchild = application(clock, cvr=VIND)
    await submit(db, clock, sealer, grandchild)

    [rejected] = await events_of(db, AdministratorProvisioningRejected)
    assert (rejected.application_id, rejected.reason, rejected.group_cvr) == (
        grandchild.application_id,
        "admin-exists",
        ENERGI,
    )
    assert set(await administrators(db)) == {ENERGI}
    assert len(await events_of(db, CredentialsIssued)) == 1


async def test_a_parent_applying_beside_a_subsidiarys_administrator_gets_the_whole_group(
    db, clock, sealer, client
) -> None:
    """The reverse case is allowed: the subsidiary keeps its own tenant and administrator."""
    await register_group(db, clock, sealer)
    subsidiary = application(clock, cvr=ENERGI)
    await submit(db, clock, sealer, subsidiary)
    assert (
        await activate_from_letter(client, db, sealer, *await letter_of(db, sealer, subsidiary))
    ).status_code == 200

    await submit(db, clock, sealer, application(clock, cvr=HOLDING))

    assert await events_of(db, AdministratorProvisioningRejected) == []
    admins = await administrators(db)
    assert set(admins) == {HOLDING, ENERGI}
    assert await held_by(db, admins[HOLDING]) == {HOLDING, ENERGI, SERVICE, VIND}
    assert await held_by(db, admins[ENERGI]) == {ENERGI, VIND} and admins[ENERGI].status == "active"


async def test_a_parent_and_a_subsidiary_provisioned_at_once_end_in_one_of_the_two_allowed_shapes(
    db, clock, sealer
) -> None:
    """Either the parent came first and the subsidiary is refused, or the subsidiary came first
    and both have administrators (the reverse case); never a subsidiary refused for nothing, nor
    a parent's administrator without the whole group."""
    await register_group(db, clock, sealer)
    parent, child = application(clock, cvr=HOLDING), application(clock, cvr=VIND)

    await asyncio.gather(submit(db, clock, sealer, parent), submit(db, clock, sealer, child))

    admins = await administrators(db)
    rejected = await events_of(db, AdministratorProvisioningRejected)
    assert await held_by(db, admins[HOLDING]) == {HOLDING, ENERGI, SERVICE, VIND}
    if VIND in admins:
        assert rejected == []
    else:
        assert [(r.application_id, r.group_cvr) for r in rejected] == [(child.application_id, HOLDING)]
