"""Applying for access through the portal (S1) in front of onboarding's real API (in-process,
on the database under test): each refusal in words with what was typed kept, the receipt with
the time the letter will be in e-Boks (S2), and the application's status page."""

# ruff: noqa: F811 - fixtures are imported by name
from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, update

from services.onboarding.api import create_api as create_onboarding_api
from services.onboarding.config import OnboardingSettings
from services.onboarding.models import Application, KnownAdministrator, KnownCustomer
from services.portal.i18n import load_texts
from shared.db import Database
from tests.portal.conftest import post_form
from tests.support.asgi import AppTransport

CUSTOMER = "22109340"  # a business customer onboarding knows
STRANGER = "41204559"  # a valid CVR that is no customer
HOLDING, SUBSIDIARY = "35657193", "37826111"

FORM = {
    "cvr": CUSTOMER,
    "company_name": "Bageriet Solsikke ApS",
    "contact.name": "Ida Bager",
    "contact.email": "ida@solsikke.example",
    "contact.mobile": "20304050",
}
TEXTS = load_texts()


@pytest.fixture
async def onboarding_db(onboarding_url: str) -> AsyncIterator[Database]:
    database = Database(onboarding_url)
    async with database.transaction() as session:
        session.add(KnownCustomer(cvr=CUSTOMER, name="Bageriet Solsikke ApS", parent_cvr=None))
        session.add(KnownCustomer(cvr=HOLDING, name="Nordlys Holding A/S", parent_cvr=None))
        session.add(KnownCustomer(cvr=SUBSIDIARY, name="Nordlys Energi A/S", parent_cvr=HOLDING))
    yield database
    await database.dispose()


@pytest.fixture
def onboarding_limit() -> int:
    """Onboarding's applications per client a minute (0: no limit); a test may parametrize it."""
    return 0


@pytest.fixture
def portal_transports(identity_transport, onboarding_db, onboarding_limit, clock) -> dict:
    settings = OnboardingSettings(database_url=onboarding_db.url, rate_limit_per_minute=onboarding_limit)
    onboarding = AppTransport(app=create_onboarding_api(settings, clock=clock))
    return {"identity": identity_transport, "onboarding": onboarding}


@pytest.fixture
def portal_settings(portal_settings):
    return portal_settings.model_copy(update={"onboarding_url": "http://onboarding"})


def field_error(page: httpx.Response, name: str) -> str:
    found = re.search(rf'id="f-{name.replace(".", "-")}-error">([^<]*)<', page.text)
    assert found, f"no error next to {name}"
    return found.group(1)


def kept(page: httpx.Response, values: dict[str, str]) -> None:
    """Every typed value is in its field again."""
    for name, value in values.items():
        assert re.search(rf'name="{re.escape(name)}" type="\w+" value="{re.escape(value)}"', page.text), name


async def applications(db: Database) -> list[Application]:
    async with db.reading() as session:
        return list(await session.scalars(select(Application)))


async def test_the_form_names_its_fields_as_onboarding_does_and_its_link_is_on_the_front_page(portal) -> None:
    front = await portal.get("/")
    assert 'href="/ansoeg"' in front.text
    page = await portal.get("/ansoeg")
    assert page.status_code == 200
    assert page.text.count("<h1>") == 1
    for name in FORM:
        label_for = f'for="f-{name.replace(".", "-")}"'
        assert f'name="{name}"' in page.text and label_for in page.text


async def test_an_application_goes_to_onboarding_and_the_receipt_says_when_the_letter_is_in_eboks(
    portal, onboarding_db, clock
) -> None:
    answer = await post_form(portal, "/ansoeg", FORM)
    assert answer.status_code == 303, answer.text
    [stored] = await applications(onboarding_db)
    assert answer.headers["location"] == f"/ansoeg/{stored.id}"
    assert stored.contact_mobile == "+4520304050" and stored.language == "da"

    receipt = await portal.get(answer.headers["location"])
    assert receipt.status_code == 200
    deliver_by = TEXTS["da"].when(stored.deliver_by)
    assert re.fullmatch(r"\d+\. \w+ \d{4} kl\. \d\d\.\d\d", deliver_by)
    assert f"e-Boks for CVR-nummer {CUSTOMER} senest {deliver_by}" in receipt.text
    assert "Modtaget" in receipt.text


async def test_the_status_page_shows_each_status_in_words(portal, onboarding_db) -> None:
    answer = await post_form(portal, "/ansoeg", FORM)
    path = answer.headers["location"]
    words = {
        "provisioning": "Login&#39;et oprettes",
        "credentials_sent": "Brevet er sendt",
        "failed": "Mislykkedes",
        "rejected": "Afvist",
    }
    for status, word in words.items():
        async with onboarding_db.transaction() as session:
            await session.execute(update(Application).values(status=status))
        page = await portal.get(path)
        assert page.status_code == 200 and f'<span class="status">{word}</span>' in page.text, status
        if status == "credentials_sent":
            assert 'href="/aktiver"' in page.text
        if status == "failed":
            assert 'class="button" href="/ansoeg"' in page.text  # applying again is the way on
        if status == "rejected":
            assert "Bed administratoren om et login" in page.text
            assert 'class="button" href="/ansoeg"' not in page.text


