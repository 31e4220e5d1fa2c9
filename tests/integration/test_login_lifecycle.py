"""A login's lifecycle (issue 10, item 4): a login not yet activated carries the expiry of its
activation code (`expires_at`), is `expired` once it passes, and a new code brings a new
expiry. An expired, never-activated first administrator no longer stands in the way of an
application: not the company's own (S1, S3), and not one of a company below it in its group
(S14). Identity's real API and handlers, and onboarding's real API, on the database under test."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select

from services.identity.models import User, messaging
from services.identity.provisioning import Provisioning
from services.notifier.letters import render_credentials_letter
from services.onboarding.api import create_api as create_onboarding_api
from services.onboarding.config import OnboardingSettings
from services.onboarding.models import KnownCustomer
from services.onboarding.models import messaging as onboarding_messaging
from services.onboarding.projections import Projections
from shared.clock import FrozenClock
from shared.db import Database
from shared.events import (
    AccountRef,
    AdministratorProvisioningRejected,
    ApplicationSubmitted,
    Contact,
    CredentialsIssued,
    CustomerRegistered,
    UserCreated,
    UserDeleted,
)
from shared.messaging import Outbox
from shared.sealing import Sealer
from tests.integration.test_activation import envelope_of, problem_type
from tests.integration.test_administration import (
    GROUP,
    activated_group_admin,
    colleague,
    log_in_by_email,
    login_email,
)
from tests.integration.test_login import client, database_url, settings  # noqa: F401 - fixtures
from tests.integration.test_support import staff_login
from tests.support.asgi import AppTransport

CODE_TTL = timedelta(days=7)
PARENT, SUBSIDIARY = GROUP[0][0], GROUP[1][0]


def _provisioning(clock: FrozenClock, sealer: Sealer) -> Provisioning:
    return Provisioning(outbox=Outbox(messaging, clock), clock=clock, sealer=sealer, code_ttl=CODE_TTL)


async def _register_group(db: Database, clock: FrozenClock, sealer: Sealer) -> None:
    async with db.transaction() as session:
        for cvr, parent, accounts in GROUP:
            event = CustomerRegistered(
                cvr=cvr,
                name=f"Firma {cvr}",
                parent_cvr=parent,
                accounts=[AccountRef(account_number=a, name=a) for a in accounts],
                registered_at=clock.now(),
            )
            await _provisioning(clock, sealer).on_customer_registered(session, envelope_of(event, clock))


async def _apply(db: Database, clock: FrozenClock, sealer: Sealer, cvr: str) -> uuid.UUID:
    """Identity's handler for an application from onboarding; returns its id."""
    application = ApplicationSubmitted(
        application_id=uuid.uuid4(),
        cvr=cvr,
        company_name=f"Firma {cvr}",
        contact=Contact(name="Ida Holm", email="ida@firma.example", mobile="+4520304050"),
        submitted_at=clock.now(),
        deliver_by=clock.now() + timedelta(hours=2),
    )
    async with db.transaction() as session:
        await _provisioning(clock, sealer).on_application_submitted(session, envelope_of(application, clock))
    return application.application_id


async def _events(db: Database, event_type: type) -> list:
    async with db.transaction() as session:
        rows = (
            await session.execute(
                select(messaging.outbox.c.value, messaging.outbox.c.headers).order_by(messaging.outbox.c.seq)
            )
        ).all()
    return [event_type.model_validate_json(v) for v, h in rows if event_type.TYPE in h]


async def _users(db: Database, cvr: str) -> list[User]:
    async with db.transaction() as session:
        return list(await session.scalars(select(User).where(User.tenant_cvr == cvr).order_by(User.created_at)))


