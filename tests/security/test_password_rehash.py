"""Password hashes made with other parameters than identity's settings (S7; docs/security.md,
Password hashing): a right password replaces the hash, in the transaction that records the
success; a wrong one leaves it; many right logins at once all succeed and leave one valid hash
with the configured parameters; a password changed meanwhile is never undone."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import cache

import pytest
from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import VerificationError

from services.identity.config import IdentitySettings
from services.identity.login import replace_password_hash
from services.identity.models import User
from services.identity.passwords import PasswordHashing
from tests.integration.test_activation import PASSWORD
from tests.integration.test_login import client, database_url  # noqa: F401 - fixtures
from tests.security.world import SUBSIDIARY, add_user, bearer, company_group

WRONG = "not the password, a guess"
NEW_PASSWORD = "Another-long-passphrase-42"
AT_ONCE = 10


@pytest.fixture
def settings(identity_settings: Callable[..., IdentitySettings]) -> IdentitySettings:
    """Identity's default hashing parameters. Tries in flight count as failures until checked,
    so the progressive delay would turn away some of `AT_ONCE` right logins fired together:
    it starts after `AT_ONCE` here, the lock right at it (tests/security/test_login_limits.py)."""
    return identity_settings(login_free_failures=AT_ONCE, login_lock_after_failures=AT_ONCE)


@cache
def old_default_hash(password: str = PASSWORD) -> str:
    """A hash as identity made them before: argon2-cffi's defaults (64 MiB, t=3, p=4)."""
    return PasswordHasher(memory_cost=65536, time_cost=3, parallelism=4).hash(password)


async def user_with_old_hash(db, clock) -> User:
    await company_group(db, clock)
    user = await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices"])
    async with db.transaction() as session:
        stored = await session.get(User, user.id)
        assert stored is not None
        stored.password_hash = old_default_hash()
    return user


async def stored_hash(db, user: User) -> str:
    async with db.transaction() as session:
        stored = await session.get(User, user.id)
        assert stored is not None and stored.password_hash is not None
        return stored.password_hash


def parameters(password_hash: str) -> tuple[int, int, int]:
    found = extract_parameters(password_hash)
    return found.memory_cost, found.time_cost, found.parallelism


def assert_configured(password_hash: str, settings) -> None:
    configured = (settings.password_hash_memory_kib, settings.password_hash_time_cost, settings.password_hash_parallelism)
    assert parameters(password_hash) == configured
    assert password_hash.startswith("$argon2id$")
    assert PasswordHasher().verify(password_hash, PASSWORD)


async def test_a_hash_with_the_old_defaults_logs_in_and_is_replaced(db, clock, client, settings) -> None:
    user = await user_with_old_hash(db, clock)
    assert parameters(await stored_hash(db, user)) == (65536, 3, 4)

    answer = await client.post("/v1/login", json={"username": user.username, "password": PASSWORD})

    assert answer.status_code == 200, answer.text
    replaced = await stored_hash(db, user)
    assert_configured(replaced, settings)
    # The next login finds nothing to redo: the hash stays as it is.
    again = await client.post("/v1/login", json={"username": user.username, "password": PASSWORD})
    assert again.status_code == 200, again.text
    assert await stored_hash(db, user) == replaced


async def test_a_wrong_password_leaves_the_old_hash(db, clock, client) -> None:
    user = await user_with_old_hash(db, clock)

    answers = await asyncio.gather(
        *(client.post("/v1/login", json={"username": user.username, "password": WRONG}) for _ in range(2))
    )

    assert [a.status_code for a in answers] == [401, 401], [a.text for a in answers]
    assert await stored_hash(db, user) == old_default_hash()


async def test_many_right_logins_at_once_all_succeed_and_leave_one_valid_new_hash(
    db, clock, client, settings
) -> None:
    user = await user_with_old_hash(db, clock)

    answers = await asyncio.gather(
        *(client.post("/v1/login", json={"username": user.username, "password": PASSWORD}) for _ in range(AT_ONCE))
    )

    assert [a.status_code for a in answers] == [200] * AT_ONCE, [a.text for a in answers]
    assert_configured(await stored_hash(db, user), settings)
    # The lockout's counter forgot every try: the limits are as before.
    wrong = await client.post("/v1/login", json={"username": user.username, "password": WRONG})
    assert wrong.status_code == 401


async def test_a_rehash_does_not_undo_a_password_changed_since_the_check(db, clock) -> None:
    user = await user_with_old_hash(db, clock)
    hashing = PasswordHashing()
    changed = hashing.hash(NEW_PASSWORD)
    async with db.transaction() as session:
        stored = await session.get(User, user.id)
        assert stored is not None
        stored.password_hash = changed  # a password change committed after the login's check

    async with db.transaction() as session:
        stored = await session.get(User, user.id)
        assert stored is not None
        replaced = await replace_password_hash(session, stored, old_default_hash(), hashing.hash(PASSWORD))

    assert replaced is False
    assert await stored_hash(db, user) == changed


async def test_changing_the_password_from_an_old_hash_stores_the_new_parameters(db, clock, client, settings) -> None:
    user = await user_with_old_hash(db, clock)
    headers = await bearer(db, clock, settings, user)

    wrong = await client.post(
        "/v1/me/password", json={"current_password": WRONG, "new_password": NEW_PASSWORD}, headers=headers
    )
    assert wrong.status_code == 422, wrong.text
    assert await stored_hash(db, user) == old_default_hash()

    changed = await client.post(
        "/v1/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}, headers=headers
    )

    assert changed.status_code == 200, changed.text
    new_hash = await stored_hash(db, user)
    configured = (settings.password_hash_memory_kib, settings.password_hash_time_cost, settings.password_hash_parallelism)
    assert parameters(new_hash) == configured
    assert PasswordHasher().verify(new_hash, NEW_PASSWORD)
    try:
        PasswordHasher().verify(new_hash, PASSWORD)
    except VerificationError:
        pass
    else:
        raise AssertionError("the old password still opens the login")
