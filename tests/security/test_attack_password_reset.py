"""Attacks on a forgotten password (S7): a stranger who knows an email address or a username,
a user of another company, a colleague, and someone holding only the victim's mailbox or only
their phone. Each test here is a way through that was found and closed."""

# ruff: noqa: F811 - the identity API fixtures are imported from the integration tests and used by name

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from services.identity.config import IdentitySettings
from services.identity.models import LoginSession, LoginThrottle, PasswordReset
from tests.integration.test_activation import PASSWORD
from tests.integration.test_login import active_admin, database_url, last_code  # noqa: F401 - fixtures
from tests.integration.test_password_reset import (  # noqa: F401 - fixtures
    EMAIL,
    NEW_PASSWORD,
    problem_type,
    request_reset,
    reset_by_email_code,
    reset_codes,
    settings,
    wrong,
)
from tests.portal.conftest import (  # noqa: F401 - fixtures: identity's API and a browser of the portal
    client,
    identity_transport,
    portal,
    portal_settings,
    portal_transports,
    post_form,
)
from tests.portal.test_password_reset_pages import field_error

UNKNOWN_EMAIL = "nobody@nowhere.example"


async def wrong_codes_at_once(client: httpx.AsyncClient, reset_id: str, guesses: list[str]) -> list[int]:
    answers = await asyncio.gather(
        *(client.post(f"/v1/password-reset/{reset_id}/email-code", json={"code": g}) for g in guesses)
    )
    for answer in answers:
        assert answer.headers["content-type"].startswith("application/problem+json"), answer.text
    return sorted(a.status_code for a in answers)


async def test_wrong_codes_of_resets_by_email_answer_alike_whether_or_not_a_login_has_the_address(
    db, clock, sealer, client, settings: IdentitySettings
) -> None:
    """A stranger who asks for resets by an email address and types wrong codes must not see the
    login's lock arrive (429) where an unknown address never locks: that told which addresses
    belong to a login, without knowing its username."""
    username = await active_admin(db, clock, sealer, client)
    seen: dict[str, list[list[int]]] = {EMAIL: [], UNKNOWN_EMAIL: []}
    for _ in range(settings.password_reset_emails_per_day):
        for address in seen:
            reset_id = (await request_reset(client, address)).json()["reset_id"]
            # Never the code that was sent (the only one a stranger cannot type).
            sent = {code for _, code in await reset_codes(db, sealer)}
            guesses = [g for g in (f"{n:06d}" for n in range(20)) if g not in sent][: settings.otp_max_attempts]
            seen[address].append(await wrong_codes_at_once(client, reset_id, guesses))
        clock.advance(settings.password_reset_email_cooldown)
    assert seen[EMAIL] == seen[UNKNOWN_EMAIL]
    assert seen[EMAIL][-1] == [429] * settings.otp_max_attempts  # the address's own lock
    # The wrong codes still counted towards the login's lock, as wrong passwords do.
    async with db.transaction() as session:
        throttle = await session.get(LoginThrottle, username)
    assert throttle is not None and throttle.failures == settings.login_lock_after_failures
    assert (await client.post("/v1/login", json={"username": username, "password": PASSWORD})).status_code == 429


async def test_a_name_too_long_for_any_login_is_told_next_to_the_field_not_a_server_error(
    client,
) -> None:
    answer = await request_reset(client, "x" * 65)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in answer.json()["errors"]] == ["username_or_email"]
    # An email address may be longer than a username: it is still answered alike.
    long_email = "a" * 60 + "@" + "b" * 60 + ".example"
    assert (await request_reset(client, long_email)).status_code == 202


async def test_a_login_begun_with_the_old_password_cannot_be_finished_after_the_reset(
    db, clock, sealer, client
) -> None:
    """Someone who had the old password and reads the mailbox began a login just before the
    user reset the password: the login's second step still let them in afterwards, with a new
    session, although the reset had ended every session."""
    username = await active_admin(db, clock, sealer, client)
    begun = await client.post("/v1/login", json={"username": username, "password": PASSWORD})
    assert begun.status_code == 200, begun.text
    challenge_id = begun.json()["challenge_id"]
    clock.advance(timedelta(seconds=20))  # the user resets the password a moment later

    reset_id = await reset_by_email_code(client, db, sealer, username)
    await client.post(f"/v1/password-reset/{reset_id}/send")
    (_, sms_code), = await reset_codes(db, sealer, channel="sms")
    done = await client.post(f"/v1/password-reset/{reset_id}/complete", json={"code": sms_code, "password": NEW_PASSWORD})
    assert done.status_code == 200, done.text

    sent = await client.post(f"/v1/login/{challenge_id}/send", json={"method": "email"})
    if sent.status_code == 202:  # a code to the mailbox the attacker reads
        _, code = await last_code(db, sealer)
        finished = await client.post(f"/v1/login/{challenge_id}/verify", json={"code": code})
        assert finished.status_code != 200, "a login begun with the old password got tokens after the reset"
    assert sent.status_code == 401 and problem_type(sent) == "invalid-challenge", sent.text
    assert sent.headers["content-type"].startswith("application/problem+json")
    assert "Log in again with your password" in sent.json()["detail"]
    async with db.transaction() as session:
        live = await session.scalar(
            select(func.count()).select_from(LoginSession).where(LoginSession.ended_at.is_(None))
        )
    assert live == 0


