"""A takeover's rules hold when requests arrive at the same moment (issue 10, item 3): fired in
parallel over identity's real API and handlers, on the database under test."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio

from sqlalchemy import select

from services.identity.models import Takeover, User
from shared.events import (
    AdministratorProvisioningRejected,
    TakeoverCompleted,
    TakeoverRequested,
    UserDisabled,
)
from tests.integration.test_activation import (
    confirmation_codes,
    problem_type,
    start_letter_activation,
    unsealed_code,
)
from tests.integration.test_login import client, database_url, settings  # noqa: F401 - fixtures
from tests.integration.test_takeover import (
    NEW_EMAIL,
    NEW_MOBILE,
    NOTICE,
    events,
    requested_takeover,
    submit,
    takeover_application,
)


async def _takeovers(db) -> list[str]:
    async with db.transaction() as session:
        return sorted(t.status for t in await session.scalars(select(Takeover)))


async def _confirmation(client, db, sealer, setup) -> tuple[str, dict]:
    started = await start_letter_activation(client, setup.letter.username, setup.code, email=NEW_EMAIL, mobile=NEW_MOBILE)
    assert started.status_code == 202, started.text
    activation_id = started.json()["activation_id"]
    sent = await confirmation_codes(db, sealer, activation_id)
    return activation_id, {
        "sms_code": unsealed_code(sealer, sent["sms"]),
        "email_code": unsealed_code(sealer, sent["email"]),
    }


async def test_two_takeovers_asked_for_at_once_leave_one_open(db, clock, sealer, client) -> None:
    setup = await requested_takeover(db, clock, sealer, client)
    await client.post("/v1/takeovers/cancel", json={"cancel_token": setup.tokens[setup.admin_id]})
    first, second, third = (takeover_application(clock) for _ in range(3))
    await asyncio.gather(*(submit(db, clock, sealer, event) for event in (first, second, third)))

    assert await _takeovers(db) == ["cancelled", "open"]
    assert len(await events(db, TakeoverRequested)) == 2  # the cancelled one and one of the three
    rejected = await events(db, AdministratorProvisioningRejected)
    assert sorted(r.reason for r in rejected) == ["takeover-pending", "takeover-pending"]


async def test_a_cancellation_racing_the_completion_ends_in_exactly_one_of_them(db, clock, sealer, client) -> None:
    setup = await requested_takeover(db, clock, sealer, client)
    clock.advance(NOTICE)
    activation_id, codes = await _confirmation(client, db, sealer, setup)

    confirmed, cancelled = await asyncio.gather(
        client.post(f"/v1/activation/{activation_id}/confirm", json=codes),
        client.post("/v1/takeovers/cancel", json={"cancel_token": setup.tokens[setup.admin_id]}),
    )
    outcome = (confirmed.status_code, cancelled.status_code)
    assert outcome in {(200, 409), (410, 200)}, (confirmed.text, cancelled.text)
    async with db.transaction() as session:
        old = await session.get(User, setup.admin_id)
        new = await session.get(User, str(setup.letter.user_id))
    assert old is not None and new is not None
    if outcome == (200, 409):
        assert problem_type(cancelled) == "takeover-ended"
        assert (await _takeovers(db), old.status, new.status) == (["completed"], "disabled", "active")
    else:
        assert problem_type(confirmed) == "activation-restart-required"
        assert (await _takeovers(db), old.status, new.status) == (["cancelled"], "active", "deleted")


async def test_a_cancel_link_works_once_however_many_times_it_is_sent_at_once(db, clock, sealer, client) -> None:
    setup = await requested_takeover(db, clock, sealer, client)
    token = setup.tokens[setup.admin_id]
    answers = await asyncio.gather(
        *(client.post("/v1/takeovers/cancel", json={"cancel_token": token}) for _ in range(5))
    )
    assert sorted(a.status_code for a in answers) == [200, 410, 410, 410, 410], [a.text for a in answers]
    assert await _takeovers(db) == ["cancelled"]


async def test_the_link_and_the_portal_cancelling_at_once_cancel_once(db, clock, sealer, client) -> None:
    setup = await requested_takeover(db, clock, sealer, client)
    [listed] = (await client.get("/v1/takeovers", headers=setup.admin)).json()
    by_link, by_login = await asyncio.gather(
        client.post("/v1/takeovers/cancel", json={"cancel_token": setup.tokens[setup.admin_id]}),
        client.post(f"/v1/takeovers/{listed['id']}/cancel", headers=setup.admin),
    )
    assert sorted((by_link.status_code, by_login.status_code)) == [200, 409]


async def test_the_takeovers_codes_confirmed_twice_at_once_activate_once_and_disable_once(
    db, clock, sealer, client
) -> None:
    setup = await requested_takeover(db, clock, sealer, client)
    clock.advance(NOTICE)
    activation_id, codes = await _confirmation(client, db, sealer, setup)
    answers = await asyncio.gather(
        *(client.post(f"/v1/activation/{activation_id}/confirm", json=codes) for _ in range(3))
    )
    assert sorted(a.status_code for a in answers) == [200, 409, 409], [a.text for a in answers]
    assert len(await events(db, TakeoverCompleted)) == 1
    assert len(await events(db, UserDisabled)) == 1
    assert await _takeovers(db) == ["completed"]
