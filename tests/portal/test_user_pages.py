"""Selvbetjeningsbrugere through the portal (S4, S5, S6, S12, S14): the list, the create-user
wizard in the seed's order, one user's page and its actions, and who may see and do what."""

# ruff: noqa: F811 - fixtures are imported by name
from __future__ import annotations

import asyncio
import html
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from services.identity.models import LoginSession, User
from services.portal.api import create_api as create_portal_api
from services.portal.config import PortalSettings
from shared.clock import FrozenClock
from shared.db import Database
from shared.sealing import Sealer
from tests.integration.test_activation import PASSWORD, activate_from_letter, provision_admin
from tests.integration.test_administration import activated_group_admin, login_email
from tests.integration.test_login import last_code
from tests.portal.conftest import csrf_of, log_in_through_portal, post_form
from tests.support.asgi import AppTransport

OTHER_CVR = "22109340"
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')
CHECKED_RADIO = re.compile(r'<input type="radio" id="[^"]*" name="([^"]+)" value="([^"]*)" checked>')
ACTION_PATHS = ("deaktiver", "genaktiver", "nulstil-totrin", "send-aktivering", "laas-op", "slet", "adgang")

Browser = httpx.AsyncClient


@pytest.fixture
async def open_browser(
    portal_settings: PortalSettings,
    portal_transports: dict[str, httpx.AsyncBaseTransport],
    clock: FrozenClock,
) -> AsyncIterator[Callable[[], Awaitable[Browser]]]:
    """Another browser (its own cookies) of the same portal, for a colleague or an outsider."""
    opened: list[Browser] = []

    async def open_one() -> Browser:
        app = create_portal_api(portal_settings, clock=clock, transports=portal_transports)
        browser = httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://portal")
        opened.append(browser)
        return browser

    yield open_one
    for browser in opened:
        await browser.aclose()


def hidden_fields(page: httpx.Response) -> list[tuple[str, str]]:
    """The wizard state a step's form carries (everything but the CSRF token)."""
    return [(name, html.unescape(value)) for name, value in HIDDEN.findall(page.text) if name != "csrf_token"]


async def step(
    browser: Browser, page: httpx.Response, action: str = "next", **typed: str | list[str]
) -> httpx.Response:
    """Press Next (or Back) on a wizard page, as a browser would: its hidden fields and the radio
    buttons checked when it was shown go along with what was typed or ticked on this step (a
    list for a checkbox group)."""
    data: dict[str, list[str]] = {}
    for name, value in hidden_fields(page):
        data.setdefault(name, []).append(value)
    for name, value in CHECKED_RADIO.findall(page.text):
        data[name] = [html.unescape(value)]
    for name, value in typed.items():
        data[name.replace("__", ".")] = value if isinstance(value, list) else [value]
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, page.text
    data["csrf_token"] = [token.group(1)]
    data["action"] = [action]
    return await browser.post("/brugere/ny", data=data)


def current_step(page: httpx.Response) -> str:
    found = re.search(r'<li aria-current="step">([^<]+)</li>', page.text)
    assert found, page.text
    return " ".join(html.unescape(found.group(1)).split())


def error_of(page: httpx.Response, field_id: str) -> str:
    found = re.search(rf'<p class="error" id="{re.escape(field_id)}-error">([^<]+)</p>', page.text)
    return html.unescape(found.group(1)) if found else ""


async def signed_in_admin(db: Database, clock: FrozenClock, sealer: Sealer, client, portal: Browser) -> str:
    """The group's administrator (three companies), logged in through the portal."""
    username = await activated_group_admin(db, clock, sealer, client)
    await log_in_through_portal(portal, db, sealer, username)
    return username


async def create_through_wizard(
    portal: Browser,
    *,
    name: str = "Jonas Berg",
    email: str = "jonas@nordlys.example",
    cvr: str = "37826111",
    accounts: list[str] | None = None,
    functions: list[str] | None = None,
) -> httpx.Response:
    """The wizard from the list's button to the page that says the email went."""
    page = await portal.get("/brugere/ny")
    page = await step(portal, page, name=name, email=email, mobile="20 30 40 50")
    page = await step(portal, page, grants__cvr=cvr)
    if accounts is None:
        page = await step(portal, page, access="all")
    else:
        page = await step(portal, page, access="some", grants__accounts=accounts)
    created = await step(portal, page, functions=functions or ["invoices"])
    assert created.status_code == 303, created.text
    return await portal.get(created.headers["location"])


