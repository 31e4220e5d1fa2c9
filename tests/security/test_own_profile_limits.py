"""The limits of a user's own profile hold when requests arrive at once: a code sent to a new
address changes it once, wrong codes get no more tries than allowed, wrong current passwords
count towards the login lock like failed logins, and nobody sees or ends another user's
session (issue 10, item 2)."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from services.identity.api import create_api
from services.identity.config import IdentitySettings
from services.identity.models import LoginSession, messaging
from shared.events import CredentialChanged, OtpRequested, UserDetailsChanged
from tests.integration.test_activation import PASSWORD
from tests.integration.test_login import database_url, last_code  # noqa: F401 - fixtures
from tests.security.world import PARENT, add_user, bearer, company_group
from tests.support.asgi import AppTransport

AT_ONCE = 12
NEW_PASSWORD = "Havørn-Aftensol-Kringle-77"


@pytest.fixture
def settings(identity_settings: Callable[..., IdentitySettings]) -> IdentitySettings:
    """The lockout tests' settings: a delay after two wrong passwords, a lock after three."""
    return identity_settings(login_free_failures=2, login_lock_after_failures=3)


@pytest.fixture
async def client(settings: IdentitySettings, clock, sealer, monkeypatch) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setattr(IdentitySettings, "sealer", lambda self: sealer)
    app = create_api(settings, clock=clock)
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://identity") as http:
        yield http


async def a_user(db, clock):  # noqa: ANN201 - the world's User
    await company_group(db, clock)
    return await add_user(db, clock, grants={PARENT: "all"}, functions=["invoices"])


async def count_events(db, event_type: type, user_id: str) -> int:
    async with db.transaction() as session:
        values = (
            await session.execute(
                select(messaging.outbox.c.value).where(messaging.outbox.c.headers.contains(event_type.TYPE))
            )
        ).scalars()
        return sum(1 for v in values if str(event_type.model_validate_json(v).user_id) == user_id)


async def test_the_code_sent_to_a_new_address_changes_it_once_however_many_confirm_at_once(
    db, clock, settings, sealer, client
) -> None:
    user = await a_user(db, clock)
    headers = await bearer(db, clock, settings, user)
    started = await client.post("/v1/me/email", json={"email": "ny@nordlys.example"}, headers=headers)
    assert started.status_code == 202, started.text
    _, code = await last_code(db, sealer)
    confirm = f"/v1/me/contact-changes/{started.json()['change_id']}/confirm"

    answers = await asyncio.gather(
        *(client.post(confirm, json={"code": code}, headers=headers) for _ in range(AT_ONCE))
    )

    assert Counter(a.status_code for a in answers) == {200: 1, 409: AT_ONCE - 1}
    assert await count_events(db, UserDetailsChanged, user.id) == 1
    assert await count_events(db, CredentialChanged, user.id) == 1


async def test_wrong_codes_sent_at_once_get_no_more_tries_than_the_limit(
    db, clock, settings, sealer, client
) -> None:
    user = await a_user(db, clock)
    headers = await bearer(db, clock, settings, user)
    started = await client.post("/v1/me/mobile", json={"mobile": "+4531323334"}, headers=headers)
    _, code = await last_code(db, sealer)
    wrong = "000000" if code != "000000" else "111111"
    confirm = f"/v1/me/contact-changes/{started.json()['change_id']}/confirm"

    answers = await asyncio.gather(
        *(client.post(confirm, json={"code": wrong}, headers=headers) for _ in range(AT_ONCE))
    )

    assert Counter(a.status_code for a in answers) == {
        400: settings.otp_max_attempts,
        410: AT_ONCE - settings.otp_max_attempts,
    }
    late = await client.post(confirm, json={"code": code}, headers=headers)
    assert late.status_code == 410
    assert (await client.get("/v1/me", headers=headers)).json()["mobile"] == user.mobile


async def test_wrong_current_passwords_at_once_count_towards_the_lock_like_failed_logins(
    db, clock, settings, client
) -> None:
    user = await a_user(db, clock)
    headers = await bearer(db, clock, settings, user)
    wrong = {"current_password": "not the password, a guess", "new_password": NEW_PASSWORD}

    answers = await asyncio.gather(
        *(client.post("/v1/me/password", json=wrong, headers=headers) for _ in range(AT_ONCE))
    )

    counted = Counter(a.status_code for a in answers)
    assert counted == {422: settings.login_free_failures, 429: AT_ONCE - settings.login_free_failures}
    login = await client.post("/v1/login", json={"username": user.username, "password": PASSWORD})
    assert login.status_code == 429, "the username's counter is the login's"
    right = await client.post(
        "/v1/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}, headers=headers
    )
    assert right.status_code == 429


