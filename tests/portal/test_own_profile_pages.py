"""Min profil, the user's own changes through the portal (issue 10, item 2): the language stored
with the login and used at the next login, a new password, a new mobile number or email
confirmed by the code sent to it, and the user's own sessions."""

# ruff: noqa: F811 - fixtures are imported by name
from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from services.identity.models import User
from services.portal.api import create_api as create_portal_api
from services.portal.config import PortalSettings
from shared.clock import FrozenClock
from shared.db import Database
from shared.sealing import Sealer
from tests.integration.test_activation import PASSWORD
from tests.integration.test_administration import (
    activated_group_admin,
    colleague,
    log_in_by_email,
    login_email,
)
from tests.integration.test_login import last_code
from tests.portal.conftest import log_in_through_portal, post_form
from tests.support.asgi import AppTransport

NEW_PASSWORD = "Havørn-Aftensol-Kringle-77"
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
END_BUTTON = re.compile(r'action="/profil/sessioner/([0-9a-f-]{36})/afslut"')


@pytest.fixture
async def other_browser(
    portal_settings: PortalSettings,
    portal_transports: dict[str, httpx.AsyncBaseTransport],
    clock: FrozenClock,
) -> AsyncIterator[httpx.AsyncClient]:
    """A second browser (Firefox on Linux) of the same portal."""
    app = create_portal_api(portal_settings, clock=clock, transports=portal_transports)
    async with httpx.AsyncClient(
        transport=AppTransport(app=app), base_url="http://portal", headers={"User-Agent": FIREFOX}
    ) as browser:
        yield browser


async def colleague_login(
    db: Database, clock: FrozenClock, sealer: Sealer, client: httpx.AsyncClient, **changes
) -> str:
    """A colleague made by the group's administrator and activated: their username."""
    admin = await log_in_by_email(client, db, sealer, await activated_group_admin(db, clock, sealer, client))
    created = await client.post("/v1/users", json=colleague(**changes), headers=admin)
    assert created.status_code == 201, created.text
    event, code = await login_email(db, sealer)
    activated = await client.post(
        "/v1/activation", json={"username": event.username, "activation_code": code, "password": PASSWORD}
    )
    assert activated.status_code == 200, activated.text
    return event.username


async def me_of(client: httpx.AsyncClient, db: Database, sealer: Sealer, username: str) -> dict:
    return (await client.get("/v1/me", headers=await log_in_by_email(client, db, sealer, username))).json()


async def test_the_language_chosen_on_the_profile_is_stored_with_the_login_and_used_at_the_next_login(
    db, clock, sealer, client, portal, other_browser
) -> None:
    username = await colleague_login(db, clock, sealer, client)
    await log_in_through_portal(portal, db, sealer, username)
    assert 'id="f-language-da" name="language" value="da" checked' in (await portal.get("/profil")).text

    chosen = await post_form(portal, "/profil/sprog", {"language": "en"}, form_on="/profil")

    assert chosen.status_code == 303 and portal.cookies.get("adgang-language") == "en"
    assert "saved with your login" in (await portal.get(chosen.headers["location"])).text
    assert (await me_of(client, db, sealer, username))["language"] == "en"
    done = await log_in_through_portal(other_browser, db, sealer, username)
    assert done.cookies.get("adgang-language") == "en", "the login's language, in a browser that never chose"
    code, _ = await last_code(db, sealer)
    assert code.language == "en"


async def test_a_new_password_needs_the_current_one_and_each_error_is_next_to_its_field(
    db, clock, sealer, client, portal
) -> None:
    username = await colleague_login(db, clock, sealer, client)
    await log_in_through_portal(portal, db, sealer, username)

    missing = await post_form(portal, "/profil/adgangskode", {"current_password": "", "new_password": ""})
    assert missing.status_code == 422
    assert 'id="f-current_password-error"' in missing.text and 'id="f-new_password-error"' in missing.text
    differs = await post_form(
        portal,
        "/profil/adgangskode",
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "new_password_repeat": NEW_PASSWORD + "x"},
    )
    assert differs.status_code == 422 and 'id="f-new_password_repeat-error"' in differs.text
    weak = await post_form(
        portal,
        "/profil/adgangskode",
        {"current_password": PASSWORD, "new_password": "kort", "new_password_repeat": "kort"},
    )
    assert weak.status_code == 422 and 'id="f-new_password-error"' in weak.text
    wrong = await post_form(
        portal,
        "/profil/adgangskode",
        {"current_password": "Ikke-den-rigtige-42", "new_password": NEW_PASSWORD, "new_password_repeat": NEW_PASSWORD},
    )
    assert wrong.status_code == 422 and 'id="f-current_password-error"' in wrong.text
    assert "Det er ikke din nuværende adgangskode" in wrong.text

    changed = await post_form(
        portal,
        "/profil/adgangskode",
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "new_password_repeat": NEW_PASSWORD},
    )

    assert changed.status_code == 303 and changed.headers["location"] == "/profil?gemt=adgangskode"
    assert "Din adgangskode er skiftet" in (await portal.get(changed.headers["location"])).text
    assert (await client.post("/v1/login", json={"username": username, "password": NEW_PASSWORD})).status_code == 200


