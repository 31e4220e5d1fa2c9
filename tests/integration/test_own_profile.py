"""A user's own profile (issue 10, item 2): language stored and used for every message, a new
password with the current one, a new email or mobile confirmed by a code sent to it, and the
user's own sessions — identity's real API on the database under test."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import select

from services.identity.models import AuditEntry, messaging
from shared.clock import FrozenClock
from shared.db import Database
from shared.events import CredentialChanged, SessionEnded, UserCreated, UserDetailsChanged
from shared.sealing import Sealer
from tests.integration.test_activation import PASSWORD
from tests.integration.test_administration import (
    activate_and_log_in,
    colleague,
    group_admin,
    login_email,
)
from tests.integration.test_login import client, database_url, last_code, settings  # noqa: F401 - fixtures

NEW_PASSWORD = "Havørn-Aftensol-Kringle-77"
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Mobile/15E148 Safari/604.1"
)


async def events_of(db: Database, event_type: type) -> list[Any]:
    """The events of this type in identity's outbox, oldest first."""
    async with db.transaction() as session:
        values = (
            await session.execute(
                select(messaging.outbox.c.value)
                .where(messaging.outbox.c.headers.contains(event_type.TYPE))
                .order_by(messaging.outbox.c.seq)
            )
        ).scalars()
        return [event_type.model_validate_json(v) for v in values]


async def audit_actions(db: Database, user_id: str) -> list[str]:
    async with db.transaction() as session:
        rows = await session.scalars(
            select(AuditEntry).where(AuditEntry.target_user_id == user_id).order_by(AuditEntry.at)
        )
        return [r.action for r in rows]


async def sign_in(
    client: httpx.AsyncClient,
    db: Database,
    sealer: Sealer,
    username: str,
    *,
    password: str = PASSWORD,
    user_agent: str = CHROME,
    method: str = "email",
) -> dict[str, Any]:
    """A two-factor login from a browser with this user agent: the tokens and bearer headers."""
    ua = {"User-Agent": user_agent}
    challenge = await client.post("/v1/login", json={"username": username, "password": password}, headers=ua)
    assert challenge.status_code == 200, challenge.text
    challenge_id = challenge.json()["challenge_id"]
    sent = await client.post(f"/v1/login/{challenge_id}/send", json={"method": method}, headers=ua)
    assert sent.status_code == 202, sent.text
    _, code = await last_code(db, sealer)
    tokens = await client.post(f"/v1/login/{challenge_id}/verify", json={"code": code}, headers=ua)
    assert tokens.status_code == 200, tokens.text
    return {**tokens.json(), "headers": {"Authorization": f"Bearer {tokens.json()['access_token']}"}}


async def a_colleague(
    db: Database, clock: FrozenClock, sealer: Sealer, client: httpx.AsyncClient, **changes: Any
) -> tuple[str, str]:
    """A colleague created by the group's administrator and activated: (user id, username)."""
    admin = await group_admin(db, clock, sealer, client)
    created = await client.post("/v1/users", json=colleague(**changes), headers=admin)
    assert created.status_code == 201, created.text
    event, code = await login_email(db, sealer)
    first_login = await activate_and_log_in(client, db, sealer, event.username, code)
    assert (await client.post("/v1/logout", headers=first_login)).status_code == 204
    return created.json()["id"], event.username


# --- language -------------------------------------------------------------------------------


async def test_the_language_an_administrator_chose_is_kept_and_used_for_codes_notices_and_events(
    db, clock, sealer, client
) -> None:
    user_id, username = await a_colleague(db, clock, sealer, client, language="en")

    me = await client.get("/v1/me", headers=(await sign_in(client, db, sealer, username))["headers"])
    assert me.json()["language"] == "en"
    code, _ = await last_code(db, sealer)
    assert code.purpose == "login" and code.language == "en"
    [created] = [e for e in await events_of(db, UserCreated) if str(e.user_id) == user_id]
    assert created.language == "en"
    notices = [e for e in await events_of(db, CredentialChanged) if str(e.user_id) == user_id]
    assert [(n.change, n.language) for n in notices] == [("password_set", "en")]


async def test_a_login_made_without_a_choice_is_danish(db, clock, sealer, client) -> None:
    _, username = await a_colleague(db, clock, sealer, client)
    me = await client.get("/v1/me", headers=(await sign_in(client, db, sealer, username))["headers"])
    assert me.json()["language"] == "da"