async def colleague_logged_in(
    db: Database, sealer: Sealer, client, browser: Browser, **wizard: object
) -> tuple[str, str]:
    """A colleague created by the administrator's wizard in `wizard["admin"]`, activated, and
    logged in through `browser`: returns (user id, username)."""
    admin: Browser = wizard.pop("admin")  # type: ignore[assignment]
    await create_through_wizard(admin, **wizard)  # type: ignore[arg-type]
    email, code = await login_email(db, sealer)
    activated = await client.post(
        "/v1/activation",
        json={"username": email.username, "activation_code": code, "password": PASSWORD},
    )
    assert activated.status_code == 200, activated.text
    await log_in_through_portal(browser, db, sealer, email.username)
    return str(email.user_id), email.username


async def test_the_wizard_creates_a_colleague_limited_to_two_accounts_with_only_invoices_and_emails_them(
    db, clock, sealer, client, portal
) -> None:
    await signed_in_admin(db, clock, sealer, client, portal)
    listed = await portal.get("/brugere")
    assert listed.status_code == 200
    assert '<a class="button primary" href="/brugere/ny">Opret selvbetjeningsbruger</a>' in listed.text

    details = await portal.get("/brugere/ny")
    assert current_step(details) == "Trin 1 af 4: Brugerens oplysninger"
    company = await step(
        portal, details, name="Jonas Berg", email="jonas@nordlys.example", mobile="20 30 40 50"
    )
    assert current_step(company) == "Trin 2 af 4: Virksomhed"  # S5.4: the group has three companies
    for cvr in ("35657193", "37826111", "41204559"):
        assert f'name="grants.cvr" value="{cvr}"' in company.text
    access = await step(portal, company, grants__cvr="37826111")
    assert current_step(access) == "Trin 3 af 4: Adgang til kontonumre"
    assert [a for a in ("10000021", "10000022", "10000023", "10000011") if f'value="{a}"' in access.text] == [
        "10000021",
        "10000022",
        "10000023",
    ]
    functions = await step(portal, access, access="some", grants__accounts=["10000021", "10000022"])
    assert current_step(functions) == "Trin 4 af 4: Funktioner"
    assert 'name="functions" value="user_admin"' in functions.text  # the administrator holds it
    created = await step(portal, functions, functions=["invoices"])
    assert created.status_code == 303 and created.headers["location"] == "/brugere/ny/oprettet"

    done = await portal.get("/brugere/ny/oprettet")
    email, _ = await login_email(db, sealer)  # S6: identity's email of the new login
    assert email.recipient_email == "jonas@nordlys.example" and email.name == "Jonas Berg"
    assert "Vi har sendt en e-mail til jonas@nordlys.example" in done.text
    assert f"<dd>{email.username}</dd>" in done.text

    user = await portal.get(f"/brugere/{email.user_id}")
    assert user.status_code == 200
    assert 'name="grants.37826111.access" value="some" checked' in user.text
    assert 'name="grants.37826111.accounts" value="10000021" checked' in user.text
    assert 'name="grants.37826111.accounts" value="10000023">' in user.text  # not granted
    assert 'name="functions" value="invoices" checked' in user.text
    assert 'name="functions" value="orders">' in user.text
    listed = await portal.get("/brugere")
    assert "Jonas Berg" in listed.text and "Venter på aktivering" in listed.text


