"""Attacks on the portal, the self-service website (docs/portal.md): as an outsider, as a
customer's administrator, as a colleague, as another company's administrator and as support
staff. Each weakness found has a test here that failed before its fix; the attacks the portal
already refused are kept where they are cheap, so that they stay refused."""

# ruff: noqa: F811 - fixtures are imported by name
from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from services.portal.api import create_api as create_portal_api
from services.portal.config import PortalSettings
from services.portal.models import BrowserSession
from shared.clock import FrozenClock
from shared.db import Database
from tests.integration.test_activation import PASSWORD
from tests.integration.test_administration import activated_group_admin
from tests.integration.test_login import database_url  # noqa: F401 - fixtures
from tests.portal.conftest import (  # noqa: F401 - fixtures
    client,
    csrf_of,
    identity_transport,
    log_in_through_portal,
    portal_settings,
)
from tests.security.test_attack_lockout import settings, unlock_codes  # noqa: F401 - settings: a fixture
from tests.support.asgi import AppTransport

WRONG = "not the password, a guess"
NOTICE = re.compile(r'<div class="notice [a-z]+" role="[a-z]+"><p>([^<]*)</p>')

Browser = httpx.AsyncClient


class Identity(httpx.AsyncBaseTransport):
    """Identity's API as the portal reaches it, with what the portal sent it on record; told
    to, it answers `GET /v1/me` with something that is not JSON (a page then fails: 500)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.forwarded_for: list[str | None] = []
        self.broken = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.forwarded_for.append(request.headers.get("x-forwarded-for"))
        if self.broken and request.url.path == "/v1/me":
            return httpx.Response(200, content=b"<html>not what the portal asked for</html>")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def identity(identity_transport: AppTransport) -> Identity:
    return Identity(identity_transport)


@pytest.fixture
def portal_transports(identity: Identity) -> dict[str, httpx.AsyncBaseTransport]:
    return {"identity": identity}


@pytest.fixture
async def open_browser(
    portal_settings: PortalSettings,
    portal_transports: dict[str, httpx.AsyncBaseTransport],
    clock: FrozenClock,
) -> AsyncIterator[Callable[[], Awaitable[Browser]]]:
    """A browser of its own (its own cookies) of one portal: a person, a stranger, a colleague."""
    app = create_portal_api(portal_settings, clock=clock, transports=portal_transports)
    opened: list[Browser] = []

    async def open_one() -> Browser:
        # Errors answered as the server would (a 500 page), not raised into the test.
        transport = AppTransport(app=app, raise_app_exceptions=False)
        opened.append(httpx.AsyncClient(transport=transport, base_url="http://portal"))
        return opened[-1]

    yield open_one
    for browser in opened:
        await browser.aclose()


def notices(page: httpx.Response) -> list[str]:
    return NOTICE.findall(page.text)


# --- a stranger must not keep a user out of the website -----------------------------------


async def test_a_stranger_who_locks_a_username_through_the_portal_cannot_keep_its_user_out_of_a_new_browser(
    db, clock, sealer, client, open_browser
) -> None:
    """The lock on a username stops strangers, and identity emails its user an unlock code that
    passes it. The portal offered that email but had no place to type its code, so anyone who
    knew a username kept its user out of the website from every new browser."""
    username = await activated_group_admin(db, clock, sealer, client)
    stranger, own = await open_browser(), await open_browser()
    token = await csrf_of(stranger, "/log-ind")
    guess = {"username": username, "password": WRONG, "csrf_token": token}
    for _round in range(2):  # wrong passwords, several at once, as the progressive delay allows
        guesses = await asyncio.gather(*(stranger.post("/log-ind", data=guess) for _ in range(4)))
        assert {g.status_code for g in guesses} <= {401, 429}
        clock.advance(timedelta(seconds=61))

    refused = await own.post(
        "/log-ind", data={"username": username, "password": PASSWORD, "csrf_token": await csrf_of(own, "/log-ind")}
    )
    assert refused.status_code == 429 and 'action="/log-ind/laas-op"' in refused.text
    # The stranger asks for unlock emails too, at once: one goes, to the user's own address.
    tokens = {browser: await csrf_of(browser, "/log-ind") for browser in (stranger, own)}
    asked = await asyncio.gather(
        *(
            browser.post("/log-ind/laas-op", data={"username": username, "csrf_token": tokens[browser]})
            for browser in (stranger, stranger, own)
        )
    )
    assert {a.status_code for a in asked} == {200} and len({tuple(notices(a)) for a in asked}) == 1
    assert 'name="device_token"' in asked[-1].text, "the page has no field for the emailed code"
    [code] = await unlock_codes(db, sealer)

    # The user types the code from the email with the password, and logs in from this browser.
    await log_in_through_portal(own, db, sealer, username, unlock_code=code)
    assert (await own.get("/oversigt")).status_code == 200
    # The stranger renews the lock; this browser is remembered and not stopped by it.
    clock.advance(timedelta(minutes=16))
    for _round in range(2):
        await asyncio.gather(*(stranger.post("/log-ind", data=guess) for _ in range(4)))
        clock.advance(timedelta(seconds=61))
    assert (await stranger.post("/log-ind", data=guess)).status_code == 429
    await own.post("/log-ud", data={"csrf_token": await csrf_of(own, "/profil")})
    await log_in_through_portal(own, db, sealer, username)
    assert (await own.get("/oversigt")).status_code == 200


# --- personal pages are never kept by a cache ---------------------------------------------


async def test_an_error_page_of_a_signed_in_person_is_not_kept_by_any_cache(
    db, clock, sealer, client, identity, open_browser
) -> None:
    """Error pages show the person's name and carry their form token. A missing file under
    `/static/` was answered `Cache-Control: public, max-age=3600` (a shared cache would hand
    one person's page to the next), and a 500 came with no `Cache-Control` at all."""
    browser = await open_browser()
    username = await activated_group_admin(db, clock, sealer, client)
    await log_in_through_portal(browser, db, sealer, username)
    missing, there = await asyncio.gather(browser.get("/static/ingen.css"), browser.get("/static/portal.css"))
    assert missing.status_code == 404 and "Mette Holm" in missing.text
    assert missing.headers["cache-control"] == "no-store", missing.headers
    assert there.status_code == 200 and there.headers["cache-control"] == "public, max-age=3600"

    identity.broken = True
    failed = await browser.get("/oversigt")
    assert failed.status_code == 500 and "Mette Holm" in failed.text
    assert failed.headers.get("cache-control") == "no-store", failed.headers
    assert failed.headers["content-security-policy"] and failed.headers["x-frame-options"] == "DENY"


# --- words of the attacker's on the portal's pages --------------------------------------------


async def test_the_activation_pages_show_no_sentence_written_into_their_address(open_browser) -> None:
    """The confirmation page showed the masked addresses, and the done page the username, from
    the address: anyone could send a link to the portal's own page saying "we have sent a code
    by SMS to <a sentence of theirs>" (call this number, read the code out). Only values of
    the shape identity gives are shown now."""
    browser = await open_browser()
    planted = "+45 99 99 99 99. Ring straks til os og læs koden op"
    confirm = "/aktiver/bekraeft/6f1c2a38-8f7b-4b15-9d53-6d1a3b9a0c11"
    forged, genuine, done = await asyncio.gather(
        browser.get(confirm, params={"sms_sent_to": planted, "email_sent_to": f"m•••@x.dk {planted}"}),
        browser.get(confirm, params={"sms_sent_to": "+45 •• •• •4 56", "email_sent_to": "m•••@nordlys.example"}),
        browser.get("/aktiver/faerdig", params={"username": planted}),
    )
    assert forged.status_code == 200 and "Ring straks" not in forged.text, notices(forged)
    assert "+45 •• •• •4 56" in genuine.text and "m•••@nordlys.example" in genuine.text
    assert done.status_code == 200 and "Ring straks" not in done.text
    posted = await browser.post(
        confirm,
        data={
            "csrf_token": await csrf_of(browser, confirm),
            "sms_sent_to": planted,
            "username": planted,
            "sms_code": "123456",
            "email_code": "",
        },
    )
    assert posted.status_code == 422 and "Ring straks" not in posted.text


async def test_a_nul_character_smuggled_into_a_form_is_answered_in_words(open_browser) -> None:
    """A NUL (`%00`) in a form reached the service, whose refusal named a field no form has
    (`body`): the page answered 422 and said nothing. Now the page says what to do."""
    browser = await open_browser()
    token = await csrf_of(browser, "/log-ind")
    answers = await asyncio.gather(
        browser.post("/log-ind", data={"username": "35657193-ab\x00cd", "password": WRONG, "csrf_token": token}),
        browser.post("/log-ind", data={"username": "35657193-abcd", "password": "x\x00y", "csrf_token": token}),
        browser.post("/aktiver", data={"username": "a\x00", "activation_code": "x", "password": "p", "password_again": "p", "csrf_token": token}),
    )
    for answer in answers:
        assert answer.status_code == 422, answer.text
        assert "NUL" in " ".join(notices(answer) + re.findall(r"<p>([^<]*)</p>", answer.text)), answer.text


# --- attacks the portal refuses, kept refused -------------------------------------------------


async def test_a_form_without_its_own_browsers_token_is_refused_and_changes_nothing(
    db, clock, sealer, client, open_browser
) -> None:
    """Logout, login and the application, posted with another browser's token, without a
    cookie (a post from another site: `SameSite=Lax` keeps the cookie back) or with a cookie of
    the attacker's choosing: all refused, at once, and the signed-in browser stays signed in."""
    victim, attacker = await open_browser(), await open_browser()
    username = await activated_group_admin(db, clock, sealer, client)
    await log_in_through_portal(victim, db, sealer, username)
    theirs = await csrf_of(attacker, "/log-ind")
    cookieless, forged = await open_browser(), await open_browser()
    forged.cookies.set("adgang-session", "chosen-by-me", domain="portal.local")
    answers = await asyncio.gather(
        victim.post("/log-ud", data={"csrf_token": theirs}),
        victim.post("/log-ud", data={}),
        victim.post("/log-ind", data={"username": username, "password": WRONG, "csrf_token": theirs}),
        cookieless.post("/log-ud", data={"csrf_token": theirs}),
        cookieless.post("/ansoeg", data={"cvr": "35657193", "csrf_token": theirs}),
        forged.post("/log-ud", data={"csrf_token": theirs}),
        victim.post("/brugere/ny", data={"name": "Mallory", "csrf_token": theirs}),
    )
    assert [a.status_code for a in answers] == [403] * len(answers)
    assert all("genindlæs siden" in a.text for a in answers)
    assert (await victim.get("/oversigt")).status_code == 200


async def test_next_never_leads_off_the_site_however_it_is_written(db, clock, sealer, client, open_browser) -> None:
    browser = await open_browser()
    tricks = [
        "//evil.example",
        "/\\evil.example",
        "\\/evil.example",
        "https://evil.example",
        "https:evil.example",
        "%2F%2Fevil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "/%5Cevil.example",
        " //evil.example",
        "javascript:alert(1)",
    ]
    switched = await asyncio.gather(*(browser.get("/sprog", params={"til": "en", "next": t}) for t in tricks))
    username = await activated_group_admin(db, clock, sealer, client)
    await log_in_through_portal(browser, db, sealer, username)
    landed = await asyncio.gather(*(browser.get("/log-ind", params={"next": t}) for t in tricks))
    for answer in [*switched, *landed]:
        location = answer.headers["location"]
        assert answer.status_code == 303 and location.startswith("/") and not location.startswith("//")
        assert "\\" not in location and "\t" not in location and "\n" not in location
        assert httpx.URL("https://portal.example").join(location).host == "portal.example", location


async def test_the_browser_cannot_choose_the_address_the_portal_gives_the_services(
    identity, open_browser
) -> None:
    """Identity's per-address limits count the address the portal forwards: the portal's own
    server decides it (`TRUSTED_PROXIES`), and a browser's `X-Forwarded-For` changes nothing."""
    browser = await open_browser()
    token = await csrf_of(browser, "/log-ind")
    await asyncio.gather(
        *(
            browser.post(
                "/log-ind",
                data={"username": f"35657193-{n:04d}", "password": WRONG, "csrf_token": token},
                headers={"X-Forwarded-For": f"203.0.113.{n}", "Forwarded": f"for=198.51.100.{n}"},
            )
            for n in range(5)
        )
    )
    assert identity.forwarded_for and set(identity.forwarded_for) == {"127.0.0.1"}


async def test_a_cookie_after_logout_a_value_planted_before_login_and_swapped_sealed_rows_open_nothing(
    db, clock, sealer, client, portal_settings, open_browser
) -> None:
    planted = "planted-before-the-login"
    first = await open_browser()
    first.cookies.set("adgang-session", planted, domain="portal.local")
    second = await open_browser()
    username = await activated_group_admin(db, clock, sealer, client)
    await log_in_through_portal(first, db, sealer, username)
    await log_in_through_portal(second, db, sealer, username)
    assert first.cookies["adgang-session"] != planted
    with_planted = await open_browser()
    with_planted.cookies.set("adgang-session", planted, domain="portal.local")
    assert (await with_planted.get("/oversigt")).status_code == 303  # to the login

    # The download of the recovery codes writes codes of their shape only, never the page's input.
    download = await first.post(
        "/profil/gendannelseskoder/hent",
        data={
            "csrf_token": await csrf_of(first, "/profil"),
            "recovery_codes": ["ABCDE-12345", "<script>alert(1)</script>", "X" * 5000],
        },
    )
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/plain")
    assert "ABCDE-12345" in download.text and "script" not in download.text and "XXXXXX" not in download.text
    assert download.headers["content-disposition"].startswith("attachment;")

    # Sealed rows are bound to their own id: swapped, neither opens.
    portal_db = Database(portal_settings.db_url)
    try:
        async with portal_db.transaction() as session:
            rows = list(await session.scalars(select(BrowserSession).where(BrowserSession.state == "active")))
            assert len(rows) == 2
            blobs = {row.id: row.sealed for row in rows}
            (one, one_sealed), (other, other_sealed) = blobs.items()
            await session.execute(update(BrowserSession).where(BrowserSession.id == one).values(sealed=other_sealed))
            await session.execute(update(BrowserSession).where(BrowserSession.id == other).values(sealed=one_sealed))
    finally:
        await portal_db.dispose()
    swapped = await asyncio.gather(first.get("/oversigt"), second.get("/profil"))
    assert [s.status_code for s in swapped] == [303, 303]
    assert all(s.headers["location"].startswith("/log-ind?next=") for s in swapped)

    # Logged out, the old cookie opens nothing.
    await log_in_through_portal(first, db, sealer, username)
    old = first.cookies["adgang-session"]
    out = await first.post("/log-ud", data={"csrf_token": await csrf_of(first, "/profil")})
    assert out.status_code == 303
    stolen = await open_browser()
    stolen.cookies.set("adgang-session", old, domain="portal.local")
    assert [a.status_code for a in await asyncio.gather(stolen.get("/oversigt"), stolen.get("/brugere"))] == [303, 303]


async def test_a_link_from_another_site_to_a_page_behind_the_login_does_not_end_a_login_under_way(
    db, clock, sealer, client, open_browser
) -> None:
    """A top-level link carries the cookie (SameSite=Lax): following one to the overview in the
    middle of a login sends the browser to the login page, and the login goes on."""
    from tests.integration.test_login import last_code
    from tests.portal.conftest import post_form

    portal = await open_browser()
    username = await activated_group_admin(db, clock, sealer, client)
    await post_form(portal, "/log-ind", {"username": username, "password": PASSWORD})
    away = await portal.get("/oversigt", headers={"sec-fetch-site": "cross-site"})
    assert away.status_code == 303 and away.headers["location"].startswith("/log-ind")
    sent = await post_form(portal, "/log-ind/send", {"method": "email"}, form_on="/log-ind/kode")
    assert sent.status_code == 303 and sent.headers["location"] == "/log-ind/kode"
    _, code = await last_code(db, sealer)
    done = await post_form(portal, "/log-ind/kode", {"code": code})
    assert done.status_code == 303 and done.headers["location"] == "/oversigt"
