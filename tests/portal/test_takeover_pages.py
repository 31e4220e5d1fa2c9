"""The portal's takeover pages (issue 10, item 3) in front of identity's and onboarding's real
APIs (in-process, on the database under test): the choice offered where the company already
has an administrator, the cancel link's page (a GET shows, the POST cancels, once), the
administrator's list of open takeovers, the activation refused in words before the notice
period, and a login's `expired` status in the users list (item 4)."""

# ruff: noqa: F811 - fixtures are imported by name
from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from services.identity.models import Takeover
from services.onboarding.models import Application, KnownAdministrator
from tests.integration.test_administration import colleague
from tests.integration.test_takeover import NEW_EMAIL, NEW_MOBILE, NOTICE, requested_takeover
from tests.portal.conftest import csrf_of, log_in_through_portal, post_form
from tests.portal.test_apply_pages import (  # noqa: F401 - fixtures
    CUSTOMER,
    FORM,
    kept,
    onboarding_db,
    onboarding_limit,
    portal_settings,
    portal_transports,
)


async def _takeover_statuses(db) -> list[str]:
    async with db.transaction() as session:
        return sorted(t.status for t in await session.scalars(select(Takeover)))


async def test_a_company_with_an_administrator_is_offered_a_takeover_with_what_it_means(
    portal, onboarding_db
) -> None:
    async with onboarding_db.transaction() as session:
        session.add(KnownAdministrator(user_id="u1", cvr=CUSTOMER, status="active", since=datetime.now(UTC)))
    offer = await post_form(portal, "/ansoeg", FORM)
    assert offer.status_code == 409
    assert "Virksomheden har allerede en administrator. Vil I bede om at overtage administrationen?" in offer.text
    for words in ("e-Boks", "varslingsperiode", "pr. e-mail og SMS og kan annullere", "deaktiveres", "én overtagelse"):
        assert words in offer.text, words
    kept(offer, FORM)  # nothing is typed twice

    token = await csrf_of(portal, "/ansoeg")
    requested = await portal.post("/overtagelse/ansoeg", data={**FORM, "csrf_token": token})
    assert requested.status_code == 303, requested.text
    async with onboarding_db.reading() as session:
        [application] = list(await session.scalars(select(Application)))
    assert requested.headers["location"] == f"/ansoeg/{application.id}"
    assert application.kind == "takeover"


async def test_the_cancel_link_shows_the_takeover_and_only_the_post_cancels_it_once(
    portal, db, clock, sealer, client
) -> None:
    setup = await requested_takeover(db, clock, sealer, client)
    path = f"/overtagelse/annuller/{setup.tokens[setup.admin_id]}"
    shown = await portal.get(path)
    assert shown.status_code == 200
    assert "Firma 35657193 (CVR 35657193)" in shown.text and "Ny Chef" in shown.text
    assert "Annullér overtagelsen" in shown.text
    assert await _takeover_statuses(db) == ["open"]  # a GET changes nothing (mail scanners open links)

    token = await csrf_of(portal, path)
    first, second = await asyncio.gather(
        portal.post(path, data={"csrf_token": token}), portal.post(path, data={"csrf_token": token})
    )
    assert sorted((first.status_code, second.status_code)) == [200, 409]
    done = first if first.status_code == 200 else second
    used = second if done is first else first
    assert "er annulleret" in done.text
    assert "allerede annulleret" in used.text or "allerede brugt" in used.text
    assert await _takeover_statuses(db) == ["cancelled"]


async def test_an_unknown_cancel_link_is_a_404_page_in_words(portal, db, clock, sealer, client) -> None:
    await requested_takeover(db, clock, sealer, client)
    page = await portal.get("/overtagelse/annuller/not-a-link")
    assert page.status_code == 404
    assert "Linket til at annullere en overtagelse kendes ikke" in page.text


async def test_a_cancel_link_whose_administrator_was_disabled_is_a_403_page_in_words(
    portal, db, clock, sealer, client
) -> None:
    setup = await requested_takeover(db, clock, sealer, client, with_colleague_admin=True)
    kim_id = next(user_id for user_id in setup.tokens if user_id != setup.admin_id)
    assert (await client.post(f"/v1/users/{kim_id}/disable", headers=setup.admin)).status_code == 200
    page = await portal.get(f"/overtagelse/annuller/{setup.tokens[kim_id]}")
    assert page.status_code == 403
    assert "ikke længere administrerer virksomheden" in page.text
    assert await _takeover_statuses(db) == ["open"]


async def test_an_administrator_sees_and_cancels_the_open_takeover_and_others_may_not(
    portal, db, clock, sealer, client
) -> None:
    setup = await requested_takeover(db, clock, sealer, client)
    await log_in_through_portal(portal, db, sealer, setup.admin_username)
    listed = await portal.get("/overtagelse")
    assert listed.status_code == 200 and "Ny Chef" in listed.text
    [takeover] = (await client.get("/v1/takeovers", headers=setup.admin)).json()
    cancelled = await post_form(portal, f"/overtagelse/{takeover['id']}/annuller", {}, form_on="/overtagelse")
    assert (cancelled.status_code, cancelled.headers["location"]) == (303, "/overtagelse?annulleret=ja")
    after = await portal.get("/overtagelse?annulleret=ja")
    assert "Overtagelsen er annulleret." in after.text
    assert "Ingen har bedt om at overtage" in after.text
    assert await _takeover_statuses(db) == ["cancelled"]


async def test_a_user_without_user_administration_gets_a_403_page(portal, db, clock, sealer, client) -> None:
    from tests.integration.test_administration import login_email

    setup = await requested_takeover(db, clock, sealer, client)
    created = (await client.post("/v1/users", headers=setup.admin, json=colleague())).json()
    _, code = await login_email(db, sealer)
    await client.post(
        "/v1/activation",
        json={"username": created["username"], "activation_code": code, "password": "Fjordhest-Morgenkaffe-42"},
    )
    await log_in_through_portal(portal, db, sealer, created["username"])
    assert (await portal.get("/overtagelse")).status_code == 403


async def test_the_activation_page_says_when_a_takeovers_code_can_be_used(portal, db, clock, sealer, client) -> None:
    setup = await requested_takeover(db, clock, sealer, client)
    typed = {
        "username": setup.letter.username,
        "activation_code": setup.code,
        "password": "Fjordhest-Morgenkaffe-42",
        "password_again": "Fjordhest-Morgenkaffe-42",
        "name": "Ny Chef",
        "email": NEW_EMAIL,
        "mobile": NEW_MOBILE,
    }
    page = await post_form(portal, "/aktiver", typed)
    assert page.status_code == 409
    assert "kan bruges fra 8. januar 2026 kl. 10.00" in page.text  # 72 hours on, in Danish time
    clock.advance(NOTICE)
    started = await post_form(portal, "/aktiver", typed)
    assert started.status_code == 303, started.text


@pytest.mark.parametrize("language", ["da"])
async def test_a_colleague_whose_code_expired_shows_as_expired_in_the_users_list(
    portal, db, clock, sealer, client, language
) -> None:
    setup = await requested_takeover(db, clock, sealer, client)
    await client.post("/v1/users", headers=setup.admin, json=colleague())
    clock.advance(timedelta(days=7))
    await log_in_through_portal(portal, db, sealer, setup.admin_username)
    users = await portal.get("/brugere")
    assert 'class="status expired"' in users.text and "Aktiveringskoden er udløbet" in users.text
