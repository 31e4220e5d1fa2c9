"""A company must not stay blocked by an application someone else made (S1, S2, S3).

The application form is public: anyone may apply for any customer's CVR. The login it produces
stays pending until someone activates it with the code from the company's e-Boks letter. A new
application for a company whose only administrator login was never activated replaces that
login (withdrawn, its code dead) with a new letter; letters per CVR are limited; an activated
administrator still refuses new applications. Onboarding's and identity's real code on the
database under test, with requests and handlers run in parallel.
"""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import httpx
import pytest
from sqlalchemy import select, update

from services.identity.models import User
from services.identity.models import messaging as identity_messaging
from services.identity.provisioning import Provisioning
from services.onboarding.api import create_api as create_onboarding_api
from services.onboarding.config import OnboardingSettings
from services.onboarding.models import Application, KnownAdministrator, KnownCustomer
from services.onboarding.models import messaging as onboarding_messaging
from services.onboarding.projections import Projections
from shared.clock import FrozenClock, SystemClock
from shared.db import Database
from shared.events import (
    AccountRef,
    AdministratorProvisioningRejected,
    ApplicationSubmitted,
    Contact,
    CredentialsIssued,
    CustomerRegistered,
    Event,
    UserDeleted,
)
from shared.messaging import Outbox
from shared.sealing import Sealer
from tests.integration.test_activation import (
    OWN_EMAIL,
    OWN_MOBILE,
    PASSWORD,
    activate_from_letter,
    confirmation_codes,
    envelope_of,
    problem_type,
    start_letter_activation,
    unsealed_code,
)
from tests.integration.test_login import client, database_url, settings  # noqa: F401
from tests.support.asgi import AppTransport

E = TypeVar("E", bound=Event)
CVR = "22109340"

# Onboarding's event handlers, as its worker calls them.
onboarding = Projections(outbox=Outbox(onboarding_messaging, SystemClock()))


# --- identity -------------------------------------------------------------------------------


def handlers(clock: FrozenClock, sealer: Sealer) -> Provisioning:
    return Provisioning(
        outbox=Outbox(identity_messaging, clock), clock=clock, sealer=sealer, code_ttl=timedelta(days=7)
    )


def application(clock: FrozenClock, cvr: str = CVR, name: str = "Ida Bager") -> ApplicationSubmitted:
    return ApplicationSubmitted(
        application_id=uuid.uuid4(),
        cvr=cvr,
        company_name="Bageriet Solsikke ApS",
        contact=Contact(name=name, email="someone@example.dk", mobile="+4520304050"),
        submitted_at=clock.now(),
        deliver_by=clock.now() + timedelta(hours=2),
    )


async def register_customer(db: Database, clock: FrozenClock, sealer: Sealer, cvr: str = CVR) -> None:
    customer = CustomerRegistered(
        cvr=cvr,
        name="Bageriet Solsikke ApS",
        accounts=[AccountRef(account_number="10000051", name="Butik")],
        registered_at=clock.now(),
    )
    async with db.transaction() as session:
        await handlers(clock, sealer).on_customer_registered(session, envelope_of(customer, clock))


async def submit(db: Database, clock: FrozenClock, sealer: Sealer, event: ApplicationSubmitted) -> None:
    async with db.transaction() as session:
        await handlers(clock, sealer).on_application_submitted(session, envelope_of(event, clock))


async def events_of(db: Database, kind: type[E]) -> list[E]:
    async with db.transaction() as session:
        values = await session.scalars(
            select(identity_messaging.outbox.c.value)
            .where(
                identity_messaging.outbox.c.topic == kind.TOPIC.name,
                identity_messaging.outbox.c.headers.contains(kind.TYPE),
            )
            .order_by(identity_messaging.outbox.c.seq)
        )
        return [kind.model_validate_json(v) for v in values]


async def letter_of(db: Database, sealer: Sealer, event: ApplicationSubmitted) -> tuple[str, str]:
    """(username, activation code) of the letter issued for the application."""
    [issued] = [e for e in await events_of(db, CredentialsIssued) if e.application_id == event.application_id]
    code = sealer.unseal(issued.activation_code, context=CredentialsIssued.sealing_context(issued.user_id))
    return issued.username, code


async def live_administrators(db: Database, cvr: str = CVR) -> list[User]:
    async with db.transaction() as session:
        return list(
            await session.scalars(
                select(User).where(
                    User.tenant_cvr == cvr, User.role == "administrator", User.status != "deleted"
                )
            )
        )


async def test_a_new_application_replaces_an_administrator_login_that_was_never_activated(
    db, clock, sealer, client
) -> None:
    await register_customer(db, clock, sealer)
    strangers = application(clock, name="A Stranger")
    await submit(db, clock, sealer, strangers)
    old_username, old_code = await letter_of(db, sealer, strangers)

    own = application(clock, name="Karen Ejer")
    await submit(db, clock, sealer, own)

    assert await events_of(db, AdministratorProvisioningRejected) == []
    username, code = await letter_of(db, sealer, own)
    assert username != old_username
    [withdrawn] = await events_of(db, UserDeleted)
    assert withdrawn.reason == "replaced-by-new-application"
    assert withdrawn.application_id == strangers.application_id
    [live] = await live_administrators(db)
    assert live.username == username and live.application_id == str(own.application_id)

    dead = await start_letter_activation(client, old_username, old_code)
    assert dead.status_code == 400 and problem_type(dead) == "invalid-activation-code"
    activated = await activate_from_letter(client, db, sealer, username, code)
    assert activated.status_code == 200, activated.text


