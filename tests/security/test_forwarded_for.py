"""The client address is the connection's unless the service trusts a proxy, and then only a
listed proxy's `X-Forwarded-For` counts: a caller cannot escape a per-address rate limit or
choose the address in audit records by rotating the header (S1 rate limit, S13 audit).

Each test runs onboarding's API as `adgang api onboarding` runs it (uvicorn configured by
`shared.web.server_config`) and sends from loopback, where uvicorn's defaults believed the
header from anyone."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from services.onboarding.config import OnboardingSettings
from tests.support.api_process import ApiProcess, api_process

LIMIT = 3


@pytest.fixture
def database_url(onboarding_url: str) -> str:
    return onboarding_url


async def apply_from(api: ApiProcess, forwarded_for: list[str]) -> Counter[int]:
    """One application per X-Forwarded-For value, all at once; the statuses counted. The form is
    empty: the rate limit is checked before the form (429), then the form is refused (422)."""
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        answers = await asyncio.gather(
            *(
                client.post("/v1/applications", json={}, headers={"X-Forwarded-For": value})
                for value in forwarded_for
            )
        )
    return Counter(answer.status_code for answer in answers)


def test_a_rotating_forwarded_for_from_loopback_stays_within_the_limit_when_trust_is_off(
    database_url: str, tmp_path: Path
) -> None:
    with api_process(
        "onboarding", tmp_path, database_url=database_url, rate_limit_per_minute=str(LIMIT)
    ) as api:
        statuses = asyncio.run(apply_from(api, [f"198.51.100.{n}" for n in range(8)]))
        log = api.log()
    assert statuses == {422: LIMIT, 429: 8 - LIMIT}
    assert "198.51.100." not in log, "the access log shows an address the caller chose"
    assert "127.0.0.1" in log


def test_a_trusted_proxys_forwarded_for_is_the_client_address_when_trust_is_on(
    database_url: str, tmp_path: Path
) -> None:
    with api_process(
        "onboarding",
        tmp_path,
        database_url=database_url,
        rate_limit_per_minute=str(LIMIT),
        trust_forwarded_for="true",
        trusted_proxies="127.0.0.1",
    ) as api:
        # Eight clients behind the proxy: each has the limit to itself.
        assert asyncio.run(apply_from(api, [f"198.51.100.{n}" for n in range(8)])) == {422: 8}
        # One client that puts addresses of its choosing in front of what the proxy appended:
        # the proxy's entry, the nearest untrusted address, is the one that counts.
        spoofed = [f"203.0.113.{n}, 198.51.100.77" for n in range(LIMIT + 2)]
        assert asyncio.run(apply_from(api, spoofed)) == {422: LIMIT, 429: 2}
        log = api.log()
    assert "198.51.100.77" in log and "203.0.113." not in log


def test_forwarded_for_from_a_peer_that_is_not_a_listed_proxy_is_ignored(
    database_url: str, tmp_path: Path
) -> None:
    with api_process(
        "onboarding",
        tmp_path,
        database_url=database_url,
        rate_limit_per_minute=str(LIMIT),
        trust_forwarded_for="true",
        trusted_proxies="10.255.255.1",
        # uvicorn's own variable for trusted proxies must not widen the setting.
        environ={"FORWARDED_ALLOW_IPS": "*"},
    ) as api:
        statuses = asyncio.run(apply_from(api, [f"198.51.100.{n}" for n in range(8)]))
        log = api.log()
    assert statuses == {422: LIMIT, 429: 8 - LIMIT}
    assert "198.51.100." not in log


def test_the_server_honours_proxy_headers_only_as_the_settings_say(tmp_path: Path) -> None:
    from shared.web import server_config

    def config(**values: object) -> uvicorn.Config:
        return server_config(OnboardingSettings(var_dir=tmp_path, **values), FastAPI())

    off = config()
    assert off.proxy_headers is False and off.forwarded_allow_ips == []
    on = config(trust_forwarded_for=True, trusted_proxies="10.0.0.2, 10.1.0.0/16")
    assert on.proxy_headers is True and on.forwarded_allow_ips == ["10.0.0.2", "10.1.0.0/16"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"trust_forwarded_for": True}, "trusted_proxies"),
        ({"trust_forwarded_for": True, "trusted_proxies": "*"}, "not an IP address"),
        ({"trusted_proxies": "proxy.example.dk"}, "not an IP address"),
    ],
)
def test_trust_needs_a_list_of_proxy_addresses(values: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=message):
        OnboardingSettings(var_dir=tmp_path, **values)
