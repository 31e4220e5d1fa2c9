"""The portal in-process, in front of identity's real API (also in-process) on the database
under test: pages are fetched and forms posted as a browser would, with its cookies."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name
from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from services.billing.api import create_api as create_billing_api
from services.billing.config import BillingSettings
from services.identity.api import create_api as create_identity_api
from services.identity.config import IdentitySettings
from services.portal.api import create_api as create_portal_api
from services.portal.config import PortalSettings
from shared.clock import FrozenClock
from shared.db import Database
from shared.sealing import Sealer
from tests.integration.billing_fixtures import billing_url  # noqa: F401 - fixture
from tests.integration.test_activation import PASSWORD
from tests.integration.test_login import database_url, last_code, settings  # noqa: F401 - fixtures
from tests.support.asgi import AppTransport

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def identity_transport(
    settings: IdentitySettings, clock: FrozenClock, sealer: Sealer, monkeypatch
) -> AppTransport:
    monkeypatch.setattr(IdentitySettings, "sealer", lambda self: sealer)
    return AppTransport(app=create_identity_api(settings, clock=clock))


@pytest.fixture
async def client(identity_transport: AppTransport) -> AsyncIterator[httpx.AsyncClient]:
    """Identity's API, for a test to set the scene as another client would."""
    async with httpx.AsyncClient(transport=identity_transport, base_url="http://identity") as http:
        yield http


@pytest.fixture
def portal_settings(portal_url: str, tmp_path) -> PortalSettings:
    return PortalSettings(database_url=portal_url, var_dir=tmp_path / "portal", identity_url="http://identity")


@pytest.fixture
def portal_transports(identity_transport: AppTransport) -> dict[str, httpx.AsyncBaseTransport]:
    """The services the portal calls, by name; a test may add onboarding's."""
    return {"identity": identity_transport}


@pytest.fixture
async def billing_transport(
    billing_url: str, identity_transport: AppTransport, clock: FrozenClock, tmp_path
) -> AsyncIterator[AppTransport]:
    """Billing's real API on a database with the demo data (the identity fixtures' group and
    accounts are the demo group's), trusting the tokens identity signs. A billing page's test
    adds it to `portal_transports` as `"billing"`; the database is the module's, so a test that
    changes something reads it back rather than assuming a fresh start."""
    settings = BillingSettings(
        database_url=billing_url,
        var_dir=tmp_path / "billing",
        identity_jwks_url="http://identity/.well-known/jwks.json",
    )
    async with httpx.AsyncClient(transport=identity_transport, base_url="http://identity") as jwks:
        yield AppTransport(app=create_billing_api(settings, clock=clock, jwks_client=jwks))


@pytest.fixture
async def portal(
    portal_settings: PortalSettings,
    portal_transports: dict[str, httpx.AsyncBaseTransport],
    clock: FrozenClock,
) -> AsyncIterator[httpx.AsyncClient]:
    """A browser of the portal: keeps its cookies, follows no redirect by itself."""
    app = create_portal_api(portal_settings, clock=clock, transports=portal_transports)
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://portal") as browser:
        yield browser


async def csrf_of(browser: httpx.AsyncClient, path: str) -> str:
    """The CSRF token of the form on `path` (loading it as a browser would)."""
    page = await browser.get(path)
    found = CSRF.search(page.text)
    assert found, f"no form with a CSRF token on {path}: {page.status_code}"
    return found.group(1)


async def post_form(
    browser: httpx.AsyncClient, path: str, data: dict[str, str], *, form_on: str | None = None
) -> httpx.Response:
    """Post a form as the browser would: with the token of the page that shows it."""
    token = await csrf_of(browser, form_on or path)
    return await browser.post(path, data={**data, "csrf_token": token})


async def log_in_through_portal(
    browser: httpx.AsyncClient,
    db: Database,
    sealer: Sealer,
    username: str,
    method: str = "email",
    *,
    unlock_code: str | None = None,
) -> httpx.Response:
    """Password (with the emailed `unlock_code` of a locked login, if given), a code sent by
    `method`, the code: answers the redirect after login."""
    typed = {"username": username, "password": PASSWORD}
    if unlock_code is not None:
        typed["device_token"] = unlock_code
    first = await post_form(browser, "/log-ind", typed)
    assert first.status_code == 303 and first.headers["location"] == "/log-ind/kode", first.text
    sent = await post_form(browser, "/log-ind/send", {"method": method}, form_on="/log-ind/kode")
    assert sent.status_code == 303, sent.text
    _, code = await last_code(db, sealer)
    done = await post_form(browser, "/log-ind/kode", {"code": code})
    assert done.status_code == 303, done.text
    return done