async def test_a_colleagues_login_shows_its_expiry_becomes_expired_and_a_new_code_brings_a_new_expiry(
    db, clock, sealer, client
) -> None:
    admin_name = await activated_group_admin(db, clock, sealer, client)
    admin = await log_in_by_email(client, db, sealer, admin_name)
    created = (await client.post("/v1/users", headers=admin, json=colleague())).json()
    first_expiry = clock.now() + CODE_TTL
    assert created["status"] == "pending"
    assert datetime.fromisoformat(created["expires_at"]) == first_expiry

    clock.advance(CODE_TTL)  # the code's last moment has come: it no longer works
    admin = await log_in_by_email(client, db, sealer, admin_name)
    listed = {u["id"]: u for u in (await client.get("/v1/users", headers=admin)).json()}
    one = (await client.get(f"/v1/users/{created['id']}", headers=admin)).json()
    for shown in (listed[created["id"]], one):
        assert shown["status"] == "expired"
        assert datetime.fromisoformat(shown["expires_at"]) == first_expiry
    assert listed[next(i for i in listed if i != created["id"])]["status"] == "active"
    assert listed[next(i for i in listed if i != created["id"])]["expires_at"] is None

    _, old_code = await login_email(db, sealer)
    resent = await client.post(f"/v1/users/{created['id']}/resend-activation", headers=admin)
    assert resent.status_code == 200, resent.text
    assert resent.json()["status"] == "pending"
    assert datetime.fromisoformat(resent.json()["expires_at"]) == clock.now() + CODE_TTL
    _, new_code = await login_email(db, sealer)
    assert new_code != old_code
    refused = await client.post(
        "/v1/activation",
        json={"username": created["username"], "activation_code": old_code, "password": "Fjordhest-Morgenkaffe-42"},
    )
    assert problem_type(refused) == "invalid-activation-code"


async def test_support_sees_an_expired_first_administrator_and_a_new_letter_brings_a_new_code_and_expiry(
    db, clock, sealer, client
) -> None:
    await _register_group(db, clock, sealer)
    await _apply(db, clock, sealer, PARENT)
    [first_letter] = await _events(db, CredentialsIssued)
    clock.advance(CODE_TTL + timedelta(minutes=1))
    staff, _ = await staff_login(db, clock, sealer, client)

    [login] = (await client.get(f"/v1/support/companies/{PARENT}/users", headers=staff)).json()
    assert (login["status"], datetime.fromisoformat(login["expires_at"])) == ("expired", first_letter.expires_at)

    resent = await client.post(f"/v1/support/users/{login['id']}/resend-letter", headers=staff)
    assert resent.status_code == 202, resent.text
    new_expiry = datetime.fromisoformat(resent.json()["expires_at"])
    assert new_expiry == clock.now() + CODE_TTL
    [login] = (await client.get(f"/v1/support/companies/{PARENT}/users", headers=staff)).json()
    assert (login["status"], datetime.fromisoformat(login["expires_at"])) == ("pending", new_expiry)
    second_letter = (await _events(db, CredentialsIssued))[-1]
    assert second_letter.expires_at == new_expiry
    codes = {
        sealer.unseal(letter.activation_code, context=CredentialsIssued.sealing_context(letter.user_id))
        for letter in (first_letter, second_letter)
    }
    assert len(codes) == 2


async def test_an_expired_first_administrator_of_the_company_is_withdrawn_when_it_applies_again(
    db, clock, sealer
) -> None:
    await _register_group(db, clock, sealer)
    first = await _apply(db, clock, sealer, PARENT)
    clock.advance(CODE_TTL + timedelta(seconds=1))
    second = await _apply(db, clock, sealer, PARENT)

    assert await _events(db, AdministratorProvisioningRejected) == []
    [withdrawn] = await _events(db, UserDeleted)
    assert (withdrawn.reason, withdrawn.application_id) == ("replaced-by-new-application", first)
    letters = await _events(db, CredentialsIssued)
    assert [letter.application_id for letter in letters] == [first, second]
    assert [u.status for u in await _users(db, PARENT)] == ["deleted", "pending"]