async def test_two_password_changes_at_once_leave_exactly_one_new_password(
    db, clock, settings, client
) -> None:
    user = await a_user(db, clock)
    headers = await bearer(db, clock, settings, user)
    choices = [f"{NEW_PASSWORD}-{n}" for n in range(2)]

    answers = await asyncio.gather(
        *(
            client.post(
                "/v1/me/password", json={"current_password": PASSWORD, "new_password": new}, headers=headers
            )
            for new in choices
        )
    )

    assert sorted(a.status_code for a in answers)[0] == 200
    assert [a.status_code for a in answers].count(200) == 1
    assert {a.status_code for a in answers} - {200} <= {409, 422}
    winner = choices[[a.status_code for a in answers].index(200)]
    logins = [
        (await client.post("/v1/login", json={"username": user.username, "password": p})).status_code
        for p in (winner, *(c for c in choices if c != winner))
    ]
    assert logins[0] == 200 and logins[1] != 200


async def test_nobody_lists_or_ends_another_users_sessions_even_all_at_once(
    db, clock, settings, client
) -> None:
    owner = await a_user(db, clock)
    other = await add_user(db, clock, grants={PARENT: "all"}, functions=["invoices", "user_admin"])
    owner_tokens = [await bearer(db, clock, settings, owner) for _ in range(3)]
    intruder = await bearer(db, clock, settings, other)
    owner_sessions = [s["id"] for s in (await client.get("/v1/me/sessions", headers=owner_tokens[0])).json()]
    assert len(owner_sessions) == 3

    answers = await asyncio.gather(
        *(client.delete(f"/v1/me/sessions/{sid}", headers=intruder) for sid in owner_sessions * 4),
        *(client.get("/v1/me/sessions", headers=intruder) for _ in range(4)),
        client.post("/v1/me/sessions/end-others", headers=intruder),
    )

    deletes, lists, end_others = answers[:12], answers[12:16], answers[16]
    assert {a.status_code for a in deletes} == {404}
    intruders_own = {s.id for s in await live_sessions(db, other.id)}
    assert all({s["id"] for s in a.json()} == intruders_own for a in lists)
    assert not any(set(owner_sessions) & {s["id"] for s in a.json()} for a in lists)
    assert end_others.json() == {"sessions_ended": 0}
    assert {s.id for s in await live_sessions(db, owner.id)} == set(owner_sessions)
    for token in owner_tokens:
        assert (await client.get("/v1/me", headers=token)).status_code == 200


async def live_sessions(db, user_id: str) -> list[LoginSession]:
    async with db.transaction() as session:
        return list(
            await session.scalars(
                select(LoginSession).where(LoginSession.user_id == user_id, LoginSession.ended_at.is_(None))
            )
        )


async def test_codes_to_new_addresses_stop_at_the_daily_limit_whichever_field_and_however_many_ask_at_once(
    db, clock, settings, client
) -> None:
    """Each start texts or emails an address the user chooses: past `contact_changes_per_day`
    in 24 hours nothing more is sent, also when both fields are asked for at once."""
    user = await a_user(db, clock)
    headers = await bearer(db, clock, settings, user)
    before = await count_events(db, OtpRequested, user.id)
    rounds = settings.contact_changes_per_day // 2
    for n in range(rounds):
        answers = await asyncio.gather(
            client.post("/v1/me/email", json={"email": f"ny{n}@nordlys.example"}, headers=headers),
            client.post("/v1/me/mobile", json={"mobile": f"+452099{n:04d}"}, headers=headers),
        )
        assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
        clock.advance(settings.otp_resend_cooldown)
    headers = await bearer(db, clock, settings, user)  # a recent login, still within the day
    refused = await asyncio.gather(
        *(
            client.post(path, json=body, headers=headers)
            for path, body in [
                ("/v1/me/email", {"email": "sidst@nordlys.example"}),
                ("/v1/me/mobile", {"mobile": "+4520990099"}),
            ]
            * (AT_ONCE // 2)
        )
    )
    assert {a.status_code for a in refused} == {429}
    assert all(int(a.headers["Retry-After"]) > 0 for a in refused)
    assert await count_events(db, OtpRequested, user.id) - before == settings.contact_changes_per_day
    clock.advance(timedelta(days=1))
    headers = await bearer(db, clock, settings, user)
    again = await client.post("/v1/me/email", json={"email": "dagen-efter@nordlys.example"}, headers=headers)
    assert again.status_code == 202, again.text
