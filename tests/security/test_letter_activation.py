"""The login from the company's letter (S2, S7): anyone may fill in the public application form,
so its contact details must not become the login's. Whoever activates with the letter's code
sets and confirms their own mobile number and email; only then is the login active.

Identity's real API and provisioning handler on the database under test, with a clock the test
controls; rules and limits are tried with requests in parallel.
"""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import TypeVar

import httpx
import pytest
from sqlalchemy import select

from services.identity.api import create_api
from services.identity.config import IdentitySettings
from services.identity.models import User, messaging
from services.notifier.letters import render_credentials_letter
from shared.clock import FrozenClock
from shared.events import CredentialChanged, CredentialsIssued, Event, UserActivated, UserDetailsChanged
from shared.sealing import Sealer, generate_key, parse_keyring
from tests.integration.test_activation import (
    OWN_EMAIL,
    OWN_MOBILE,
    PASSWORD,
    confirmation_codes,
    problem_type,
    provision_admin,
    unsealed_code,
)
from tests.integration.test_login import client, database_url, last_code, settings  # noqa: F401
from tests.support.asgi import AppTransport

E = TypeVar("E", bound=Event)
APPLICANT_EMAIL = "ida@solsikke.example"  # what provision_admin's application gave
APPLICANT_MOBILE = "+4520304050"


def start_body(username: str, code: str, **changes: str) -> dict[str, str]:
    body = {
        "username": username,
        "activation_code": code,
        "password": PASSWORD,
        "email": OWN_EMAIL,
        "mobile": OWN_MOBILE,
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v != ""}


async def start(client: httpx.AsyncClient, username: str, code: str, **changes: str) -> httpx.Response:
    return await client.post("/v1/activation", json=start_body(username, code, **changes))


async def codes_of(db, sealer: Sealer, activation_id: str) -> dict[str, str]:
    sent = await confirmation_codes(db, sealer, activation_id)
    return {
        "sms_code": unsealed_code(sealer, sent["sms"]),
        "email_code": unsealed_code(sealer, sent["email"]),
    }


async def the_user(db, username: str) -> User:
    async with db.transaction() as session:
        user = await session.scalar(select(User).where(User.username == username))
    assert user is not None
    return user


async def outbox_values(db, topic: str) -> list[str]:
    async with db.transaction() as session:
        return list(
            await session.scalars(
                select(messaging.outbox.c.value)
                .where(messaging.outbox.c.topic == topic)
                .order_by(messaging.outbox.c.seq)
            )
        )


async def events_of(db, kind: type[E]) -> list[E]:
    """The events of one type identity queued, oldest first."""
    async with db.transaction() as session:
        values = await session.scalars(
            select(messaging.outbox.c.value)
            .where(
                messaging.outbox.c.topic == kind.TOPIC.name, messaging.outbox.c.headers.contains(kind.TYPE)
            )
            .order_by(messaging.outbox.c.seq)
        )
        return [kind.model_validate_json(v) for v in values]


def other_than(code: str) -> str:
    return "000000" if code != "000000" else "111111"


