"""Second-factor secrets at rest and their replacement (S7): one-time login codes and recovery
codes are kept as keyed hashes, so a copy of the database does not give them back; an access
token alone does not put a new authenticator app in place of the user's."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

import pyotp
from sqlalchemy import select

from services.identity.models import LoginChallenge, RecoveryCode, User
from shared.sealing import Sealer, generate_key, parse_keyring
from tests.integration.test_activation import PASSWORD
from tests.integration.test_login import (  # noqa: F401 - fixtures
    active_admin,
    client,
    database_url,
    enrol_totp,
    last_code,
    log_in,
    settings,
)


async def test_a_login_code_in_the_database_cannot_be_found_by_hashing_every_six_digit_code(
    db, clock, sealer, client
) -> None:
    username = await active_admin(db, clock, sealer, client)
    challenge = (await client.post("/v1/login", json={"username": username, "password": PASSWORD})).json()
    await client.post(f"/v1/login/{challenge['challenge_id']}/send", json={"method": "sms"})
    event, code = await last_code(db, sealer)
    async with db.transaction() as session:
        stored = (await session.get(LoginChallenge, challenge["challenge_id"])).code_hash
    assert stored is not None
    unkeyed = {
        hashlib.sha256(f"{challenge['challenge_id']}:{candidate:06d}".encode()).hexdigest()
        for candidate in range(1_000_000)
    }
    assert stored not in unkeyed and code not in stored
    other_ring = Sealer(parse_keyring(f"k1:{generate_key()}"), "k1")
    context = f"login-code:{challenge['challenge_id']}"
    assert sealer.digest_matches(code, stored, context=context)
    assert not other_ring.digest_matches(code, stored, context=context)  # the key is what makes it


async def test_recovery_codes_are_kept_as_keyed_hashes(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    tokens = await log_in(client, db, sealer, username)
    _, recovery = await enrol_totp(client, {"Authorization": f"Bearer {tokens['access_token']}"}, clock)
    async with db.transaction() as session:
        user = await session.scalar(select(User).where(User.username == username))
        stored = set((await session.scalars(select(RecoveryCode.code_hash))).all())
    assert user is not None and len(stored) == len(recovery) == 10
    assert not stored & {hashlib.sha256(f"{user.id}:{code}".encode()).hexdigest() for code in recovery}


async def test_an_old_session_cannot_replace_the_authenticator_without_a_code_from_it(
    db, clock, sealer, client
) -> None:
    username = await active_admin(db, clock, sealer, client)
    tokens = await log_in(client, db, sealer, username)
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    secret, _ = await enrol_totp(client, headers, clock)
    clock.advance(timedelta(minutes=16))
    headers = {"Authorization": f"Bearer {(await refreshed(client, tokens))['access_token']}"}

    # A copied token, tried at once without a code and with wrong codes: all refused.
    answers = await asyncio.gather(
        *[client.post("/v1/me/totp", headers=headers) for _ in range(5)],
        *[client.post("/v1/me/totp", headers=headers, json={"current_code": f"{n:06d}"}) for n in range(5)],
    )
    assert {a.status_code for a in answers} <= {401, 403}, [a.text for a in answers]
    assert any(a.json()["type"].endswith("/reauthentication-required") for a in answers)
    async with db.transaction() as session:
        user = await session.scalar(select(User).where(User.username == username))
    assert user is not None and user.totp_pending_secret is None  # nothing was started
    # A wrong code ended the session: the copied token is dead.
    assert (await client.get("/v1/me", headers=headers)).status_code == 401

    again = await log_in(client, db, sealer, username, method="sms")
    clock.advance(timedelta(minutes=16))
    fresh = {"Authorization": f"Bearer {(await refreshed(client, again))['access_token']}"}
    with_code = await client.post(
        "/v1/me/totp", headers=fresh, json={"current_code": pyotp.TOTP(secret).at(clock.now())}
    )
    assert with_code.status_code == 200, with_code.text


async def test_a_fresh_login_sets_up_a_new_authenticator_without_a_code(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    tokens = await log_in(client, db, sealer, username)
    await enrol_totp(client, {"Authorization": f"Bearer {tokens['access_token']}"}, clock)
    clock.advance(timedelta(minutes=20))
    recent = await log_in(client, db, sealer, username)  # a lost phone: SMS instead
    started = await client.post("/v1/me/totp", headers={"Authorization": f"Bearer {recent['access_token']}"})
    assert started.status_code == 200, started.text


async def refreshed(client, tokens: dict) -> dict:
    answer = await client.post("/v1/token/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert answer.status_code == 200, answer.text
    return answer.json()
