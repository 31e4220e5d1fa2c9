"""The language of a colleague made with the create-user wizard (S5, S6; issue 10 item 2): the
administrator chooses it on the first step, it starts as the language the administrator reads
the portal in, identity stores it, the login email is in it, and the user's page shows it."""

# ruff: noqa: F811 - fixtures are imported by name
from __future__ import annotations

import re

import httpx
from sqlalchemy import select

from services.identity.models import User
from shared.clock import FrozenClock
from shared.db import Database
from shared.sealing import Sealer
from tests.integration.test_administration import login_email
from tests.portal.test_user_pages import current_step, error_of, signed_in_admin, step

CHECKED_LANGUAGE = re.compile(r'name="language" value="([a-z]+)" checked')


def checked_language(page: httpx.Response) -> str:
    found = CHECKED_LANGUAGE.search(page.text)
    return found.group(1) if found else ""


async def language_in_identity(db: Database, name: str) -> str:
    async with db.transaction() as session:
        return str(await session.scalar(select(User.language).where(User.name == name)))


async def through_the_wizard(portal: httpx.AsyncClient, details: httpx.Response, **typed: str) -> httpx.Response:
    """From the first step's page to the created page, with `typed` on the first step."""
    page = await step(portal, details, name="Jonas Berg", email="jonas@nordlys.example", mobile="20 30 40 50", **typed)
    page = await step(portal, page, grants__cvr="37826111")
    page = await step(portal, page, access="all")
    assert "<dt>Language</dt>" in page.text or "<dt>Sprog</dt>" in page.text  # the summary
    created = await step(portal, page, functions=["invoices"])
    assert created.status_code == 303, created.text
    return await portal.get(created.headers["location"])


async def test_a_colleague_made_in_english_gets_the_login_email_in_english_and_the_page_says_so(
    db: Database, clock: FrozenClock, sealer: Sealer, client: httpx.AsyncClient, portal: httpx.AsyncClient
) -> None:
    await signed_in_admin(db, clock, sealer, client, portal)
    details = await portal.get("/brugere/ny")
    assert "<legend>Hvilket sprog skal brugeren have koder, e-mails og sider på?</legend>" in details.text
    assert checked_language(details) == "da"  # the administrator reads the portal in Danish

    done = await through_the_wizard(portal, details, language="en")

    email, _ = await login_email(db, sealer)
    assert email.language == "en"  # S6: the login email is in the colleague's language
    assert await language_in_identity(db, "Jonas Berg") == "en"
    assert '<dt>Sprog</dt><dd lang="en">English</dd>' in done.text
    user = await portal.get(f"/brugere/{email.user_id}")  # identity's GET /v1/users/{id}
    assert '<dt>Sprog</dt><dd lang="en">English</dd>' in user.text


async def test_the_choice_starts_as_the_administrators_portal_language_and_danish_can_still_be_chosen(
    db: Database, clock: FrozenClock, sealer: Sealer, client: httpx.AsyncClient, portal: httpx.AsyncClient
) -> None:
    await signed_in_admin(db, clock, sealer, client, portal)
    await portal.get("/sprog", params={"til": "en", "next": "/brugere/ny"})
    details = await portal.get("/brugere/ny")
    assert "<legend>Which language does the user get codes, emails and pages in?</legend>" in details.text
    assert checked_language(details) == "en"

    # Left as it was, the administrator's English is the colleague's.
    await through_the_wizard(portal, details)
    email, _ = await login_email(db, sealer)
    assert email.language == "en" and await language_in_identity(db, "Jonas Berg") == "en"

    # Danish chosen by an administrator who reads English.
    details = await portal.get("/brugere/ny")
    page = await step(
        portal, details, name="Sofie Dahl", email="sofie@nordlys.example", mobile="20 30 40 51", language="da"
    )
    page = await step(portal, page, grants__cvr="37826111")
    page = await step(portal, page, access="all")
    assert '<dt>Language</dt><dd lang="da">Dansk</dd>' in page.text  # the summary before Create
    created = await step(portal, page, functions=["invoices"])
    assert created.status_code == 303, created.text
    email, _ = await login_email(db, sealer)
    assert email.name == "Sofie Dahl" and email.language == "da"
    assert await language_in_identity(db, "Sofie Dahl") == "da"


async def test_a_language_that_is_not_offered_is_an_error_next_to_the_choice_and_nothing_is_made(
    db: Database, clock: FrozenClock, sealer: Sealer, client: httpx.AsyncClient, portal: httpx.AsyncClient
) -> None:
    await signed_in_admin(db, clock, sealer, client, portal)
    details = await portal.get("/brugere/ny")
    typed = {"name": "Jonas Berg", "email": "jonas@nordlys.example", "mobile": "20 30 40 50"}
    wrong = await step(portal, details, **typed, language="fr")
    assert wrong.status_code == 422 and current_step(wrong).endswith("Brugerens oplysninger")
    assert error_of(wrong, "f-language") == "Vælg dansk eller engelsk som brugerens sprog."
    assert 'aria-describedby="f-language-error"' in wrong.text
    missing = await step(portal, wrong, **typed, language="")
    assert error_of(missing, "f-language") == "Vælg det sprog, brugeren skal have koder, e-mails og sider på."

    # A wrong value slipped into the later steps' hidden fields is sent back to the first step
    # before anything reaches identity.
    page = await step(portal, missing, **typed, language="en")
    page = await step(portal, page, grants__cvr="37826111")
    page = await step(portal, page, access="all")
    forged = await step(portal, page, functions=["invoices"], language="xx")
    assert forged.status_code == 422 and current_step(forged).endswith("Brugerens oplysninger")
    assert error_of(forged, "f-language") == "Vælg dansk eller engelsk som brugerens sprog."
    async with db.transaction() as session:
        assert set(await session.scalars(select(User.name))) == {"Mette Holm"}