async def test_each_step_checks_before_next_and_back_keeps_what_was_typed(
    db, clock, sealer, client, portal
) -> None:
    await signed_in_admin(db, clock, sealer, client, portal)
    details = await portal.get("/brugere/ny")
    empty = await step(portal, details, name="", email="", mobile="")
    assert empty.status_code == 422 and current_step(empty).endswith("Brugerens oplysninger")
    assert error_of(empty, "f-name") == "Skriv brugerens navn."
    assert error_of(empty, "f-email").startswith("Skriv brugerens e-mail.")
    assert error_of(empty, "f-mobile").startswith("Skriv brugerens mobilnummer.")
    wrong = await step(portal, empty, name="Jonas Berg", email="jonas@", mobile="+46 70 123 45 67")
    assert wrong.status_code == 422
    assert error_of(wrong, "f-email").startswith("Det er ikke en gyldig e-mailadresse")
    assert error_of(wrong, "f-mobile").startswith("Skriv et dansk mobilnummer")
    assert 'value="Jonas Berg"' in wrong.text  # what was typed stays in the field

    company = await step(
        portal, wrong, name="Jonas Berg", email="jonas@nordlys.example", mobile="20 30 40 50"
    )
    unchosen = await step(portal, company)
    assert unchosen.status_code == 422 and current_step(unchosen).endswith("Virksomhed")
    assert error_of(unchosen, "f-grants-cvr") == "Vælg den virksomhed, brugeren skal have adgang til."
    access = await step(portal, unchosen, grants__cvr="41204559")
    no_accounts = await step(portal, access, access="some")
    assert no_accounts.status_code == 422
    assert error_of(no_accounts, "f-grants-accounts") == "Vælg mindst ét kontonummer, eller vælg fuld adgang."
    no_choice = await step(portal, no_accounts, access="")  # a post with no choice, as no browser sends
    assert error_of(no_choice, "f-access").startswith("Vælg fuld eller begrænset adgang")
    functions = await step(portal, no_choice, access="some", grants__accounts=["10000031"])

    # Back twice: the company and the details are as they were typed; forward again, the
    # accounts ticked before are still ticked.
    back = await step(portal, functions, "back", functions=["orders"])
    assert current_step(back).endswith("Adgang til kontonumre")
    assert 'value="some" checked' in back.text and 'value="10000031" checked' in back.text
    back = await step(portal, back, "back", access="some", grants__accounts=["10000031"])
    assert 'name="grants.cvr" value="41204559" checked' in back.text
    back = await step(portal, back, "back", grants__cvr="41204559")
    assert current_step(back).endswith("Brugerens oplysninger")
    for typed in ('value="Jonas Berg"', 'value="jonas@nordlys.example"', 'value="20 30 40 50"'):
        assert typed in back.text
    forward = await step(portal, back, name="Jonas Berg", email="jonas@nordlys.example", mobile="20 30 40 50")
    forward = await step(portal, forward, grants__cvr="41204559")
    assert 'value="10000031" checked' in forward.text
    forward = await step(portal, forward, access="some", grants__accounts=["10000031"])
    assert 'name="functions" value="orders" checked' in forward.text  # kept from before Back

    none = await step(portal, forward)
    assert none.status_code == 422 and current_step(none).endswith("Funktioner")
    assert error_of(none, "f-functions") == "Vælg mindst én funktion, brugeren må bruge."
    async with db.transaction() as session:  # nothing was created by any of it
        assert set(await session.scalars(select(User.name))) == {"Mette Holm"}


async def test_identitys_own_refusal_is_shown_at_the_step_and_field_it_is_about(
    db, clock, sealer, client, portal
) -> None:
    await signed_in_admin(db, clock, sealer, client, portal)
    page = await portal.get("/brugere/ny")
    long_name = "Jonas " + "B" * 250  # the portal does not check the length; identity does
    page = await step(portal, page, name=long_name, email="jonas@nordlys.example", mobile="20 30 40 50")
    page = await step(portal, page, grants__cvr="37826111")
    page = await step(portal, page, access="all")
    refused = await step(portal, page, functions=["invoices"])
    assert refused.status_code == 422
    assert current_step(refused).endswith("Brugerens oplysninger")
    assert error_of(refused, "f-name") == "Navnet er for langt. Skriv højst 200 tegn."

    # An account the administrator does not hold, slipped into the hidden fields, is sent back
    # to the access step before anything reaches identity.
    page = await step(portal, refused, name="Jonas Berg", email="jonas@nordlys.example", mobile="20 30 40 50")
    page = await step(portal, page, grants__cvr="37826111")
    page = await step(portal, page, access="some", grants__accounts=["10000021"])
    forged = await step(portal, page, functions=["invoices"], grants__accounts=["10000021", "10000051"])
    assert forged.status_code == 422 and current_step(forged).endswith("Adgang til kontonumre")
    assert error_of(forged, "f-grants-accounts").startswith("Du kan kun give adgang til kontonumre")


