"""The support console in the portal (S3, S13): staff log in with two factors, find a company
by CVR, read its logins, applications, letters and audit trail, and delete, unlock and send a
letter again; customers and strangers are refused every page and every action.

The portal runs in front of identity's, onboarding's and the notifier's real APIs, in-process
on the database under test; onboarding and the notifier verify the staff member's token
against identity's own JWKS."""

# ruff: noqa: F811 - fixtures are imported by name
from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from services.identity.models import AuditEntry, User
from services.identity.support import create_staff
from services.notifier.api import create_api as notifier_api
from services.notifier.config import NotifierSettings
from services.onboarding.api import create_api as onboarding_api
from services.onboarding.config import OnboardingSettings
from services.portal.api import create_api as create_portal_api
from services.portal.config import PortalSettings
from shared.clock import FrozenClock
from shared.db import Database
from shared.sealing import generate_key
from shared.settings import Environment
from tests.integration.test_activation import PASSWORD
from tests.integration.test_administration import activated_group_admin
from tests.portal.conftest import csrf_of, log_in_through_portal, post_form
from tests.security.test_support_console_routes import add_applications, add_deliveries
from tests.security.test_support_resend_letter import LETTER_CVR, letter_login, sent_letters
from tests.security.world import PARENT, add_user
from tests.support.asgi import AppTransport

JWKS = "http://identity/.well-known/jwks.json"
STAFF = "support.anna"
COMPANY_PAGE = f"/support/virksomheder/{PARENT}"


class Borrowed(httpx.AsyncBaseTransport):
    """Another client's way to an app: closing this client leaves the app running for its owner."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        pass


@pytest.fixture
def jwks_client(identity_transport: AppTransport) -> httpx.AsyncClient:
    """Onboarding's and the notifier's way to identity's public keys."""
    return httpx.AsyncClient(transport=Borrowed(identity_transport))


@pytest.fixture
def onboarding_transport(onboarding_url, clock, jwks_client) -> AppTransport:
    settings = OnboardingSettings(
        database_url=onboarding_url, environment=Environment.production, identity_jwks_url=JWKS
    )
    return AppTransport(app=onboarding_api(settings, clock=clock, jwks_client=jwks_client))


@pytest.fixture
def notifier_transport(notifier_url, clock, jwks_client, tmp_path) -> AppTransport:
    settings = NotifierSettings.model_validate(
        {
            "database_url": notifier_url,
            "environment": Environment.production,
            "identity_jwks_url": JWKS,
            "var_dir": tmp_path / "notifier",
            # what production requires; nothing is sent here
            "portal_url": "https://selvbetjening.example.dk/aktiver",
            "email_smtp_host": "smtp.example.dk",
            "email_from": "Adgang <no-reply@example.dk>",
            "sms_gateway_url": "https://sms.example.dk/v1/sms",
            "sms_gateway_token": "a-gateway-token",
            "billing_document_token": "a-document-token",
            "sealing_keys": f"k1:{generate_key()}",
            "sealing_active_key_id": "k1",
        }
    )
    return AppTransport(app=notifier_api(settings, clock=clock, jwks_client=jwks_client))


@pytest.fixture
def portal_transports(identity_transport, onboarding_transport, notifier_transport):
    return {"identity": identity_transport, "onboarding": onboarding_transport, "notifier": notifier_transport}


@pytest.fixture
async def portal_transport(
    portal_settings: PortalSettings, portal_transports, clock: FrozenClock
) -> AsyncIterator[AppTransport]:
    transport = AppTransport(app=create_portal_api(portal_settings, clock=clock, transports=portal_transports))
    yield transport
    await transport.aclose()


def browser_of(transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=Borrowed(transport), base_url="http://portal")


@pytest.fixture
async def portal(portal_transport: AppTransport) -> AsyncIterator[httpx.AsyncClient]:
    """Support staff's browser (the other browsers come from `browser_of`)."""
    async with browser_of(portal_transport) as browser:
        yield browser


async def staff_member(db: Database, clock: FrozenClock, client: httpx.AsyncClient) -> str:
    """A support login, activated with its code; returns its id."""
    async with db.transaction() as session:
        staff, code = await create_staff(
            session, clock, username=STAFF, name="Anna Support", email="anna@adgang.example", mobile="+4520999999"
        )
    activated = await client.post(
        "/v1/activation", json={"username": STAFF, "activation_code": code, "password": PASSWORD}
    )
    assert activated.status_code == 200, activated.text
    return staff.id


async def staff_logged_in(db, clock, sealer, client, portal) -> str:
    staff_id = await staff_member(db, clock, client)
    done = await log_in_through_portal(portal, db, sealer, STAFF)
    assert done.headers["location"] == "/support"
    return staff_id


