"""An access token alone must not move a login's second factor (S7): replacing the
authenticator app needs a recent login or a code of the current one, and the mobile number and
email address that receive the login codes are second factors just the same. An administrator's
token copied from a session left open reaches them through the administration routes, where
the administrator's own login is one of the logins they manage."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import select

from services.identity.models import messaging
from shared.events import CredentialChanged
from tests.integration.test_login import (  # noqa: F401 - fixtures
    active_admin,
    client,
    database_url,
    log_in,
    settings,
)
from tests.security.test_administration_scope import snapshot
from tests.security.test_second_factor_secrets import refreshed

ATTACKER_MOBILE = "+4529999999"
ATTACKER_EMAIL = "attacker@evil.example"


async def test_a_copied_administrator_token_cannot_move_the_administrators_own_login_codes(
    db, clock, sealer, client
) -> None:
    username = await active_admin(db, clock, sealer, client)
    tokens = await log_in(client, db, sealer, username)
    clock.advance(timedelta(minutes=16))  # older than the re-authentication window
    copied = {"Authorization": f"Bearer {(await refreshed(client, tokens))['access_token']}"}
    me = (await client.get("/v1/me", headers=copied)).json()
    before = await snapshot(db, me["user_id"])

    answers = await asyncio.gather(
        client.patch(f"/v1/users/{me['user_id']}", headers=copied, json={"mobile": ATTACKER_MOBILE}),
        client.patch(f"/v1/users/{me['user_id']}", headers=copied, json={"email": ATTACKER_EMAIL}),
        client.patch(
            f"/v1/users/{me['user_id']}",
            headers=copied,
            json={"mobile": ATTACKER_MOBILE, "email": ATTACKER_EMAIL},
        ),
    )

    assert [a.status_code for a in answers] == [403] * 3, [a.text for a in answers]
    assert all(a.json()["type"].endswith("/reauthentication-required") for a in answers)
    assert await snapshot(db, me["user_id"]) == before  # the login codes still go to the administrator


async def test_a_recent_login_changes_the_mobile_and_the_user_is_told_at_the_old_address(
    db, clock, sealer, client
) -> None:
    username = await active_admin(db, clock, sealer, client)
    tokens = await log_in(client, db, sealer, username)
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    me = (await client.get("/v1/me", headers=headers)).json()

    changed = await client.patch(
        f"/v1/users/{me['user_id']}", headers=headers, json={"email": "ny@solsikke.example"}
    )

    assert changed.status_code == 200 and changed.json()["email"] == "ny@solsikke.example"
    async with db.transaction() as session:
        values = (
            await session.execute(
                select(messaging.outbox.c.value).where(
                    messaging.outbox.c.headers.contains(CredentialChanged.TYPE)
                )
            )
        ).scalars()
        notices = [CredentialChanged.model_validate_json(v) for v in values]
    told = [n for n in notices if n.change == "contact_details_changed"]
    assert [n.email for n in told] == [me["email"]]  # the address the codes went to before
