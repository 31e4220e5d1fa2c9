"""The portal's edge (docs/portal.md): the cookie's flags, tokens that never leave the
server, the security headers on every answer, and a browser's parallel requests when its
access token must be refreshed."""

# ruff: noqa: F811 - fixtures are imported by name
from __future__ import annotations

import asyncio
import logging
import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from services.portal.config import PortalSettings
from services.portal.web import CONTENT_SECURITY_POLICY
from tests.integration.test_administration import activated_group_admin
from tests.portal.conftest import log_in_through_portal, post_form


class RecordingTransport(httpx.AsyncBaseTransport):
    """Passes the portal's calls to identity and keeps every token identity answered with."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.tokens: set[str] = set()
        self.refreshes = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path.endswith("/verify") or request.url.path == "/v1/token/refresh":
            await response.aread()
            if response.status_code == 200:
                body = response.json()
                self.tokens |= {
                    body[k] for k in ("access_token", "refresh_token", "device_token") if body.get(k)
                }
                self.refreshes += request.url.path == "/v1/token/refresh"
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
def recording(identity_transport) -> RecordingTransport:
    return RecordingTransport(identity_transport)


@pytest.fixture
def portal_transports(recording: RecordingTransport) -> dict[str, httpx.AsyncBaseTransport]:
    return {"identity": recording}


@pytest.fixture
def portal_settings(portal_url: str, tmp_path, sealer) -> PortalSettings:
    """As outside development: HTTPS only, so `Secure` and the `__Host-` prefix."""
    return PortalSettings(
        environment="test", database_url=portal_url, var_dir=tmp_path / "portal", identity_url="http://identity"
    )


@pytest.fixture
async def portal(portal_settings, portal_transports, clock):
    from services.portal.api import create_api
    from tests.support.asgi import AppTransport

    app = create_api(portal_settings, clock=clock, transports=portal_transports)
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="https://portal") as browser:
        yield browser


async def test_the_session_cookie_is_host_only_secure_httponly_and_samesite_lax(
    db, clock, sealer, client, portal
) -> None:
    username = await activated_group_admin(db, clock, sealer, client)
    first = await portal.get("/")
    done = await log_in_through_portal(portal, db, sealer, username)
    for answer in (first, done):
        cookie = next(
            c for c in answer.headers.get_list("set-cookie") if c.startswith("__Host-adgang-session=")
        )
        flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "secure", "samesite", "path"} <= flags and "domain" not in flags, cookie
        assert "samesite=lax" in cookie.lower() and "path=/" in cookie.lower()


async def test_no_token_reaches_a_page_a_cookie_or_a_log(
    db, clock, sealer, client, portal, recording, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    username = await activated_group_admin(db, clock, sealer, client)
    answers = [await portal.get("/")]
    answers.append(await log_in_through_portal(portal, db, sealer, username))
    for path in ("/oversigt", "/log-ind", "/findes-ikke"):
        answers.append(await portal.get(path))
    clock.advance(timedelta(minutes=6))  # the access token is refreshed on the next page
    answers.append(await portal.get("/oversigt"))
    assert recording.refreshes == 1 and len(recording.tokens) >= 4
    seen = "\n".join(a.text + "\n" + "\n".join(f"{k}: {v}" for k, v in a.headers.items()) for a in answers)
    seen += "\n" + "\n".join(f"{c.name}={c.value}" for c in portal.cookies.jar) + "\n" + caplog.text
    leaked = [token[:12] for token in recording.tokens if token in seen]
    assert not leaked, f"tokens in pages, cookies or logs: {leaked}"


async def test_every_page_and_error_carries_the_security_headers(db, clock, sealer, client, portal) -> None:
    username = await activated_group_admin(db, clock, sealer, client)
    anonymous = [await portal.get(p) for p in ("/", "/log-ind", "/log-ind/kode", "/findes-ikke")]
    anonymous.append(await portal.post("/log-ind", data={"username": "x"}))  # no CSRF token: 403 page
    await log_in_through_portal(portal, db, sealer, username)
    signed_in = [await portal.get(p) for p in ("/oversigt", "/findes-ikke")]
    for answer in anonymous + signed_in:
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, answer.url
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "same-origin"
        assert answer.headers["cache-control"] == "no-store", answer.url
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY


async def test_parallel_pages_of_one_browser_refresh_its_access_token_once_and_keep_the_session(
    db, clock, sealer, client, portal, recording
) -> None:
    """Identity ends a session whose refresh token is presented twice; the portal holds the
    session's row while it refreshes, so twelve pages at once present it once."""
    username = await activated_group_admin(db, clock, sealer, client)
    await log_in_through_portal(portal, db, sealer, username)
    clock.advance(timedelta(minutes=6))
    answers = await asyncio.gather(*[portal.get("/oversigt") for _ in range(12)])
    assert [a.status_code for a in answers] == [200] * 12
    assert recording.refreshes == 1
    clock.advance(timedelta(minutes=6))
    assert (await portal.get("/oversigt")).status_code == 200 and recording.refreshes == 2