async def test_the_letter_login_is_active_only_after_the_activator_confirms_their_own_mobile_and_email(
    db, clock, sealer, client
) -> None:
    username, code = await provision_admin(db, clock, sealer)

    started = await start(client, username, code, name="Karen Ejer")
    assert started.status_code == 202, started.text
    body = started.json()
    assert body["sms_sent_to"] == "+45 •• •• •3 44" and body["email_sent_to"] == "k•••@solsikke.example"
    sent = await confirmation_codes(db, sealer, body["activation_id"])
    # The codes go to the details the activator gave, not to those of the application.
    assert {(e.channel, e.purpose, e.recipient) for e in sent.values()} == {
        ("sms", "confirm_mobile", OWN_MOBILE),
        ("email", "confirm_email", OWN_EMAIL),
    }
    pending = await the_user(db, username)
    assert pending.status == "pending" and pending.password_hash is None
    assert pending.email == APPLICANT_EMAIL  # nothing changes before the codes come back
    refused = await client.post("/v1/login", json={"username": username, "password": PASSWORD})
    assert refused.status_code == 401

    confirmed = await client.post(
        f"/v1/activation/{body['activation_id']}/confirm",
        json=await codes_of(db, sealer, body["activation_id"]),
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json() == {"user_id": pending.id, "username": username, "status": "active"}

    user = await the_user(db, username)
    assert (user.status, user.name, user.email, user.mobile) == (
        "active",
        "Karen Ejer",
        OWN_EMAIL,
        OWN_MOBILE,
    )
    assert user.mobile_confirmed_at is not None
    # Other services learn the confirmed details; the password notice goes to the confirmed address.
    [details] = await events_of(db, UserDetailsChanged)
    assert (details.name, details.email, details.mobile) == ("Karen Ejer", OWN_EMAIL, OWN_MOBILE)
    assert [n.email for n in await events_of(db, CredentialChanged)] == [OWN_EMAIL]

    # Two-factor login now sends its codes to the confirmed mobile number (S7).
    challenge = (await client.post("/v1/login", json={"username": username, "password": PASSWORD})).json()
    assert (
        await client.post(f"/v1/login/{challenge['challenge_id']}/send", json={"method": "sms"})
    ).status_code == 202
    otp, _ = await last_code(db, sealer)
    assert otp.recipient == OWN_MOBILE


async def test_a_letter_login_without_an_email_or_mobile_is_a_422_naming_them_but_only_after_the_right_code(
    db, clock, sealer, client
) -> None:
    username, code = await provision_admin(db, clock, sealer)
    wrong = "ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ" if code != "ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ" else "YYYY-YYYY-YYYY-YYYY-YYYY"
    # Without the right code nothing tells what kind of login the username is (no enumeration).
    unknown_user = await start(client, "22109340-zzzz", wrong, email="", mobile="")
    wrong_code = await start(client, username, wrong, email="", mobile="")
    assert unknown_user.status_code == wrong_code.status_code == 400
    assert unknown_user.json()["detail"] == wrong_code.json()["detail"]

    both = await start(client, username, code, email="", mobile="")
    assert both.status_code == 422, both.text
    assert [e["field"] for e in both.json()["errors"]] == ["email", "mobile"]
    no_mobile = await start(client, username, code, mobile="")
    assert no_mobile.status_code == 422 and [e["field"] for e in no_mobile.json()["errors"]] == ["mobile"]
    assert "own" in no_mobile.json()["detail"]
    assert (await the_user(db, username)).status == "pending"  # nothing was used up
    assert (await start(client, username, code)).status_code == 202


async def test_wrong_confirmation_codes_sent_in_parallel_are_each_counted_and_then_the_activation_must_restart(
    db, clock, sealer, client, settings
) -> None:
    username, code = await provision_admin(db, clock, sealer)
    started = (await start(client, username, code)).json()
    right = await codes_of(db, sealer, started["activation_id"])
    wrong = {"sms_code": other_than(right["sms_code"]), "email_code": right["email_code"]}
    url = f"/v1/activation/{started['activation_id']}/confirm"
    tries = settings.otp_max_attempts + 3

    answers = await asyncio.gather(*(client.post(url, json=wrong) for _ in range(tries)))

    statuses = sorted(a.status_code for a in answers)
    assert statuses == [400] * settings.otp_max_attempts + [410] * 3, [a.text for a in answers]
    first_wrong = next(a for a in answers if a.status_code == 400)
    assert [e["field"] for e in first_wrong.json()["errors"]] == ["sms_code"]
    blocked = await client.post(url, json=right)
    assert blocked.status_code == 410 and problem_type(blocked) == "activation-restart-required"
    assert "letter" in blocked.json()["detail"]
    assert (await the_user(db, username)).status == "pending"

    # The letter's code was not used up: the activation starts again.
    clock.advance(settings.otp_resend_cooldown)
    again = await start(client, username, code)
    assert again.status_code == 202, again.text
    confirmed = await client.post(
        f"/v1/activation/{again.json()['activation_id']}/confirm",
        json=await codes_of(db, sealer, again.json()["activation_id"]),
    )
    assert confirmed.status_code == 200, confirmed.text


async def test_the_letter_code_is_used_only_at_confirmation_and_a_new_start_replaces_the_unfinished_one(
    db, clock, sealer, client, settings
) -> None:
    username, code = await provision_admin(db, clock, sealer)
    first = (await start(client, username, code, email="someone@example.dk")).json()
    clock.advance(settings.otp_resend_cooldown)
    second = (await start(client, username, code)).json()

    stale = await client.post(
        f"/v1/activation/{first['activation_id']}/confirm",
        json=await codes_of(db, sealer, first["activation_id"]),
    )
    assert stale.status_code == 410 and "newer activation" in stale.json()["detail"]
    confirmed = await client.post(
        f"/v1/activation/{second['activation_id']}/confirm",
        json=await codes_of(db, sealer, second["activation_id"]),
    )
    assert confirmed.status_code == 200, confirmed.text
    assert (await the_user(db, username)).email == OWN_EMAIL
    used = await start(client, username, code)
    assert used.status_code == 409 and problem_type(used) == "already-activated"


async def test_confirmation_codes_expire_and_the_activation_must_restart(
    db, clock, sealer, client, settings
) -> None:
    username, code = await provision_admin(db, clock, sealer)
    started = (await start(client, username, code)).json()
    right = await codes_of(db, sealer, started["activation_id"])
    clock.advance(settings.activation_confirmation_ttl)
    late = await client.post(f"/v1/activation/{started['activation_id']}/confirm", json=right)
    assert late.status_code == 410 and "expired" in late.json()["detail"]
    assert (await the_user(db, username)).status == "pending"


async def test_confirmation_codes_are_stored_only_as_digests_keyed_and_bound_to_the_activation(
    db, clock, sealer, client
) -> None:
    from services.identity.models import PendingActivation

    username, code = await provision_admin(db, clock, sealer)
    started = (await start(client, username, code)).json()
    right = await codes_of(db, sealer, started["activation_id"])
    async with db.transaction() as session:
        row = await session.get(PendingActivation, started["activation_id"])
    assert row is not None
    stored = " ".join(str(v) for v in row.__dict__.values())
    for sent in right.values():
        assert sent not in stored
        # Neither a plain hash nor one bound only to the activation id: a million guesses would find those.
        assert hashlib.sha256(sent.encode()).hexdigest() not in stored
        assert hashlib.sha256(f"{row.id}:{sent}".encode()).hexdigest() not in stored
    # Keyed: the same code and activation under another key gives another digest.
    stranger = Sealer(parse_keyring(f"k1:{generate_key()}"), "k1")
    assert not stranger.digest_matches(
        right["sms_code"], row.sms_code_hash, context=f"activation:{row.id}:sms"
    )
    for value in await outbox_values(db, "identity.otp"):
        assert all(sent not in value for sent in right.values())  # sealed on the bus


async def test_parallel_confirmations_with_the_right_codes_activate_the_login_once(
    db, clock, sealer, client
) -> None:
    username, code = await provision_admin(db, clock, sealer)
    started = (await start(client, username, code)).json()
    right = await codes_of(db, sealer, started["activation_id"])
    url = f"/v1/activation/{started['activation_id']}/confirm"

    answers = await asyncio.gather(*(client.post(url, json=right) for _ in range(6)))

    assert sorted(a.status_code for a in answers) == [200] + [409] * 5, [a.text for a in answers]
    assert len(await events_of(db, UserActivated)) == 1


async def test_parallel_starts_with_the_right_code_send_codes_once_and_the_rest_wait(
    db, clock, sealer, client, settings
) -> None:
    """Each start sends an SMS and an email: a restart must wait for the cooldown (429)."""
    username, code = await provision_admin(db, clock, sealer)

    answers = await asyncio.gather(*(start(client, username, code) for _ in range(5)))

    assert sorted(a.status_code for a in answers) == [202] + [429] * 4, [a.text for a in answers]
    waits = [int(a.headers["retry-after"]) for a in answers if a.status_code == 429]
    assert all(0 < w <= settings.otp_resend_cooldown.total_seconds() + 1 for w in waits)
    assert len(await outbox_values(db, "identity.otp")) == 2  # one SMS and one email


@pytest.fixture
async def limited_client(
    database_url: str, clock: FrozenClock, sealer: Sealer, tmp_path, monkeypatch
) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setattr(IdentitySettings, "sealer", lambda self: sealer)
    app = create_api(
        IdentitySettings(database_url=database_url, var_dir=tmp_path, activation_rate_limit_per_minute=3),
        clock=clock,
    )
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://identity") as http:
        yield http


async def test_confirmations_count_against_the_per_client_activation_limit(
    db, clock, sealer, limited_client
) -> None:
    username, code = await provision_admin(db, clock, sealer)
    started = await start(limited_client, username, code)  # one of the three
    assert started.status_code == 202, started.text
    url = f"/v1/activation/{started.json()['activation_id']}/confirm"
    wrong = {"sms_code": "000000", "email_code": "000000"}

    answers = await asyncio.gather(*(limited_client.post(url, json=wrong) for _ in range(4)))

    assert sorted(a.status_code for a in answers) == [400, 400, 429, 429], [a.text for a in answers]
    limited = next(a for a in answers if a.status_code == 429)
    assert int(limited.headers["retry-after"]) >= 1 and limited.json()["type"].endswith("/rate-limited")


async def test_the_letter_says_who_applied_when_and_that_the_activator_sets_their_own_mobile_and_email(
    db, clock, sealer
) -> None:
    await provision_admin(db, clock, sealer)
    [value] = await outbox_values(db, "identity.credentials")
    issued = CredentialsIssued.model_validate_json(value)
    assert issued.applicant is not None
    # Masked: enough for the company to recognise, and no contact details of a stranger in full.
    assert (issued.applicant.name, issued.applicant.email, issued.applicant.mobile) == (
        "Ida Bager",
        "i•••@solsikke.example",
        "+45 •• •• •0 50",
    )
    assert APPLICANT_EMAIL not in value and APPLICANT_MOBILE not in value

    for language, sentence in (
        ("da", "angiver selv sit eget mobilnummer og sin egen e-mailadresse"),
        ("en", "gives their own mobile number and email address"),
    ):
        text = render_credentials_letter(
            language=language,
            company_name=issued.company_name,
            cvr=issued.recipient_cvr,
            username=issued.username,
            activation_code="XXXX",
            expires_at=issued.expires_at,
            portal_url="https://selvbetjening.example.dk",
            applicant=issued.applicant,
        )
        flat = " ".join(text.split())
        assert "Ida Bager" in flat and "i•••@solsikke.example" in flat and "+45 •• •• •0 50" in flat
        assert sentence in flat
        assert str(issued.applicant.applied_at.year) in flat
