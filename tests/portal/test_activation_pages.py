"""Activating a login through the portal (S2) in front of identity's real API: a colleague's
login in one step, the letter's login with its confirmation codes, the password rules shown
before any failure, and each refusal in words."""

# ruff: noqa: F811 - fixtures are imported by name
from __future__ import annotations

import asyncio
import html
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy import select

from services.identity.models import User
from services.portal.i18n import load_texts
from services.portal.models import BrowserSession
from shared.db import Database
from tests.integration.test_activation import (
    OWN_EMAIL,
    OWN_MOBILE,
    PASSWORD,
    confirmation_codes,
    provision_admin,
    unsealed_code,
)
from tests.integration.test_administration import colleague, group_admin, login_email
from tests.portal.conftest import csrf_of, log_in_through_portal, post_form

TEXTS = load_texts()
RULES = (
    "Den skal have mindst 12 tegn.",
    "Den må ikke være en af de mest almindelige adgangskoder.",
    "Den må ikke indeholde dit brugernavn.",
    "Den skal bestå af mindst 4 forskellige tegn.",
)


def field_error(page: httpx.Response, name: str) -> str | None:
    found = re.search(rf'id="f-{name}-error">([^<]*)<', page.text)
    return found.group(1) if found else None


def value_of(page: httpx.Response, name: str) -> str | None:
    found = re.search(rf'name="{name}" type="\w+" value="([^"]*)"', page.text)
    return found.group(1) if found else None


HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


async def post_confirmation(
    portal: httpx.AsyncClient, location: str, sms_code: str, email_code: str
) -> httpx.Response:
    """Post the confirmation page's form as a browser would: with its hidden fields."""
    page = await portal.get(location)
    hidden = {name: html.unescape(value) for name, value in HIDDEN.findall(page.text)}
    return await portal.post(
        urlsplit(location).path, data={**hidden, "sms_code": sms_code, "email_code": email_code}
    )


async def new_colleague(db, clock, sealer, client) -> tuple[str, str]:
    """A colleague created by the group's administrator (S4–S6): (username, emailed code)."""
    headers = await group_admin(db, clock, sealer, client)
    created = await client.post("/v1/users", json=colleague(), headers=headers)
    assert created.status_code == 201, created.text
    event, code = await login_email(db, sealer)
    return event.username, code


def first_step(username: str, code: str, **more: str) -> dict[str, str]:
    return {
        "username": username,
        "activation_code": code,
        "password": PASSWORD,
        "password_again": PASSWORD,
        **more,
    }


async def status_of(db: Database, username: str) -> str:
    async with db.reading() as session:
        user = await session.scalar(select(User).where(User.username == username))
    assert user is not None
    return str(user.status)


async def test_the_links_page_fills_in_the_username_and_states_the_password_rules_before_any_failure(
    portal,
) -> None:
    assert 'href="/aktiver"' in (await portal.get("/log-ind")).text
    page = await portal.get("/aktiver?username=nordlys.mette.k7")
    assert page.status_code == 200 and page.text.count("<h1>") == 1
    assert value_of(page, "username") == "nordlys.mette.k7"
    for rule in RULES:
        assert rule in page.text
    for name in ("activation_code", "password", "password_again", "name", "email", "mobile"):
        assert f'for="f-{name}"' in page.text and f'name="{name}"' in page.text
    english = await portal.get("/aktiver", cookies={"adgang-language": "en"})
    assert "It must have at least 12 characters." in english.text