async def audit_actions(db: Database) -> list[str]:
    """The audit trail's actions, logins left out (each login is in the trail too)."""
    async with db.transaction() as session:
        return list(
            await session.scalars(
                select(AuditEntry.action)
                .where(AuditEntry.action.not_like("login.%"))
                .order_by(AuditEntry.at, AuditEntry.id)
            )
        )


def ids_in(page: httpx.Response) -> set[str]:
    return set(re.findall(r"/brugere/([0-9a-f-]{36})/", page.text))


async def test_staff_log_in_with_two_factors_land_on_support_and_find_a_company_by_cvr(
    db, clock, sealer, client, portal
) -> None:
    await staff_logged_in(db, clock, sealer, client, portal)

    console = await portal.get("/support")
    assert console.status_code == 200
    assert '<h1>Find en virksomhed</h1>' in console.text
    assert 'href="/support" aria-current="page"' in console.text and 'href="/profil"' in console.text
    assert 'href="/brugere"' not in console.text and 'href="/oversigt"' not in console.text
    assert (await portal.get("/oversigt")).status_code == 403  # no customer pages for staff

    wrong = await portal.get("/support", params={"cvr": "1234567a"})
    assert wrong.status_code == 422
    assert 'id="f-cvr-error"' in wrong.text and "Et CVR-nummer er 8 cifre" in wrong.text
    assert 'value="1234567a"' in wrong.text
    found = await portal.get("/support", params={"cvr": "3565 7193"})
    assert found.status_code == 303 and found.headers["location"] == COMPANY_PAGE
    assert (await portal.get("/support/virksomheder/1234")).status_code == 404


async def test_the_company_page_shows_logins_applications_letters_and_audit_trail_in_danish_time(
    db, clock, sealer, client, portal, onboarding_url, notifier_url
) -> None:
    username = await activated_group_admin(db, clock, sealer, client)
    await add_applications(onboarding_url, clock)
    await add_deliveries(notifier_url, clock)
    await staff_logged_in(db, clock, sealer, client, portal)

    page = await portal.get(COMPANY_PAGE)

    assert page.status_code == 200, page.text
    text = page.text
    assert f"<h1>Virksomhed med CVR {PARENT}</h1>" in text
    # Logins (the clock stands at 09.00 UTC on 5 January: 10.00 in Danish winter time).
    assert "Mette Holm" in text and username in text and "Administrator" in text and "Aktiv" in text
    assert "5. januar 2026 kl. 10.00" in text
    # Applications: status in words, when the letter was due and when it came.
    assert "Mislykkedes" in text and "Afvist" in text and "Brevet er sendt" in text
    assert "The letter could not be delivered." in text
    assert "5. januar 2026 kl. 07.00" in text and "5. januar 2026 kl. 07.05" in text  # submitted, delivered
    # Letters to the company's e-Boks, and none to another company.
    assert "Leveret" in text and "Fejl: e-Boks refused the letter" in text
    assert "5. januar 2026 kl. 09.50" in text
    assert text.count("Sendt igen af support") == 2  # the seeded letters have no application
    # The audit trail shows this very look-up, by the staff member reading it.
    assert "Support så virksomhedens logins" in text and "<code>support.list-users</code>" in text
    assert "<td>Dig</td>" in text
    assert "svarer ikke" not in text

    english = await portal.get("/sprog", params={"til": "en", "next": COMPANY_PAGE})
    assert english.status_code == 303
    page = await portal.get(COMPANY_PAGE)
    assert "Company with CVR" in page.text and "5 January 2026 at 10:00" in page.text


async def test_a_section_whose_service_does_not_answer_says_so_and_the_rest_is_shown(
    db, clock, sealer, client, portal_settings, identity_transport
) -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    transports = {
        "identity": identity_transport,
        "onboarding": httpx.MockTransport(lambda _: httpx.Response(500)),
        "notifier": httpx.MockTransport(refused),
    }
    app = create_portal_api(portal_settings, clock=clock, transports=transports)
    await activated_group_admin(db, clock, sealer, client)
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://portal") as browser:
        await staff_logged_in(db, clock, sealer, client, browser)
        page = await browser.get(COMPANY_PAGE)

    assert page.status_code == 200, page.text
    assert "Mette Holm" in page.text
    assert "ansøgninger lige nu, fordi ansøgningstjenesten ikke svarer" in page.text
    assert "brevene lige nu, fordi udsendelsestjenesten ikke svarer" in page.text