async def test_a_user_changes_their_language_and_the_next_messages_follow(db, clock, sealer, client) -> None:
    user_id, username = await a_colleague(db, clock, sealer, client)
    headers = (await sign_in(client, db, sealer, username))["headers"]

    changed = await client.patch("/v1/me", json={"language": "en"}, headers=headers)

    assert changed.status_code == 200, changed.text
    assert changed.json()["language"] == "en"
    [details] = [e for e in await events_of(db, UserDetailsChanged) if str(e.user_id) == user_id]
    assert details.language == "en"
    await sign_in(client, db, sealer, username, method="sms")
    code, _ = await last_code(db, sealer)
    assert (code.channel, code.language) == ("sms", "en")
    assert "profile.language-changed" in await audit_actions(db, user_id)

    again = await client.patch("/v1/me", json={"language": "en"}, headers=headers)
    assert again.status_code == 200
    assert len([e for e in await events_of(db, UserDetailsChanged) if str(e.user_id) == user_id]) == 1


async def test_an_unknown_language_is_refused_naming_the_field(db, clock, sealer, client) -> None:
    _, username = await a_colleague(db, clock, sealer, client)
    headers = (await sign_in(client, db, sealer, username))["headers"]

    refused = await client.patch("/v1/me", json={"language": "de"}, headers=headers)

    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == ["language"]


# --- password -------------------------------------------------------------------------------


async def test_a_new_password_needs_the_current_one_ends_the_other_sessions_and_the_user_is_told(
    db, clock, sealer, client
) -> None:
    user_id, username = await a_colleague(db, clock, sealer, client, language="en")
    other = await sign_in(client, db, sealer, username, user_agent=IPHONE)
    this = await sign_in(client, db, sealer, username)

    wrong = await client.post(
        "/v1/me/password",
        json={"current_password": "Not-the-password-123", "new_password": NEW_PASSWORD},
        headers=this["headers"],
    )
    assert wrong.status_code == 422 and wrong.json()["type"].endswith("/wrong-current-password")
    assert [e["field"] for e in wrong.json()["errors"]] == ["current_password"]

    changed = await client.post(
        "/v1/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=this["headers"],
    )

    assert changed.status_code == 200, changed.text
    assert changed.json() == {"sessions_ended": 1}
    assert (await client.get("/v1/me", headers=other["headers"])).status_code == 401
    assert (await client.get("/v1/me", headers=this["headers"])).status_code == 200
    ended = [e for e in await events_of(db, SessionEnded) if str(e.user_id) == user_id]
    assert [e.reason for e in ended] == ["logout", "password-changed"]
    notices = [e for e in await events_of(db, CredentialChanged) if str(e.user_id) == user_id]
    assert (notices[-1].change, notices[-1].language) == ("password_changed", "en")
    assert "profile.password-changed" in await audit_actions(db, user_id)
    old = await client.post("/v1/login", json={"username": username, "password": PASSWORD})
    assert old.status_code == 401
    await sign_in(client, db, sealer, username, password=NEW_PASSWORD)


async def test_a_new_password_must_follow_the_password_rules(db, clock, sealer, client) -> None:
    _, username = await a_colleague(db, clock, sealer, client)
    headers = (await sign_in(client, db, sealer, username))["headers"]

    for new in ("kort", "password1234", PASSWORD, f"x{username}xyzzy-Q"):
        refused = await client.post(
            "/v1/me/password", json={"current_password": PASSWORD, "new_password": new}, headers=headers
        )
        assert refused.status_code == 422, new
        assert [e["field"] for e in refused.json()["errors"]] == ["new_password"], new


async def test_wrong_current_passwords_count_towards_the_login_lockout(db, clock, sealer, client, settings) -> None:
    _, username = await a_colleague(db, clock, sealer, client)
    headers = (await sign_in(client, db, sealer, username))["headers"]

    for _ in range(settings.login_free_failures):
        wrong = await client.post(
            "/v1/me/password",
            json={"current_password": "Not-the-password-123", "new_password": NEW_PASSWORD},
            headers=headers,
        )
        assert wrong.status_code == 422

    login = await client.post("/v1/login", json={"username": username, "password": PASSWORD})
    assert login.status_code == 429 and int(login.headers["Retry-After"]) >= 1
    delayed = await client.post(
        "/v1/me/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}, headers=headers
    )
    assert delayed.status_code == 429


# --- email and mobile -----------------------------------------------------------------------