async def test_creating_a_login_needs_a_login_within_15_minutes_and_the_way_back_is_offered(
    db, clock, sealer, client, portal
) -> None:
    username = await signed_in_admin(db, clock, sealer, client, portal)
    clock.advance(timedelta(minutes=16))
    page = await portal.get("/brugere/ny")
    page = await step(portal, page, name="Jonas Berg", email="jonas@nordlys.example", mobile="20 30 40 50")
    page = await step(portal, page, grants__cvr="37826111")
    page = await step(portal, page, access="all")
    refused = await step(portal, page, functions=["invoices"])
    assert refused.status_code == 403
    assert "For at oprette et login skal du have logget ind inden for de sidste 15 minutter." in refused.text
    again = await post_form(portal, "/brugere/log-ind-igen", {"next": "/brugere/ny"}, form_on="/brugere")
    assert again.status_code == 303 and again.headers["location"] == "/log-ind?next=/brugere/ny"
    assert (await portal.get("/brugere")).status_code == 303  # logged out: the old session is over

    token = await csrf_of(portal, again.headers["location"])
    first = await portal.post(
        "/log-ind",
        data={"username": username, "password": PASSWORD, "next": "/brugere/ny", "csrf_token": token},
    )
    assert first.status_code == 303
    await post_form(portal, "/log-ind/send", {"method": "email"}, form_on="/log-ind/kode")
    _, code = await last_code(db, sealer)
    done = await post_form(portal, "/log-ind/kode", {"code": code})
    assert done.headers["location"] == "/brugere/ny"  # back where the administrator was
    created = await create_through_wizard(portal)
    assert "Vi har sendt en e-mail til jonas@nordlys.example" in created.text


async def lock_out(client: httpx.AsyncClient, clock: FrozenClock, settings, username: str) -> None:
    """Wrong passwords until identity locks the username, waiting out its delays on our clock."""
    for _ in range(settings.login_lock_after_failures):
        answer = await client.post(
            "/v1/login", json={"username": username, "password": "wrong password here"}
        )
        if answer.status_code == 429:
            clock.advance(timedelta(seconds=int(answer.headers["retry-after"])))
            answer = await client.post(
                "/v1/login", json={"username": username, "password": "wrong password here"}
            )
        assert answer.status_code == 401, answer.text
    locked = await client.post("/v1/login", json={"username": username, "password": PASSWORD})
    assert locked.status_code == 429


async def live_sessions(db: Database, user_id: str) -> int:
    async with db.transaction() as session:
        live = await session.scalars(
            select(LoginSession.id).where(LoginSession.user_id == user_id, LoginSession.ended_at.is_(None))
        )
        return len(list(live))


def status_of(listed: httpx.Response, name: str) -> str:
    """The status words in the list's row of `name`."""
    row = re.search(rf">{re.escape(name)}</a></th>(.*?)</tr>", listed.text, re.S)
    assert row, f"no row for {name}"
    return " ".join(
        html.unescape(s) for s in re.findall(r'<span class="status [^"]+">([^<]+)</span>', row.group(1))
    )