async def test_an_activated_administrator_still_refuses_a_new_application(db, clock, sealer, client) -> None:
    await register_customer(db, clock, sealer)
    first = application(clock)
    await submit(db, clock, sealer, first)
    assert (
        await activate_from_letter(client, db, sealer, *await letter_of(db, sealer, first))
    ).status_code == 200

    await submit(db, clock, sealer, application(clock, name="A Stranger"))

    [rejected] = await events_of(db, AdministratorProvisioningRejected)
    assert rejected.reason == "admin-exists" and rejected.group_cvr is None
    assert len(await events_of(db, CredentialsIssued)) == 1 and await events_of(db, UserDeleted) == []
    [admin] = await live_administrators(db)
    assert admin.status == "active"


async def test_an_activation_under_way_for_a_replaced_login_can_no_longer_be_confirmed(
    db, clock, sealer, client
) -> None:
    await register_customer(db, clock, sealer)
    first = application(clock)
    await submit(db, clock, sealer, first)
    username, code = await letter_of(db, sealer, first)
    started = await start_letter_activation(client, username, code)
    assert started.status_code == 202, started.text
    sent = await confirmation_codes(db, sealer, started.json()["activation_id"])

    await submit(db, clock, sealer, application(clock, name="Someone Else"))

    confirmed = await client.post(
        f"/v1/activation/{started.json()['activation_id']}/confirm",
        json={
            "sms_code": unsealed_code(sealer, sent["sms"]),
            "email_code": unsealed_code(sealer, sent["email"]),
        },
    )
    assert confirmed.status_code == 410 and problem_type(confirmed) == "activation-restart-required"
    assert "withdrawn" in confirmed.json()["detail"] and "newest letter" in confirmed.json()["detail"]


async def test_concurrent_applications_for_one_company_leave_exactly_one_live_administrator(
    db, clock, sealer
) -> None:
    await register_customer(db, clock, sealer)
    first = application(clock)
    await submit(db, clock, sealer, first)
    racing = [application(clock, name=f"Applicant {i}") for i in range(4)]

    await asyncio.gather(*(submit(db, clock, sealer, event) for event in racing))

    [live] = await live_administrators(db)
    assert live.application_id in {str(e.application_id) for e in racing}
    assert len(await events_of(db, UserDeleted)) == 4  # the first login and three of the racers
    assert len(await events_of(db, CredentialsIssued)) == 5


async def test_a_confirmation_racing_a_new_application_either_activates_and_refuses_it_or_is_refused(
    db, clock, sealer, client
) -> None:
    await register_customer(db, clock, sealer)
    first = application(clock)
    await submit(db, clock, sealer, first)
    username, code = await letter_of(db, sealer, first)
    body = {
        "username": username,
        "activation_code": code,
        "password": PASSWORD,
        "email": OWN_EMAIL,
        "mobile": OWN_MOBILE,
    }
    started = (await client.post("/v1/activation", json=body)).json()
    sent = await confirmation_codes(db, sealer, started["activation_id"])
    codes = {
        "sms_code": unsealed_code(sealer, sent["sms"]),
        "email_code": unsealed_code(sealer, sent["email"]),
    }
    second = application(clock, name="A Stranger")

    confirmed, _ = await asyncio.gather(
        client.post(f"/v1/activation/{started['activation_id']}/confirm", json=codes),
        submit(db, clock, sealer, second),
    )

    live = await live_administrators(db)
    rejected = await events_of(db, AdministratorProvisioningRejected)
    if confirmed.status_code == 200:  # the activation came first: the application is refused
        assert [a.username for a in live] == [username] and live[0].status == "active"
        assert [r.application_id for r in rejected] == [second.application_id]
    else:  # the application came first: the login was withdrawn under the activation
        assert confirmed.status_code == 410, confirmed.text
        assert [a.application_id for a in live] == [str(second.application_id)] and live[
            0
        ].status == "pending"
        assert rejected == []


# --- onboarding -----------------------------------------------------------------------------


def form(cvr: str = CVR, name: str = "Ida") -> dict:
    return {
        "cvr": cvr,
        "company_name": "Bageriet",
        "contact": {"name": name, "email": "ida@example.dk", "mobile": "20304050"},
    }


@pytest.fixture
async def onboarding_db(onboarding_url: str) -> AsyncIterator[Database]:
    database = Database(onboarding_url)
    async with database.transaction() as session:
        session.add(KnownCustomer(cvr=CVR, name="Bageriet Solsikke ApS", parent_cvr=None))
    yield database
    await database.dispose()


@pytest.fixture
def onboarding_clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 3, 2, 8, 0, tzinfo=UTC))


