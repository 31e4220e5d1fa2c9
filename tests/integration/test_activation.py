"""Activation (S2): single use, expiring, attempt-limited — with a clock the test controls.

Identity's real provisioning handler and real HTTP API, on the database under test.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from services.identity.api import create_api
from services.identity.config import IdentitySettings
from services.identity.models import User, messaging
from services.identity.provisioning import Provisioning
from shared.clock import FrozenClock
from shared.db import Database
from shared.envelope import decode, encode
from shared.events import (
    AccountRef,
    ApplicationSubmitted,
    Contact,
    CredentialsIssued,
    CustomerRegistered,
    Event,
    OtpRequested,
)
from shared.messaging import Outbox
from shared.sealing import Sealer
from tests.support.asgi import AppTransport

PASSWORD = "Fjordhest-Morgenkaffe-42"


def envelope_of(event: Event, clock: FrozenClock):
    record = encode(event, event_id=str(uuid.uuid4()), time=clock.now())
    return decode(topic=record.topic, headers=record.headers, value=record.value)


@pytest.fixture
def database_url(identity_url: str) -> str:
    return identity_url


@pytest.fixture
async def client(
    database_url: str, clock: FrozenClock, sealer: Sealer, tmp_path, monkeypatch
) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setattr(IdentitySettings, "sealer", lambda self: sealer)  # the test reads the codes
    settings = IdentitySettings(database_url=database_url, var_dir=tmp_path)
    app = create_api(settings, clock=clock)
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://identity") as http:
        yield http


async def provision_admin(
    db: Database, clock: FrozenClock, sealer: Sealer, cvr: str = "22109340"
) -> tuple[str, str]:
    """Runs identity's handlers for a customer and an application; returns (username, code)."""
    provisioning = Provisioning(
        outbox=Outbox(messaging, clock), clock=clock, sealer=sealer, code_ttl=timedelta(days=7)
    )
    customer = CustomerRegistered(
        cvr=cvr,
        name="Bageriet Solsikke ApS",
        accounts=[AccountRef(account_number="10000051", name="Butik")],
        registered_at=clock.now(),
    )
    application = ApplicationSubmitted(
        application_id=uuid.uuid4(),
        cvr=cvr,
        company_name="Bageriet Solsikke ApS",
        contact=Contact(name="Ida Bager", email="ida@solsikke.example", mobile="+4520304050"),
        submitted_at=clock.now(),
        deliver_by=clock.now() + timedelta(hours=2),
    )
    async with db.transaction() as session:
        await provisioning.on_customer_registered(session, envelope_of(customer, clock))
    async with db.transaction() as session:
        await provisioning.on_application_submitted(session, envelope_of(application, clock))
    async with db.transaction() as session:
        rows = (
            (await session.execute(select(messaging.outbox).order_by(messaging.outbox.c.seq)))
            .mappings()
            .all()
        )
    issued = [r for r in rows if r["topic"] == CredentialsIssued.TOPIC.name and cvr in r["value"]]
    assert issued, "no CredentialsIssued was queued"
    newest = issued[-1]["value"]
    event = CredentialsIssued.model_validate_json(newest)
    assert "activation_code" in json.loads(newest)
    code = sealer.unseal(event.activation_code, context=CredentialsIssued.sealing_context(event.user_id))
    assert code not in newest
    return event.username, code


OWN_EMAIL = "karen@solsikke.example"
OWN_MOBILE = "+4531223344"


async def confirmation_codes(db: Database, sealer: Sealer, activation_id: str) -> dict[str, OtpRequested]:
    """The `OtpRequested` events sent for an activation of the login from the letter, by channel."""
    async with db.transaction() as session:
        values = (
            await session.scalars(
                select(messaging.outbox.c.value)
                .where(messaging.outbox.c.topic == OtpRequested.TOPIC.name)
                .order_by(messaging.outbox.c.seq)
            )
        ).all()
    events = [OtpRequested.model_validate_json(v) for v in values]
    return {e.channel: e for e in events if str(e.challenge_id) == activation_id}


def unsealed_code(sealer: Sealer, event: OtpRequested) -> str:
    return sealer.unseal(event.code, context=OtpRequested.sealing_context(event.challenge_id))


async def start_letter_activation(
    client: httpx.AsyncClient,
    username: str,
    code: str,
    *,
    email: str = OWN_EMAIL,
    mobile: str = OWN_MOBILE,
    name: str | None = None,
    password: str = PASSWORD,
) -> httpx.Response:
    """Step one for the login from the company's letter: the code, a password and one's own
    email and mobile (and name)."""
    body = {
        "username": username,
        "activation_code": code,
        "password": password,
        "email": email,
        "mobile": mobile,
    }
    if name is not None:
        body["name"] = name
    return await client.post("/v1/activation", json=body)


