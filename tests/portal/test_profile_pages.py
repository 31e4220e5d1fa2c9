"""Min profil and the authenticator app through the portal (S7): the user's details and second
factors, the app set up with a QR code and its first code, the recovery codes shown once,
logging in with the app and with a recovery code, and the fresh login a new app needs."""

# ruff: noqa: F811 - fixtures are imported by name
from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pyotp
import pytest
from sqlalchemy import select

from services.portal.api import create_api as create_portal_api
from services.portal.config import PortalSettings
from services.portal.models import BrowserSession
from shared.clock import FrozenClock
from shared.db import Database
from tests.integration.test_activation import PASSWORD
from tests.integration.test_administration import (
    activated_group_admin,
    colleague,
    log_in_by_email,
    login_email,
)
from tests.integration.test_login import last_code
from tests.integration.test_support import staff_login
from tests.portal.conftest import csrf_of, log_in_through_portal, post_form
from tests.support.asgi import AppTransport

AUTHENTICATOR = "/profil/godkendelsesapp"
RECOVERY_CODES = "/profil/gendannelseskoder"
SECRET = re.compile(r'<p class="secret"><strong>([A-Z2-7 ]+)</strong></p>')
CODE = re.compile(r"<li>([0-9A-Z]{5}-[0-9A-Z]{5})</li>")


@pytest.fixture
async def other_browser(
    portal_settings: PortalSettings,
    portal_transports: dict[str, httpx.AsyncBaseTransport],
    clock: FrozenClock,
) -> AsyncIterator[httpx.AsyncClient]:
    """A second browser, on a second portal process sharing the first one's database."""
    app = create_portal_api(portal_settings, clock=clock, transports=portal_transports)
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://portal") as browser:
        yield browser


def secret_on(page: httpx.Response) -> str:
    found = SECRET.search(page.text)
    assert found, page.text
    return found.group(1).replace(" ", "")


async def start_set_up(browser: httpx.AsyncClient) -> str:
    """Start the authenticator app's set-up: the secret the page shows."""
    started = await post_form(browser, f"{AUTHENTICATOR}/start", {}, form_on=AUTHENTICATOR)
    assert started.status_code == 303 and started.headers["location"] == AUTHENTICATOR, started.text
    return secret_on(await browser.get(AUTHENTICATOR))


async def set_up_authenticator(browser: httpx.AsyncClient, clock: FrozenClock) -> tuple[str, list[str]]:
    """The whole set-up through the pages: the secret and the ten recovery codes shown."""
    secret = await start_set_up(browser)
    confirmed = await post_form(browser, AUTHENTICATOR, {"code": pyotp.TOTP(secret).at(clock.now())})
    assert confirmed.status_code == 303 and confirmed.headers["location"] == RECOVERY_CODES, confirmed.text
    shown = await browser.get(RECOVERY_CODES)
    assert shown.status_code == 200
    return secret, CODE.findall(shown.text)


async def log_out(browser: httpx.AsyncClient) -> None:
    out = await post_form(browser, "/log-ud", {}, form_on="/profil")
    assert out.status_code == 303


async def log_in_with_code(browser: httpx.AsyncClient, username: str, code: str, next_path: str = "") -> str:
    """Password, then a code typed without any sent (the app's, or a recovery code): where to."""
    form_on = f"/log-ind?next={next_path}" if next_path else "/log-ind"
    first = await post_form(
        browser, "/log-ind", {"username": username, "password": PASSWORD, "next": next_path}, form_on=form_on
    )
    assert first.status_code == 303, first.text
    done = await post_form(browser, "/log-ind/kode", {"code": code})
    assert done.status_code == 303, done.text
    return done.headers["location"]


async def test_the_profile_shows_the_users_details_and_second_factors_and_remembers_the_language(
    db, clock, sealer, client, portal
) -> None:
    username = await activated_group_admin(db, clock, sealer, client)
    await log_in_through_portal(portal, db, sealer, username)
    page = await portal.get("/profil")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    for shown in ("Mette Holm", username, "mette@nordlys.example", "+4520123456", "CVR 35657193"):
        assert shown in page.text
    assert "+4520123456 · bekræftet" in page.text, "the activation from the letter confirmed it"
    assert "Godkendelsesapp på din telefon: <strong>Nej</strong>" in page.text
    assert 'action="/log-ud"' in page.text and 'aria-current="page"' in page.text

    chosen = await post_form(portal, "/profil/sprog", {"language": "en"}, form_on="/profil")
    assert chosen.status_code == 303 and portal.cookies.get("adgang-language") == "en"
    english = await portal.get(chosen.headers["location"])
    assert "<h1>My profile</h1>" in english.text and "saved with your login" in english.text
    refused = await post_form(portal, "/profil/sprog", {"language": "fr"}, form_on="/profil")
    assert refused.status_code == 422 and 'id="f-language-error"' in refused.text


async def test_support_staff_have_a_profile_too(db, clock, sealer, client, portal) -> None:
    await staff_login(db, clock, sealer, client)
    await log_in_through_portal(portal, db, sealer, "support.anna")
    page = await portal.get("/profil")
    assert page.status_code == 200 and "Anna Support" in page.text and "CVR" not in page.text