async def test_a_new_email_takes_effect_only_with_the_code_sent_to_it_and_the_old_address_is_told(
    db, clock, sealer, client
) -> None:
    user_id, username = await a_colleague(db, clock, sealer, client, language="en")
    headers = (await sign_in(client, db, sealer, username))["headers"]

    started = await client.post("/v1/me/email", json={"email": "Jonas.Berg@Ny.Example"}, headers=headers)

    assert started.status_code == 202, started.text
    body = started.json()
    assert body["field"] == "email" and "•" in body["sent_to"]
    assert (await client.get("/v1/me", headers=headers)).json()["email"] == "jonas@nordlys.example"
    code_event, code = await last_code(db, sealer)
    assert (code_event.purpose, code_event.channel, code_event.language) == ("confirm_new_email", "email", "en")
    assert code_event.recipient == "Jonas.Berg@ny.example"
    assert code_event.expires_at - clock.now() == timedelta(minutes=15)
    async with db.transaction() as session:
        stored = (await session.execute(select(messaging.outbox.c.value))).scalars().all()
    assert not any(code in value for value in stored), "the code is sealed on the bus"

    confirmed = await client.post(
        f"/v1/me/contact-changes/{body['change_id']}/confirm", json={"code": code}, headers=headers
    )

    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["email"] == code_event.recipient
    [details] = [e for e in await events_of(db, UserDetailsChanged) if str(e.user_id) == user_id]
    assert details.email == code_event.recipient
    notice = [e for e in await events_of(db, CredentialChanged) if str(e.user_id) == user_id][-1]
    assert (notice.change, notice.email, notice.language) == (
        "contact_details_changed",
        "jonas@nordlys.example",
        "en",
    )
    assert "profile.email-changed" in await audit_actions(db, user_id)
    again = await client.post(
        f"/v1/me/contact-changes/{body['change_id']}/confirm", json={"code": code}, headers=headers
    )
    assert again.status_code == 409


async def test_a_new_mobile_is_confirmed_by_the_code_sent_to_it_by_sms(db, clock, sealer, client) -> None:
    user_id, username = await a_colleague(db, clock, sealer, client)
    headers = (await sign_in(client, db, sealer, username))["headers"]
    assert (await client.get("/v1/me", headers=headers)).json()["mobile_confirmed"] is False

    started = await client.post("/v1/me/mobile", json={"mobile": "+45 31 32 33 34"}, headers=headers)
    assert started.status_code == 202, started.text
    code_event, code = await last_code(db, sealer)
    assert (code_event.purpose, code_event.channel, code_event.recipient) == (
        "confirm_new_mobile",
        "sms",
        "+4531323334",
    )

    confirmed = await client.post(
        f"/v1/me/contact-changes/{started.json()['change_id']}/confirm", json={"code": code}, headers=headers
    )

    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["mobile"] == "+4531323334" and confirmed.json()["mobile_confirmed"] is True
    notice = [e for e in await events_of(db, CredentialChanged) if str(e.user_id) == user_id][-1]
    assert notice.change == "contact_details_changed" and notice.email == "jonas@nordlys.example"
    assert "profile.mobile-changed" in await audit_actions(db, user_id)


async def test_changing_where_codes_go_needs_a_recent_login(db, clock, sealer, client, settings) -> None:
    _, username = await a_colleague(db, clock, sealer, client)
    tokens = await sign_in(client, db, sealer, username)
    clock.advance(settings.reauthentication_window + timedelta(minutes=1))
    fresh = (await client.post("/v1/token/refresh", json={"refresh_token": tokens["refresh_token"]})).json()
    headers = {"Authorization": f"Bearer {fresh['access_token']}"}

    for path, body in (("/v1/me/email", {"email": "ny@example.dk"}), ("/v1/me/mobile", {"mobile": "+4531323334"})):
        refused = await client.post(path, json=body, headers=headers)
        assert refused.status_code == 403 and refused.json()["type"].endswith("/reauthentication-required")


async def test_the_same_address_or_a_malformed_one_is_refused_naming_the_field(db, clock, sealer, client) -> None:
    _, username = await a_colleague(db, clock, sealer, client)
    headers = (await sign_in(client, db, sealer, username))["headers"]

    for path, body, field in (
        ("/v1/me/email", {"email": "jonas@nordlys.example"}, "email"),
        ("/v1/me/email", {"email": "ikke en adresse"}, "email"),
        ("/v1/me/mobile", {"mobile": "+45 20 30 40 50"}, "mobile"),
        ("/v1/me/mobile", {"mobile": "12"}, "mobile"),
    ):
        refused = await client.post(path, json=body, headers=headers)
        assert refused.status_code == 422, body
        assert [e["field"] for e in refused.json()["errors"]] == [field], body


async def test_wrong_codes_are_counted_and_then_the_change_must_start_again(
    db, clock, sealer, client, settings
) -> None:
    _, username = await a_colleague(db, clock, sealer, client)
    headers = (await sign_in(client, db, sealer, username))["headers"]
    started = (await client.post("/v1/me/email", json={"email": "ny@example.dk"}, headers=headers)).json()
    _, code = await last_code(db, sealer)
    wrong = "000000" if code != "000000" else "111111"
    confirm = f"/v1/me/contact-changes/{started['change_id']}/confirm"

    answers = [
        await client.post(confirm, json={"code": wrong}, headers=headers) for _ in range(settings.otp_max_attempts)
    ]

    assert [a.status_code for a in answers] == [400] * settings.otp_max_attempts
    assert "1 more tries" in answers[-2].json()["detail"]
    right = await client.post(confirm, json={"code": code}, headers=headers)
    assert right.status_code == 410 and right.json()["type"].endswith("/contact-change-restart-required")
    assert (await client.get("/v1/me", headers=headers)).json()["email"] == "jonas@nordlys.example"


