"""Logging in and out through the portal (S7): the password, the second factor, the session
cookie that replaces the tokens, and logout."""

# ruff: noqa: F811 - fixtures are imported by name
from __future__ import annotations

import asyncio

from tests.integration.test_activation import PASSWORD
from tests.integration.test_administration import activated_group_admin, colleague, group_admin, login_email
from tests.integration.test_login import last_code
from tests.portal.conftest import csrf_of, log_in_through_portal, post_form


async def test_a_password_and_an_emailed_code_log_in_to_the_overview(
    db, clock, sealer, client, portal
) -> None:
    username = await activated_group_admin(db, clock, sealer, client)
    done = await log_in_through_portal(portal, db, sealer, username)
    assert done.headers["location"] == "/oversigt"
    overview = await portal.get("/oversigt")
    assert overview.status_code == 200
    assert "Velkommen, Mette Holm" in overview.text
    assert 'href="/brugere"' in overview.text  # the administrator's menu has user administration


async def test_a_wrong_password_is_told_in_words_and_keeps_the_username(
    db, clock, sealer, client, portal
) -> None:
    username = await activated_group_admin(db, clock, sealer, client)
    page = await post_form(portal, "/log-ind", {"username": username, "password": "not the password"})
    assert page.status_code == 401
    assert "Brugernavn eller adgangskode er forkert" in page.text
    assert f'value="{username}"' in page.text


async def test_a_wrong_code_is_told_next_to_the_field(db, clock, sealer, client, portal) -> None:
    username = await activated_group_admin(db, clock, sealer, client)
    await post_form(portal, "/log-ind", {"username": username, "password": PASSWORD})
    await post_form(portal, "/log-ind/send", {"method": "sms"}, form_on="/log-ind/kode")
    page = await portal.get("/log-ind/kode")
    assert "Vi har sendt en kode på SMS til +45" in page.text
    wrong = await post_form(portal, "/log-ind/kode", {"code": "000000"})
    assert wrong.status_code in (400, 401)
    assert 'id="f-code-error"' in wrong.text and "Koden er forkert" in wrong.text


async def test_a_page_behind_the_login_returns_to_itself_after_login(
    db, clock, sealer, client, portal
) -> None:
    username = await activated_group_admin(db, clock, sealer, client)
    away = await portal.get("/oversigt")
    assert away.status_code == 303 and away.headers["location"].startswith("/log-ind?next=/oversigt")
    token = await csrf_of(portal, away.headers["location"])
    first = await portal.post(
        "/log-ind",
        data={"username": username, "password": PASSWORD, "next": "/oversigt", "csrf_token": token},
    )
    assert first.status_code == 303
    await post_form(portal, "/log-ind/send", {"method": "email"}, form_on="/log-ind/kode")
    _, code = await last_code(db, sealer)
    done = await post_form(portal, "/log-ind/kode", {"code": code})
    assert done.headers["location"] == "/oversigt"


async def test_a_login_gets_a_new_cookie_value_and_logout_makes_the_old_one_useless(
    db, clock, sealer, client, portal
) -> None:
    username = await activated_group_admin(db, clock, sealer, client)
    await portal.get("/")
    before = portal.cookies.get("adgang-session")
    await log_in_through_portal(portal, db, sealer, username)
    after = portal.cookies.get("adgang-session")
    assert before and after and before != after
    assert (await portal.get("/oversigt")).status_code == 200
    out = await post_form(portal, "/log-ud", {}, form_on="/oversigt")
    assert out.status_code == 303
    portal.cookies.set("adgang-session", after)
    again = await portal.get("/oversigt")
    assert again.status_code == 303 and again.headers["location"].startswith("/log-ind")


async def test_forms_posted_without_the_csrf_token_or_with_another_browsers_are_refused_at_once(
    db, clock, sealer, client, portal
) -> None:
    username = await activated_group_admin(db, clock, sealer, client)
    await portal.get("/log-ind")
    foreign = "k1$" + "0" * 64
    answers = await asyncio.gather(
        *[portal.post("/log-ind", data={"username": username, "password": PASSWORD}) for _ in range(4)],
        *[
            portal.post("/log-ind", data={"username": username, "password": PASSWORD, "csrf_token": foreign})
            for _ in range(4)
        ],
    )
    assert [a.status_code for a in answers] == [403] * 8
    assert all("Formularen var for gammel" in a.text for a in answers)
    assert "adgang-session" in portal.cookies and (await portal.get("/log-ind/kode")).status_code == 303


async def test_a_session_identity_ended_goes_to_the_login_at_once_and_the_login_page_shows(
    db, clock, sealer, client, portal
) -> None:
    """Disabling a login ends its sessions at identity; the portal's next page hears it (the
    overview asks identity afresh), forgets the session, and the login page is shown, not a
    loop back to the page."""
    admin = await group_admin(db, clock, sealer, client)
    created = (await client.post("/v1/users", headers=admin, json=colleague())).json()
    event, code = await login_email(db, sealer)
    activated = await client.post(
        "/v1/activation", json={"username": event.username, "activation_code": code, "password": PASSWORD}
    )
    assert activated.status_code == 200, activated.text
    await log_in_through_portal(portal, db, sealer, event.username)
    assert (await portal.get("/oversigt")).status_code == 200
    assert (await client.post(f"/v1/users/{created['id']}/disable", headers=admin)).status_code == 200
    away = await portal.get("/oversigt")
    assert away.status_code == 303 and away.headers["location"].startswith("/log-ind?next=/oversigt")
    login = await portal.get(away.headers["location"])
    assert login.status_code == 200 and 'name="password"' in login.text


async def test_the_overview_shows_the_access_as_it_is_now_not_as_it_was_at_login(
    db, clock, sealer, client, portal
) -> None:
    admin = await group_admin(db, clock, sealer, client)
    created = (
        await client.post("/v1/users", headers=admin, json=colleague(functions=["invoices", "orders"]))
    ).json()
    event, code = await login_email(db, sealer)
    await client.post(
        "/v1/activation", json={"username": event.username, "activation_code": code, "password": PASSWORD}
    )
    await log_in_through_portal(portal, db, sealer, event.username)
    assert "Bestille og opgradere abonnementer" in (await portal.get("/oversigt")).text
    narrowed = await client.patch(
        f"/v1/users/{created['id']}", headers=admin, json={"functions": ["invoices"]}
    )
    assert narrowed.status_code == 200, narrowed.text
    page = await portal.get("/oversigt")
    if page.status_code == 303:  # narrowing ends the sessions: log in again, and see the new access
        await log_in_through_portal(portal, db, sealer, event.username)
        page = await portal.get("/oversigt")
    assert "Se fakturaer og forbrug" in page.text and "Bestille og opgradere abonnementer" not in page.text