async def test_a_colleague_activates_in_one_step_and_logs_in_from_the_done_page(
    db, clock, sealer, client, portal
) -> None:
    username, code = await new_colleague(db, clock, sealer, client)
    done = await post_form(
        portal, "/aktiver", first_step(username, code), form_on=f"/aktiver?username={username}"
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == f"/aktiver/faerdig?username={username}"
    page = await portal.get(done.headers["location"])
    assert f"Login&#39;et {username} er aktiveret." in page.text
    login_link = re.search(r'href="(/log-ind\?username=[^"]+)"', page.text)
    assert login_link and parse_qs(urlsplit(login_link.group(1)).query)["username"] == [username]
    login_page = await portal.get(login_link.group(1))
    assert value_of(login_page, "username") == username
    assert await status_of(db, username) == "active"
    assert (await log_in_through_portal(portal, db, sealer, username)).headers["location"] == "/oversigt"


async def test_the_letters_login_is_asked_for_its_own_details_then_confirms_both_codes(
    db, clock, sealer, client, portal, portal_settings
) -> None:
    username, code = await provision_admin(db, clock, sealer)
    # Sent as a colleague would: identity says this is the letter's login, the page asks for
    # email and mobile next to their fields, keeps what was typed, and never echoes the password.
    asked = await post_form(portal, "/aktiver", first_step(username, code))
    assert asked.status_code == 422
    assert "Dit login kommer fra brevet i virksomhedens e-Boks" in asked.text
    assert field_error(asked, "email") == "Skriv din egen e-mail."
    assert field_error(asked, "mobile") == "Skriv dit eget danske mobilnummer."
    assert field_error(asked, "password") == "Skriv adgangskoden igen i begge felter."
    assert value_of(asked, "username") == username and value_of(asked, "activation_code") == code
    assert PASSWORD not in asked.text

    started = await post_form(
        portal,
        "/aktiver",
        first_step(username, code, name="Karen Bager", email=OWN_EMAIL, mobile=OWN_MOBILE),
    )
    assert started.status_code == 303, started.text
    location = urlsplit(started.headers["location"])
    assert location.path.startswith("/aktiver/bekraeft/")
    activation_id = location.path.rsplit("/", 1)[1]
    assert set(parse_qs(location.query)) == {"username", "sms_sent_to", "email_sent_to", "expires_at"}

    confirm_page = await portal.get(started.headers["location"])
    assert "+45 •• •• •3 44" in confirm_page.text and "k•••@solsikke.example" in confirm_page.text
    assert 'name="sms_code"' in confirm_page.text and 'name="email_code"' in confirm_page.text
    expires = TEXTS["da"].time_of_day(clock.now() + timedelta(minutes=15))
    assert f"Koderne virker til kl. {expires}." in confirm_page.text
    assert PASSWORD not in confirm_page.text and code not in confirm_page.text

    sent = await confirmation_codes(db, sealer, activation_id)
    sms, email = unsealed_code(sealer, sent["sms"]), unsealed_code(sealer, sent["email"])
    wrong_sms = "000000" if sms != "000000" else "111111"
    wrong = await post_confirmation(portal, started.headers["location"], wrong_sms, email)
    assert wrong.status_code == 400
    assert field_error(wrong, "sms_code") == "Det er ikke koden fra SMS&#39;en. Tjek den seneste SMS."
    assert field_error(wrong, "email_code") is None
    assert "+45 •• •• •3 44" in wrong.text  # still says where the codes went
    assert await status_of(db, username) == "pending"

    done = await post_confirmation(portal, started.headers["location"], sms, email)
    assert done.status_code == 303, done.text
    assert done.headers["location"] == f"/aktiver/faerdig?username={username}"
    assert await status_of(db, username) == "active"
    # Nothing about the activation was kept by the portal: no session row for this browser.
    portal_db = Database(portal_settings.db_url)
    try:
        async with portal_db.reading() as session:
            assert list(await session.scalars(select(BrowserSession.id))) == []
    finally:
        await portal_db.dispose()
    assert (await log_in_through_portal(portal, db, sealer, username, "sms")).status_code == 303


async def test_two_passwords_that_differ_are_told_at_the_second_field_and_nothing_is_sent(
    db, clock, sealer, client, portal
) -> None:
    username, code = await new_colleague(db, clock, sealer, client)
    page = await post_form(
        portal, "/aktiver", {**first_step(username, code), "password_again": PASSWORD + "x"}
    )
    assert page.status_code == 422
    assert (
        field_error(page, "password_again")
        == "De to adgangskoder er ikke ens. Skriv den samme adgangskode i begge felter."
    )
    assert field_error(page, "password") is None
    assert value_of(page, "username") == username and value_of(page, "activation_code") == code
    assert await status_of(db, username) == "pending"  # identity was not asked: the code still works
    assert (await post_form(portal, "/aktiver", first_step(username, code))).status_code == 303


async def test_a_password_against_the_rules_is_told_next_to_it_with_the_rules_still_shown(
    db, clock, sealer, client, portal
) -> None:
    username, code = await new_colleague(db, clock, sealer, client)
    for password in ("kort-kode", "password1234", f"{username}-Fjordhest"):
        page = await post_form(
            portal,
            "/aktiver",
            {**first_step(username, code), "password": password, "password_again": password},
        )
        assert page.status_code == 422, password
        assert field_error(
            page,
            "password",
        ).startswith("Adgangskoden opfylder ikke reglerne ovenfor")
        assert all(rule in page.text for rule in RULES)
        assert password not in page.text.replace(f'value="{username}"', "")
    assert await status_of(db, username) == "pending"


async def test_refusals_of_the_first_step_are_sentences_that_say_what_to_do(
    db, clock, sealer, client, portal
) -> None:
    username, code = await new_colleague(db, clock, sealer, client)
    wrong = await post_form(portal, "/aktiver", first_step(username, "ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ"))
    assert wrong.status_code == 400
    assert "Brugernavnet eller aktiveringskoden er forkert. Tjek dem mod brevet eller e-mailen" in wrong.text

    details = await post_form(portal, "/aktiver", first_step(username, code, email="jonas@privat.example"))
    assert details.status_code == 422
    assert "angivet af den administrator, der oprettede dit login" in details.text
    assert field_error(details, "email") == "Lad feltet være tomt: din administrator har angivet det."

    assert (await post_form(portal, "/aktiver", first_step(username, code))).status_code == 303
    again = await post_form(portal, "/aktiver", first_step(username, code))
    assert again.status_code == 409
    assert "Login&#39;et er allerede aktiveret. Log ind med brugernavnet" in again.text
    assert f'href="/log-ind?username={username}"' in again.text

    missing = await post_form(portal, "/aktiver", {"username": "", "activation_code": "", "password": ""})
    assert missing.status_code == 422
    assert field_error(missing, "username") and field_error(missing, "activation_code")
    assert field_error(missing, "password") == "Vælg en adgangskode."


async def test_an_expired_code_is_told_to_apply_again_or_ask_for_a_new_one(
    db, clock, sealer, client, portal
) -> None:
    username, code = await provision_admin(db, clock, sealer)
    clock.advance(timedelta(days=8))
    page = await post_form(portal, "/aktiver", first_step(username, code, email=OWN_EMAIL, mobile=OWN_MOBILE))
    assert page.status_code == 410
    assert "Aktiveringskoden er udløbet" in page.text and 'href="/ansoeg"' in page.text


async def test_starting_again_at_once_is_told_when_in_danish_time(db, clock, sealer, client, portal) -> None:
    username, code = await provision_admin(db, clock, sealer)
    step = first_step(username, code, email=OWN_EMAIL, mobile=OWN_MOBILE)
    assert (await post_form(portal, "/aktiver", step)).status_code == 303
    clock.advance(timedelta(seconds=10))
    page = await post_form(portal, "/aktiver", step)
    assert page.status_code == 429
    # Identity's cooldown is 30 s from the first start; its Retry-After rounds up by one.
    at = TEXTS["da"].time_of_day(clock.now() + timedelta(seconds=21))
    assert f"prøv igen efter kl. {at}." in page.text
    assert value_of(page, "email") == OWN_EMAIL and value_of(page, "mobile") == OWN_MOBILE


async def start_letter_activation_through_portal(portal, db, clock, sealer) -> tuple[str, str, str, str]:
    """The letter's login started through the portal: (username, confirm page path, sms, email)."""
    username, code = await provision_admin(db, clock, sealer)
    started = await post_form(
        portal, "/aktiver", first_step(username, code, email=OWN_EMAIL, mobile=OWN_MOBILE)
    )
    assert started.status_code == 303, started.text
    location = started.headers["location"]
    sent = await confirmation_codes(db, sealer, urlsplit(location).path.rsplit("/", 1)[1])
    return username, location, unsealed_code(sealer, sent["sms"]), unsealed_code(sealer, sent["email"])


async def test_expired_confirmation_codes_end_the_page_with_a_way_to_start_again(
    db, clock, sealer, client, portal
) -> None:
    username, location, sms, email = await start_letter_activation_through_portal(portal, db, clock, sealer)
    clock.advance(timedelta(minutes=16))
    page = await post_confirmation(portal, location, sms, email)
    assert page.status_code == 410
    assert "Koderne virker ikke længere" in page.text
    assert f'href="/aktiver?username={username}"' in page.text
    assert 'name="sms_code"' not in page.text  # nothing more to type here


async def test_an_unknown_activation_and_missing_or_malformed_codes_are_told_in_words(portal) -> None:
    path = "/aktiver/bekraeft/6f1c9a52-1d7e-4a55-9d0b-5d2f0c7c1e11"
    missing = await post_form(portal, path, {"sms_code": "", "email_code": "123456"})
    assert missing.status_code == 422 and field_error(missing, "sms_code") == "Skriv koden fra SMS&#39;en."
    malformed = await post_form(portal, path, {"sms_code": "12", "email_code": "123456"})
    assert malformed.status_code == 422
    assert field_error(malformed, "sms_code") == "Koden fra SMS&#39;en har 6 cifre."
    unknown = await post_form(portal, path, {"sms_code": "123456", "email_code": "123456"})
    assert unknown.status_code == 404 and "Vi kender ikke denne aktivering" in unknown.text
    assert (await portal.get("/aktiver/bekraeft/not-an-id")).status_code == 404


async def test_confirmations_posted_at_once_activate_the_login_exactly_once(
    db, clock, sealer, client, portal
) -> None:
    username, location, sms, email = await start_letter_activation_through_portal(portal, db, clock, sealer)
    token = await csrf_of(portal, location)
    path = urlsplit(location).path
    answers = await asyncio.gather(
        *(
            portal.post(
                path, data={"sms_code": sms, "email_code": email, "username": username, "csrf_token": token}
            )
            for _ in range(8)
        )
    )
    assert sorted(a.status_code for a in answers) == [303] + [409] * 7, [a.status_code for a in answers]
    for refused in (a for a in answers if a.status_code == 409):
        assert "Login&#39;et er allerede aktiveret" in refused.text
    assert await status_of(db, username) == "active"


async def test_a_confirmation_without_the_csrf_token_is_refused(db, clock, sealer, client, portal) -> None:
    username, location, sms, email = await start_letter_activation_through_portal(portal, db, clock, sealer)
    await portal.get(location)
    refused = await portal.post(urlsplit(location).path, data={"sms_code": sms, "email_code": email})
    assert refused.status_code == 403
    assert await status_of(db, username) == "pending"