async def test_the_groups_first_administrator_holds_a_subsidiary_until_its_code_expires(
    db, clock, sealer
) -> None:
    """S14: a pending group login may still be activated and then holds the subsidiary; once its
    code has expired nobody can activate it, so the subsidiary gets its own administrator."""
    await _register_group(db, clock, sealer)
    await _apply(db, clock, sealer, PARENT)
    early = await _apply(db, clock, sealer, SUBSIDIARY)
    [rejected] = await _events(db, AdministratorProvisioningRejected)
    assert (rejected.application_id, rejected.group_cvr) == (early, PARENT)

    clock.advance(CODE_TTL)
    late = await _apply(db, clock, sealer, SUBSIDIARY)
    assert len(await _events(db, AdministratorProvisioningRejected)) == 1
    assert (await _events(db, CredentialsIssued))[-1].application_id == late
    assert [u.status for u in await _users(db, SUBSIDIARY)] == ["pending"]
    assert [u.status for u in await _users(db, PARENT)] == ["pending"]  # not the subsidiary's to withdraw


# --- onboarding's own check agrees ------------------------------------------------------------


async def _onboarding(url: str, clock: FrozenClock) -> tuple[Database, httpx.AsyncClient]:
    onboarding_db = Database(url)
    async with onboarding_db.transaction() as session:
        for cvr, parent, _ in GROUP:
            session.add(KnownCustomer(cvr=cvr, name=f"Firma {cvr}", parent_cvr=parent))
    app = create_onboarding_api(OnboardingSettings(database_url=url, rate_limit_per_minute=0), clock=clock)
    return onboarding_db, httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://onboarding")


def _form(cvr: str) -> dict:
    return {
        "cvr": cvr,
        "company_name": f"Firma {cvr}",
        "contact": {"name": "Ida", "email": "ida@firma.example", "mobile": "20304050"},
    }


async def test_onboarding_lets_a_subsidiary_apply_once_the_groups_pending_login_has_expired(
    onboarding_url, clock, sealer
) -> None:
    onboarding_db, onboarding = await _onboarding(onboarding_url, clock)
    onboarding_events = Projections(outbox=Outbox(onboarding_messaging, clock))
    user_id = uuid.uuid4()
    created = UserCreated(
        user_id=user_id,
        tenant_cvr=PARENT,
        username=f"{PARENT}-abcd",
        name="Ida",
        email="ida@firma.example",
        mobile="+4520304050",
        role="administrator",
        grants=[],
        functions=["user_admin"],
        application_id=uuid.uuid4(),
        created_at=clock.now(),
        activation_expires_at=clock.now() + CODE_TTL,
    )
    async with onboarding_db.transaction() as session:
        await onboarding_events.on_user_created(session, envelope_of(created, clock))
    async with onboarding:
        held = await onboarding.post("/v1/applications", json=_form(SUBSIDIARY))
        assert held.status_code == 409 and held.json()["recovery"] == "ask-group-administrator", held.text

        clock.advance(CODE_TTL)
        accepted = await onboarding.post("/v1/applications", json=_form(SUBSIDIARY))
        assert accepted.status_code == 202, accepted.text

        # Support sends the group's login a new letter: a new code, a new expiry, and it holds again.
        letter = CredentialsIssued(
            user_id=user_id,
            recipient_cvr=PARENT,
            company_name=f"Firma {PARENT}",
            username=created.username,
            activation_code=sealer.seal("CODE", context=CredentialsIssued.sealing_context(user_id)),
            expires_at=clock.now() + CODE_TTL,
            deliver_by=clock.now() + timedelta(hours=2),
        )
        async with onboarding_db.transaction() as session:
            await onboarding_events.on_credentials_issued(session, envelope_of(letter, clock))
        assert (await onboarding.post("/v1/applications", json=_form(GROUP[2][0]))).status_code == 409
    await onboarding_db.dispose()


def test_the_letter_says_an_expired_code_no_longer_stands_in_the_way_and_to_apply_again() -> None:
    for language, words in (("da", "blot ansøge igen"), ("en", "simply apply again")):
        letter = render_credentials_letter(
            language=language,
            company_name="Firma",
            cvr=PARENT,
            username=f"{PARENT}-abcd",
            activation_code="ABCD-EFGH-JKMN-PQRS-TVWX",
            expires_at=FrozenClock().now(),
            portal_url="https://selvbetjening.example",
        )
        assert words in " ".join(letter.split())