async def test_the_list_shows_each_users_status_in_words_and_finds_them_by_name_or_email(
    db, clock, sealer, client, settings, portal, open_browser
) -> None:
    username = await signed_in_admin(db, clock, sealer, client, portal)
    await create_through_wizard(portal, accounts=["10000021"])
    jonas, _ = await login_email(db, sealer)
    sofie_browser = await open_browser()
    sofie_id, sofie = await colleague_logged_in(
        db,
        sealer,
        client,
        sofie_browser,
        admin=portal,
        name="Sofie Lund",
        email="sofie@lund.example",
        cvr="41204559",
    )
    listed = await portal.get("/brugere")
    assert "<caption>" in listed.text and '<th scope="col">Status</th>' in listed.text
    assert status_of(listed, "Jonas Berg") == "Venter på aktivering"
    assert status_of(listed, "Sofie Lund") == "Aktiv"
    assert status_of(listed, "Mette Holm") == "Aktiv"

    await lock_out(client, clock, settings, sofie)
    assert status_of(await portal.get("/brugere"), "Sofie Lund").startswith("Aktiv Låst til ")

    found = await portal.get("/brugere", params={"q": "sofie"})
    assert "Sofie Lund" in found.text and "Jonas Berg" not in found.text
    assert "1 af 3 brugere passer på »sofie«." in found.text
    by_email = await portal.get("/brugere", params={"q": "NORDLYS.example"})
    assert (
        "Jonas Berg" in by_email.text and "Mette Holm" in by_email.text and "Sofie Lund" not in by_email.text
    )
    nothing = await portal.get("/brugere", params={"q": "zzz"})
    assert "<table>" not in nothing.text and "Ingen brugere passer på søgningen" in nothing.text

    # Jonas never activated: after the code's week his status says it has expired.
    clock.advance(timedelta(days=7, minutes=1))
    assert (await portal.get("/brugere")).status_code == 303  # the portal session has ended too
    await log_in_through_portal(portal, db, sealer, username)
    listed = await portal.get("/brugere")
    assert status_of(listed, "Jonas Berg") == "Aktiveringskoden er udløbet"
    assert status_of(listed, "Sofie Lund") == "Aktiv"  # the lock has long passed
    sent = await post_form(
        portal, f"/brugere/{jonas.user_id}/send-aktivering", {}, form_on=f"/brugere/{jonas.user_id}"
    )
    assert sent.headers["location"] == f"/brugere/{jonas.user_id}?udfoert=send-aktivering"
    assert status_of(await portal.get("/brugere"), "Jonas Berg") == "Venter på aktivering"

    await portal.get("/sprog", params={"til": "en", "next": "/brugere"})
    english = await portal.get("/brugere")
    assert (
        status_of(english, "Jonas Berg") == "Waiting for activation"
        and "Create self-service user" in english.text
    )
    wizard = await portal.get("/brugere/ny")
    assert current_step(wizard) == "Step 1 of 4: The user's details"


async def test_each_action_on_a_users_page_is_done_and_said(
    db, clock, sealer, client, settings, portal, open_browser
) -> None:
    await signed_in_admin(db, clock, sealer, client, portal)
    colleague = await open_browser()
    user_id, username = await colleague_logged_in(
        db, sealer, client, colleague, admin=portal, accounts=["10000021"]
    )
    page = f"/brugere/{user_id}"

    async def act(action: str, data: dict[str, str] | None = None) -> httpx.Response:
        done = await post_form(portal, f"{page}/{action}", data or {}, form_on=page)
        assert done.status_code == 303, done.text
        return await portal.get(done.headers["location"])

    # Disabling asks first, on a page of its own (no script needed); nothing happens until yes.
    asked = await post_form(portal, f"{page}/deaktiver", {}, form_on=page)
    assert asked.status_code == 200 and "Deaktivér brugeren?" in asked.text
    assert 'name="confirmed" value="ja"' in asked.text
    assert await live_sessions(db, user_id) == 1
    disabled = await act("deaktiver", {"confirmed": "ja"})
    assert "Brugeren er deaktiveret og logget ud alle steder." in disabled.text
    assert '<span class="status disabled">Deaktiveret</span>' in disabled.text
    assert await live_sessions(db, user_id) == 0  # the colleague's session ended at once

    enabled = await act("genaktiver")
    assert (
        "Brugeren kan logge ind igen." in enabled.text
        and '<span class="status active">Aktiv</span>' in enabled.text
    )

    await lock_out(client, clock, settings, username)
    assert "Fjern låsen på login" in (await portal.get(page)).text
    unlocked = await act("laas-op")
    assert "Låsen er fjernet." in unlocked.text and "Låst til" not in unlocked.text
    await log_in_through_portal(await open_browser(), db, sealer, username)  # the lock is gone
    assert await live_sessions(db, user_id) == 1

    reset = await act("nulstil-totrin", {"confirmed": "ja"})
    assert "Brugerens authenticator-app og gendannelseskoder er fjernet." in reset.text
    assert await live_sessions(db, user_id) == 0

    changed = await act(
        "adgang",
        {
            "grants.37826111.access": "none",
            "grants.41204559.access": "all",
            "grants.35657193.access": "some",
            "grants.35657193.accounts": "10000012",
            "functions": ["invoices", "orders"],  # type: ignore[dict-item]
        },
    )
    assert "Adgangen er ændret." in changed.text
    for chosen in (
        'name="grants.37826111.access" value="none" checked',
        'name="grants.41204559.access" value="all" checked',
        'name="grants.35657193.access" value="some" checked',
        'name="grants.35657193.accounts" value="10000012" checked',
        'name="functions" value="orders" checked',
    ):
        assert chosen in changed.text

    asked = await post_form(portal, f"{page}/slet", {}, form_on=page)
    assert "Slet brugeren?" in asked.text and "Det kan ikke fortrydes." in asked.text
    deleted = await post_form(portal, f"{page}/slet", {"confirmed": "ja"}, form_on=page)
    assert deleted.headers["location"] == "/brugere?udfoert=slet"
    listed = await portal.get(deleted.headers["location"])
    assert "Brugeren er slettet." in listed.text and "Jonas Berg" not in listed.text
    gone = await portal.get(page)
    assert gone.status_code == 404 and "Siden findes ikke" in gone.text


