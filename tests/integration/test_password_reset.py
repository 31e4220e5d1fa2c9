# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name
"""A forgotten password (S7): an emailed code, then the second factor, then a new password —
identity's real API on the database under test, with a clock the test controls."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import httpx
import pyotp
import pytest
from sqlalchemy import event, select, update
from sqlalchemy.engine import Engine

from services.identity.config import IdentitySettings
from services.identity.models import (
    AuditEntry,
    LoginThrottle,
    PasswordReset,
    PasswordResetCode,
    User,
    messaging,
)
from services.identity.password_reset import forget_old_resets
from shared.db import Database
from shared.events import CredentialChanged, OtpRequested, SessionEnded
from shared.sealing import Sealer
from tests.integration.test_activation import PASSWORD, activate_from_letter, provision_admin
from tests.integration.test_login import (  # noqa: F401 - fixtures
    active_admin,
    client,
    database_url,
    log_in,
)


@pytest.fixture
def settings(identity_settings: Callable[..., IdentitySettings]) -> IdentitySettings:
    """The login tests' settings, with the per-address limits off (tests/security fires them)."""
    return identity_settings(password_reset_rate_limit_per_minute=0)


NEW_PASSWORD = "Havtorn-Solnedgang-Vinter-77"
EMAIL = "ida@solsikke.example"


def problem_type(response: httpx.Response) -> str:
    return response.json()["type"].rsplit("/", 1)[-1]


async def outbox_events(db: Database, event_type: type) -> list:
    async with db.transaction() as session:
        values = (
            await session.scalars(
                select(messaging.outbox.c.value)
                .where(messaging.outbox.c.headers.contains(event_type.TYPE))
                .order_by(messaging.outbox.c.seq)
            )
        ).all()
    return [event_type.model_validate_json(v) for v in values]


async def reset_codes(db: Database, sealer: Sealer, channel: str = "email") -> list[tuple[OtpRequested, str]]:
    """The reset codes queued for the notifier, oldest first, with the codes unsealed."""
    sent = [e for e in await outbox_events(db, OtpRequested) if e.purpose == "reset_password" and e.channel == channel]
    return [(e, sealer.unseal(e.code, context=OtpRequested.sealing_context(e.challenge_id))) for e in sent]


# One correlation id for every request: the answer echoes it, and the tests compare whole answers.
SAME_CORRELATION = {"X-Correlation-ID": "password-reset-test"}


async def request_reset(client: httpx.AsyncClient, name: str) -> httpx.Response:
    return await client.post(
        "/v1/password-reset", json={"username_or_email": name}, headers=SAME_CORRELATION
    )


async def reset_by_email_code(client: httpx.AsyncClient, db: Database, sealer: Sealer, name: str) -> str:
    """Steps 1 and 2: returns the reset's id, bound to the login by the emailed code."""
    asked = await request_reset(client, name)
    assert asked.status_code == 202, asked.text
    reset_id = asked.json()["reset_id"]
    _, code = (await reset_codes(db, sealer))[-1]
    confirmed = await client.post(f"/v1/password-reset/{reset_id}/email-code", json={"code": code})
    assert confirmed.status_code == 200, confirmed.text
    return reset_id


async def can_log_in_with(client: httpx.AsyncClient, username: str, password: str) -> bool:
    response = await client.post("/v1/login", json={"username": username, "password": password})
    return response.status_code == 200


async def enrol_authenticator(client: httpx.AsyncClient, db, sealer, clock, username: str) -> tuple[str, list[str]]:
    tokens = await log_in(client, db, sealer, username)
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    started = (await client.post("/v1/me/totp", headers=headers)).json()
    code = pyotp.TOTP(started["secret"]).at(clock.now())
    confirmed = await client.post("/v1/me/totp/confirm", json={"code": code}, headers=headers)
    assert confirmed.status_code == 200, confirmed.text
    return started["secret"], confirmed.json()["recovery_codes"]


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def test_an_existing_username_its_email_and_unknown_names_get_the_identical_answer(
    db, clock, sealer, client
) -> None:
    username = await active_admin(db, clock, sealer, client)
    answers = [
        await request_reset(client, name)
        for name in (username, EMAIL, "ukendt-bruger-9", "nobody@nowhere.example")
    ]
    first = answers[0]
    assert first.status_code == 202
    for answer in answers:
        assert answer.status_code == first.status_code
        assert dict(answer.headers) == dict(first.headers)
        body = answer.json()
        assert set(body) == {"reset_id", "code_expires_at", "detail"}
        assert {k: v for k, v in body.items() if k != "reset_id"} == {
            k: v for k, v in first.json().items() if k != "reset_id"
        }
        assert len(body["reset_id"]) == len(first.json()["reset_id"])
    # Only the existing login got codes (by username and by email), in Danish, to its email.
    sent = await reset_codes(db, sealer)
    assert [(e.recipient, e.language, e.channel) for e, _ in sent] == [(EMAIL, "da", "email")]  # cooldown: one


