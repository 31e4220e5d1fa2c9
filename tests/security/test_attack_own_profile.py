"""Attacks on a user's own profile (issue 10, item 2) by someone holding an access token copied
from the user's browser: no password, no phone. A change of email or mobile the thief started
must not outlive the moment the user takes the login back (a new password, a reset second
factor), whichever token later sends the code.

SQLite runs one write transaction at a time; the races need PostgreSQL
(`ADGANG_TEST_DATABASE=postgres`)."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio

import httpx

from services.identity.models import User
from shared.clock import FrozenClock
from shared.db import Database
from shared.sealing import Sealer
from tests.integration.test_activation import PASSWORD
from tests.integration.test_administration import activate_and_log_in, colleague, group_admin, login_email
from tests.integration.test_login import (  # noqa: F401 - fixtures
    active_admin,
    client,
    database_url,
    last_code,
    settings,
)
from tests.integration.test_own_profile import NEW_PASSWORD, sign_in
from tests.integration.test_password_reset import reset_by_email_code, reset_codes

AT_ONCE = 8
THIEF_EMAIL = "tyv@andet.example"
THIEF_MOBILE = "+4531323334"


async def colleague_and_admin(
    db: Database, clock: FrozenClock, sealer: Sealer, client: httpx.AsyncClient
) -> tuple[str, str, dict]:
    """An activated colleague and the group administrator who created them: (user id, username,
    the administrator's bearer headers)."""
    admin = await group_admin(db, clock, sealer, client)
    created = await client.post("/v1/users", json=colleague(), headers=admin)
    assert created.status_code == 201, created.text
    event, code = await login_email(db, sealer)
    first_login = await activate_and_log_in(client, db, sealer, event.username, code)
    assert (await client.post("/v1/logout", headers=first_login)).status_code == 204
    return created.json()["id"], event.username, admin


async def thief_starts_a_change(
    client: httpx.AsyncClient, db: Database, sealer: Sealer, copied: dict, field: str
) -> tuple[str, str]:
    """With the copied token of a fresh session, a change to the thief's own address: (change
    id, the code the thief receives)."""
    path, body = (
        ("/v1/me/email", {"email": THIEF_EMAIL})
        if field == "email"
        else ("/v1/me/mobile", {"mobile": THIEF_MOBILE})
    )
    started = await client.post(path, json=body, headers=copied)
    assert started.status_code == 202, started.text
    _, code = await last_code(db, sealer)
    return started.json()["change_id"], code


async def confirm_at_once(
    client: httpx.AsyncClient, change_id: str, code: str, headers: dict
) -> list[httpx.Response]:
    return await asyncio.gather(
        *(
            client.post(f"/v1/me/contact-changes/{change_id}/confirm", json={"code": code}, headers=headers)
            for _ in range(AT_ONCE)
        )
    )


async def test_a_change_of_email_started_with_a_copied_token_dies_when_the_user_changes_the_password(
    db, clock, sealer, client
) -> None:
    _, username = (await colleague_and_admin(db, clock, sealer, client))[:2]
    # The user's browser; the thief copied its access token.
    browser = (await sign_in(client, db, sealer, username))["headers"]
    change_id, code = await thief_starts_a_change(client, db, sealer, browser, "email")

    # The user notices and takes the login back: a new password (this session goes on).
    changed = await client.post(
        "/v1/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}, headers=browser
    )
    assert changed.status_code == 200, changed.text

    answers = await confirm_at_once(client, change_id, code, browser)

    assert {a.status_code for a in answers} == {410}, [a.text for a in answers]
    assert all(a.json()["type"].endswith("/contact-change-restart-required") for a in answers)
    assert "password" in answers[0].json()["detail"]
    assert (await client.get("/v1/me", headers=browser)).json()["email"] == "jonas@nordlys.example"


async def test_a_change_of_mobile_started_with_a_copied_token_dies_when_the_second_factor_is_reset(
    db, clock, sealer, client
) -> None:
    user_id, username, admin = await colleague_and_admin(db, clock, sealer, client)
    browser = (await sign_in(client, db, sealer, username))["headers"]
    change_id, code = await thief_starts_a_change(client, db, sealer, browser, "mobile")

    # The user tells the administrator, who resets the second factor: every session ends.
    reset = await client.post(f"/v1/users/{user_id}/reset-2fa", headers=admin)
    assert reset.status_code == 200, reset.text
    # Any later session's token will do for the code, as confirming asks for no recent login:
    # here the user's own next login, which the thief may copy as well.
    later = (await sign_in(client, db, sealer, username))["headers"]

    answers = await confirm_at_once(client, change_id, code, later)

    assert {a.status_code for a in answers} == {410}, [a.text for a in answers]
    assert "second factor" in answers[0].json()["detail"]
    me = (await client.get("/v1/me", headers=later)).json()
    assert me["mobile"] != THIEF_MOBILE


async def test_a_change_of_email_started_with_a_copied_token_dies_when_the_password_is_reset(
    db, clock, sealer, client
) -> None:
    username = await active_admin(db, clock, sealer, client)
    browser = (await sign_in(client, db, sealer, username))["headers"]
    change_id, code = await thief_starts_a_change(client, db, sealer, browser, "email")

    # The user resets the password (emailed code, then an SMS code): every session ends.
    reset_id = await reset_by_email_code(client, db, sealer, username)
    assert (await client.post(f"/v1/password-reset/{reset_id}/send")).status_code == 202
    _, sms_code = (await reset_codes(db, sealer, channel="sms"))[-1]
    done = await client.post(
        f"/v1/password-reset/{reset_id}/complete", json={"code": sms_code, "password": NEW_PASSWORD}
    )
    assert done.status_code == 200, done.text
    later = (await sign_in(client, db, sealer, username, password=NEW_PASSWORD))["headers"]

    answers = await confirm_at_once(client, change_id, code, later)

    assert {a.status_code for a in answers} == {410}, [a.text for a in answers]
    assert (await client.get("/v1/me", headers=later)).json()["email"] == "ida@solsikke.example"


async def test_a_login_code_texted_to_the_old_mobile_neither_logs_in_nor_confirms_the_number_set_meanwhile(
    db, clock, sealer, client
) -> None:
    user_id, username, admin = await colleague_and_admin(db, clock, sealer, client)
    challenge = await client.post("/v1/login", json={"username": username, "password": PASSWORD})
    challenge_id = challenge.json()["challenge_id"]
    assert (await client.post(f"/v1/login/{challenge_id}/send", json={"method": "sms"})).status_code == 202
    texted, code = await last_code(db, sealer)
    assert texted.recipient == "+4520304050"

    # The administrator sets another number (the old phone is lost, or the number was wrong).
    changed = await client.patch(f"/v1/users/{user_id}", json={"mobile": THIEF_MOBILE}, headers=admin)
    assert changed.status_code == 200, changed.text

    answers = await asyncio.gather(
        *(client.post(f"/v1/login/{challenge_id}/verify", json={"code": code}) for _ in range(AT_ONCE))
    )

    assert 200 not in {a.status_code for a in answers}, [a.text for a in answers]
    async with db.transaction() as session:
        user = await session.get(User, user_id)
        assert user is not None and user.mobile == THIEF_MOBILE
        assert user.mobile_confirmed_at is None, "a code texted to the old number confirmed the new one"


async def test_a_login_code_emailed_to_the_old_address_no_longer_logs_in_after_the_own_change_of_email(
    db, clock, sealer, client
) -> None:
    _, username = (await colleague_and_admin(db, clock, sealer, client))[:2]
    browser = (await sign_in(client, db, sealer, username))["headers"]
    started = await client.post("/v1/me/email", json={"email": "jonas@ny.example"}, headers=browser)
    change_id = started.json()["change_id"]
    _, change_code = await last_code(db, sealer)
    # Meanwhile a login has a code emailed to the address the login still has.
    challenge = await client.post("/v1/login", json={"username": username, "password": PASSWORD})
    challenge_id = challenge.json()["challenge_id"]
    assert (await client.post(f"/v1/login/{challenge_id}/send", json={"method": "email"})).status_code == 202
    emailed, code = await last_code(db, sealer)
    assert emailed.recipient == "jonas@nordlys.example"

    confirmed = await client.post(
        f"/v1/me/contact-changes/{change_id}/confirm", json={"code": change_code}, headers=browser
    )
    assert confirmed.status_code == 200, confirmed.text
    answers = await asyncio.gather(
        *(client.post(f"/v1/login/{challenge_id}/verify", json={"code": code}) for _ in range(AT_ONCE))
    )

    assert 200 not in {a.status_code for a in answers}, [a.text for a in answers]