async def activate_from_letter(
    client: httpx.AsyncClient,
    db: Database,
    sealer: Sealer,
    username: str,
    code: str,
    *,
    email: str = OWN_EMAIL,
    mobile: str = OWN_MOBILE,
    name: str | None = None,
    password: str = PASSWORD,
) -> httpx.Response:
    """The login from the company's letter: start with the code and one's own details, then
    confirm with the codes sent by SMS and email. Returns the confirmation's answer."""
    started = await start_letter_activation(
        client, username, code, email=email, mobile=mobile, name=name, password=password
    )
    assert started.status_code == 202, started.text
    sent = await confirmation_codes(db, sealer, started.json()["activation_id"])
    return await client.post(
        f"/v1/activation/{started.json()['activation_id']}/confirm",
        json={
            "sms_code": unsealed_code(sealer, sent["sms"]),
            "email_code": unsealed_code(sealer, sent["email"]),
        },
    )


def problem_type(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return response.json()["type"].rsplit("/", 1)[1]


async def test_the_code_from_the_letter_activates_the_administrator_once(db, clock, sealer, client) -> None:
    username, code = await provision_admin(db, clock, sealer)

    first = await activate_from_letter(client, db, sealer, username, code)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "active"
    again = await start_letter_activation(client, username, code)
    assert again.status_code == 409 and problem_type(again) == "already-activated"

    async with db.transaction() as session:
        user = await session.scalar(select(User).where(User.username == username))
    assert user is not None and user.status == "active"
    assert user.password_hash is not None and user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash


async def test_an_expired_code_is_refused_with_410(db, clock, sealer, client) -> None:
    username, code = await provision_admin(db, clock, sealer)
    clock.advance(timedelta(days=7, seconds=1))
    response = await client.post(
        "/v1/activation", json={"username": username, "activation_code": code, "password": PASSWORD}
    )
    assert response.status_code == 410 and problem_type(response) == "activation-code-expired"
    assert "apply again" in response.json()["detail"]


async def test_a_code_just_before_expiry_still_works(db, clock, sealer, client) -> None:
    username, code = await provision_admin(db, clock, sealer)
    clock.advance(timedelta(days=7) - timedelta(seconds=1))
    response = await activate_from_letter(client, db, sealer, username, code)
    assert response.status_code == 200, response.text


async def test_a_code_that_expires_between_start_and_confirmation_is_refused_with_410(
    db, clock, sealer, client
) -> None:
    username, code = await provision_admin(db, clock, sealer)
    clock.advance(timedelta(days=7) - timedelta(seconds=1))
    started = await start_letter_activation(client, username, code)
    assert started.status_code == 202, started.text
    sent = await confirmation_codes(db, sealer, started.json()["activation_id"])
    clock.advance(timedelta(seconds=2))
    confirmed = await client.post(
        f"/v1/activation/{started.json()['activation_id']}/confirm",
        json={
            "sms_code": unsealed_code(sealer, sent["sms"]),
            "email_code": unsealed_code(sealer, sent["email"]),
        },
    )
    assert confirmed.status_code == 410 and problem_type(confirmed) == "activation-code-expired"
    assert "apply again" in confirmed.json()["detail"]


async def test_a_support_login_activates_in_one_step_and_keeps_the_details_it_was_made_with(
    db, clock, client
) -> None:
    """Its details were set by the operator who made it: no confirmation codes, and none may be
    changed at activation (a 422 naming the field, only after the right code)."""
    from services.identity.support import create_staff

    async with db.transaction() as session:
        _, code = await create_staff(
            session,
            clock,
            username="support.anna",
            name="Anna",
            email="anna@adgang.example",
            mobile="+4520999999",
        )
    body = {"username": "support.anna", "activation_code": code, "password": PASSWORD}
    refused = await client.post("/v1/activation", json={**body, "email": "other@example.dk"})
    assert refused.status_code == 422 and [e["field"] for e in refused.json()["errors"]] == ["email"]
    assert problem_type(refused) == "contact-details-not-accepted"
    activated = await client.post("/v1/activation", json=body)
    assert activated.status_code == 200 and activated.json()["status"] == "active", activated.text
    async with db.transaction() as session:
        staff = await session.scalar(select(User).where(User.username == "support.anna"))
    assert staff is not None and staff.email == "anna@adgang.example"


async def test_the_letters_login_without_email_and_mobile_is_a_422_of_its_own_type_and_uses_nothing(
    db, clock, sealer, client
) -> None:
    """A client tells "ask for the person's own email and mobile" from a malformed field by the
    problem type alone (the portal shows its second step on it)."""
    username, code = await provision_admin(db, clock, sealer)
    refused = await client.post(
        "/v1/activation", json={"username": username, "activation_code": code, "password": PASSWORD}
    )
    assert refused.status_code == 422 and problem_type(refused) == "contact-details-required"
    assert [e["field"] for e in refused.json()["errors"]] == ["email", "mobile"]
    malformed = await start_letter_activation(client, username, code, email="not an email")
    assert malformed.status_code == 422 and problem_type(malformed) == "validation-error"
    assert (await activate_from_letter(client, db, sealer, username, code)).status_code == 200


async def test_five_wrong_codes_block_the_right_one(db, clock, sealer, client) -> None:
    username, code = await provision_admin(db, clock, sealer)
    wrong = "ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ" if code != "ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ" else "YYYY-YYYY-YYYY-YYYY-YYYY"
    for attempt in range(5):
        response = await client.post(
            "/v1/activation", json={"username": username, "activation_code": wrong, "password": PASSWORD}
        )
        assert response.status_code == 400, (attempt, response.text)
    sixth = await client.post(
        "/v1/activation", json={"username": username, "activation_code": code, "password": PASSWORD}
    )
    # Blocked: the right code is refused, with the same answer a wrong code gets (no enumeration).
    assert sixth.status_code == 400 and problem_type(sixth) == "invalid-activation-code"
    assert "blocked" in sixth.json()["detail"]
    async with db.transaction() as session:
        user = await session.scalar(select(User).where(User.username == username))
    assert user is not None and user.status == "pending" and user.password_hash is None


async def test_a_malformed_code_is_a_422_naming_the_field(client) -> None:
    response = await client.post(
        "/v1/activation", json={"username": "22109340-abcd", "activation_code": "12", "password": PASSWORD}
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["activation_code"]


async def test_the_administrator_gets_every_company_of_the_group_and_every_function(
    db, clock, sealer
) -> None:
    """S14: a parent's administrator is granted the parent and each subsidiary, all accounts."""
    provisioning = Provisioning(
        outbox=Outbox(messaging, clock), clock=clock, sealer=sealer, code_ttl=timedelta(days=7)
    )
    group = [("35657193", None), ("37826111", "35657193"), ("41204559", "35657193"), ("33112874", "37826111")]
    async with db.transaction() as session:
        for cvr, parent in reversed(group):  # children may arrive before their parent
            await provisioning.on_customer_registered(
                session,
                envelope_of(
                    CustomerRegistered(
                        cvr=cvr, name=cvr, parent_cvr=parent, accounts=[], registered_at=clock.now()
                    ),
                    clock,
                ),
            )
    application = ApplicationSubmitted(
        application_id=uuid.uuid4(),
        cvr="37826111",
        company_name="x",
        contact=Contact(name="A", email="a@example.dk", mobile="+4520304050"),
        submitted_at=clock.now(),
        deliver_by=clock.now() + timedelta(hours=2),
    )
    async with db.transaction() as session:
        await provisioning.on_application_submitted(session, envelope_of(application, clock))
        rows = (
            (
                await session.execute(
                    select(messaging.outbox.c.value).where(messaging.outbox.c.topic == "identity.users")
                )
            )
            .scalars()
            .all()
        )
    created = json.loads(rows[-1])
    assert [g["cvr"] for g in created["grants"]] == ["37826111", "33112874"]
    assert all(g["accounts"] == "all" for g in created["grants"])
    assert set(created["functions"]) == {"invoices", "orders", "master_data", "telephony", "user_admin"}


async def test_a_failed_application_withdraws_its_pending_login_and_a_new_one_can_be_provisioned(
    db, clock, sealer, client
) -> None:
    """Its letter never arrived: the login is withdrawn (UserDeleted), its code stops working,
    and the company's next application gets a new administrator instead of a rejection."""
    from shared.events import ApplicationFailed

    username, code = await provision_admin(db, clock, sealer)
    async with db.transaction() as session:
        user = await session.scalar(select(User).where(User.username == username))
    assert user is not None
    provisioning = Provisioning(
        outbox=Outbox(messaging, clock), clock=clock, sealer=sealer, code_ttl=timedelta(days=7)
    )
    failed = ApplicationFailed(
        application_id=uuid.UUID(user.application_id),
        cvr="22109340",
        reason="delivery-failed",
        failed_at=clock.now(),
    )
    async with db.transaction() as session:
        await provisioning.on_application_failed(session, envelope_of(failed, clock))

    response = await client.post(
        "/v1/activation", json={"username": username, "activation_code": code, "password": PASSWORD}
    )
    assert response.status_code == 400
    async with db.transaction() as session:
        rows = (
            (
                await session.execute(
                    select(messaging.outbox.c.value).where(messaging.outbox.c.topic == "identity.users")
                )
            )
            .scalars()
            .all()
        )
    assert '"reason":"credentials-undeliverable"' in rows[-1]

    second_username, _ = await provision_admin(db, clock, sealer)
    assert second_username != username
