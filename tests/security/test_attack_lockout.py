"""A stranger must not keep a user locked out (S7). Trusted devices let a user past a lock on
their username from a browser they logged in with before; a user without one — just activated,
on a new computer, or whose device token expired or was cleared — was stopped by a lock that
anyone, anywhere, can renew with ten wrong passwords (about two minutes of the progressive
delay) every fifteen minutes, and that an administrator's unlock lifted only until the next ten.
Such a user has an unlock code emailed to their own address, which only they can read."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from services.identity.api import create_api
from services.identity.config import IdentitySettings
from services.identity.models import messaging
from shared.events import OtpRequested
from tests.integration.test_activation import PASSWORD
from tests.integration.test_login import database_url  # noqa: F401 - fixtures
from tests.security.world import SUBSIDIARY, add_user, bearer, company_group, group_administrator
from tests.support.asgi import AppTransport

STRANGER, USER = "203.0.113.66", "198.51.100.7"
WRONG = "not the password, a guess"


@pytest.fixture
def settings(identity_settings: Callable[..., IdentitySettings]) -> IdentitySettings:
    """A lock after three wrong passwords: the rules are the same, and each lock takes fewer
    argon2 checks to reach."""
    return identity_settings(login_free_failures=2, login_lock_after_failures=3)


@pytest.fixture
async def from_address(settings: IdentitySettings, clock, sealer, monkeypatch) -> AsyncIterator:
    """A client of identity's API at a given client address."""
    monkeypatch.setattr(IdentitySettings, "sealer", lambda self: sealer)
    app = create_api(settings, clock=clock)
    clients: list[httpx.AsyncClient] = []

    def make(address: str) -> httpx.AsyncClient:
        transport = AppTransport(app=app, client=(address, 40000 + len(clients)))
        clients.append(httpx.AsyncClient(transport=transport, base_url="http://identity"))
        return clients[-1]

    yield make
    for client in clients:
        await client.aclose()


async def test_a_stranger_elsewhere_cannot_keep_a_user_without_a_trusted_device_locked_out(
    db, clock, settings, sealer, from_address
) -> None:
    await company_group(db, clock)
    admin = await group_administrator(db, clock)
    user = await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices"])  # never logged in
    stranger, own = from_address(STRANGER), from_address(USER)

    async def lock() -> None:
        """Wrong passwords, each as soon as the progressive delay allows: the lock in minutes."""
        for _ in range(settings.login_lock_after_failures):
            answer = await stranger.post("/v1/login", json={"username": user.username, "password": WRONG})
            assert answer.status_code == 401, answer.text
            clock.advance(timedelta(seconds=61))

    await lock()
    unlocked = await own.post(f"/v1/users/{user.id}/unlock", headers=await bearer(db, clock, settings, admin))
    assert unlocked.status_code == 200, unlocked.text
    await lock()  # the stranger renews the lock

    answer = await own.post("/v1/login", json={"username": user.username, "password": PASSWORD})
    assert answer.status_code == 429 and "/v1/login/unlock" in answer.json()["detail"]
    # Strangers ask for unlock emails too, many at once: the user gets one, and the answers
    # are the same whether or not one was sent.
    asked = await asyncio.gather(
        *[stranger.post("/v1/login/unlock", json={"username": user.username}) for _ in range(10)],
        own.post("/v1/login/unlock", json={"username": user.username}),
        stranger.post("/v1/login/unlock", json={"username": "35657193-nobody"}),
    )
    assert {a.status_code for a in asked} == {202} and len({a.text for a in asked}) == 1
    [code] = await unlock_codes(db, sealer)

    answer = await own.post(
        "/v1/login", json={"username": user.username, "password": PASSWORD, "device_token": code}
    )
    assert answer.status_code == 200, f"the user, at their own address, is refused: {answer.text}"
    stolen_attempts = await asyncio.gather(
        *[stranger.post("/v1/login", json={"username": user.username, "password": WRONG}) for _ in range(3)]
    )
    assert {a.status_code for a in stolen_attempts} == {429}  # the stranger is still locked out


async def unlock_codes(db, sealer) -> list[str]:
    """The unlock codes identity has queued for the user's email, unsealed as the notifier does."""
    async with db.transaction() as session:
        values = (
            await session.execute(
                select(messaging.outbox.c.value).where(messaging.outbox.c.topic == OtpRequested.TOPIC.name)
            )
        ).scalars()
        events = [OtpRequested.model_validate_json(v) for v in values]
    return [
        sealer.unseal(e.code, context=OtpRequested.sealing_context(e.challenge_id))
        for e in events
        if e.purpose == "unlock_login"
    ]


async def test_unlock_emails_are_limited_per_day_and_go_only_to_active_locked_logins(
    db, clock, settings, sealer, from_address
) -> None:
    await company_group(db, clock)
    user = await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices"])
    stranger = from_address(STRANGER)
    await stranger.post("/v1/login/unlock", json={"username": user.username})
    assert await unlock_codes(db, sealer) == []  # not locked: nothing to unlock

    sent = []
    for _round in range(5):
        for _ in range(settings.login_lock_after_failures):
            await stranger.post("/v1/login", json={"username": user.username, "password": WRONG})
            clock.advance(timedelta(seconds=61))
        await stranger.post("/v1/login/unlock", json={"username": user.username})
        sent.append(len(await unlock_codes(db, sealer)))
        clock.advance(settings.login_lock_duration)
    assert sent == [1, 2, 3, 3, 3]  # at most three a day
    clock.advance(timedelta(days=1))
    for _ in range(settings.login_lock_after_failures):
        await stranger.post("/v1/login", json={"username": user.username, "password": WRONG})
        clock.advance(timedelta(seconds=61))
    await stranger.post("/v1/login/unlock", json={"username": user.username})
    assert len(await unlock_codes(db, sealer)) == 4


async def test_the_workers_purge_of_expired_devices_does_not_reset_the_days_count_of_unlock_emails(
    db, clock, settings, sealer, from_address
) -> None:
    from services.identity.lockout import forget_old_failures

    await company_group(db, clock)
    user = await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices"])
    stranger = from_address(STRANGER)
    sent = []
    for _round in range(5):
        for _ in range(settings.login_lock_after_failures):
            await stranger.post("/v1/login", json={"username": user.username, "password": WRONG})
            clock.advance(timedelta(seconds=61))
        await stranger.post("/v1/login/unlock", json={"username": user.username})
        sent.append(len(await unlock_codes(db, sealer)))
        clock.advance(settings.login_lock_duration + settings.unlock_code_ttl)  # the codes expire
        await forget_old_failures(db, clock, settings.login_lock_duration)  # and the worker tidies up
    assert sent == [1, 2, 3, 3, 3]  # still at most three a day