async def test_a_session_idle_longer_than_the_timeout_returns_to_login_and_then_to_the_page(
    db, clock, sealer, client, portal
) -> None:
    username = await activated_group_admin(db, clock, sealer, client)
    await log_in_through_portal(portal, db, sealer, username)
    clock.advance(timedelta(minutes=31))
    away = await portal.get("/oversigt")
    assert away.status_code == 303 and away.headers["location"].startswith("/log-ind?next=/oversigt")
    page = await portal.get(away.headers["location"])
    assert "Du er blevet logget ud" in page.text and 'name="next" value="/oversigt"' in page.text
    assert (await post_form(portal, "/log-ud", {}, form_on="/log-ind")).status_code == 303


async def test_every_get_route_of_the_portal_answers_with_the_csp_signed_in_or_not(
    db, clock, sealer, client, portal, portal_settings
) -> None:
    """Every page the portal has, whatever it answers (a page, a redirect, 403, 404), carries
    the policy: the routes are read from the app's own description, so a new page cannot be
    left out."""
    from services.portal.api import create_api

    app = create_api(portal_settings)
    paths = sorted(
        re.sub(r"\{[^}]+\}", "00000000-0000-4000-8000-000000000000", path.replace("{cvr}", "35657193"))
        for path, operations in app.openapi()["paths"].items()
        if "get" in operations
    )
    assert "/brugere/ny" in paths and "/support" in paths and "/profil" in paths
    username = await activated_group_admin(db, clock, sealer, client)
    anonymous = await asyncio.gather(*[portal.get(p) for p in paths])
    await log_in_through_portal(portal, db, sealer, username)
    signed_in = await asyncio.gather(*[portal.get(p) for p in paths])
    for answer in [*anonymous, *signed_in, await portal.get("/static/portal.css")]:
        assert answer.headers.get("content-security-policy") == CONTENT_SECURITY_POLICY, answer.url
        assert answer.headers.get("x-content-type-options") == "nosniff", answer.url


async def test_the_purge_deletes_idle_and_expired_sessions_and_keeps_live_ones(
    db, clock, sealer, client, portal, portal_settings
) -> None:
    """The portal's background purge: a session idle past the timeout and one past its
    maximum age go; one in use stays and still opens its pages."""
    from services.portal.models import BrowserSession
    from services.portal.sessions import SessionStore
    from shared.db import Database

    username = await activated_group_admin(db, clock, sealer, client)
    await log_in_through_portal(portal, db, sealer, username)
    store = SessionStore(Database(portal_settings.db_url), portal_settings.sealer(), clock, portal_settings)
    idle = await store.begin_login(None, {"challenge_id": "x"})
    clock.advance(timedelta(minutes=20))
    assert (await portal.get("/oversigt")).status_code == 200  # the live one is used
    clock.advance(timedelta(minutes=20))  # the idle one is now 40 minutes without a request
    assert await store.purge() == 1
    assert await store.logging_in(idle) is None
    assert (await portal.get("/oversigt")).status_code == 200
    async with store.db.reading() as session:
        assert len(list(await session.scalars(select(BrowserSession.id)))) == 1
    clock.advance(portal_settings.session_max_age)
    assert await store.purge() == 1
    await store.db.dispose()
