"""No answer of these APIs may be kept by a browser, proxy or shared cache: tokens, TOTP secrets,
recovery codes and invoices come with `Cache-Control: no-store` (S7, S8). A route that chooses
its own caching keeps it."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pyotp
import pytest
from fastapi import Response

from services.billing.api import create_api as create_billing_api
from services.billing.config import BillingSettings
from services.onboarding.config import OnboardingSettings
from services.registry import SERVICES
from shared.clock import FrozenClock
from shared.db import Database, migrate
from shared.web import create_app
from tests.integration.billing_fixtures import NOW, Tokens
from tests.integration.test_activation import PASSWORD
from tests.integration.test_login import (  # noqa: F401 - fixtures
    active_admin,
    client,
    database_url,
    last_code,
    settings,
)
from tests.support.asgi import AppTransport


def not_stored(response: httpx.Response) -> bool:
    return (
        response.headers.get("cache-control") == "no-store" and response.headers.get("pragma") == "no-cache"
    )


async def test_tokens_totp_secrets_and_recovery_codes_are_not_to_be_stored(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    challenge = await client.post("/v1/login", json={"username": username, "password": PASSWORD})
    challenge_id = challenge.json()["challenge_id"]
    await client.post(f"/v1/login/{challenge_id}/send", json={"method": "sms"})
    _, code = await last_code(db, sealer)

    verified = await client.post(f"/v1/login/{challenge_id}/verify", json={"code": code})
    assert verified.status_code == 200 and verified.json()["refresh_token"]
    refreshed = await client.post(
        "/v1/token/refresh", json={"refresh_token": verified.json()["refresh_token"]}
    )
    assert refreshed.status_code == 200 and refreshed.json()["access_token"]
    bearer = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
    started = await client.post("/v1/me/totp", headers=bearer)
    assert started.status_code == 200 and started.json()["secret"]
    confirmed = await client.post(
        "/v1/me/totp/confirm",
        headers=bearer,
        json={"code": pyotp.TOTP(started.json()["secret"]).at(clock.now())},
    )
    assert confirmed.status_code == 200 and confirmed.json()["recovery_codes"]
    wrong = await client.post(f"/v1/login/{challenge_id}/verify", json={"code": "000000"})

    for response in (challenge, verified, refreshed, started, confirmed, wrong):
        assert not_stored(response), (response.request.url.path, dict(response.headers))


@pytest.fixture
def billing_url(database_factory) -> str:
    url: str = database_factory("billing")
    migrate(SERVICES["billing"].migrations, url)
    return url


@pytest.fixture
async def billing(billing_url: str, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Tokens]]:
    url = billing_url
    clock = FrozenClock(NOW)
    tokens = Tokens(clock)
    settings = BillingSettings(
        database_url=url, var_dir=tmp_path, identity_jwks_url="http://identity.test/jwks"
    )
    app = create_billing_api(settings, clock=clock, jwks_client=tokens.jwks_client())
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://billing.test") as http:
        yield http, tokens


async def test_billing_answers_are_not_to_be_stored(billing) -> None:
    http, tokens = billing
    caller = tokens.caller([{"cvr": "35657193", "accounts": "all"}])
    answers = await asyncio.gather(
        http.get("/v1/invoices", headers=caller.headers),
        http.get("/v1/invoices"),
        http.get("/v1/subscriptions", headers=caller.headers),
    )
    assert [a.status_code for a in answers] == [200, 401, 200]
    assert all(not_stored(a) for a in answers)


async def test_a_route_that_sets_its_own_cache_control_keeps_it(database_factory, tmp_path: Path) -> None:
    settings = OnboardingSettings(database_url=database_factory("onboarding"), var_dir=tmp_path)
    app = create_app(title="t", description="t", settings=settings, db=Database(settings.db_url))

    @app.get("/public")
    async def public(response: Response) -> dict[str, str]:
        response.headers["Cache-Control"] = "public, max-age=60"
        return {"status": "public"}

    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://t") as http:
        public_answer, health = await asyncio.gather(http.get("/public"), http.get("/healthz"))
    assert (
        public_answer.headers["cache-control"] == "public, max-age=60"
        and "pragma" not in public_answer.headers
    )
    assert not_stored(health)
