"""Attacks on the second factor's one-time rules (S7): a copied access token of a session older
than the re-authentication window gets one guess at a current code, and a code of the
authenticator app or a recovery code works once, also when it arrives several times at once.

SQLite runs one write transaction at a time; the races after the first test need PostgreSQL."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio
from datetime import timedelta

import pyotp
from sqlalchemy import select

from services.identity.models import RecoveryCode, User
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
from tests.security.test_second_factor_secrets import refreshed

GUESSES = 40
AT_ONCE = 10


async def old_session_with_authenticator(db, clock, sealer, client) -> tuple[dict, str, list[str], str]:
    """An administrator with an authenticator app, and an access token of a session older than
    the re-authentication window (a token copied from a browser left open)."""
    username = await active_admin(db, clock, sealer, client)
    tokens = await log_in(client, db, sealer, username)
    secret, recovery = await enrol_totp(client, {"Authorization": f"Bearer {tokens['access_token']}"}, clock)
    clock.advance(timedelta(minutes=16))
    headers = {"Authorization": f"Bearer {(await refreshed(client, tokens))['access_token']}"}
    return headers, secret, recovery, username


async def test_a_copied_token_gets_one_guess_at_the_current_code_however_many_arrive_at_once(
    db, clock, sealer, client
) -> None:
    copied, _, _, _ = await old_session_with_authenticator(db, clock, sealer, client)

    answers = await asyncio.gather(
        *(
            client.post("/v1/me/totp", headers=copied, json={"current_code": f"{n:06d}"})
            for n in range(GUESSES)
        )
    )
    # A guess that was checked answers 403 ("the code is not right, the session has been
    # ended"); one that arrives after the session ended is 401 and checks nothing.
    checked = [a for a in answers if a.status_code == 403]
    assert {a.status_code for a in answers} <= {401, 403}, [a.text for a in answers]
    assert len(checked) == 1, f"{len(checked)} of {GUESSES} guesses at the current code were checked"


async def test_a_code_of_the_authenticator_opens_one_enrolment_when_sent_several_times_at_once(
    db, clock, sealer, client
) -> None:
    headers, secret, _, _ = await old_session_with_authenticator(db, clock, sealer, client)
    code = pyotp.TOTP(secret).at(clock.now())

    answers = await asyncio.gather(
        *(client.post("/v1/me/totp", headers=headers, json={"current_code": code}) for _ in range(AT_ONCE))
    )
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 1, f"one code was accepted {statuses.count(200)} times: {statuses}"


async def test_a_recovery_code_re_authenticates_once_when_sent_several_times_at_once(
    db, clock, sealer, client
) -> None:
    headers, _, recovery, _ = await old_session_with_authenticator(db, clock, sealer, client)

    answers = await asyncio.gather(
        *(
            client.post("/v1/me/totp", headers=headers, json={"current_code": recovery[0]})
            for _ in range(AT_ONCE)
        )
    )
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 1, f"one recovery code was accepted {statuses.count(200)} times: {statuses}"


async def test_a_recovery_code_completes_one_login_when_two_logins_use_it_at_once(
    db, clock, sealer, client
) -> None:
    """Someone who has the password and one recovery code (a printout) must get one session
    out of it, not one per login they open at the same moment."""
    _, _, recovery, username = await old_session_with_authenticator(db, clock, sealer, client)
    challenges = [
        (await client.post("/v1/login", json={"username": username, "password": PASSWORD})).json()
        for _ in range(AT_ONCE)
    ]

    answers = await asyncio.gather(
        *(
            client.post(f"/v1/login/{c['challenge_id']}/verify", json={"code": recovery[0]})
            for c in challenges
        )
    )
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 1, f"one recovery code gave {statuses.count(200)} sessions: {statuses}"


async def test_confirming_a_new_authenticator_several_times_at_once_gives_one_set_of_working_recovery_codes(
    db, clock, sealer, client
) -> None:
    """A double click on "confirm": every set of recovery codes shown must work, or the user
    keeps a printout that fails them the day the phone is lost."""
    username = await active_admin(db, clock, sealer, client)
    tokens = await log_in(client, db, sealer, username)
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    secret = (await client.post("/v1/me/totp", headers=headers)).json()["secret"]
    code = pyotp.TOTP(secret).at(clock.now())

    answers = await asyncio.gather(
        *(client.post("/v1/me/totp/confirm", headers=headers, json={"code": code}) for _ in range(AT_ONCE))
    )
    shown = [a.json()["recovery_codes"] for a in answers if a.status_code == 200]
    async with db.transaction() as session:
        user = await session.scalar(select(User).where(User.username == username))
        live = (
            await session.scalars(
                select(RecoveryCode).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
            )
        ).all()
    assert len(shown) == 1, f"{len(shown)} sets of recovery codes were shown for one code"
    assert len(live) == len(shown[0])
