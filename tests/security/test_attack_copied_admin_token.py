"""A copied access token must not turn into a login of the copier's own (S5, S6, S7). The
token of an administrator's session left open (5 minutes, or 12 hours with the refresh token
beside it) creates a colleague with the administrator's whole access and the copier's email
and mobile, or re-addresses a colleague's login that is not activated yet and sends its
activation code again: either way the activation code arrives in the copier's mailbox, and
the copier keeps a login of their own after the session has ended. Replacing the
authenticator app already needs a login within the re-authentication window; so should these."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select

from services.identity.models import User, messaging
from tests.integration.test_login import (  # noqa: F401 - fixtures
    active_admin,
    client,
    database_url,
    log_in,
    settings,
)
from tests.security.test_second_factor_secrets import refreshed

ATTACKER = {"email": "attacker@evil.example", "mobile": "+4529999999"}
CVR = "22109340"  # the company of tests.integration.test_activation.provision_admin


async def login_emails(db) -> int:
    async with db.transaction() as session:
        rows = (
            await session.execute(
                select(messaging.outbox.c.seq).where(messaging.outbox.c.headers.like("%LoginCreated%"))
            )
        ).all()
    return len(rows)


async def test_a_copied_administrator_token_cannot_send_an_activation_code_to_an_address_of_its_choice(
    db, clock, sealer, client
) -> None:
    username = await active_admin(db, clock, sealer, client)
    tokens = await log_in(client, db, sealer, username)
    fresh = {"Authorization": f"Bearer {tokens['access_token']}"}
    # A colleague the administrator created a moment ago, who has not activated yet.
    pending = await client.post(
        "/v1/users",
        headers=fresh,
        json={
            "name": "Kim Kollega",
            "email": "kim@solsikke.example",
            "mobile": "+4520304060",
            "grants": [{"cvr": CVR, "accounts": "all"}],
            "functions": ["invoices", "user_admin"],
        },
    )
    assert pending.status_code == 201, pending.text
    clock.advance(timedelta(minutes=16))  # the session is older than the re-authentication window
    copied = {"Authorization": f"Bearer {(await refreshed(client, tokens))['access_token']}"}
    emails_before = await login_emails(db)
    assert emails_before == 1  # the colleague's email: the count sees them

    created, readdressed = await asyncio.gather(
        client.post(
            "/v1/users",
            headers=copied,
            json={
                "name": "Ny Medarbejder",
                **ATTACKER,
                "grants": [{"cvr": CVR, "accounts": "all"}],
                "functions": ["invoices", "master_data", "orders", "telephony", "user_admin"],
            },
        ),
        client.patch(f"/v1/users/{pending.json()['id']}", headers=copied, json=ATTACKER),
    )
    resent = await client.post(f"/v1/users/{pending.json()['id']}/resend-activation", headers=copied)

    assert [created.status_code, readdressed.status_code, resent.status_code] == [403, 403, 403], [
        created.text,
        readdressed.text,
        resent.text,
    ]
    assert await login_emails(db) == emails_before  # no activation code went anywhere
    async with db.transaction() as session:
        addresses = set((await session.scalars(select(User.email))).all())
    assert ATTACKER["email"] not in addresses