async def test_an_expired_or_replaced_code_no_longer_works_and_a_restart_waits_the_cooldown(
    db, clock, sealer, client, settings
) -> None:
    _, username = await a_colleague(db, clock, sealer, client)
    headers = (await sign_in(client, db, sealer, username))["headers"]
    first = (await client.post("/v1/me/mobile", json={"mobile": "+4531323334"}, headers=headers)).json()
    _, first_code = await last_code(db, sealer)

    too_soon = await client.post("/v1/me/mobile", json={"mobile": "+4531323335"}, headers=headers)
    assert too_soon.status_code == 429 and int(too_soon.headers["Retry-After"]) >= 1

    clock.advance(settings.otp_resend_cooldown)
    second = (await client.post("/v1/me/mobile", json={"mobile": "+4531323335"}, headers=headers)).json()
    replaced = await client.post(
        f"/v1/me/contact-changes/{first['change_id']}/confirm", json={"code": first_code}, headers=headers
    )
    assert replaced.status_code == 410 and "newer change" in replaced.json()["detail"]

    _, second_code = await last_code(db, sealer)
    clock.advance(settings.contact_change_ttl)
    later = await sign_in(client, db, sealer, username)
    expired = await client.post(
        f"/v1/me/contact-changes/{second['change_id']}/confirm", json={"code": second_code}, headers=later["headers"]
    )
    assert expired.status_code == 410 and "expired" in expired.json()["detail"]


# --- sessions -------------------------------------------------------------------------------


async def test_the_sessions_list_shows_device_address_start_last_use_and_which_is_this_one(
    db, clock, sealer, client
) -> None:
    _, username = await a_colleague(db, clock, sealer, client)
    phone = await sign_in(client, db, sealer, username, user_agent=IPHONE)
    clock.advance(timedelta(minutes=3))
    this = await sign_in(client, db, sealer, username)
    clock.advance(timedelta(minutes=2))
    await client.post("/v1/token/refresh", json={"refresh_token": phone["refresh_token"]})

    listed = await client.get("/v1/me/sessions", headers=this["headers"])

    assert listed.status_code == 200, listed.text
    sessions = listed.json()
    assert [s["device"] for s in sessions] == ["Mobile Safari on iOS (iPhone)", "Chrome on Windows"]
    assert [s["current"] for s in sessions] == [False, True]
    assert all(s["client_address"] for s in sessions)
    assert sessions[0]["last_used_at"] > sessions[0]["started_at"], "a refresh is a use"
    assert sessions[1]["last_used_at"] == sessions[1]["started_at"]


async def test_a_user_ends_one_session_or_all_others_and_billing_hears_of_each(db, clock, sealer, client) -> None:
    user_id, username = await a_colleague(db, clock, sealer, client)
    first = await sign_in(client, db, sealer, username, user_agent=IPHONE)
    second = await sign_in(client, db, sealer, username)
    third = await sign_in(client, db, sealer, username)
    sessions = (await client.get("/v1/me/sessions", headers=third["headers"])).json()
    [first_id] = [s["id"] for s in sessions if s["device"].startswith("Mobile Safari")]

    ended = await client.delete(f"/v1/me/sessions/{first_id}", headers=third["headers"])

    assert ended.status_code == 204
    assert (await client.get("/v1/me", headers=first["headers"])).status_code == 401
    again = await client.delete(f"/v1/me/sessions/{first_id}", headers=third["headers"])
    assert again.status_code == 404

    others = await client.post("/v1/me/sessions/end-others", headers=third["headers"])

    assert others.status_code == 200 and others.json() == {"sessions_ended": 1}
    assert (await client.get("/v1/me", headers=second["headers"])).status_code == 401
    assert [s["current"] for s in (await client.get("/v1/me/sessions", headers=third["headers"])).json()] == [True]
    announced = [e for e in await events_of(db, SessionEnded) if str(e.user_id) == user_id]
    assert [e.reason for e in announced] == ["logout", "ended-by-user", "ended-by-user"]
    assert (await audit_actions(db, user_id)).count("profile.session-ended") == 2


async def test_ending_this_session_is_logging_out(db, clock, sealer, client) -> None:
    _, username = await a_colleague(db, clock, sealer, client)
    this = await sign_in(client, db, sealer, username)
    [mine] = (await client.get("/v1/me/sessions", headers=this["headers"])).json()

    assert (await client.delete(f"/v1/me/sessions/{mine['id']}", headers=this["headers"])).status_code == 204
    assert (await client.get("/v1/me", headers=this["headers"])).status_code == 401