async def test_support_deletes_an_orphaned_administrator_after_a_confirmation_and_the_trail_shows_it(
    db, clock, sealer, client, portal
) -> None:
    await activated_group_admin(db, clock, sealer, client)
    staff_id = await staff_logged_in(db, clock, sealer, client, portal)
    (admin_id,) = ids_in(await portal.get(COMPANY_PAGE))

    confirm = await portal.get(f"{COMPANY_PAGE}/brugere/{admin_id}/slet")
    assert confirm.status_code == 200
    assert "<h1>Slet login for Mette Holm?</h1>" in confirm.text
    assert "kan virksomheden derefter ansøge om adgang igen" in confirm.text
    assert f'action="{COMPANY_PAGE}/brugere/{admin_id}/slet"' in confirm.text
    assert "support.delete-user" not in await audit_actions(db)  # looking is not deleting

    deleted = await post_form(
        portal, f"{COMPANY_PAGE}/brugere/{admin_id}/slet", {}, form_on=f"{COMPANY_PAGE}/brugere/{admin_id}/slet"
    )
    assert deleted.status_code == 303 and deleted.headers["location"] == COMPANY_PAGE

    after = await portal.get(COMPANY_PAGE)
    assert "Login er slettet" in after.text and "kan virksomheden nu ansøge om adgang igen" in after.text
    assert "Virksomheden har ingen logins. Den kan ansøge om adgang." in after.text
    assert "<code>support.delete-user</code>" in after.text
    assert "Login er slettet" not in (await portal.get(COMPANY_PAGE)).text  # the notice shows once
    async with db.transaction() as session:
        admin = await session.get(User, admin_id)
        entry = await session.scalar(select(AuditEntry).where(AuditEntry.action == "support.delete-user"))
    assert admin is not None and admin.status == "deleted"
    assert entry is not None and (entry.actor_id, entry.target_user_id, entry.tenant_cvr) == (
        staff_id,
        admin_id,
        PARENT,
    )
    again = await post_form(portal, f"{COMPANY_PAGE}/brugere/{admin_id}/slet", {}, form_on=COMPANY_PAGE)
    assert again.status_code == 404 and "Vi kan ikke finde det login" in again.text
    gone = await portal.get(f"{COMPANY_PAGE}/brugere/{admin_id}/slet")
    assert gone.status_code == 404 and "Vi kan ikke finde det login" in gone.text


async def lock_out(client: httpx.AsyncClient, clock: FrozenClock, username: str) -> None:
    """Wrong passwords, one after another, until failed passwords lock the username."""
    for _ in range(30):
        answer = await client.post("/v1/login", json={"username": username, "password": "a wrong guess"})
        if answer.status_code == 429 and "locked" in answer.text.lower():
            return
        clock.advance(timedelta(seconds=20))
    raise AssertionError("the username was not locked")


async def test_support_sees_a_locked_login_and_unlocks_it(db, clock, sealer, client, portal) -> None:
    username = await activated_group_admin(db, clock, sealer, client)
    await lock_out(client, clock, username)
    await staff_logged_in(db, clock, sealer, client, portal)

    page = await portal.get(COMPANY_PAGE)
    assert "Låst til" in page.text and "efter forkerte adgangskoder" in page.text
    (admin_id,) = ids_in(page)
    locked = await client.post("/v1/login", json={"username": username, "password": PASSWORD})
    assert locked.status_code == 429

    unlocked = await post_form(portal, f"{COMPANY_PAGE}/brugere/{admin_id}/laas-op", {}, form_on=COMPANY_PAGE)
    assert unlocked.status_code == 303 and unlocked.headers["location"] == COMPANY_PAGE

    after = await portal.get(COMPANY_PAGE)
    assert "Login er låst op" in after.text and "Låst til" not in after.text
    assert "<code>support.unlock-user</code>" in after.text
    again = await client.post("/v1/login", json={"username": username, "password": PASSWORD})
    assert again.status_code == 200, again.text


async def test_support_sends_a_pending_letter_logins_letter_again_until_the_days_limit_in_words(
    db, clock, sealer, client, portal
) -> None:
    user, _ = await letter_login(db, clock, sealer)
    await staff_logged_in(db, clock, sealer, client, portal)
    company = f"/support/virksomheder/{LETTER_CVR}"
    page = await portal.get(company)
    assert "Venter på aktivering" in page.text and "Send brevet til Ole Fisker igen" in page.text
    action = f"{company}/brugere/{user.id}/send-brev"

    sent = await post_form(portal, action, {}, form_on=company)
    assert sent.status_code == 303 and sent.headers["location"] == company
    after = await portal.get(company)
    # Due within two hours of now (S2): 11.00 UTC, 12.00 Danish time.
    assert f"Et nyt brev med en ny aktiveringskode til {user.username}" in after.text
    assert "fremme senest 5. januar 2026 kl. 12.00" in after.text
    assert "<code>support.resend-letter</code>" in after.text
    assert len(await sent_letters(db)) == 2

    assert (await post_form(portal, action, {}, form_on=company)).status_code == 303
    refused = await post_form(portal, action, {}, form_on=company)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    # A day after the first of the three letters (09.00 UTC on 5 January).
    assert "Du kan sende et nyt fra 6. januar 2026 kl. 10.00" in refused.text
    assert "Venter på aktivering" in refused.text  # the company page, with the refusal on it
    assert len(await sent_letters(db)) == 3


