"""Attacks on the takeover of a company's administration (issue 10, item 3; beyond S3, S2): what
got through, each kept out by the fix it came with. Identity's real handlers and HTTP API on the
database under test; requests that race are fired in parallel."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio

from sqlalchemy import select

from services.identity.models import Takeover, User
from shared.events import (
    AdministratorProvisioningRejected,
    CredentialsIssued,
    TakeoverNoticeIssued,
)
from tests.integration.test_activation import PASSWORD
from tests.integration.test_administration import (
    activated_group_admin,
    colleague,
    log_in_by_email,
    login_email,
)
from tests.integration.test_login import client, database_url, db, settings  # noqa: F401 - fixtures
from tests.integration.test_takeover import (
    PARENT,
    events,
    submit,
    takeover_application,
)


async def _user_administrator_colleague(db, sealer, client, admin: dict) -> tuple[str, dict]:
    """Kim: a colleague (role user) with the user administration function, activated and logged in."""
    created = await client.post(
        "/v1/users",
        headers=admin,
        json=colleague(
            email="kim@nordlys.example",
            grants=[{"cvr": PARENT, "accounts": "all"}],
            functions=["invoices", "user_admin"],
        ),
    )
    assert created.status_code == 201, created.text
    _, code = await login_email(db, sealer)
    username = created.json()["username"]
    activated = await client.post(
        "/v1/activation", json={"username": username, "activation_code": code, "password": PASSWORD}
    )
    assert activated.status_code == 200, activated.text
    return created.json()["id"], await log_in_by_email(client, db, sealer, username)


# --- a company administered by colleagues only --------------------------------------------------


async def test_a_company_whose_user_administrators_are_colleagues_gets_no_administrator_behind_their_backs(
    db, clock, sealer, client
) -> None:
    """The first administrator left and deleted their own login, leaving a colleague with user
    administration. An application must not give whoever reads the e-Boks an administrator at
    once, untold to that colleague: it is a takeover, with its notice, or nothing."""
    first = await log_in_by_email(client, db, sealer, await activated_group_admin(db, clock, sealer, client))
    kim_id, _kim = await _user_administrator_colleague(db, sealer, client, first)
    own_id = (await client.get("/v1/me", headers=first)).json()["user_id"]
    gone = await client.delete(f"/v1/users/{own_id}", headers=first)
    assert gone.status_code == 204, gone.text

    plain = takeover_application(clock)
    plain = plain.model_copy(update={"takeover": False})
    asked = takeover_application(clock)
    await asyncio.gather(submit(db, clock, sealer, plain), submit(db, clock, sealer, asked))

    letters = await events(db, CredentialsIssued)
    last = letters[-1]
    # No letter whose code works at once: the only new letter is the takeover's.
    assert [letter.takeover_usable_from is not None for letter in letters[1:]] == [True], letters
    assert [str(n.user_id) for n in await events(db, TakeoverNoticeIssued)] == [kim_id]
    rejected = await events(db, AdministratorProvisioningRejected)
    assert [(r.application_id, r.reason) for r in rejected] == [(plain.application_id, "admin-exists")]
    async with db.transaction() as session:
        pending = await session.scalar(select(User).where(User.application_id == str(plain.application_id)))
        open_ones = list(await session.scalars(select(Takeover).where(Takeover.status == "open")))
    assert pending is None
    assert [t.user_id for t in open_ones] == [str(last.user_id)]
