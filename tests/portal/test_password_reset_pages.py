"""A forgotten password through the portal (S7) in front of identity's real API: the link on
the login page, the same next page for an existing and an unknown name, the emailed code, an
SMS code and the new password, and each refusal in words next to its field."""

# ruff: noqa: F811 - fixtures are imported by name
from __future__ import annotations

import asyncio
import html
import re
from urllib.parse import urlsplit

import httpx

from services.identity.config import IdentitySettings
from tests.integration.test_activation import PASSWORD
from tests.integration.test_login import active_admin
from tests.integration.test_password_reset import (  # noqa: F401 - fixtures
    NEW_PASSWORD,
    reset_codes,
    settings,
    wrong,
)
from tests.portal.conftest import csrf_of, post_form

HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
RESET_CODE_PAGE = re.compile(r"^/glemt-adgangskode/[0-9a-f-]{36}/kode$")


def field_error(page: httpx.Response, name: str) -> str | None:
    found = re.search(rf'id="f-{name}-error">([^<]*)<', page.text)
    return html.unescape(found.group(1)) if found else None


async def post_with_hidden(portal: httpx.AsyncClient, page_path: str, action: str, data: dict) -> httpx.Response:
    """Post a form of `page_path` as a browser would: with its CSRF token and hidden fields."""
    page = await portal.get(page_path)
    hidden = {name: html.unescape(value) for name, value in HIDDEN.findall(page.text)}
    return await portal.post(action, data={**hidden, **data})


async def ask(portal: httpx.AsyncClient, name: str) -> httpx.Response:
    return await post_form(portal, "/glemt-adgangskode", {"username_or_email": name})


async def test_the_login_page_links_to_the_forgotten_password_page(portal) -> None:
    login = await portal.get("/log-ind")
    assert '<a href="/glemt-adgangskode">Glemt adgangskode?</a>' in login.text
    page = await portal.get("/glemt-adgangskode")
    assert page.status_code == 200 and page.text.count("<h1>") == 1
    assert '<label for="f-username_or_email">Brugernavn eller e-mailadresse</label>' in page.text
    assert "<script>" not in page.text and "style=" not in page.text


async def test_an_existing_and_an_unknown_name_lead_to_the_same_page(db, clock, sealer, client, portal) -> None:
    username = await active_admin(db, clock, sealer, client)
    known, unknown = await ask(portal, username), await ask(portal, "ukendt-bruger-9")
    assert known.status_code == unknown.status_code == 303
    assert RESET_CODE_PAGE.match(known.headers["location"]) and RESET_CODE_PAGE.match(unknown.headers["location"])
    pages = [await portal.get(r.headers["location"]) for r in (known, unknown)]
    strip = re.compile(r"[0-9a-f-]{36}|name=\"csrf_token\" value=\"[^\"]+\"")
    assert strip.sub("", pages[0].text) == strip.sub("", pages[1].text)
    assert len(await reset_codes(db, sealer)) == 1


async def test_the_whole_reset_through_the_portal_then_login_with_the_new_password(
    db, clock, sealer, client, portal
) -> None:
    username = await active_admin(db, clock, sealer, client)
    code_page = (await ask(portal, username)).headers["location"]
    (_, code), = await reset_codes(db, sealer)
    confirmed = await post_form(portal, code_page, {"code": code})
    assert confirmed.status_code == 303, confirmed.text
    password_page = confirmed.headers["location"]
    page = await portal.get(password_page)
    assert f"Login: {username}" in page.text and "+45 •• •• •0 50" in page.text
    reset_path = urlsplit(password_page).path.rsplit("/", 1)[0]

    sent = await post_with_hidden(portal, password_page, f"{reset_path}/sms", {})
    assert sent.status_code == 303, sent.text
    after_sms = await portal.get(sent.headers["location"])
    assert "Koden er sendt pr. SMS til +45 •• •• •0 50." in after_sms.text
    (_, sms_code), = await reset_codes(db, sealer, channel="sms")

    done = await post_with_hidden(
        portal,
        sent.headers["location"],
        f"{reset_path}/ny-adgangskode",
        {"code": sms_code, "password": NEW_PASSWORD, "password_again": NEW_PASSWORD},
    )
    assert done.status_code == 303, done.text
    final = await portal.get(done.headers["location"])
    assert f"Adgangskoden til {username} er skiftet." in final.text
    assert f'href="/log-ind?username={username}"' in final.text
    login = await post_form(portal, "/log-ind", {"username": username, "password": NEW_PASSWORD})
    assert login.status_code == 303 and login.headers["location"] == "/log-ind/kode"
    old = await post_form(portal, "/log-ind", {"username": username, "password": PASSWORD})
    assert old.status_code == 401