async def test_a_letter_for_an_active_or_a_colleagues_login_is_refused_in_words(
    db, clock, sealer, client, portal
) -> None:
    await activated_group_admin(db, clock, sealer, client)
    colleague = await add_user(db, clock, grants={PARENT: "all"}, functions=["invoices"], status="pending")
    await staff_logged_in(db, clock, sealer, client, portal)
    admin_id = next(i for i in ids_in(await portal.get(COMPANY_PAGE)) if i != colleague.id)

    active = await post_form(portal, f"{COMPANY_PAGE}/brugere/{admin_id}/send-brev", {}, form_on=COMPANY_PAGE)
    assert active.status_code == 409
    assert "Login er allerede aktiveret, så der er intet brev at sende igen" in active.text
    made_by_admin = await post_form(
        portal, f"{COMPANY_PAGE}/brugere/{colleague.id}/send-brev", {}, form_on=COMPANY_PAGE
    )
    assert made_by_admin.status_code == 409
    assert "koden gik på e-mail, ikke med brev" in made_by_admin.text
    unknown = await post_form(
        portal, f"{COMPANY_PAGE}/brugere/00000000-0000-0000-0000-000000000000/laas-op", {}, form_on=COMPANY_PAGE
    )
    assert unknown.status_code == 404 and "Vi kan ikke finde det login" in unknown.text
    without_csrf = await portal.post(f"{COMPANY_PAGE}/brugere/{admin_id}/slet")
    assert without_csrf.status_code == 403
    async with db.transaction() as session:
        assert (await session.get(User, admin_id)).status == "active"  # type: ignore[union-attr]


async def test_customers_and_strangers_are_refused_every_support_page_and_action_at_once_and_nothing_changes(
    db, clock, sealer, client, portal, portal_transport
) -> None:
    username = await activated_group_admin(db, clock, sealer, client)
    colleague = await add_user(db, clock, grants={PARENT: "all"}, functions=["invoices"])
    pending = await add_user(db, clock, grants={PARENT: "all"}, functions=["invoices"], status="pending")
    await lock_out(client, clock, colleague.username)
    await staff_logged_in(db, clock, sealer, client, portal)
    admin_id = next(i for i in ids_in(await portal.get(COMPANY_PAGE)) if i not in (colleague.id, pending.id))
    trail_before = await audit_actions(db)

    async with browser_of(portal_transport) as customer, browser_of(portal_transport) as stranger:
        await log_in_through_portal(customer, db, sealer, username)
        customer_token = await csrf_of(customer, "/oversigt")
        stranger_token = await csrf_of(stranger, "/log-ind")
        pages = [
            "/support",
            f"/support?cvr={PARENT}",
            COMPANY_PAGE,
            f"{COMPANY_PAGE}/brugere/{admin_id}/slet",
        ]
        actions = [
            f"{COMPANY_PAGE}/brugere/{target}/{verb}"
            for target in (admin_id, colleague.id, pending.id)
            for verb in ("slet", "laas-op", "send-brev")
        ]
        requests = [
            (who, browser.get(path) if method == "GET" else browser.post(path, data={"csrf_token": token}))
            for _ in range(2)
            for who, browser, token in (("customer", customer, customer_token), ("stranger", stranger, stranger_token))
            for method, path in [("GET", p) for p in pages] + [("POST", a) for a in actions]
        ]
        answers = await asyncio.gather(*[request for _, request in requests])

    for (who, _), answer in zip(requests, answers, strict=True):
        if who == "customer":
            assert answer.status_code == 403, answer.request.url
            assert "Siden er kun for supportmedarbejdere." in answer.text
        else:
            assert answer.status_code == 303, answer.request.url
            assert answer.headers["location"].startswith("/log-ind?next=")
    assert await audit_actions(db) == trail_before
    async with db.transaction() as session:
        statuses = {
            u.id: u.status
            for u in await session.scalars(select(User).where(User.id.in_([admin_id, colleague.id, pending.id])))
        }
    assert statuses == {admin_id: "active", colleague.id: "active", pending.id: "pending"}
    assert "Låst til" in (await portal.get(COMPANY_PAGE)).text  # the colleague is still locked
