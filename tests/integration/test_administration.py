"""Delegated administration (S4, S5, S12, S14): an administrator creates logins for colleagues,
granting at most what they hold; the last administrator stays; changes end sessions at once."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from services.identity.models import LoginSession, messaging
from services.identity.provisioning import Provisioning
from shared.clock import FrozenClock
from shared.db import Database
from shared.events import (
    AccountRef,
    ApplicationSubmitted,
    Contact,
    CredentialsIssued,
    CustomerRegistered,
    LoginCreated,
)
from shared.messaging import Outbox
from shared.sealing import Sealer
from tests.integration.test_activation import PASSWORD, activate_from_letter, envelope_of
from tests.integration.test_login import client, database_url, last_code, settings  # noqa: F401 - fixtures

GROUP = [
    ("35657193", None, ["10000011", "10000012"]),
    ("37826111", "35657193", ["10000021", "10000022", "10000023"]),
    ("41204559", "35657193", ["10000031", "10000032"]),
]
OTHER_GROUP = ("22109340", None, ["10000051"])


async def group_admin(db: Database, clock: FrozenClock, sealer: Sealer, client: httpx.AsyncClient) -> dict:
    """The parent's administrator, activated and logged in: returns bearer headers."""
    username = await activated_group_admin(db, clock, sealer, client)
    return await log_in_by_email(client, db, sealer, username)


async def activated_group_admin(db: Database, clock: FrozenClock, sealer: Sealer, client: httpx.AsyncClient) -> str:
    """The parent's administrator of the group, activated from the letter: returns the username."""
    provisioning = Provisioning(
        outbox=Outbox(messaging, clock), clock=clock, sealer=sealer, code_ttl=timedelta(days=7)
    )
    async with db.transaction() as session:
        for cvr, parent, accounts in [*GROUP, OTHER_GROUP]:
            event = CustomerRegistered(
                cvr=cvr,
                name=f"Firma {cvr}",
                parent_cvr=parent,
                accounts=[AccountRef(account_number=a, name=a) for a in accounts],
                registered_at=clock.now(),
            )
            await provisioning.on_customer_registered(session, envelope_of(event, clock))
        application = ApplicationSubmitted(
            application_id=uuid.uuid4(),
            cvr="35657193",
            company_name="x",
            contact=Contact(name="Mette Holm", email="mette@nordlys.example", mobile="+4520123456"),
            submitted_at=clock.now(),
            deliver_by=clock.now() + timedelta(hours=2),
        )
        await provisioning.on_application_submitted(session, envelope_of(application, clock))
        value = (
            (
                await session.execute(
                    select(messaging.outbox.c.value)
                    .where(messaging.outbox.c.topic == "identity.credentials")
                    .order_by(messaging.outbox.c.seq.desc())
                )
            )
            .scalars()
            .first()
        )
    issued = CredentialsIssued.model_validate_json(value)
    code = sealer.unseal(issued.activation_code, context=CredentialsIssued.sealing_context(issued.user_id))
    activated = await activate_from_letter(
        client, db, sealer, issued.username, code, email="mette@nordlys.example", mobile="+4520123456"
    )
    assert activated.status_code == 200, activated.text
    return issued.username


async def activate_and_log_in(
    client: httpx.AsyncClient, db: Database, sealer: Sealer, username: str, code: str
) -> dict:
    """A colleague's or support login: activated in one step with its code, then logged in."""
    activated = await client.post(
        "/v1/activation", json={"username": username, "activation_code": code, "password": PASSWORD}
    )
    assert activated.status_code == 200, activated.text
    return await log_in_by_email(client, db, sealer, username)


async def log_in_by_email(client: httpx.AsyncClient, db: Database, sealer: Sealer, username: str) -> dict:
    challenge = (await client.post("/v1/login", json={"username": username, "password": PASSWORD})).json()
    await client.post(f"/v1/login/{challenge['challenge_id']}/send", json={"method": "email"})
    _, otp = await last_code(db, sealer)
    tokens = (await client.post(f"/v1/login/{challenge['challenge_id']}/verify", json={"code": otp})).json()
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def colleague(**changes) -> dict:
    body = {
        "name": "Jonas Berg",
        "email": "jonas@nordlys.example",
        "mobile": "+45 20 30 40 50",
        "grants": [{"cvr": "37826111", "accounts": ["10000021", "10000022"]}],
        "functions": ["invoices"],
    }
    body.update(changes)
    return body


async def login_email(db: Database, sealer: Sealer) -> tuple[LoginCreated, str]:
    async with db.transaction() as session:
        value = (
            (
                await session.execute(
                    select(messaging.outbox.c.value)
                    .where(messaging.outbox.c.headers.contains(LoginCreated.TYPE))
                    .order_by(messaging.outbox.c.seq.desc())
                )
            )
            .scalars()
            .first()
        )
    event = LoginCreated.model_validate_json(value)
    return event, sealer.unseal(event.activation_code, context=LoginCreated.sealing_context(event.user_id))