@contextmanager
def work_counted(monkeypatch) -> Iterator[dict[str, int]]:
    """Counts keyed digests, seals and SELECT statements while the block runs."""
    counts = {"digest": 0, "seal": 0, "select": 0}
    digest, seal = Sealer.digest, Sealer.seal

    def counted_digest(self, secret, *, context):
        counts["digest"] += 1
        return digest(self, secret, context=context)

    def counted_seal(self, plaintext, *, context):
        counts["seal"] += 1
        return seal(self, plaintext, context=context)

    def statement(conn, cursor, sql, params, context, executemany) -> None:
        if sql.lstrip().upper().startswith("SELECT"):
            counts["select"] += 1

    monkeypatch.setattr(Sealer, "digest", counted_digest)
    monkeypatch.setattr(Sealer, "seal", counted_seal)
    event.listen(Engine, "before_cursor_execute", statement)
    try:
        yield counts
    finally:
        event.remove(Engine, "before_cursor_execute", statement)
        monkeypatch.setattr(Sealer, "digest", digest)
        monkeypatch.setattr(Sealer, "seal", seal)


async def test_a_request_does_the_same_lookups_and_hashing_for_an_existing_and_an_unknown_name(
    db, clock, sealer, client, monkeypatch
) -> None:
    username = await active_admin(db, clock, sealer, client)
    await request_reset(client, "varm-op")  # the first request of an app warms its caches
    with work_counted(monkeypatch) as existing:
        assert (await request_reset(client, username)).status_code == 202
    with work_counted(monkeypatch) as unknown:
        assert (await request_reset(client, "ukendt-bruger-9")).status_code == 202
    with work_counted(monkeypatch) as unknown_email:
        assert (await request_reset(client, "nobody@nowhere.example")).status_code == 202
    assert existing == unknown == unknown_email
    assert existing["digest"] == 1 and existing["seal"] == 1 and existing["select"] >= 2
    assert len(await reset_codes(db, sealer)) == 1  # and the existing login's code was really sent