async def test_a_new_mobile_takes_effect_with_the_code_sent_to_it_and_a_wrong_code_is_said_next_to_the_field(
    db, clock, sealer, client, portal
) -> None:
    username = await colleague_login(db, clock, sealer, client)
    await log_in_through_portal(portal, db, sealer, username)

    started = await post_form(portal, "/profil/mobil", {"mobile": "31 32 33 34"})

    assert started.status_code == 303 and started.headers["location"] == "/profil/mobil/kode"
    code_page = await portal.get("/profil/mobil/kode")
    assert "+45 •• •• •3 34" in code_page.text
    event, code = await last_code(db, sealer)
    assert (event.purpose, event.recipient) == ("confirm_new_mobile", "+4531323334")
    wrong = await post_form(portal, "/profil/mobil/kode", {"code": "000000" if code != "000000" else "111111"})
    assert wrong.status_code == 400 and 'id="f-code-error"' in wrong.text

    confirmed = await post_form(portal, "/profil/mobil/kode", {"code": code})

    assert confirmed.status_code == 303 and confirmed.headers["location"] == "/profil?gemt=mobil"
    profile = await portal.get(confirmed.headers["location"])
    assert "+4531323334" in profile.text and "Dit mobilnummer er skiftet" in profile.text
    assert (await portal.get("/profil/mobil/kode")).headers.get("location") == "/profil/mobil"


async def test_a_malformed_email_is_said_next_to_the_field(db, clock, sealer, client, portal) -> None:
    username = await colleague_login(db, clock, sealer, client)
    await log_in_through_portal(portal, db, sealer, username)

    refused = await post_form(portal, "/profil/email", {"email": "ikke en adresse"})

    assert refused.status_code == 422 and 'id="f-email-error"' in refused.text
    assert 'value="ikke en adresse"' in refused.text


async def test_an_old_login_is_asked_to_log_in_again_before_the_email_changes(
    db, clock, sealer, client, portal
) -> None:
    username = await colleague_login(db, clock, sealer, client)
    await log_in_through_portal(portal, db, sealer, username)
    clock.advance(timedelta(minutes=16))

    refused = await post_form(portal, "/profil/email", {"email": "ny@nordlys.example"})

    assert refused.status_code == 403 and 'action="/profil/log-ind-igen"' in refused.text
    again = await post_form(portal, "/profil/log-ind-igen", {"next": "/profil/email"}, form_on="/profil/email")
    assert again.status_code == 303 and again.headers["location"] == "/log-ind?next=/profil/email"


async def test_the_sessions_page_lists_each_browser_and_ends_another_one(
    db, clock, sealer, client, portal, other_browser
) -> None:
    username = await colleague_login(db, clock, sealer, client)
    portal.headers["User-Agent"] = CHROME
    await log_in_through_portal(other_browser, db, sealer, username)
    await log_in_through_portal(portal, db, sealer, username)

    listed = await portal.get("/profil/sessioner")

    assert listed.status_code == 200
    assert "Chrome on Windows" in listed.text and "Firefox on Linux" in listed.text
    assert listed.text.count('aria-current="true"') == 1 and "(denne browser)" in listed.text
    [other_id] = END_BUTTON.findall(listed.text)

    ended = await post_form(portal, f"/profil/sessioner/{other_id}/afslut", {}, form_on="/profil/sessioner")

    assert ended.status_code == 303 and ended.headers["location"] == "/profil/sessioner?afsluttet=1"
    assert (await other_browser.get("/profil")).status_code == 303, "the other browser must log in again"
    assert (await portal.get("/profil")).status_code == 200
    assert END_BUTTON.findall((await portal.get("/profil/sessioner")).text) == []


async def test_nobody_ends_another_users_session_through_the_portal_even_all_at_once(
    db, clock, sealer, client, portal, other_browser
) -> None:
    owner = await colleague_login(db, clock, sealer, client)
    await log_in_through_portal(portal, db, sealer, owner)
    owners_other = await log_in_by_email(client, db, sealer, owner)  # a second session of the owner's
    [owner_session] = [
        s["id"] for s in (await client.get("/v1/me/sessions", headers=owners_other)).json() if s["current"]
    ]
    intruder = await colleague_login_second(db, sealer, client)
    await log_in_through_portal(other_browser, db, sealer, intruder)
    token = (await other_browser.get("/profil/sessioner")).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', token)
    assert csrf

    answers = await asyncio.gather(
        *(
            other_browser.post(f"/profil/sessioner/{owner_session}/afslut", data={"csrf_token": csrf.group(1)})
            for _ in range(8)
        )
    )

    assert {a.headers.get("location") for a in answers} == {"/profil/sessioner?findes-ikke=1"}
    assert (await client.get("/v1/me", headers=owners_other)).status_code == 200
    assert owner_session not in (await other_browser.get("/profil/sessioner")).text


async def colleague_login_second(db: Database, sealer: Sealer, client: httpx.AsyncClient) -> str:
    """A second colleague of the same group, made by its administrator (already activated)."""
    admin_username = await _group_admin_username(db)
    admin = await log_in_by_email(client, db, sealer, admin_username)
    created = await client.post(
        "/v1/users", json=colleague(name="Ane Holm", email="ane@nordlys.example"), headers=admin
    )
    assert created.status_code == 201, created.text
    event, code = await login_email(db, sealer)
    activated = await client.post(
        "/v1/activation", json={"username": event.username, "activation_code": code, "password": PASSWORD}
    )
    assert activated.status_code == 200, activated.text
    return event.username


async def _group_admin_username(db: Database) -> str:
    async with db.transaction() as session:
        username = await session.scalar(select(User.username).where(User.role == "administrator"))
    assert username is not None
    return username