@pytest.mark.parametrize("typed", ["x" * 65, "ida hansen"])
async def test_the_portal_tells_a_name_no_login_can_have_next_to_the_field(portal, typed: str) -> None:
    answer = await post_form(portal, "/glemt-adgangskode", {"username_or_email": typed})
    assert answer.status_code == 422
    assert field_error(answer, "username_or_email") == (
        "Skriv dit brugernavn (højst 64 tegn, uden mellemrum) eller din e-mailadresse."
    )


async def test_wrong_codes_at_once_over_resets_by_username_and_by_email_lock_the_login_exactly_once(
    db, clock, sealer, client, settings: IdentitySettings
) -> None:
    """The login's lock counts every wrong code of its resets, asked by username or by email,
    also when they arrive at once, and stops counting once it locks (no lock made longer)."""
    username = await active_admin(db, clock, sealer, client)
    resets = []
    for name in (username, EMAIL, EMAIL.upper()):
        resets.append((await request_reset(client, name)).json()["reset_id"])
        clock.advance(settings.password_reset_email_cooldown)
    sent = {code for _, code in await reset_codes(db, sealer)}
    assert len(sent) == len(resets)
    guesses = [g for g in (f"{n:06d}" for n in range(40)) if g not in sent][: settings.otp_max_attempts + 2]
    answers = await asyncio.gather(
        *(
            client.post(f"/v1/password-reset/{reset_id}/email-code", json={"code": guess})
            for reset_id in resets
            for guess in guesses
        )
    )
    assert {a.status_code for a in answers} <= {400, 410, 429}
    assert all(a.headers["content-type"].startswith("application/problem+json") for a in answers)
    async with db.transaction() as session:
        throttle = await session.get(LoginThrottle, username)
        tries = [(await session.get(PasswordReset, r)).failed_attempts for r in resets]  # type: ignore[union-attr]
    assert throttle is not None and throttle.failures == settings.login_lock_after_failures
    assert all(t <= settings.otp_max_attempts for t in tries)
    assert sum(a.status_code == 400 for a in answers) == sum(tries)



async def test_a_login_finished_while_the_reset_completes_either_ends_with_the_reset_or_is_refused(
    db, clock, sealer, client
) -> None:
    """The second step of a login begun with the old password and the reset's last step, at
    once, many times: neither fails (no deadlock between their locks), and no session the
    login opened outlives the reset."""
    username = await active_admin(db, clock, sealer, client)
    password = PASSWORD
    for round_ in range(6):
        begun = await client.post("/v1/login", json={"username": username, "password": password})
        assert begun.status_code == 200, begun.text
        challenge_id = begun.json()["challenge_id"]
        assert (await client.post(f"/v1/login/{challenge_id}/send", json={"method": "email"})).status_code == 202
        _, login_code = await last_code(db, sealer)
        clock.advance(timedelta(seconds=20))
        reset_id = await reset_by_email_code(client, db, sealer, username)
        assert (await client.post(f"/v1/password-reset/{reset_id}/send")).status_code == 202
        _, sms_code = (await reset_codes(db, sealer, channel="sms"))[-1]
        password = f"{NEW_PASSWORD}-{round_}"
        finished, done = await asyncio.gather(
            client.post(f"/v1/login/{challenge_id}/verify", json={"code": login_code}),
            client.post(f"/v1/password-reset/{reset_id}/complete", json={"code": sms_code, "password": password}),
        )
        assert done.status_code == 200, done.text
        assert finished.status_code in (200, 401), finished.text
        async with db.transaction() as session:
            live = await session.scalar(
                select(func.count()).select_from(LoginSession).where(LoginSession.ended_at.is_(None))
            )
        assert live == 0
        clock.advance(timedelta(days=1))  # the login's reset emails of the day


async def test_the_mailbox_alone_does_not_complete_a_reset(db, clock, sealer, client) -> None:
    """Held: whoever reads only the mailbox has the emailed codes, and none of them is a second
    factor, also when tried at once."""
    username = await active_admin(db, clock, sealer, client)
    reset_id = (await request_reset(client, username)).json()["reset_id"]
    _, email_code = (await reset_codes(db, sealer))[-1]
    assert (
        await client.post(f"/v1/password-reset/{reset_id}/email-code", json={"code": email_code})
    ).status_code == 200
    answers = await asyncio.gather(
        *(
            client.post(
                f"/v1/password-reset/{reset_id}/complete", json={"code": code, "password": NEW_PASSWORD}
            )
            for code in [email_code, wrong(email_code), email_code]
        )
    )
    assert sorted(a.status_code for a in answers) == [400, 400, 400]
    assert await reset_codes(db, sealer, channel="sms") == []
    clock.advance(timedelta(minutes=1))  # the delay the wrong codes earned, as wrong passwords do
    assert (await client.post("/v1/login", json={"username": username, "password": PASSWORD})).status_code == 200


async def test_the_phone_alone_gets_no_code_sent_and_completes_nothing(db, clock, sealer, client) -> None:
    """Held: before the emailed code, no SMS is sent and no second factor is looked at."""
    username = await active_admin(db, clock, sealer, client)
    reset_id = (await request_reset(client, username)).json()["reset_id"]
    sent, done = await asyncio.gather(
        client.post(f"/v1/password-reset/{reset_id}/send"),
        client.post(f"/v1/password-reset/{reset_id}/complete", json={"code": "123456", "password": NEW_PASSWORD}),
    )
    assert (sent.status_code, problem_type(sent)) == (409, "reset-step-out-of-order")
    assert (done.status_code, problem_type(done)) == (409, "reset-step-out-of-order")
    assert await reset_codes(db, sealer, channel="sms") == []
