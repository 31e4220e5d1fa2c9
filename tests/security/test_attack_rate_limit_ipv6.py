"""A per-address rate limit (login and activation S7; applications S1) must hold for a caller
with IPv6, who gets a whole /64 network from any provider: counted per full address, every one
of its 2^64 addresses has a budget of its own, and rotating them escapes the limit entirely —
password spraying across many usernames, which the per-username counters do not see, goes on
unhindered. Behind a trusted proxy the address is the client's, IPv6 included."""

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
ADDRESSES = [f"2001:db8:1234:5678::{n:x}" for n in range(1, 9)]  # one household's /64


@pytest.fixture
def settings(database_url: str, tmp_path) -> IdentitySettings:
    return IdentitySettings(database_url=database_url, var_dir=tmp_path, login_rate_limit_per_minute=LIMIT)


@pytest.fixture
async def app(settings: IdentitySettings, clock, sealer, monkeypatch) -> AsyncIterator:
    monkeypatch.setattr(IdentitySettings, "sealer", lambda self: sealer)
    yield create_api(settings, clock=clock)


async def test_password_spraying_from_one_ipv6_network_stays_within_the_limit(app) -> None:
    async def spray(address: str, n: int) -> int:
        transport = AppTransport(app=app, client=(address, 40000 + n))
        async with httpx.AsyncClient(transport=transport, base_url="http://identity") as client:
            answer = await client.post(
                "/v1/login", json={"username": f"35657193-u{n:03d}", "password": "Sommer2026!!"}
            )
        return answer.status_code

    statuses = Counter(await asyncio.gather(*(spray(a, n) for n, a in enumerate(ADDRESSES))))

    assert statuses[429] == len(ADDRESSES) - LIMIT, statuses


def test_a_limit_counts_ipv4_addresses_singly_and_ipv6_addresses_by_their_network() -> None:
    from shared.ratelimit import limited_party

    assert limited_party("192.0.2.7") != limited_party("192.0.2.8")
    assert limited_party("::ffff:192.0.2.7") == limited_party("192.0.2.7")
    assert limited_party("2001:db8:1:2::1") == limited_party("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert limited_party("2001:db8:1:3::1") != limited_party("2001:db8:1:2::1")
    assert limited_party("testclient") == "testclient"