@pytest.fixture
async def apply_client(
    onboarding_url: str, onboarding_db: Database, onboarding_clock: FrozenClock
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_onboarding_api(
        OnboardingSettings(database_url=onboarding_url, rate_limit_per_minute=0), clock=onboarding_clock
    )
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://onboarding") as http:
        yield http


async def letter_sent(db: Database, application_id: str, clock: FrozenClock) -> None:
    """The application's login was issued and its letter delivered (as the worker folds them)."""
    user_id = uuid.uuid4()
    async with db.transaction() as session:
        session.add(
            KnownAdministrator(
                user_id=str(user_id),
                cvr=CVR,
                status="pending",
                application_id=application_id,
                since=clock.now(),
            )
        )
        await session.execute(
            update(Application).where(Application.id == application_id).values(status="credentials_sent")
        )


async def test_a_pending_administrator_login_does_not_block_the_company_from_applying(
    apply_client, onboarding_db, onboarding_clock
) -> None:
    first = await apply_client.post("/v1/applications", json=form(name="A Stranger"))
    assert first.status_code == 202
    await letter_sent(onboarding_db, first.json()["id"], onboarding_clock)

    own = await apply_client.post("/v1/applications", json=form(name="Karen Ejer"))

    assert own.status_code == 202, own.text
    # Identity withdraws the stranger's login; onboarding's projection follows.
    async with onboarding_db.transaction() as session:
        [admin] = list(await session.scalars(select(KnownAdministrator)))
        await onboarding.on_user_deleted(
            session,
            envelope_of(
                UserDeleted(
                    user_id=uuid.UUID(admin.user_id),
                    tenant_cvr=CVR,
                    role="administrator",
                    reason="replaced-by-new-application",
                    application_id=uuid.UUID(first.json()["id"]),
                    deleted_at=onboarding_clock.now(),
                ),
                onboarding_clock,
            ),
        )
    async with onboarding_db.transaction() as session:
        assert list(await session.scalars(select(KnownAdministrator))) == []
    status = (await apply_client.get(f"/v1/applications/{first.json()['id']}")).json()
    assert "newer application" in status["status_detail"]


async def test_an_active_administrator_still_gets_409_admin_exists(apply_client, onboarding_db) -> None:
    async with onboarding_db.transaction() as session:
        session.add(KnownAdministrator(user_id="u1", cvr=CVR, status="active", since=datetime.now(UTC)))
    answers = await asyncio.gather(*(apply_client.post("/v1/applications", json=form()) for _ in range(4)))
    assert {a.status_code for a in answers} == {409}
    assert all(a.json()["type"].endswith("/admin-exists") for a in answers)
    assert "support deletes the old login" in answers[0].json()["detail"]


async def test_parallel_applications_for_one_company_accept_exactly_one(
    apply_client, onboarding_db, onboarding_clock
) -> None:
    first = await apply_client.post("/v1/applications", json=form(name="A Stranger"))
    await letter_sent(onboarding_db, first.json()["id"], onboarding_clock)

    answers = await asyncio.gather(*(apply_client.post("/v1/applications", json=form()) for _ in range(8)))

    assert sorted(a.status_code for a in answers) == [202] + [409] * 7, [a.text for a in answers]
    assert {a.json()["type"].rsplit("/", 1)[1] for a in answers if a.status_code == 409} == {
        "application-pending"
    }
    async with onboarding_db.transaction() as session:
        stored = list(await session.scalars(select(Application.id)))
    assert len(stored) == 2


async def test_at_most_three_letters_per_company_in_24_hours_then_429_saying_when(
    apply_client, onboarding_db, onboarding_clock
) -> None:
    first_at = onboarding_clock.now()
    for _ in range(3):
        accepted = await apply_client.post("/v1/applications", json=form())
        assert accepted.status_code == 202, accepted.text
        await letter_sent(onboarding_db, accepted.json()["id"], onboarding_clock)
        onboarding_clock.advance(timedelta(hours=1))

    answers = await asyncio.gather(*(apply_client.post("/v1/applications", json=form()) for _ in range(5)))

    assert {a.status_code for a in answers} == {429}, [a.text for a in answers]
    problem = answers[0].json()
    assert answers[0].headers["content-type"] == "application/problem+json"
    again_at = first_at + timedelta(hours=24)
    assert (
        int(answers[0].headers["retry-after"]) == int((again_at - onboarding_clock.now()).total_seconds()) + 1
    )
    assert f"{again_at:%Y-%m-%d %H:%M} UTC" in problem["detail"] and "newest letter" in problem["detail"]

    onboarding_clock.advance(again_at - onboarding_clock.now() + timedelta(seconds=1))
    assert (await apply_client.post("/v1/applications", json=form())).status_code == 202


async def test_failed_applications_sent_no_letter_and_do_not_count_against_the_limit(
    apply_client, onboarding_db, onboarding_clock
) -> None:
    for _ in range(3):
        accepted = await apply_client.post("/v1/applications", json=form())
        async with onboarding_db.transaction() as session:
            await session.execute(
                update(Application).where(Application.id == accepted.json()["id"]).values(status="failed")
            )
    assert (await apply_client.post("/v1/applications", json=form())).status_code == 202
