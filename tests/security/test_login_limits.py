"""Password guessing under concurrency (S7): at most the configured number of wrong passwords
is ever checked per username (or trusted device) per window, however many tries arrive at once;
a stranger's burst cannot lock the user out of a device they have logged in with; an
administrator or support lifts a lock, audited."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select

from services.identity.config import IdentitySettings
from services.identity.models import AuditEntry
from services.identity.passwords import PasswordHashing
from tests.integration.test_activation import PASSWORD
from tests.integration.test_login import client, database_url, last_code  # noqa: F401 - fixtures
from tests.security.world import SUBSIDIARY, add_user, bearer, company_group, group_administrator

LIMIT = 10
WRONG = "not the password, a guess"


@pytest.fixture
def settings(identity_settings: Callable[..., IdentitySettings]) -> IdentitySettings:
    """No progressive delay before the lock, so that only the lock limits how many tries are
    checked: the count is then exact."""
    return identity_settings(login_free_failures=LIMIT, login_lock_after_failures=LIMIT)


@pytest.fixture
def checked(monkeypatch) -> dict[str, int]:
    """How many passwords the login actually checked, right and wrong."""
    counts = {"right": 0, "wrong": 0}
    verify = PasswordHashing.verify

    def counting(self, password_hash, password):
        right = verify(self, password_hash, password)
        counts["right" if right else "wrong"] += 1
        return right

    monkeypatch.setattr(PasswordHashing, "verify", counting)
    return counts


async def logins(client, username: str, passwords: list[str], device_token: str | None = None):
    body = {"username": username}
    if device_token:
        body["device_token"] = device_token
    return await asyncio.gather(
        *(client.post("/v1/login", json={**body, "password": password}) for password in passwords)
    )


async def complete(client, db, sealer, challenge: dict) -> dict:
    await client.post(f"/v1/login/{challenge['challenge_id']}/send", json={"method": "sms"})
    _, code = await last_code(db, sealer)
    tokens = await client.post(f"/v1/login/{challenge['challenge_id']}/verify", json={"code": code})
    assert tokens.status_code == 200, tokens.text
    return tokens.json()


async def colleague(db, clock, **kwargs):
    return await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices"], **kwargs)


async def test_twenty_five_wrong_passwords_at_once_are_checked_no_more_than_the_limit(
    db, clock, client, checked
) -> None:
    await company_group(db, clock)
    user = await colleague(db, clock)
    answers = await logins(client, user.username, [WRONG] * 24 + [PASSWORD])
    statuses = [a.status_code for a in answers]
    assert checked["wrong"] <= LIMIT and statuses.count(401) <= LIMIT, (checked, statuses)
    assert set(statuses) <= {401, 429, 200}
    # Once the limit is reached the username is locked, even for the right password.
    if 200 not in statuses:
        locked = await client.post("/v1/login", json={"username": user.username, "password": PASSWORD})
        assert locked.status_code == 429 and "unlock" in locked.json()["detail"]


async def test_an_unknown_username_is_limited_the_same_way(db, clock, client, checked) -> None:
    answers = await logins(client, "35657193-nobody", [WRONG] * 25)
    statuses = [a.status_code for a in answers]
    assert statuses.count(401) == checked["wrong"] == LIMIT and statuses.count(429) == 25 - LIMIT


async def test_a_stranger_who_locks_the_username_does_not_lock_out_the_users_own_device(
    db, clock, sealer, client, checked
) -> None:
    await company_group(db, clock)
    user = await colleague(db, clock)
    first = (await logins(client, user.username, [PASSWORD]))[0]
    device_token = (await complete(client, db, sealer, first.json()))["device_token"]
    assert device_token

    for _round in range(2):  # the lock runs out and the stranger locks it again at once
        await logins(client, user.username, [WRONG] * 30)
        plain, foreign, own = await asyncio.gather(
            client.post("/v1/login", json={"username": user.username, "password": PASSWORD}),
            client.post(
                "/v1/login",
                json={"username": user.username, "password": PASSWORD, "device_token": "x" * 43},
            ),
            client.post(
                "/v1/login",
                json={"username": user.username, "password": PASSWORD, "device_token": device_token},
            ),
        )
        assert plain.status_code == 429 and foreign.status_code == 429, (plain.text, foreign.text)
        assert own.status_code == 200, own.text
        tokens = await complete(client, db, sealer, own.json())
        assert tokens["device_token"] is None  # the device stays trusted; nothing new to keep
        clock.advance(timedelta(minutes=16))


async def test_wrong_passwords_through_a_trusted_device_are_limited_on_that_device(
    db, clock, sealer, client, checked
) -> None:
    await company_group(db, clock)
    user = await colleague(db, clock)
    first = (await logins(client, user.username, [PASSWORD]))[0]
    device_token = (await complete(client, db, sealer, first.json()))["device_token"]
    checked["wrong"] = 0

    answers = await logins(client, user.username, [WRONG] * 25, device_token=device_token)
    assert checked["wrong"] == LIMIT and [a.status_code for a in answers].count(401) == LIMIT
    on_device = await client.post(
        "/v1/login", json={"username": user.username, "password": PASSWORD, "device_token": device_token}
    )
    assert on_device.status_code == 429 and "device" in on_device.json()["detail"]
    # The device's failures are its own: the username itself was not locked by them.
    assert (await logins(client, user.username, [PASSWORD]))[0].status_code == 200


async def test_a_device_token_of_another_user_does_not_pass_the_lock(db, clock, sealer, client) -> None:
    await company_group(db, clock)
    victim, other = await colleague(db, clock), await colleague(db, clock)
    first = (await logins(client, other.username, [PASSWORD]))[0]
    others_device = (await complete(client, db, sealer, first.json()))["device_token"]
    await logins(client, victim.username, [WRONG] * LIMIT)
    answer = await client.post(
        "/v1/login", json={"username": victim.username, "password": PASSWORD, "device_token": others_device}
    )
    assert answer.status_code == 429


async def test_an_administrator_unlocks_a_colleague_and_support_unlocks_an_administrator(
    db, clock, settings, sealer, client
) -> None:
    await company_group(db, clock)
    admin = await group_administrator(db, clock)
    narrow_admin = await add_user(
        db, clock, grants={SUBSIDIARY: ["10000021"]}, functions=["invoices", "user_admin"]
    )
    staff = await add_user(db, clock, grants={}, functions=[], role="support", tenant=None)
    user = await colleague(db, clock)
    await logins(client, user.username, [WRONG] * LIMIT)
    await logins(client, admin.username, [WRONG] * LIMIT)
    as_admin, as_narrow, as_staff = (
        await bearer(db, clock, settings, admin),
        await bearer(db, clock, settings, narrow_admin),
        await bearer(db, clock, settings, staff),
    )

    shown = (await client.get(f"/v1/users/{user.id}", headers=as_admin)).json()
    assert shown["login_locked_until"] is not None
    # A narrower administrator cannot unlock (or even see) a broader login; at the same time the
    # administrator can. Both answers arrive, neither disturbs the other.
    answers = await asyncio.gather(
        *[client.post(f"/v1/users/{user.id}/unlock", headers=as_narrow) for _ in range(5)],
        client.post(f"/v1/users/{user.id}/unlock", headers=as_admin),
        *[client.post(f"/v1/users/{admin.id}/unlock", headers=as_narrow) for _ in range(5)],
    )
    assert [a.status_code for a in answers] == [404] * 5 + [200] + [404] * 5
    assert answers[5].json()["login_locked_until"] is None
    assert (await logins(client, user.username, [PASSWORD]))[0].status_code == 200
    assert (await logins(client, admin.username, [PASSWORD]))[0].status_code == 429

    unlocked = await client.post(f"/v1/support/users/{admin.id}/unlock", headers=as_staff)
    assert unlocked.status_code == 204, unlocked.text
    assert (await logins(client, admin.username, [PASSWORD]))[0].status_code == 200
    assert (await client.post(f"/v1/support/users/{admin.id}/unlock", headers=as_admin)).status_code == 403
    async with db.transaction() as session:
        trail = (await session.scalars(select(AuditEntry).order_by(AuditEntry.at))).all()
    assert [(e.action, e.actor_id, e.target_user_id) for e in trail if not e.action.startswith("login.")] == [
        ("user.unlock", admin.id, user.id),
        ("support.unlock-user", staff.id, admin.id),
    ]


async def test_failures_a_lock_length_ago_count_no_more_and_the_worker_forgets_them(
    db, clock, settings, client, checked
) -> None:
    from services.identity.lockout import forget_old_failures
    from services.identity.models import LoginThrottle

    await logins(client, "35657193-nobody", [WRONG] * (LIMIT - 1))
    await logins(client, "35657193-locked", [WRONG] * LIMIT)
    clock.advance(settings.login_lock_duration)
    # A whole window later the earlier tries are forgotten: a full set is checked again.
    answers = await logins(client, "35657193-nobody", [WRONG] * LIMIT)
    assert [a.status_code for a in answers] == [401] * LIMIT

    clock.advance(settings.login_lock_duration)
    await logins(client, "35657193-locked-now", [WRONG] * LIMIT)
    assert await forget_old_failures(db, clock, settings.login_lock_duration) == 2
    async with db.transaction() as session:
        kept = (await session.scalars(select(LoginThrottle.username))).all()
    assert kept == ["35657193-locked-now"]


async def test_only_support_staff_unlock_through_the_support_route_also_when_many_try_at_once(
    db, clock, settings, client
) -> None:
    await company_group(db, clock)
    admin = await group_administrator(db, clock)
    user = await colleague(db, clock)
    staff = await add_user(db, clock, grants={}, functions=[], role="support", tenant=None)
    other_staff = await add_user(db, clock, grants={}, functions=[], role="support", tenant=None)
    await logins(client, user.username, [WRONG] * LIMIT)
    as_admin, as_user, as_staff = (
        await bearer(db, clock, settings, admin),
        await bearer(db, clock, settings, user),
        await bearer(db, clock, settings, staff),
    )

    customers = await asyncio.gather(
        *[client.post(f"/v1/support/users/{user.id}/unlock", headers=h) for h in [as_admin, as_user] * 5]
    )
    assert {a.status_code for a in customers} == {403}
    assert (await logins(client, user.username, [PASSWORD]))[0].status_code == 429  # still locked

    answers = await asyncio.gather(
        client.post(f"/v1/support/users/{user.id}/unlock", headers=as_staff),
        client.post(f"/v1/support/users/{other_staff.id}/unlock", headers=as_staff),  # staff are no customers
        client.post(f"/v1/support/users/{uuid.uuid4()}/unlock", headers=as_staff),
        *[client.post(f"/v1/support/users/{user.id}/unlock", headers=as_admin) for _ in range(3)],
    )
    assert [a.status_code for a in answers] == [204, 404, 404, 403, 403, 403]
    assert (await logins(client, user.username, [PASSWORD]))[0].status_code == 200