async def test_an_unknown_or_malformed_application_id_is_a_404_page_in_words(portal) -> None:
    unknown = await portal.get(f"/ansoeg/{uuid.uuid4()}")
    assert unknown.status_code == 404 and "Vi kender ikke den ansøgning" in unknown.text
    malformed = await portal.get("/ansoeg/not-an-id")
    assert malformed.status_code == 404 and "Siden findes ikke" in malformed.text


async def test_invalid_fields_are_told_next_to_each_field_and_what_was_typed_is_kept(
    portal, onboarding_db
) -> None:
    typed = {**FORM, "cvr": "22109341", "contact.email": "ida@", "contact.mobile": "1234"}
    page = await post_form(portal, "/ansoeg", typed)
    assert page.status_code == 422
    assert field_error(page, "cvr").startswith("Skriv et gyldigt CVR-nummer")
    assert field_error(page, "contact.email").startswith("Skriv en gyldig e-mailadresse")
    assert field_error(page, "contact.mobile").startswith("Skriv et dansk mobilnummer")
    assert 'id="f-company_name-error"' not in page.text
    kept(page, typed)
    assert await applications(onboarding_db) == []


async def test_a_company_that_is_no_customer_is_told_to_check_the_cvr_or_contact_us(portal) -> None:
    typed = {**FORM, "cvr": STRANGER}
    page = await post_form(portal, "/ansoeg", typed)
    assert page.status_code == 403
    assert f"CVR-nummer {STRANGER} er ikke registreret som erhvervskunde" in page.text
    assert "kontakt Erhvervskundeservice" in page.text
    kept(page, typed)


async def test_a_company_with_an_administrator_is_told_to_ask_them_or_support(portal, onboarding_db) -> None:
    """Or to request a takeover: tests/portal/test_takeover_pages.py."""
    async with onboarding_db.transaction() as session:
        session.add(KnownAdministrator(user_id="u1", cvr=CUSTOMER, status="active", since=datetime.now(UTC)))
    page = await post_form(portal, "/ansoeg", FORM)
    assert page.status_code == 409
    assert "har allerede en administrator" in page.text
    assert "bed hellere om et login til dig" in page.text
    assert "kontakte Erhvervskundeservice: vi sletter det gamle login" in page.text
    kept(page, FORM)


async def test_a_subsidiary_is_told_which_company_of_its_group_to_ask(portal, onboarding_db) -> None:
    async with onboarding_db.transaction() as session:
        session.add(KnownAdministrator(user_id="u2", cvr=HOLDING, status="active", since=datetime.now(UTC)))
    typed = {**FORM, "cvr": SUBSIDIARY, "company_name": "Nordlys Energi A/S"}
    page = await post_form(portal, "/ansoeg", typed)
    assert page.status_code == 409
    assert f"hører til koncernen Nordlys Holding A/S (CVR {HOLDING})" in page.text
    assert "Bed administratoren hos Nordlys Holding A/S om at oprette et login til dig" in page.text
    kept(page, typed)


async def test_a_second_application_while_one_is_in_flight_is_told_to_look_in_eboks(portal) -> None:
    assert (await post_form(portal, "/ansoeg", FORM)).status_code == 303
    page = await post_form(portal, "/ansoeg", FORM)
    assert page.status_code == 409
    assert f"Der er allerede en ansøgning i gang for CVR-nummer {CUSTOMER}" in page.text
    assert "Se efter det der, før I ansøger igen" in page.text
    kept(page, FORM)


@pytest.mark.parametrize("onboarding_limit", [1])
async def test_too_many_applications_are_told_when_to_try_again_in_danish_time(portal, clock) -> None:
    assert (await post_form(portal, "/ansoeg", FORM)).status_code == 303
    typed = {**FORM, "cvr": HOLDING, "company_name": "Nordlys Holding A/S"}
    page = await post_form(portal, "/ansoeg", typed)
    assert page.status_code == 429
    # Onboarding's Retry-After counts a real minute; the page adds it to the portal's clock.
    times = {TEXTS["da"].time_of_day(clock.now() + timedelta(seconds=s)) for s in range(55, 63)}
    assert any(f"Prøv igen efter kl. {t}." in page.text for t in times), page.text
    kept(page, typed)


async def test_in_english_the_refusal_is_in_english_and_the_letter_is_asked_for_in_english(
    portal, onboarding_db
) -> None:
    portal.cookies.set("adgang-language", "en")
    refused = await post_form(portal, "/ansoeg", {**FORM, "cvr": STRANGER})
    assert "is not registered as a business customer" in refused.text
    accepted = await post_form(portal, "/ansoeg", FORM)
    assert accepted.status_code == 303
    [stored] = await applications(onboarding_db)
    assert stored.language == "en"
    receipt = await portal.get(accepted.headers["location"])
    assert f"by {TEXTS['en'].when(stored.deliver_by)}" in receipt.text


async def test_applications_for_one_company_at_once_give_one_receipt_and_the_others_are_told_why(
    portal, onboarding_db
) -> None:
    """Onboarding lets one application per CVR be in flight; through the portal, the others
    each get the sentence about the application in progress."""
    answers = await asyncio.gather(*(post_form(portal, "/ansoeg", FORM) for _ in range(6)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [303, 409, 409, 409, 409, 409], [a.text[:200] for a in answers]
    for refused in (a for a in answers if a.status_code == 409):
        assert "Der er allerede en ansøgning i gang" in refused.text
    assert len(await applications(onboarding_db)) == 1