async def test_an_authenticator_app_is_set_up_through_the_pages_and_then_logs_in_as_does_a_recovery_code(
    db, clock, sealer, client, portal
) -> None:
    username = await activated_group_admin(db, clock, sealer, client)
    await log_in_through_portal(portal, db, sealer, username)
    start = await portal.get(AUTHENTICATOR)
    assert start.status_code == 200 and 'action="/profil/godkendelsesapp/start"' in start.text

    secret = await start_set_up(portal)
    scan = await portal.get(AUTHENTICATOR)
    assert '<img src="data:image/svg+xml' in scan.text and 'alt="QR-kode' in scan.text
    assert re.search(r'<p class="secret"><strong>(\w{4} ){7}\w{4}</strong>', scan.text), "in groups of four"
    assert not re.search(rf'type="hidden"[^>]*value="[^"]*{secret[:8]}', scan.text), "no secret in a form"

    confirmed = await post_form(portal, AUTHENTICATOR, {"code": pyotp.TOTP(secret).at(clock.now())})
    assert confirmed.headers["location"] == RECOVERY_CODES
    shown = await portal.get(RECOVERY_CODES)
    codes = CODE.findall(shown.text)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert "data-print" in shown.text and "Hver kode virker én gang" in shown.text
    downloaded = await post_form(
        portal, f"{RECOVERY_CODES}/hent", {"recovery_codes": codes}, form_on="/profil"  # type: ignore[dict-item]
    )
    assert downloaded.status_code == 200 and downloaded.headers["content-type"].startswith("text/plain")
    assert "attachment" in downloaded.headers["content-disposition"]
    assert all(code in downloaded.text for code in codes) and username in downloaded.text
    assert "<strong>Ja</strong>" in (await portal.get("/profil")).text

    await log_out(portal)
    clock.advance(timedelta(seconds=30))  # the next step: the confirming code's step is spent
    assert await log_in_with_code(portal, username, pyotp.TOTP(secret).at(clock.now())) == "/oversigt"
    await log_out(portal)
    assert await log_in_with_code(portal, username, codes[3].lower()) == "/oversigt"
    await log_out(portal)
    first = await post_form(portal, "/log-ind", {"username": username, "password": PASSWORD})
    assert first.status_code == 303
    again = await post_form(portal, "/log-ind/kode", {"code": codes[3]})
    assert again.status_code == 401 and 'id="f-code-error"' in again.text, "a recovery code works once"


async def test_a_wrong_confirmation_code_is_told_next_to_the_field_and_the_same_secret_stays(
    db, clock, sealer, client, portal, portal_settings
) -> None:
    username = await activated_group_admin(db, clock, sealer, client)
    await log_in_through_portal(portal, db, sealer, username)
    secret = await start_set_up(portal)
    portal_db = Database(portal_settings.db_url)
    try:
        async with portal_db.reading() as session:
            kept = " ".join(await session.scalars(select(BrowserSession.sealed)))
    finally:
        await portal_db.dispose()
    assert kept and secret not in kept, "the session keeps the secret sealed"
    wrong = await post_form(portal, AUTHENTICATOR, {"code": "000000"})
    assert wrong.status_code == 422
    assert 'id="f-code-error"' in wrong.text and "Koden passer ikke" in wrong.text
    assert secret_on(wrong) == secret
    empty = await post_form(portal, AUTHENTICATOR, {"code": " "})
    assert empty.status_code == 422 and "Skriv den sekscifrede kode" in empty.text
    assert secret_on(await portal.get(AUTHENTICATOR)) == secret
    right = await post_form(portal, AUTHENTICATOR, {"code": pyotp.TOTP(secret).at(clock.now())})
    assert right.headers["location"] == RECOVERY_CODES


async def test_the_recovery_codes_are_shown_once_only(db, clock, sealer, client, portal) -> None:
    username = await activated_group_admin(db, clock, sealer, client)
    await log_in_through_portal(portal, db, sealer, username)
    _, codes = await set_up_authenticator(portal, clock)
    assert len(codes) == 10
    reloaded, *more = await asyncio.gather(*(portal.get(RECOVERY_CODES) for _ in range(3)))
    for page in (reloaded, *more):
        assert page.status_code == 200 and CODE.findall(page.text) == []
        assert not any(code in page.text for code in codes)
        assert "bliver kun vist én gang" in page.text
    assert (await portal.get(AUTHENTICATOR)).text.count('class="secret"') == 0, "the enrolment is over"


