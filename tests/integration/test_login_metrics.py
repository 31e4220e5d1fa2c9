"""Login steps counted by outcome (`adgang_logins_total{step,outcome}`), read from identity's own
/metrics as Prometheus would: the password step and the second factor, each with its success,
failures and the failure that locks (S7)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.identity.api import create_api
from services.identity.config import IdentitySettings
from shared.clock import FrozenClock
from shared.sealing import Sealer
from tests.integration.test_activation import PASSWORD
from tests.integration.test_login import active_admin, last_code
from tests.support.asgi import AppTransport


@pytest.fixture
def database_url(identity_url: str) -> str:
    return identity_url


@pytest.fixture
async def client(
    identity_settings: Callable[..., IdentitySettings], clock: FrozenClock, sealer: Sealer, monkeypatch
) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setattr(IdentitySettings, "sealer", lambda self: sealer)
    app = create_api(identity_settings(login_lock_after_failures=3, otp_max_attempts=2), clock=clock)
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://identity") as http:
        yield http


async def logins(client: httpx.AsyncClient) -> dict[tuple[str, str], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.labels["step"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(response.text)
        if family.name == "adgang_logins"
        for sample in family.samples
        if sample.name == "adgang_logins_total"
    }


async def test_each_login_step_is_counted_by_its_outcome_on_identitys_metrics(
    db, clock: FrozenClock, sealer: Sealer, client: httpx.AsyncClient
) -> None:
    username = await active_admin(db, clock, sealer, client)
    before = await logins(client)

    async def password(secret: str) -> httpx.Response:
        return await client.post("/v1/login", json={"username": username, "password": secret})

    # A right password, a wrong code, then the right one.
    challenge = (await password(PASSWORD)).json()["challenge_id"]
    assert (await client.post(f"/v1/login/{challenge}/send", json={"method": "sms"})).status_code == 202
    _, code = await last_code(db, sealer)
    wrong = "000000" if code != "000000" else "111111"
    assert (await client.post(f"/v1/login/{challenge}/verify", json={"code": wrong})).status_code == 401
    assert (await client.post(f"/v1/login/{challenge}/verify", json={"code": code})).status_code == 200
    # A second login whose two wrong codes end it.
    challenge = (await password(PASSWORD)).json()["challenge_id"]
    for _ in range(2):
        assert (await client.post(f"/v1/login/{challenge}/verify", json={"code": wrong})).status_code == 401
    # Three wrong passwords: two failures, and the third locks the login.
    for _ in range(3):
        assert (await password("Forkert-Adgangskode-1")).status_code == 401

    after = await logins(client)
    counted = {key: after.get(key, 0) - before.get(key, 0) for key in after}
    assert {key: n for key, n in counted.items() if n} == {
        ("password", "success"): 2,
        ("password", "failure"): 2,
        ("password", "lockout"): 1,
        ("second_factor", "failure"): 2,
        ("second_factor", "lockout"): 1,
        ("second_factor", "success"): 1,
    }
