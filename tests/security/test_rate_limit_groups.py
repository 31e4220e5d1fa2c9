"""Identity's per-address limits count by group, as they did before the routes moved out of
`create_api` into module-level routers reading the limits built once (issue 12): the steps of
one flow share one budget (login and its second step; activation and its confirmation; the
password reset's four steps; a cancel link's lookup and use), a group spent does not spend
another, another address keeps its own budget, and requests that arrive at once get no more
than the limit. A limiter built per request, or one shared by every group, fails here."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from services.identity.api import create_api
from services.identity.config import IdentitySettings
from tests.integration.test_login import database_url  # noqa: F401 - fixtures
from tests.support.asgi import AppTransport

LIMIT = 3
AT_ONCE = 8
ID = "00000000-0000-4000-8000-000000000000"
GROUPS = {
    "login": ["/v1/login", "/v1/login/unlock", f"/v1/login/{ID}/send", f"/v1/login/{ID}/verify"],
    "activation": ["/v1/activation", f"/v1/activation/{ID}/confirm"],
    "password reset": [
        "/v1/password-reset",
        f"/v1/password-reset/{ID}/email-code",
        f"/v1/password-reset/{ID}/send",
        f"/v1/password-reset/{ID}/complete",
    ],
    "cancel link": ["/v1/takeovers/lookup", "/v1/takeovers/cancel"],
}


@pytest.fixture
def settings(database_url: str, tmp_path) -> IdentitySettings:
    return IdentitySettings(
        database_url=database_url,
        var_dir=tmp_path,
        login_rate_limit_per_minute=LIMIT,
        activation_rate_limit_per_minute=LIMIT,
        password_reset_rate_limit_per_minute=LIMIT,
        cancel_link_rate_limit_per_minute=LIMIT,
    )


@pytest.fixture
async def app(settings: IdentitySettings, clock, sealer, monkeypatch) -> AsyncIterator:
    monkeypatch.setattr(IdentitySettings, "sealer", lambda self: sealer)
    yield create_api(settings, clock=clock)


async def post(app, path: str, address: str) -> int:
    """One request from `address`; an empty body, which each route refuses (or answers) without
    a login: only the limit decides whether it is a 429."""
    transport = AppTransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://identity") as client:
        return (await client.post(path, json={})).status_code


async def test_each_group_of_routes_shares_one_budget_per_address_and_spends_no_other(app) -> None:
    for spent, paths in GROUPS.items():
        address = f"192.0.2.{list(GROUPS).index(spent) + 10}"
        at_once = [paths[n % len(paths)] for n in range(AT_ONCE)]
        statuses = Counter(await asyncio.gather(*(post(app, path, address) for path in at_once)))
        assert statuses[429] == AT_ONCE - LIMIT, (spent, statuses)
        for path in paths:  # every route of the spent group refuses this address now
            assert await post(app, path, address) == 429, (spent, path)
        for other, other_paths in GROUPS.items():  # the other groups' budgets are untouched
            if other != spent:
                assert await post(app, other_paths[0], address) != 429, (spent, other)
        assert await post(app, paths[0], "198.51.100.7") != 429, spent  # another address