def id_in_list(listed: httpx.Response, name: str) -> str:
    found = re.search(rf'href="/brugere/([0-9a-f-]{{36}})">{re.escape(name)}</a>', listed.text)
    assert found, f"{name} is not in the list"
    return found.group(1)


async def test_identitys_refusals_are_told_in_words_and_change_nothing(
    db, clock, sealer, client, portal
) -> None:
    await signed_in_admin(db, clock, sealer, client, portal)
    await create_through_wizard(portal, accounts=["10000021"])
    jonas, code = await login_email(db, sealer)
    own = id_in_list(await portal.get("/brugere"), "Mette Holm")

    last = "brugeren er virksomhedens eneste aktive administrator"
    for action in ("deaktiver", "slet"):
        refused = await post_form(
            portal, f"/brugere/{own}/{action}", {"confirmed": "ja"}, form_on=f"/brugere/{own}"
        )
        assert refused.status_code == 409 and last in refused.text, action
    demoted = await post_form(
        portal,
        f"/brugere/{own}/adgang",
        {
            **{f"grants.{cvr}.access": "all" for cvr in ("35657193", "37826111", "41204559")},
            "functions": "invoices",
        },
        form_on=f"/brugere/{own}",
    )
    assert demoted.status_code == 409 and last in demoted.text
    assert 'name="functions" value="invoices" checked' in demoted.text  # what was chosen is kept

    # More than the administrator holds: an account of another group's company.
    more = await post_form(
        portal,
        f"/brugere/{jonas.user_id}/adgang",
        {
            "grants.37826111.access": "some",
            "grants.37826111.accounts": ["10000021", "10000051"],
            "functions": "invoices",
        },  # type: ignore[dict-item]
        form_on=f"/brugere/{jonas.user_id}",
    )
    assert more.status_code == 422
    assert error_of(more, "f-37826111").startswith(
        "Du kan kun give adgang til kontonumre, du selv har adgang til."
    )
    none = await post_form(
        portal,
        f"/brugere/{jonas.user_id}/adgang",
        {"functions": "invoices"},
        form_on=f"/brugere/{jonas.user_id}",
    )
    assert none.status_code == 422 and "Giv brugeren adgang til mindst én virksomhed." in none.text

    await client.post(
        "/v1/activation", json={"username": jonas.username, "activation_code": code, "password": PASSWORD}
    )
    again = await post_form(
        portal, f"/brugere/{jonas.user_id}/send-aktivering", {}, form_on=f"/brugere/{jonas.user_id}"
    )
    assert again.status_code == 409 and "Brugeren har allerede aktiveret sit login" in again.text
    enable = await post_form(
        portal, f"/brugere/{jonas.user_id}/genaktiver", {}, form_on=f"/brugere/{jonas.user_id}"
    )
    assert enable.status_code == 409 and "Brugeren er ikke deaktiveret" in enable.text

    async with db.transaction() as session:
        users = {u.name: u for u in await session.scalars(select(User))}
    assert users["Mette Holm"].status == "active" and "user_admin" in users["Mette Holm"].functions
    assert users["Jonas Berg"].functions == ["invoices"]


async def test_sending_a_new_activation_code_needs_a_recent_login_and_says_so(
    db, clock, sealer, client, portal
) -> None:
    await signed_in_admin(db, clock, sealer, client, portal)
    await create_through_wizard(portal)
    jonas, _ = await login_email(db, sealer)
    clock.advance(timedelta(minutes=16))
    refused = await post_form(
        portal, f"/brugere/{jonas.user_id}/send-aktivering", {}, form_on=f"/brugere/{jonas.user_id}"
    )
    assert refused.status_code == 403
    assert (
        "For at sende en ny aktiveringskode skal du have logget ind inden for de sidste 15 minutter."
        in refused.text
    )
    assert f'name="next" value="/brugere/{jonas.user_id}"' in refused.text
    assert (await login_email(db, sealer))[0] == jonas  # no new email went


