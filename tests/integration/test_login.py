"""Login with two factors (S7), tokens, refresh rotation and brute-force protection — identity's
real API on the database under test, with a clock the test controls."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import httpx
import jwt
import pytest
from sqlalchemy import delete, select

from services.identity.api import create_api
from services.identity.config import IdentitySettings
from services.identity.domain import normalise_username
from services.identity.models import LoginThrottle, TrustedDevice, User, UserGrant, messaging
from services.identity.passwords import PasswordHashingStopped
from shared.clock import FrozenClock
from shared.db import Database
from shared.events import OtpRequested
from shared.sealing import Sealer
from shared.tokens import generate_signing_key
from tests.integration.test_activation import PASSWORD, activate_from_letter, provision_admin
from tests.support.asgi import AppTransport

PROBLEM = "application/problem+json"


@pytest.fixture
def database_url(identity_url: str) -> str:
    return identity_url


@pytest.fixture
def settings(identity_settings: Callable[..., IdentitySettings], sealer: Sealer) -> IdentitySettings:
    return identity_settings()


@pytest.fixture
async def client(
    settings: IdentitySettings, clock: FrozenClock, sealer: Sealer, monkeypatch
) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setattr(IdentitySettings, "sealer", lambda self: sealer)
    app = create_api(settings, clock=clock)
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://identity") as http:
        yield http


async def active_admin(db: Database, clock: FrozenClock, sealer: Sealer, client: httpx.AsyncClient) -> str:
    """The administrator from the letter, activated by the applicant with the details they applied with."""
    username, code = await provision_admin(db, clock, sealer)
    response = await activate_from_letter(
        client, db, sealer, username, code, email="ida@solsikke.example", mobile="+4520304050"
    )
    assert response.status_code == 200, response.text
    return username


async def last_code(db: Database, sealer: Sealer) -> tuple[OtpRequested, str]:
    async with db.transaction() as session:
        value = (
            (
                await session.execute(
                    select(messaging.outbox.c.value)
                    .where(messaging.outbox.c.topic == "identity.otp")
                    .order_by(messaging.outbox.c.seq.desc())
                )
            )
            .scalars()
            .first()
        )
    assert value is not None, "no OtpRequested was queued"
    event = OtpRequested.model_validate_json(value)
    return event, sealer.unseal(event.code, context=OtpRequested.sealing_context(event.challenge_id))


async def log_in(
    client: httpx.AsyncClient, db: Database, sealer: Sealer, username: str, method: str = "sms"
) -> dict:
    challenge = await client.post("/v1/login", json={"username": username, "password": PASSWORD})
    assert challenge.status_code == 200, challenge.text
    challenge_id = challenge.json()["challenge_id"]
    sent = await client.post(f"/v1/login/{challenge_id}/send", json={"method": method})
    assert sent.status_code == 202, sent.text
    _, code = await last_code(db, sealer)
    tokens = await client.post(f"/v1/login/{challenge_id}/verify", json={"code": code})
    assert tokens.status_code == 200, tokens.text
    return tokens.json()


async def test_password_then_an_sms_code_gives_tokens_that_carry_the_grants(
    db, clock, sealer, client
) -> None:
    username = await active_admin(db, clock, sealer, client)
    challenge = (await client.post("/v1/login", json={"username": username, "password": PASSWORD})).json()
    assert set(challenge["methods"]) >= {"sms", "email"}

    sent = await client.post(f"/v1/login/{challenge['challenge_id']}/send", json={"method": "sms"})
    assert sent.status_code == 202 and sent.json()["sent_to"].startswith("+45 ••")
    event, code = await last_code(db, sealer)
    assert event.channel == "sms" and event.recipient == "+4520304050" and len(code) == 6
    assert event.expires_at - clock.now() == timedelta(minutes=5)

    tokens = (await client.post(f"/v1/login/{challenge['challenge_id']}/verify", json={"code": code})).json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 300
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200, me.text
    assert me.json()["username"] == username and me.json()["mobile_confirmed"] is True
    assert me.json()["grants"] == [{"cvr": "22109340", "accounts": "all"}]

    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert [k["kid"] for k in jwks["keys"]] == ["t1"] and jwks["keys"][0]["crv"] == "Ed25519"


async def test_an_email_code_works_too(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    tokens = await log_in(client, db, sealer, username, method="email")
    event, _ = await last_code(db, sealer)
    assert event.channel == "email" and event.recipient == "ida@solsikke.example"
    assert tokens["access_token"]


async def test_an_unknown_user_and_a_wrong_password_get_the_same_answer(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    wrong = await client.post("/v1/login", json={"username": username, "password": "not the password at all"})
    unknown = await client.post(
        "/v1/login", json={"username": "99999999-zzzz", "password": "not the password at all"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]
    assert wrong.headers["content-type"].startswith(PROBLEM)


async def test_a_password_with_a_lone_surrogate_is_a_wrong_password(db, clock, sealer, client) -> None:
    """JSON lets a string hold "\\ud800", which UTF-8 cannot encode: a wrong password (401), not an error."""
    username = await active_admin(db, clock, sealer, client)
    for who in (username, "99999999-zzzz"):
        body = f'{{"username": "{who}", "password": "not the password \\ud800"}}'.encode()
        response = await client.post("/v1/login", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 401, response.text
        assert response.headers["content-type"].startswith(PROBLEM)


async def test_ten_wrong_passwords_lock_the_login_and_unknown_users_see_the_same(
    db, clock, sealer, client
) -> None:
    username = await active_admin(db, clock, sealer, client)
    for name in (username, "99999999-zzzz"):
        answers = []
        for _ in range(10):
            response = await client.post(
                "/v1/login", json={"username": name, "password": "wrong password here"}
            )
            answers.append(response.status_code)
            if response.status_code == 429:  # the progressive delay: wait it out on our clock
                clock.advance(timedelta(seconds=int(response.headers["retry-after"])))
                response = await client.post(
                    "/v1/login", json={"username": name, "password": "wrong password here"}
                )
                answers[-1] = response.status_code
        assert answers == [401] * 10, (name, answers)
        locked = await client.post("/v1/login", json={"username": name, "password": PASSWORD})
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 600
        assert "locked" in locked.json()["detail"]
    clock.advance(timedelta(minutes=16))
    assert (
        await client.post("/v1/login", json={"username": username, "password": PASSWORD})
    ).status_code == 200


async def test_a_wrong_code_five_times_ends_the_login_attempt(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    challenge_id = (await client.post("/v1/login", json={"username": username, "password": PASSWORD})).json()[
        "challenge_id"
    ]
    await client.post(f"/v1/login/{challenge_id}/send", json={"method": "sms"})
    _, code = await last_code(db, sealer)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        assert (
            await client.post(f"/v1/login/{challenge_id}/verify", json={"code": wrong})
        ).status_code == 401
    after = await client.post(f"/v1/login/{challenge_id}/verify", json={"code": code})
    assert after.status_code == 401 and after.json()["type"].endswith("/invalid-challenge")


async def test_an_expired_code_is_refused(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    challenge_id = (await client.post("/v1/login", json={"username": username, "password": PASSWORD})).json()[
        "challenge_id"
    ]
    await client.post(f"/v1/login/{challenge_id}/send", json={"method": "sms"})
    _, code = await last_code(db, sealer)
    clock.advance(timedelta(minutes=5, seconds=1))
    response = await client.post(f"/v1/login/{challenge_id}/verify", json={"code": code})
    assert response.status_code == 401 and response.json()["type"].endswith("/invalid-code")


async def test_codes_cannot_be_sent_again_at_once_nor_more_than_three_times(
    db, clock, sealer, client
) -> None:
    username = await active_admin(db, clock, sealer, client)
    challenge_id = (await client.post("/v1/login", json={"username": username, "password": PASSWORD})).json()[
        "challenge_id"
    ]
    assert (await client.post(f"/v1/login/{challenge_id}/send", json={})).status_code == 202
    too_soon = await client.post(f"/v1/login/{challenge_id}/send", json={})
    assert too_soon.status_code == 429 and 1 <= int(too_soon.headers["retry-after"]) <= 31
    for _ in range(2):
        clock.advance(timedelta(seconds=31))
        assert (await client.post(f"/v1/login/{challenge_id}/send", json={})).status_code == 202
    clock.advance(timedelta(seconds=31))
    assert (await client.post(f"/v1/login/{challenge_id}/send", json={})).status_code == 429


async def test_a_refresh_token_works_once_and_its_reuse_ends_the_session(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    first = await log_in(client, db, sealer, username)
    second = await client.post("/v1/token/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200 and second.json()["refresh_token"] != first["refresh_token"]

    reuse = await client.post("/v1/token/refresh", json={"refresh_token": first["refresh_token"]})
    assert reuse.status_code == 401 and "ended" in reuse.json()["detail"]
    # The thief's reuse ended the session: the legitimate, newer refresh token is dead too,
    # and so is the access token of that session.
    newer = await client.post("/v1/token/refresh", json={"refresh_token": second.json()["refresh_token"]})
    assert newer.status_code == 401
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {second.json()['access_token']}"})
    assert me.status_code == 401


async def test_a_refreshed_access_token_carries_each_grant_of_the_user_as_it_is_now(
    db, clock, sealer, client
) -> None:
    """The refresh reads the user's grants with the token (a row per grant): every grant is in
    the new access token, none twice, and a user left without grants gets a token without any."""
    username = await active_admin(db, clock, sealer, client)
    first = await log_in(client, db, sealer, username)
    async with db.transaction() as session:
        user = await session.scalar(select(User).where(User.username == username))
        assert user is not None
        user_id, role, functions = user.id, user.role, list(user.functions)
        session.add(UserGrant(user_id=user_id, cvr="35657193", all_accounts=False, account_numbers=["1", "2"]))

    second = await client.post("/v1/token/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200, second.text
    claims = jwt.decode(second.json()["access_token"], options={"verify_signature": False})
    assert sorted(claims["grants"], key=lambda grant: grant["cvr"]) == [
        {"cvr": "22109340", "accounts": "all"},
        {"cvr": "35657193", "accounts": ["1", "2"]},
    ]
    assert (claims["sub"], claims["role"], claims["functions"]) == (user_id, role, functions)

    async with db.transaction() as session:
        await session.execute(delete(UserGrant).where(UserGrant.user_id == user_id))
    third = await client.post("/v1/token/refresh", json={"refresh_token": second.json()["refresh_token"]})
    assert third.status_code == 200, third.text
    assert jwt.decode(third.json()["access_token"], options={"verify_signature": False})["grants"] == []


async def test_one_refresh_token_sent_many_times_at_once_is_exchanged_once(db, clock, sealer, client) -> None:
    """A refresh token is single use (S7) also when the same token arrives in parallel: exactly
    one request gets a new pair, every other one is refused as a reuse, which ends the session."""
    username = await active_admin(db, clock, sealer, client)
    first = await log_in(client, db, sealer, username)
    answers = await asyncio.gather(
        *(client.post("/v1/token/refresh", json={"refresh_token": first["refresh_token"]}) for _ in range(8))
    )
    assert sorted(a.status_code for a in answers) == [200] + [401] * 7, [a.text for a in answers]
    won = next(a.json() for a in answers if a.status_code == 200)
    # The reuse ended the session: the winner's new tokens are dead too.
    again = await client.post("/v1/token/refresh", json={"refresh_token": won["refresh_token"]})
    assert again.status_code == 401
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {won['access_token']}"})
    assert me.status_code == 401


async def test_logout_ends_the_session_and_access_tokens_expire_after_five_minutes(
    db, clock, sealer, client
) -> None:
    username = await active_admin(db, clock, sealer, client)
    tokens = await log_in(client, db, sealer, username)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    clock.advance(timedelta(minutes=4, seconds=59))
    assert (await client.get("/v1/me", headers=bearer)).status_code == 200
    clock.advance(timedelta(seconds=2))
    expired = await client.get("/v1/me", headers=bearer)
    assert expired.status_code == 401 and expired.headers["www-authenticate"].startswith("Bearer")

    fresh = await log_in(client, db, sealer, username)
    bearer = {"Authorization": f"Bearer {fresh['access_token']}"}
    assert (await client.post("/v1/logout", headers=bearer)).status_code == 204
    assert (await client.get("/v1/me", headers=bearer)).status_code == 401
    assert (
        await client.post("/v1/token/refresh", json={"refresh_token": fresh["refresh_token"]})
    ).status_code == 401


async def test_a_pending_user_cannot_log_in_before_activation(db, clock, sealer, client) -> None:
    username, _ = await provision_admin(db, clock, sealer)
    response = await client.post("/v1/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 401


async def test_a_forged_or_foreign_token_is_refused(db, clock, sealer, client) -> None:
    from datetime import UTC, datetime

    from shared.tokens import TokenSigner, parse_signing_keys

    other = TokenSigner(parse_signing_keys(f"t1:{generate_signing_key()}"), "t1")  # same kid, other key
    forged = other.sign(
        subject=str(uuid.uuid4()),
        session_id=str(uuid.uuid4()),
        tenant="22109340",
        role="administrator",
        grants=[],
        functions=["user_admin"],
        now=datetime.now(UTC),
        lifetime=timedelta(minutes=5),
    )
    response = await client.get("/v1/me", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert (await client.get("/v1/me")).status_code == 401


async def enrol_totp(client: httpx.AsyncClient, bearer: dict, clock: FrozenClock) -> tuple[str, list[str]]:
    import pyotp

    started = await client.post("/v1/me/totp", headers=bearer)
    assert started.status_code == 200, started.text
    secret = started.json()["secret"]
    assert started.json()["otpauth_uri"].startswith("otpauth://totp/")
    code = pyotp.TOTP(secret).at(clock.now())
    confirmed = await client.post("/v1/me/totp/confirm", headers=bearer, json={"code": code})
    assert confirmed.status_code == 200, confirmed.text
    return secret, confirmed.json()["recovery_codes"]


async def test_an_authenticator_app_logs_in_and_the_same_code_is_refused_a_second_time(
    db, clock, sealer, client
) -> None:
    import pyotp

    username = await active_admin(db, clock, sealer, client)
    tokens = await log_in(client, db, sealer, username)
    secret, recovery = await enrol_totp(client, {"Authorization": f"Bearer {tokens['access_token']}"}, clock)
    assert len(recovery) == 10 and len(set(recovery)) == 10

    clock.advance(timedelta(seconds=30))  # the next step: the enrolment code's step is spent
    code = pyotp.TOTP(secret).at(clock.now())
    first = (await client.post("/v1/login", json={"username": username, "password": PASSWORD})).json()
    assert "totp" in first["methods"]
    assert (
        await client.post(f"/v1/login/{first['challenge_id']}/verify", json={"code": code})
    ).status_code == 200

    again = (await client.post("/v1/login", json={"username": username, "password": PASSWORD})).json()
    replay = await client.post(f"/v1/login/{again['challenge_id']}/verify", json={"code": code})
    assert replay.status_code == 401, "a TOTP code must work only once"


async def test_me_says_whether_an_authenticator_app_is_set_up_once_it_is_confirmed(
    db, clock, sealer, client
) -> None:
    username = await active_admin(db, clock, sealer, client)
    bearer = {"Authorization": f"Bearer {(await log_in(client, db, sealer, username))['access_token']}"}
    assert (await client.get("/v1/me", headers=bearer)).json()["totp_enabled"] is False
    started = await client.post("/v1/me/totp", headers=bearer)
    assert started.status_code == 200
    assert (await client.get("/v1/me", headers=bearer)).json()["totp_enabled"] is False, "not before confirmed"
    await enrol_totp(client, bearer, clock)
    assert (await client.get("/v1/me", headers=bearer)).json()["totp_enabled"] is True


async def test_a_recovery_code_works_once(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    tokens = await log_in(client, db, sealer, username)
    _, recovery = await enrol_totp(client, {"Authorization": f"Bearer {tokens['access_token']}"}, clock)
    for expected in (200, 401):
        challenge = (await client.post("/v1/login", json={"username": username, "password": PASSWORD})).json()
        response = await client.post(
            f"/v1/login/{challenge['challenge_id']}/verify", json={"code": recovery[0].lower()}
        )
        assert response.status_code == expected, response.text


async def test_a_wrong_authenticator_code_does_not_enable_totp(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    bearer = {"Authorization": f"Bearer {(await log_in(client, db, sealer, username))['access_token']}"}
    assert (
        await client.post("/v1/me/totp/confirm", headers=bearer, json={"code": "123456"})
    ).status_code == 409
    await client.post("/v1/me/totp", headers=bearer)
    wrong = await client.post("/v1/me/totp/confirm", headers=bearer, json={"code": "000000"})
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "code"
    challenge = (await client.post("/v1/login", json={"username": username, "password": PASSWORD})).json()
    assert "totp" not in challenge["methods"]


async def test_the_apis_shutdown_ends_its_password_threads(db, clock, sealer, settings, monkeypatch) -> None:
    """Each identity API checks passwords on threads of its own, each keeping a 19 MiB argon2
    block: they end when the API stops (tests build many APIs in one process). Two clients of
    one API, checks fired at once: the API runs until the last client is gone."""
    monkeypatch.setattr(IdentitySettings, "sealer", lambda self: sealer)
    app = create_api(settings, clock=clock)
    passwords = app.state.parts.passwords

    def threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith(f"{passwords.thread_name}_")]

    async def wrong_passwords(http: httpx.AsyncClient) -> list[int]:
        answers = await asyncio.gather(
            *(http.post("/v1/login", json={"username": f"99999999-u{n}", "password": "not it"}) for n in range(4))
        )
        return [answer.status_code for answer in answers]

    first = httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://identity")
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://identity") as second:
        async with first:
            both = await asyncio.gather(wrong_passwords(first), wrong_passwords(second))
            assert both == [[401] * 4] * 2
        assert threads()  # the API runs on for the other client
        assert await wrong_passwords(second) == [401] * 4
    assert threads() == []
    with pytest.raises(PasswordHashingStopped):
        await passwords.check_off_loop(None, "not it")


async def test_a_password_not_checked_as_the_api_stops_counts_no_failure(
    db, clock, sealer, settings, monkeypatch
) -> None:
    """S7: a login answered 503 because the API's password checks stopped (its shutdown) had
    its password checked by no one: its try counts no failure. More such logins than the lock
    allows, fired at once, are all 503 (never a delay or the lock), the counter is as before,
    and the right password logs in once checks run again."""
    monkeypatch.setattr(IdentitySettings, "sealer", lambda self: sealer)
    app = create_api(settings, clock=clock)
    passwords = app.state.parts.passwords
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://identity") as http:
        username = await active_admin(db, clock, sealer, http)
        await passwords.close()
        tries = settings.login_lock_after_failures + 2
        one_by_one = [
            await http.post("/v1/login", json={"username": username, "password": PASSWORD}) for _ in range(tries)
        ]
        assert [answer.status_code for answer in one_by_one] == [503] * tries, [a.text for a in one_by_one]
        assert all(a.headers["content-type"] == PROBLEM and a.headers["retry-after"] for a in one_by_one)
        # At once, tries still in flight count (counted before checked): those past the free
        # failures wait (429); none is answered as a checked password, right or wrong.
        at_once = await asyncio.gather(
            *(http.post("/v1/login", json={"username": username, "password": "not it"}) for _ in range(tries))
        )
        assert {answer.status_code for answer in at_once} <= {503, 429}, [a.text for a in at_once]
        async with db.transaction() as session:
            counter = await session.get(LoginThrottle, normalise_username(username))
        assert counter is None or (counter.failures, counter.locked_until) == (0, None), counter.failures
        await passwords.start()
        right = await http.post("/v1/login", json={"username": username, "password": PASSWORD})
        assert right.status_code == 200, right.text


async def test_a_password_not_checked_on_a_trusted_device_counts_no_failure(
    db, clock, sealer, settings, monkeypatch
) -> None:
    """S7: the same on a trusted device's own counter (a login with its `device_token`)."""
    monkeypatch.setattr(IdentitySettings, "sealer", lambda self: sealer)
    app = create_api(settings, clock=clock)
    passwords = app.state.parts.passwords
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://identity") as http:
        username = await active_admin(db, clock, sealer, http)
        device = (await log_in(http, db, sealer, username))["device_token"]
        assert device
        login = {"username": username, "password": "not it", "device_token": device}
        await passwords.close()
        answers = [await http.post("/v1/login", json=login) for _ in range(settings.login_lock_after_failures + 2)]
        assert {answer.status_code for answer in answers} == {503}, [a.text for a in answers]
        async with db.transaction() as session:
            trusted = (await session.scalars(select(TrustedDevice))).one()
        assert (trusted.failures, trusted.locked_until) == (0, None), trusted.failures
        await passwords.start()
        right = await http.post("/v1/login", json={**login, "password": PASSWORD})
        assert right.status_code == 200, right.text


