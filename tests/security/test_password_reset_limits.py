"""A forgotten password under concurrency (S7): the per-address limit, the per-login email
limits that answer like every other request, one code completing at most one reset, and
guesses that arrive at once never checked beyond the attempt limit."""

# ruff: noqa: F811 - the identity API fixtures are imported from the integration tests and used by name

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import httpx
from sqlalchemy import select

from services.identity.api import create_api
from services.identity.config import IdentitySettings
from services.identity.models import LoginThrottle, PasswordReset
from shared.events import CredentialChanged, SessionEnded
from tests.integration.test_activation import PASSWORD
from tests.integration.test_login import active_admin, client, database_url, log_in  # noqa: F401 - fixtures
from tests.integration.test_password_reset import (  # noqa: F401 - fixtures
    NEW_PASSWORD,
    outbox_events,
    request_reset,
    reset_by_email_code,
    reset_codes,
    settings,
    wrong,
)
from tests.support.asgi import AppTransport


async def test_the_per_address_limit_answers_429_with_retry_after_to_requests_at_once(
    settings: IdentitySettings, clock, sealer, monkeypatch
) -> None:
    monkeypatch.setattr(IdentitySettings, "sealer", lambda self: sealer)
    limited = create_api(settings.model_copy(update={"password_reset_rate_limit_per_minute": 5}), clock=clock)
    async with httpx.AsyncClient(transport=AppTransport(app=limited), base_url="http://identity") as http:
        answers = await asyncio.gather(*(request_reset(http, f"bruger-{n}") for n in range(8)))
        statuses = Counter(a.status_code for a in answers)
        assert statuses == {202: 5, 429: 3}
        refused = [a for a in answers if a.status_code == 429]
        assert all(int(a.headers["Retry-After"]) > 0 for a in refused)
        assert all(a.headers["content-type"].startswith("application/problem+json") for a in refused)
        # Every step counts: the next steps are refused too.
        reset_id = next(a for a in answers if a.status_code == 202).json()["reset_id"]
        step = await http.post(f"/v1/password-reset/{reset_id}/email-code", json={"code": "123456"})
        assert step.status_code == 429


async def test_requests_at_once_for_one_login_send_one_email_and_answer_like_an_unknown_name(
    db, clock, sealer, client, settings
) -> None:
    username = await active_admin(db, clock, sealer, client)
    for _ in range(settings.password_reset_emails_per_day + 1):
        answers = await asyncio.gather(
            *(request_reset(client, username) for _ in range(4)),
            *(request_reset(client, "ukendt-bruger-9") for _ in range(4)),
        )
        assert {a.status_code for a in answers} == {202}
        assert len({a.json()["detail"] for a in answers}) == 1
        assert len({tuple(sorted(a.headers.items())) for a in answers}) == 1
        clock.advance(settings.password_reset_email_cooldown)
    # One email per cooldown, and no more than the day's allowance, however many asked at once.
    assert len(await reset_codes(db, sealer)) == settings.password_reset_emails_per_day


async def test_one_code_used_at_once_completes_one_reset(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    reset_id = await reset_by_email_code(client, db, sealer, username)
    await client.post(f"/v1/password-reset/{reset_id}/send")
    (_, sms_code), = await reset_codes(db, sealer, channel="sms")
    answers = await asyncio.gather(
        *(
            client.post(
                f"/v1/password-reset/{reset_id}/complete", json={"code": sms_code, "password": f"{NEW_PASSWORD}-{n}"}
            )
            for n in range(6)
        )
    )
    statuses = Counter(a.status_code for a in answers)
    assert statuses == {200: 1, 410: 5}
    winner = next(n for n, a in enumerate(answers) if a.status_code == 200)
    login = await client.post("/v1/login", json={"username": username, "password": f"{NEW_PASSWORD}-{winner}"})
    assert login.status_code == 200
    notices = [e for e in await outbox_events(db, CredentialChanged) if e.change == "password_reset"]
    assert len(notices) == 1


async def test_guesses_at_once_never_exceed_the_attempt_limit(db, clock, sealer, client, settings) -> None:
    username = await active_admin(db, clock, sealer, client)
    reset_id = (await request_reset(client, username)).json()["reset_id"]
    (_, code), = await reset_codes(db, sealer)
    guesses = [f"{n:06d}" for n in range(20) if f"{n:06d}" != code]
    answers = await asyncio.gather(
        *(client.post(f"/v1/password-reset/{reset_id}/email-code", json={"code": g}) for g in guesses)
    )
    statuses = Counter(a.status_code for a in answers)
    assert statuses[400] == settings.otp_max_attempts
    assert statuses[400] + statuses[410] == len(guesses)
    async with db.transaction() as session:
        reset = await session.get(PasswordReset, reset_id)
        throttle = await session.get(LoginThrottle, username)
    assert reset is not None and reset.failed_attempts == settings.otp_max_attempts
    assert reset.end_reason == "blocked"
    assert throttle is not None and throttle.failures == settings.otp_max_attempts
    late = await client.post(f"/v1/password-reset/{reset_id}/email-code", json={"code": code})
    assert late.status_code == 410


async def test_second_factor_guesses_at_once_never_exceed_the_limit_nor_complete(
    db, clock, sealer, client, settings
) -> None:
    username = await active_admin(db, clock, sealer, client)
    tokens = await log_in(client, db, sealer, username)
    reset_id = await reset_by_email_code(client, db, sealer, username)
    await client.post(f"/v1/password-reset/{reset_id}/send")
    (_, sms_code), = await reset_codes(db, sealer, channel="sms")
    answers = await asyncio.gather(
        *(
            client.post(
                f"/v1/password-reset/{reset_id}/complete",
                json={"code": wrong(f"{(int(sms_code) + n) % 1_000_000:06d}"), "password": NEW_PASSWORD},
            )
            for n in range(12)
        )
    )
    statuses = Counter(a.status_code for a in answers)
    assert statuses[400] == settings.otp_max_attempts and statuses[200] == 0
    assert statuses[400] + statuses[410] == 12
    # Nothing changed: the old password works (after the delay the wrong codes earned, as wrong
    # passwords would), the session lives.
    clock.advance(timedelta(minutes=1))
    assert (await client.post("/v1/login", json={"username": username, "password": PASSWORD})).status_code == 200
    assert [e for e in await outbox_events(db, SessionEnded)] == []
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200


async def test_parallel_requests_by_a_shared_email_lock_users_in_one_order(db, clock, sealer, client) -> None:
    """Requests by username and by email at once take the users' rows in one order: none fails."""
    username = await active_admin(db, clock, sealer, client)
    answers = await asyncio.gather(
        *(request_reset(client, name) for name in [username, "ida@solsikke.example"] * 4)
    )
    assert {a.status_code for a in answers} == {202}
    async with db.transaction() as session:
        made = (await session.scalars(select(PasswordReset.id))).all()
    assert len(made) == 8
