"""Selvbetjeningsbrugere through the portal (S4, S5, S6, S12, S14): the list, the create-user
wizard in the seed's order, one user's page and its actions, and who may see and do what."""

# ruff: noqa: F811 - fixtures are imported by name
from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Awaitable, Callable
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
from tests.integration.test_administration import activated_group_admin, login_email
from tests.integration.test_login import last_code
from tests.portal.conftest import csrf_of, log_in_through_portal, post_form
from tests.support.asgi import AppTransport

OTHER_CVR = "22109340"
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')
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
    """Press Next (or Back) on a wizard page, as a browser would: its hidden fields go along with
    what was typed or ticked on this step (a list for a checkbox group)."""
    data: dict[str, list[str]] = {}
    for name, value in hidden_fields(page):
        data.setdefault(name, []).append(value)
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
    no_choice = await step(portal, no_accounts)
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