async def test_a_login_older_than_15_minutes_is_sent_to_log_in_again_and_comes_back_to_the_set_up(
    db, clock, sealer, client, portal
) -> None:
    username = await activated_group_admin(db, clock, sealer, client)
    await log_in_through_portal(portal, db, sealer, username)
    # Past identity's 15 minutes, inside the portal's 30 idle minutes; the access token, 5
    # minutes, is refreshed by the portal on the way.
    clock.advance(timedelta(minutes=16))
    refused = await post_form(portal, f"{AUTHENTICATOR}/start", {}, form_on=AUTHENTICATOR)
    assert refused.status_code == 403
    assert "inden for de seneste 15 minutter" in refused.text
    assert 'name="current_code"' not in refused.text, "no app yet: only a fresh login will do"
    assert 'class="secret"' not in refused.text

    again = await post_form(portal, f"{AUTHENTICATOR}/log-ind-igen", {}, form_on=AUTHENTICATOR)
    assert again.status_code == 303 and again.headers["location"] == f"/log-ind?next={AUTHENTICATOR}"
    assert (await portal.get("/profil")).status_code == 303, "the old session is over"
    form = await portal.get(again.headers["location"])
    assert f'name="next" value="{AUTHENTICATOR}"' in form.text
    token = await csrf_of(portal, again.headers["location"])
    first = await portal.post(
        "/log-ind",
        data={"username": username, "password": PASSWORD, "next": AUTHENTICATOR, "csrf_token": token},
    )
    assert first.status_code == 303
    await post_form(portal, "/log-ind/send", {"method": "email"}, form_on="/log-ind/kode")
    _, code = await last_code(db, sealer)
    done = await post_form(portal, "/log-ind/kode", {"code": code})
    assert done.headers["location"] == AUTHENTICATOR
    assert await start_set_up(portal)


async def test_with_an_app_already_an_old_login_may_give_its_code_and_a_wrong_one_logs_out(
    db, clock, sealer, client, portal
) -> None:
    username = await activated_group_admin(db, clock, sealer, client)
    await log_in_through_portal(portal, db, sealer, username)
    secret, codes = await set_up_authenticator(portal, clock)
    clock.advance(timedelta(minutes=16))
    refused = await post_form(portal, f"{AUTHENTICATOR}/start", {}, form_on=AUTHENTICATOR)
    assert refused.status_code == 403 and 'name="current_code"' in refused.text
    assert "Skriv en kode fra din nuværende app" in refused.text

    current = pyotp.TOTP(secret).at(clock.now())
    started = await post_form(portal, f"{AUTHENTICATOR}/start", {"current_code": current}, form_on=AUTHENTICATOR)
    assert started.status_code == 303
    assert secret_on(await portal.get(AUTHENTICATOR)) != secret

    clock.advance(timedelta(seconds=30))
    wrong = await post_form(
        portal, f"{AUTHENTICATOR}/start", {"current_code": "123456"}, form_on=AUTHENTICATOR
    )
    assert wrong.status_code == 403 and "logget dig ud" in wrong.text
    assert f'href="/log-ind?next={AUTHENTICATOR}"' in wrong.text
    assert (await portal.get("/profil")).status_code == 303, "logged out"
    assert codes


async def test_another_users_session_neither_sees_nor_confirms_this_users_set_up(
    db, clock, sealer, client, portal, other_browser
) -> None:
    admin_username = await activated_group_admin(db, clock, sealer, client)
    admin = await log_in_by_email(client, db, sealer, admin_username)
    created = await client.post("/v1/users", headers=admin, json=colleague())
    assert created.status_code == 201, created.text
    event, activation_code = await login_email(db, sealer)
    activated = await client.post(
        "/v1/activation",
        json={"username": event.username, "activation_code": activation_code, "password": PASSWORD},
    )
    assert activated.status_code == 200, activated.text
    await log_in_through_portal(portal, db, sealer, admin_username)
    await log_in_through_portal(other_browser, db, sealer, event.username)

    # Both start at once: each gets a secret of their own.
    mine, theirs = await asyncio.gather(start_set_up(portal), start_set_up(other_browser))
    assert mine != theirs
    my_code = pyotp.TOTP(mine).at(clock.now())
    their_token = await csrf_of(other_browser, AUTHENTICATOR)
    their_pages = await asyncio.gather(
        other_browser.get(AUTHENTICATOR),
        other_browser.post(AUTHENTICATOR, data={"code": my_code, "csrf_token": their_token}),
        other_browser.get(RECOVERY_CODES),
        portal.get(AUTHENTICATOR),
    )
    for page in their_pages[:3]:
        assert mine not in page.text.replace(" ", "")
    assert their_pages[1].status_code == 422, "my code does not fit their app"
    assert secret_on(their_pages[3]) == mine

    _, codes = await set_up_authenticator_confirm(portal, mine, clock)
    assert len(codes) == 10
    theirs_now = await other_browser.get("/profil")
    assert "Godkendelsesapp på din telefon: <strong>Nej</strong>" in theirs_now.text
    assert CODE.findall((await other_browser.get(RECOVERY_CODES)).text) == []


async def set_up_authenticator_confirm(
    browser: httpx.AsyncClient, secret: str, clock: FrozenClock
) -> tuple[str, list[str]]:
    confirmed = await post_form(browser, AUTHENTICATOR, {"code": pyotp.TOTP(secret).at(clock.now())})
    assert confirmed.headers["location"] == RECOVERY_CODES, confirmed.text
    return secret, CODE.findall((await browser.get(RECOVERY_CODES)).text)