async def test_a_missing_name_and_a_wrong_code_are_told_next_to_the_field(db, clock, sealer, client, portal) -> None:
    empty = await ask(portal, "  ")
    assert empty.status_code == 422
    assert field_error(empty, "username_or_email") == "Skriv dit brugernavn eller din e-mailadresse."
    username = await active_admin(db, clock, sealer, client)
    code_page = (await ask(portal, username)).headers["location"]
    (_, code), = await reset_codes(db, sealer)
    refused = await post_form(portal, code_page, {"code": wrong(code)})
    assert refused.status_code == 400
    assert field_error(refused, "code").startswith("Koden er forkert eller udløbet.")
    assert 'aria-invalid="true"' in refused.text
    shape = await post_form(portal, code_page, {"code": "12ab"})
    assert shape.status_code == 422 and field_error(shape, "code") == "Koden fra e-mailen har 6 cifre."


async def test_a_weak_or_mistyped_new_password_and_a_wrong_second_factor_are_told_next_to_their_fields(
    db, clock, sealer, client, portal
) -> None:
    username = await active_admin(db, clock, sealer, client)
    code_page = (await ask(portal, username)).headers["location"]
    (_, code), = await reset_codes(db, sealer)
    password_page = (await post_form(portal, code_page, {"code": code})).headers["location"]
    action = urlsplit(password_page).path
    differ = await post_with_hidden(
        portal, password_page, action, {"code": "123456", "password": NEW_PASSWORD, "password_again": "x"}
    )
    assert differ.status_code == 422 and field_error(differ, "password_again").startswith("De to adgangskoder")
    weak = await post_with_hidden(
        portal, password_page, action, {"code": "123456", "password": "kort", "password_again": "kort"}
    )
    assert weak.status_code == 422 and field_error(weak, "password").startswith("Adgangskoden opfylder ikke")
    wrong_code = await post_with_hidden(
        portal, password_page, action, {"code": "123456", "password": NEW_PASSWORD, "password_again": NEW_PASSWORD}
    )
    assert wrong_code.status_code == 400 and field_error(wrong_code, "code").startswith("Koden er forkert")
    assert f"Login: {username}" in wrong_code.text  # the page keeps what identity said


async def test_an_expired_code_is_told_with_a_way_to_start_again(db, clock, sealer, client, portal, settings) -> None:
    username = await active_admin(db, clock, sealer, client)
    code_page = (await ask(portal, username)).headers["location"]
    (_, code), = await reset_codes(db, sealer)
    clock.advance(settings.password_reset_code_ttl)
    late = await post_form(portal, code_page, {"code": code})
    assert late.status_code == 410
    assert "Start forfra." in html.unescape(late.text) and 'href="/glemt-adgangskode"' in late.text


async def test_the_per_address_limit_is_told_with_the_time_to_try_again(
    database_url, clock, sealer, portal_settings, monkeypatch, settings
) -> None:
    from services.identity.api import create_api as create_identity_api
    from services.portal.api import create_api as create_portal_api
    from tests.support.asgi import AppTransport

    monkeypatch.setattr(IdentitySettings, "sealer", lambda self: sealer)
    identity = AppTransport(
        app=create_identity_api(settings.model_copy(update={"password_reset_rate_limit_per_minute": 3}), clock=clock)
    )
    app = create_portal_api(portal_settings, clock=clock, transports={"identity": identity})
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://portal") as browser:
        token = await csrf_of(browser, "/glemt-adgangskode")
        answers = await asyncio.gather(
            *(
                browser.post("/glemt-adgangskode", data={"username_or_email": f"bruger-{n}", "csrf_token": token})
                for n in range(5)
            )
        )
    assert sorted(a.status_code for a in answers) == [303, 303, 303, 429, 429]
    refused = next(a for a in answers if a.status_code == 429)
    assert "Der er kommet for mange forsøg. Prøv igen kl." in refused.text


async def test_a_reset_form_without_the_csrf_token_is_refused(portal) -> None:
    await portal.get("/glemt-adgangskode")
    refused = await portal.post("/glemt-adgangskode", data={"username_or_email": "x"})
    assert refused.status_code == 403