async def test_a_password_change_not_checked_as_the_api_stops_counts_no_failure(
    db, clock, sealer, settings, monkeypatch
) -> None:
    """S7: the change of one's own password counts its try as a login does; answered 503
    because the API's password checks stopped, right or wrong current password, it counts no
    failure and changes nothing."""
    monkeypatch.setattr(IdentitySettings, "sealer", lambda self: sealer)
    app = create_api(settings, clock=clock)
    passwords = app.state.parts.passwords
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://identity") as http:
        username = await active_admin(db, clock, sealer, http)
        bearer = {"Authorization": f"Bearer {(await log_in(http, db, sealer, username))['access_token']}"}
        change = {"current_password": PASSWORD, "new_password": "a wholly new passphrase 42"}
        await passwords.close()
        answers = [
            await http.post("/v1/me/password", headers=bearer, json=change)
            for _ in range(settings.login_lock_after_failures + 2)
        ]
        assert {answer.status_code for answer in answers} == {503}, [a.text for a in answers]
        async with db.transaction() as session:
            counter = await session.get(LoginThrottle, normalise_username(username))
        assert counter is None or (counter.failures, counter.locked_until) == (0, None), counter.failures
        await passwords.start()
        changed = await http.post("/v1/me/password", headers=bearer, json=change)
        assert changed.status_code == 200, changed.text