async def test_the_wizard_lists_the_groups_companies_and_accounts(db, clock, sealer, client) -> None:
    admin = await group_admin(db, clock, sealer, client)
    companies = (await client.get("/v1/companies", headers=admin)).json()
    assert [c["cvr"] for c in companies] == ["35657193", "37826111", "41204559"]
    assert next(c for c in companies if c["cvr"] == "37826111")["accounts"] == [
        "10000021",
        "10000022",
        "10000023",
    ]


async def test_a_colleague_limited_to_one_company_two_accounts_and_invoices_gets_exactly_that(
    db, clock, sealer, client
) -> None:
    admin = await group_admin(db, clock, sealer, client)
    created = await client.post("/v1/users", headers=admin, json=colleague())
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["status"] == "pending" and user["mobile"] == "+4520304050"
    assert created.headers["location"] == f"/v1/users/{user['id']}"

    email, code = await login_email(db, sealer)  # S6: the colleague is emailed their login
    assert email.recipient_email == "jonas@nordlys.example" and email.username == user["username"]
    assert code not in email.model_dump_json()

    bearer = await activate_and_log_in(client, db, sealer, email.username, code)
    me = (await client.get("/v1/me", headers=bearer)).json()
    assert me["grants"] == [{"cvr": "37826111", "accounts": ["10000021", "10000022"]}]
    assert me["functions"] == ["invoices"]
    assert (await client.get("/v1/users", headers=bearer)).status_code == 403
    assert (
        await client.post("/v1/users", headers=bearer, json=colleague(email="x@nordlys.example"))
    ).status_code == 403


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"grants": [{"cvr": "22109340", "accounts": "all"}]}, "grants[0].cvr"),
        ({"grants": [{"cvr": "37826111", "accounts": ["10000099"]}]}, "grants[0].accounts"),
        ({"grants": []}, "grants"),
        ({"mobile": "+46701234567"}, "mobile"),
        ({"email": "not an email"}, "email"),
        ({"functions": ["invoices", "bogus"]}, "functions.1"),
    ],
)
async def test_granting_what_the_admin_does_not_hold_is_refused_naming_the_field(
    db, clock, sealer, client, changes, field
) -> None:
    admin = await group_admin(db, clock, sealer, client)
    response = await client.post("/v1/users", headers=admin, json=colleague(**changes))
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]


async def test_a_limited_admin_cannot_grant_all_accounts_nor_functions_they_lack(
    db, clock, sealer, client
) -> None:
    admin = await group_admin(db, clock, sealer, client)
    created = (
        await client.post("/v1/users", headers=admin, json=colleague(functions=["invoices", "user_admin"]))
    ).json()
    email, code = await login_email(db, sealer)
    sub_admin = await activate_and_log_in(client, db, sealer, email.username, code)

    all_accounts = await client.post(
        "/v1/users",
        headers=sub_admin,
        json=colleague(email="a@nordlys.example", grants=[{"cvr": "37826111", "accounts": "all"}]),
    )
    assert (
        all_accounts.status_code == 422 and all_accounts.json()["errors"][0]["field"] == "grants[0].accounts"
    )
    more = await client.post(
        "/v1/users", headers=sub_admin, json=colleague(email="b@nordlys.example", functions=["orders"])
    )
    assert more.status_code == 422 and more.json()["errors"][0]["field"] == "functions"
    assert created["functions"] == ["invoices", "user_admin"]


async def test_the_last_administrator_cannot_be_removed_or_disabled(db, clock, sealer, client) -> None:
    admin = await group_admin(db, clock, sealer, client)
    me = (await client.get("/v1/me", headers=admin)).json()
    for action in ("disable", "delete"):
        if action == "delete":
            response = await client.delete(f"/v1/users/{me['user_id']}", headers=admin)
        else:
            response = await client.post(f"/v1/users/{me['user_id']}/disable", headers=admin)
        assert response.status_code == 409, response.text
        assert response.json()["type"].endswith("/last-administrator")


async def test_disabling_a_user_ends_their_sessions_at_once(db, clock, sealer, client) -> None:
    admin = await group_admin(db, clock, sealer, client)
    await client.post("/v1/users", headers=admin, json=colleague())
    email, code = await login_email(db, sealer)
    bearer = await activate_and_log_in(client, db, sealer, email.username, code)
    assert (await client.get("/v1/me", headers=bearer)).status_code == 200
    refresh = await fresh_refresh_token(client, db, sealer, email.username)

    disabled = await client.post(f"/v1/users/{email.user_id}/disable", headers=admin)
    assert disabled.status_code == 200 and disabled.json()["status"] == "disabled"
    assert (await client.get("/v1/me", headers=bearer)).status_code == 401
    assert (await client.post("/v1/token/refresh", json={"refresh_token": refresh})).status_code == 401
    async with db.transaction() as session:
        ended = (
            await session.scalars(select(LoginSession).where(LoginSession.user_id == str(email.user_id)))
        ).all()
        types = (await session.execute(select(messaging.outbox.c.headers))).scalars().all()
    assert ended and all(s.end_reason == "disabled" for s in ended)
    assert any("UserDisabled" in h for h in types)
    relogin = await client.post("/v1/login", json={"username": email.username, "password": PASSWORD})
    assert relogin.status_code == 403 and relogin.json()["type"].endswith("/login-disabled")

    enabled = await client.post(f"/v1/users/{email.user_id}/enable", headers=admin)
    assert enabled.status_code == 200 and enabled.json()["status"] == "active"