async def test_the_whole_reset_with_an_sms_code_changes_the_password_ends_sessions_and_tells_the_user(
    db, clock, sealer, client
) -> None:
    username = await active_admin(db, clock, sealer, client)
    tokens = await log_in(client, db, sealer, username)
    asked = await request_reset(client, username)
    reset_id = asked.json()["reset_id"]
    (sent, code), = await reset_codes(db, sealer)
    assert sent.recipient == EMAIL and sent.expires_at - clock.now() == timedelta(minutes=10)
    assert str(sent.challenge_id) == reset_id

    confirmed = await client.post(f"/v1/password-reset/{reset_id}/email-code", json={"code": code})
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json() == {"username": username, "methods": ["sms"], "sms_to": "+45 •• •• •0 50"}
    texted = await client.post(f"/v1/password-reset/{reset_id}/send")
    assert texted.status_code == 202 and texted.json()["sent_to"] == "+45 •• •• •0 50"
    (sms, sms_code), = await reset_codes(db, sealer, channel="sms")
    assert sms.recipient == "+4520304050" and sms.purpose == "reset_password"

    done = await client.post(
        f"/v1/password-reset/{reset_id}/complete", json={"code": sms_code, "password": NEW_PASSWORD}
    )
    assert done.status_code == 200, done.text
    assert done.json()["username"] == username
    assert not await can_log_in_with(client, username, PASSWORD)
    assert await can_log_in_with(client, username, NEW_PASSWORD)
    # Every session ended, announced for billing; the old refresh token is refused.
    ended = await outbox_events(db, SessionEnded)
    assert [e.reason for e in ended] == ["password-reset"]
    refreshed = await client.post("/v1/token/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 401
    notices = await outbox_events(db, CredentialChanged)
    assert notices[-1].change == "password_reset" and notices[-1].email == EMAIL
    async with db.transaction() as session:
        actions = (
            await session.scalars(
                select(AuditEntry.action).where(AuditEntry.action.like("password.%")).order_by(AuditEntry.at)
            )
        ).all()
    # The logins around the reset are in the trail too (login.*): the reset's own entries are these.
    assert actions == ["password.reset-requested", "password.reset"]


async def test_the_emailed_code_expires_after_ten_minutes(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    reset_id = (await request_reset(client, username)).json()["reset_id"]
    (_, code), = await reset_codes(db, sealer)
    clock.advance(timedelta(minutes=10))
    late = await client.post(f"/v1/password-reset/{reset_id}/email-code", json={"code": code})
    assert late.status_code == 410 and problem_type(late) == "reset-restart-required"


async def test_a_code_just_before_it_expires_still_works(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    reset_id = (await request_reset(client, username)).json()["reset_id"]
    (_, code), = await reset_codes(db, sealer)
    clock.advance(timedelta(minutes=10) - timedelta(seconds=1))
    response = await client.post(f"/v1/password-reset/{reset_id}/email-code", json={"code": code})
    assert response.status_code == 200, response.text


async def test_each_code_works_once(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    reset_id = (await request_reset(client, username)).json()["reset_id"]
    (_, code), = await reset_codes(db, sealer)
    assert (await client.post(f"/v1/password-reset/{reset_id}/email-code", json={"code": code})).status_code == 200
    again = await client.post(f"/v1/password-reset/{reset_id}/email-code", json={"code": code})
    assert again.status_code == 409 and problem_type(again) == "reset-step-out-of-order"
    await client.post(f"/v1/password-reset/{reset_id}/send")
    (_, sms_code), = await reset_codes(db, sealer, channel="sms")
    body = {"code": sms_code, "password": NEW_PASSWORD}
    assert (await client.post(f"/v1/password-reset/{reset_id}/complete", json=body)).status_code == 200
    reused = await client.post(f"/v1/password-reset/{reset_id}/complete", json={**body, "password": PASSWORD + "x"})
    assert reused.status_code == 410 and problem_type(reused) == "reset-completed"
    assert await can_log_in_with(client, username, NEW_PASSWORD)


async def test_a_newer_reset_of_the_login_replaces_the_earlier_one(db, clock, sealer, client, settings) -> None:
    username = await active_admin(db, clock, sealer, client)
    first = await reset_by_email_code(client, db, sealer, username)
    clock.advance(settings.password_reset_email_cooldown)
    second = (await request_reset(client, EMAIL)).json()["reset_id"]
    _, code = (await reset_codes(db, sealer))[-1]
    replaced = await client.post(f"/v1/password-reset/{first}/send")
    assert replaced.status_code == 410 and "newer reset" in replaced.json()["detail"]
    assert (await client.post(f"/v1/password-reset/{second}/email-code", json={"code": code})).status_code == 200


async def test_the_second_factor_cannot_come_before_the_emailed_code(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    reset_id = (await request_reset(client, username)).json()["reset_id"]
    early = await client.post(
        f"/v1/password-reset/{reset_id}/complete", json={"code": "123456", "password": NEW_PASSWORD}
    )
    assert early.status_code == 409 and problem_type(early) == "reset-step-out-of-order"
    assert (await client.post(f"/v1/password-reset/{reset_id}/send")).status_code == 409
    assert await reset_codes(db, sealer, channel="sms") == []


async def test_wrong_codes_are_counted_and_the_reset_stops_after_the_last_try(db, clock, sealer, client, settings) -> None:
    username = await active_admin(db, clock, sealer, client)
    reset_id = (await request_reset(client, username)).json()["reset_id"]
    (_, code), = await reset_codes(db, sealer)
    answers = [
        await client.post(f"/v1/password-reset/{reset_id}/email-code", json={"code": wrong(code)})
        for _ in range(settings.otp_max_attempts)
    ]
    assert {a.status_code for a in answers} == {400}
    assert answers[0].json()["errors"][0]["field"] == "code" and "4 more tries" in answers[0].json()["detail"]
    assert "last try" in answers[-1].json()["detail"]
    right_too_late = await client.post(f"/v1/password-reset/{reset_id}/email-code", json={"code": code})
    assert right_too_late.status_code == 410 and problem_type(right_too_late) == "reset-restart-required"


async def test_an_unknown_username_refuses_wrong_codes_exactly_as_an_existing_one(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    real = (await request_reset(client, username)).json()["reset_id"]
    fake = (await request_reset(client, "ukendt-bruger-9")).json()["reset_id"]
    for _ in range(2):
        a = await client.post(f"/v1/password-reset/{real}/email-code", json={"code": "000000"})
        b = await client.post(f"/v1/password-reset/{fake}/email-code", json={"code": "000000"})
        assert (a.status_code, a.json()["detail"]) == (b.status_code, b.json()["detail"])


async def test_wrong_reset_codes_count_towards_the_login_lock_and_a_locked_username_cannot_be_reset(
    db, clock, sealer, client, settings
) -> None:
    username = await active_admin(db, clock, sealer, client)
    for _ in range(2):  # two resets of 5 wrong codes each reach the lock at 10 failures
        reset_id = (await request_reset(client, username)).json()["reset_id"]
        _, code = (await reset_codes(db, sealer))[-1]
        for _ in range(settings.otp_max_attempts):
            await client.post(f"/v1/password-reset/{reset_id}/email-code", json={"code": wrong(code)})
        clock.advance(settings.password_reset_email_cooldown)
    async with db.transaction() as session:
        throttle = await session.get(LoginThrottle, username)
    assert throttle is not None and throttle.failures == settings.login_lock_after_failures
    # The login is locked for passwords, and the reset's right code is not even checked.
    assert (await client.post("/v1/login", json={"username": username, "password": PASSWORD})).status_code == 429
    reset_id = (await request_reset(client, username)).json()["reset_id"]
    _, code = (await reset_codes(db, sealer))[-1]
    locked = await client.post(f"/v1/password-reset/{reset_id}/email-code", json={"code": code})
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    async with db.transaction() as session:  # refused before the code was checked or counted
        throttle = await session.get(LoginThrottle, username)
        reset = await session.get(PasswordReset, reset_id)
    assert throttle is not None and throttle.failures == settings.login_lock_after_failures
    assert reset is not None and reset.failed_attempts == 0 and reset.user_id is None


async def test_a_successful_reset_forgets_the_usernames_failures(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    for _ in range(3):
        await client.post("/v1/login", json={"username": username, "password": "wrong password here"})
    reset_id = await reset_by_email_code(client, db, sealer, username)
    await client.post(f"/v1/password-reset/{reset_id}/send")
    (_, sms_code), = await reset_codes(db, sealer, channel="sms")
    body = {"code": sms_code, "password": NEW_PASSWORD}
    assert (await client.post(f"/v1/password-reset/{reset_id}/complete", json=body)).status_code == 200
    async with db.transaction() as session:
        assert await session.get(LoginThrottle, username) is None


async def test_a_recovery_code_or_the_authenticators_code_is_the_second_factor(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    secret, recovery_codes = await enrol_authenticator(client, db, sealer, clock, username)
    reset_id = (await request_reset(client, username)).json()["reset_id"]
    _, code = (await reset_codes(db, sealer))[-1]
    confirmed = await client.post(f"/v1/password-reset/{reset_id}/email-code", json={"code": code})
    assert confirmed.json()["methods"] == ["sms", "totp", "recovery_code"]
    done = await client.post(
        f"/v1/password-reset/{reset_id}/complete", json={"code": recovery_codes[0], "password": NEW_PASSWORD}
    )
    assert done.status_code == 200, done.text

    clock.advance(timedelta(minutes=2))
    again = await reset_by_email_code(client, db, sealer, EMAIL)
    used = await client.post(
        f"/v1/password-reset/{again}/complete", json={"code": recovery_codes[0], "password": PASSWORD + "-2"}
    )
    assert used.status_code == 400, "a recovery code works once"
    by_app = await client.post(
        f"/v1/password-reset/{again}/complete",
        json={"code": pyotp.TOTP(secret).at(clock.now()), "password": PASSWORD + "-2"},
    )
    assert by_app.status_code == 200, by_app.text
    assert await can_log_in_with(client, username, PASSWORD + "-2")


async def test_the_new_password_follows_the_policy_and_a_refusal_spends_no_try(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    reset_id = await reset_by_email_code(client, db, sealer, username)
    await client.post(f"/v1/password-reset/{reset_id}/send")
    (_, sms_code), = await reset_codes(db, sealer, channel="sms")
    for weak in ("kort", f"{username}-Lang-Nok-123", "password1234"):
        refused = await client.post(f"/v1/password-reset/{reset_id}/complete", json={"code": sms_code, "password": weak})
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "password", weak
    done = await client.post(
        f"/v1/password-reset/{reset_id}/complete", json={"code": sms_code, "password": NEW_PASSWORD}
    )
    assert done.status_code == 200, done.text


@pytest.mark.parametrize("change", [{"status": "disabled"}, {"status": "pending"}, {"role": "support"}])
async def test_logins_that_may_not_reset_by_email_get_the_same_answer_and_no_code(
    db, clock, sealer, client, change
) -> None:
    username = await active_admin(db, clock, sealer, client)
    async with db.transaction() as session:
        await session.execute(update(User).where(User.username == username).values(**change))
    answer = await request_reset(client, username)
    unknown = await request_reset(client, "ukendt-bruger-9")
    assert answer.status_code == unknown.status_code == 202
    assert answer.json()["detail"] == unknown.json()["detail"]
    assert await reset_codes(db, sealer) == []
    async with db.transaction() as session:  # the request of an existing login is in its trail
        actions = (await session.scalars(select(AuditEntry.action))).all()
    assert [a for a in actions if not a.startswith("login.")] == ["password.reset-requested"]


async def test_an_email_of_two_logins_sends_a_code_to_each_and_the_code_says_which_login(
    db, clock, sealer, client
) -> None:
    first = await active_admin(db, clock, sealer, client)
    username, code = await provision_admin(db, clock, sealer, cvr="35657193")
    activated = await activate_from_letter(client, db, sealer, username, code, email=EMAIL.upper(), mobile="+4520304051")
    assert activated.status_code == 200, activated.text
    reset_id = (await request_reset(client, EMAIL)).json()["reset_id"]
    sent = await reset_codes(db, sealer)
    assert len(sent) == 2 and {str(e.challenge_id) for e, _ in sent} == {reset_id}
    by_user = {str(e.user_id): code for e, code in sent}
    async with db.transaction() as session:
        second_id = await session.scalar(select(User.id).where(User.username == username))
    confirmed = await client.post(f"/v1/password-reset/{reset_id}/email-code", json={"code": by_user[second_id]})
    assert confirmed.status_code == 200 and confirmed.json()["username"] == username != first


async def test_the_code_and_the_notice_are_in_the_users_language(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    async with db.transaction() as session:
        await session.execute(update(User).where(User.username == username).values(language="en"))
    reset_id = await reset_by_email_code(client, db, sealer, username)
    await client.post(f"/v1/password-reset/{reset_id}/send")
    (sms, sms_code), = await reset_codes(db, sealer, channel="sms")
    await client.post(f"/v1/password-reset/{reset_id}/complete", json={"code": sms_code, "password": NEW_PASSWORD})
    (email, _), = await reset_codes(db, sealer)
    notice = (await outbox_events(db, CredentialChanged))[-1]
    assert (email.language, sms.language, notice.language) == ("en", "en", "en")


async def test_an_unknown_reset_is_not_found_and_malformed_input_names_the_field(db, clock, sealer, client) -> None:
    missing = await client.post(
        "/v1/password-reset/00000000-0000-0000-0000-000000000001/email-code", json={"code": "123456"}
    )
    assert missing.status_code == 404
    blank = await request_reset(client, "   ")
    assert blank.status_code == 422 and json.dumps(blank.json()["errors"]).count("username_or_email") == 1
    reset_id = (await request_reset(client, "x")).json()["reset_id"]
    bad = await client.post(f"/v1/password-reset/{reset_id}/email-code", json={"code": "12ab"})
    assert bad.status_code == 422 and "6 digits" in bad.text


@pytest.mark.parametrize("typed", ["ida hansen", "ida\nhansen", "ida@solsikke example", "x\u2003y"])
async def test_a_name_with_a_space_or_line_break_inside_is_refused_as_its_published_pattern_says(
    db, clock, sealer, client, typed: str
) -> None:
    """S10: the contract's pattern has no whitespace inside a username or an email address; such
    input is a 422 naming the field (it was accepted and answered 202), while spaces around a
    name are forgiven, as the pattern allows."""
    refused = await request_reset(client, typed)
    assert refused.status_code == 422, refused.text
    assert "no spaces or line breaks inside" in json.dumps(refused.json()["errors"])
    assert (await request_reset(client, "\n ida.hansen \t")).status_code == 202


async def test_the_worker_forgets_resets_after_the_day_their_emails_count_in(db, clock, sealer, client) -> None:
    username = await active_admin(db, clock, sealer, client)
    await request_reset(client, username)
    await request_reset(client, "ukendt-bruger-9")
    clock.advance(timedelta(hours=23))
    await request_reset(client, "ukendt-bruger-10")
    assert await forget_old_resets(db, clock) == 0
    clock.advance(timedelta(hours=1))
    assert await forget_old_resets(db, clock) == 2
    async with db.transaction() as session:
        left = (await session.scalars(select(PasswordReset.username))).all()
        codes = (await session.scalars(select(PasswordResetCode.id))).all()
    assert left == ["ukendt-bruger-10"] and codes == []