async def test_only_administrators_of_the_group_see_or_act_on_its_users_even_all_at_once(
    db, clock, sealer, client, portal, open_browser
) -> None:
    """A colleague without user_admin gets 403 in words on every /brugere URL; another group's
    administrator gets the 404 page for this group's user, exactly as for an id that does not
    exist; all their posts at once change nothing."""
    await signed_in_admin(db, clock, sealer, client, portal)
    colleague = await open_browser()
    colleague_id, _ = await colleague_logged_in(
        db, sealer, client, colleague, admin=portal, accounts=["10000021"]
    )
    await create_through_wizard(portal, name="Sofie Lund", email="sofie@lund.example", cvr="41204559")
    sofie, _ = await login_email(db, sealer)

    username, code = await provision_admin(db, clock, sealer, OTHER_CVR)
    activated = await activate_from_letter(client, db, sealer, username, code)
    assert activated.status_code == 200, activated.text
    outsider = await open_browser()
    await log_in_through_portal(outsider, db, sealer, username)
    outsider_id = id_in_list(await outsider.get("/brugere"), "Ida Bager")

    nobody = str(uuid.uuid4())
    missing = await portal.get(f"/brugere/{nobody}")
    foreign = await portal.get(f"/brugere/{outsider_id}")
    assert missing.status_code == foreign.status_code == 404
    # The same page but for the id in the language switch's way back.
    assert foreign.text.replace(outsider_id, "?") == missing.text.replace(nobody, "?")
    assert "Siden findes ikke" in foreign.text

    async def posts(browser: Browser, user_id: str, form_on: str) -> list[Awaitable[httpx.Response]]:
        token = await csrf_of(browser, form_on)
        data = {
            "csrf_token": token,
            "confirmed": "ja",
            "grants.41204559.access": "all",
            "grants.37826111.access": "all",
            "functions": ["invoices", "orders", "user_admin"],
        }
        return [browser.post(f"/brugere/{user_id}/{action}", data=data) for action in ACTION_PATHS]

    colleague_token = await csrf_of(colleague, "/oversigt")
    wizard = {
        "csrf_token": colleague_token,
        "step": "functions",
        "name": "Mallory",
        "email": "mallory@nordlys.example",
        "mobile": "20 30 40 51",
        "grants.cvr": "37826111",
        "access": "all",
        "functions": "user_admin",
    }
    reads = [
        colleague.get(path)
        for path in ("/brugere", "/brugere/ny", "/brugere/ny/oprettet", f"/brugere/{sofie.user_id}")
    ]
    answers = await asyncio.gather(
        *reads,
        colleague.post("/brugere/ny", data=wizard),
        colleague.post("/brugere/log-ind-igen", data={"csrf_token": colleague_token}),
        *await posts(colleague, str(sofie.user_id), "/oversigt"),
        *await posts(colleague, colleague_id, "/oversigt"),
        *await posts(outsider, str(sofie.user_id), "/brugere"),
        *await posts(outsider, colleague_id, "/brugere"),
    )
    from_colleague, from_outsider = answers[: 6 + 2 * len(ACTION_PATHS)], answers[6 + 2 * len(ACTION_PATHS) :]
    for answer in from_colleague:
        assert answer.status_code == 403, answer.text
        assert "Du har ikke adgang til at administrere selvbetjeningsbrugere." in answer.text
    for answer in from_outsider:
        assert answer.status_code == 404 and "Siden findes ikke" in answer.text, answer.text

    async with db.transaction() as session:
        users = {u.name: u for u in await session.scalars(select(User))}
    assert set(users) == {"Mette Holm", "Jonas Berg", "Sofie Lund", "Ida Bager"}  # no Mallory
    assert users["Jonas Berg"].status == "active" and users["Jonas Berg"].functions == ["invoices"]
    assert users["Sofie Lund"].status == "pending" and users["Sofie Lund"].functions == ["invoices"]
    assert await live_sessions(db, colleague_id) == 1  # not disabled, not reset, still logged in
    assert (await colleague.get("/oversigt")).status_code == 200