async def test_users_of_another_company_are_not_found(db, clock, sealer, client) -> None:
    admin = await group_admin(db, clock, sealer, client)
    for path in (f"/v1/users/{uuid.uuid4()}", f"/v1/users/{uuid.uuid4()}/disable"):
        method = client.get if path.count("/") == 3 else client.post
        assert (await method(path, headers=admin)).status_code == 404


async def test_changing_a_users_access_ends_their_sessions_and_the_last_admin_cannot_be_demoted(
    db, clock, sealer, client
) -> None:
    admin = await group_admin(db, clock, sealer, client)
    await client.post("/v1/users", headers=admin, json=colleague())
    email, code = await login_email(db, sealer)
    bearer = await activate_and_log_in(client, db, sealer, email.username, code)

    changed = await client.patch(
        f"/v1/users/{email.user_id}",
        headers=admin,
        json={"grants": [{"cvr": "41204559", "accounts": "all"}], "functions": ["invoices", "orders"]},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["grants"] == [{"cvr": "41204559", "accounts": "all"}]
    assert (await client.get("/v1/me", headers=bearer)).status_code == 401  # the old grants' token is dead
    again = await activate_and_log_in_again(client, db, sealer, email.username)
    assert (await client.get("/v1/me", headers=again)).json()["functions"] == ["invoices", "orders"]

    me = (await client.get("/v1/me", headers=admin)).json()
    demote = await client.patch(f"/v1/users/{me['user_id']}", headers=admin, json={"functions": ["invoices"]})
    assert demote.status_code == 409 and demote.json()["type"].endswith("/last-administrator")
    bad = await client.patch(f"/v1/users/{email.user_id}", headers=admin, json={"mobile": "12"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "mobile"


async def activate_and_log_in_again(
    client: httpx.AsyncClient, db: Database, sealer: Sealer, username: str
) -> dict:
    challenge = (await client.post("/v1/login", json={"username": username, "password": PASSWORD})).json()
    await client.post(f"/v1/login/{challenge['challenge_id']}/send", json={"method": "email"})
    _, otp = await last_code(db, sealer)
    tokens = (await client.post(f"/v1/login/{challenge['challenge_id']}/verify", json={"code": otp})).json()
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def test_a_new_activation_code_replaces_the_old_one(db, clock, sealer, client) -> None:
    admin = await group_admin(db, clock, sealer, client)
    created = (await client.post("/v1/users", headers=admin, json=colleague())).json()
    first, old_code = await login_email(db, sealer)
    resent = await client.post(f"/v1/users/{created['id']}/resend-activation", headers=admin)
    assert resent.status_code == 200, resent.text
    second, new_code = await login_email(db, sealer)
    assert new_code != old_code and second.username == first.username
    old = await client.post(
        "/v1/activation", json={"username": first.username, "activation_code": old_code, "password": PASSWORD}
    )
    assert old.status_code == 400
    await activate_and_log_in(client, db, sealer, first.username, new_code)
    assert (
        await client.post(f"/v1/users/{created['id']}/resend-activation", headers=admin)
    ).status_code == 409


async def test_resetting_the_second_factor_removes_the_authenticator(db, clock, sealer, client) -> None:
    from tests.integration.test_login import enrol_totp

    admin = await group_admin(db, clock, sealer, client)
    await client.post("/v1/users", headers=admin, json=colleague())
    email, code = await login_email(db, sealer)
    bearer = await activate_and_log_in(client, db, sealer, email.username, code)
    await enrol_totp(client, bearer, clock)
    challenge = (
        await client.post("/v1/login", json={"username": email.username, "password": PASSWORD})
    ).json()
    assert "totp" in challenge["methods"]

    assert (await client.post(f"/v1/users/{email.user_id}/reset-2fa", headers=admin)).status_code == 200
    assert (await client.get("/v1/me", headers=bearer)).status_code == 401
    challenge = (
        await client.post("/v1/login", json={"username": email.username, "password": PASSWORD})
    ).json()
    assert "totp" not in challenge["methods"]


async def fresh_refresh_token(client: httpx.AsyncClient, db: Database, sealer: Sealer, username: str) -> str:
    challenge = (await client.post("/v1/login", json={"username": username, "password": PASSWORD})).json()
    await client.post(f"/v1/login/{challenge['challenge_id']}/send", json={"method": "email"})
    _, otp = await last_code(db, sealer)
    tokens = (await client.post(f"/v1/login/{challenge['challenge_id']}/verify", json={"code": otp})).json()
    return str(tokens["refresh_token"])
