"""Support sends a company's letter again (S3, S13): only support staff, only for the first
administrator's login from an application while it waits for activation, with a new code that
replaces the old one, at most three letters of a login a day, audited."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select

from services.identity.models import AuditEntry, User, messaging
from services.identity.provisioning import Provisioning
from shared.db import Database
from shared.events import AccountRef, ApplicationSubmitted, Contact, CredentialsIssued, CustomerRegistered
from shared.messaging import Outbox
from shared.tokens import TokenSigner, generate_signing_key, parse_signing_keys
from tests.integration.test_activation import (
    activate_from_letter,
    envelope_of,
    problem_type,
    start_letter_activation,
)

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name
from tests.integration.test_login import client, database_url, settings  # noqa: F401
from tests.security.world import PARENT, add_user, bearer, company_group, group_administrator

LETTER_CVR = "41204559"  # a company of its own, outside the world's group


async def letter_login(
    db: Database, clock, sealer, *, language: str = "en"
) -> tuple[User, CredentialsIssued]:
    """The company's first administrator, provisioned from an application made an hour ago."""
    provisioning = Provisioning(
        outbox=Outbox(messaging, clock), clock=clock, sealer=sealer, code_ttl=timedelta(days=7)
    )
    customer = CustomerRegistered(
        cvr=LETTER_CVR,
        name="Fiskehuset Nord ApS",
        accounts=[AccountRef(account_number="10000061", name="Butik")],
        registered_at=clock.now(),
    )
    application = ApplicationSubmitted(
        application_id=uuid.uuid4(),
        cvr=LETTER_CVR,
        company_name="Fiskehuset Nord ApS",
        contact=Contact(name="Ole Fisker", email="ole@fiskehuset.example", mobile="+4520405060"),
        language=language,  # type: ignore[arg-type]
        submitted_at=clock.now() - timedelta(hours=1),
        deliver_by=clock.now() + timedelta(hours=1),
    )
    async with db.transaction() as session:
        await provisioning.on_customer_registered(session, envelope_of(customer, clock))
    async with db.transaction() as session:
        await provisioning.on_application_submitted(session, envelope_of(application, clock))
    letters = await sent_letters(db)
    assert len(letters) == 1
    async with db.transaction() as session:
        user = await session.get(User, str(letters[0].user_id))
    assert user is not None
    return user, letters[0]


async def sent_letters(db: Database) -> list[CredentialsIssued]:
    async with db.transaction() as session:
        values = await session.scalars(
            select(messaging.outbox.c.value)
            .where(messaging.outbox.c.topic == CredentialsIssued.TOPIC.name)
            .where(messaging.outbox.c.headers.contains(CredentialsIssued.TYPE))
            .order_by(messaging.outbox.c.seq)
        )
        return [CredentialsIssued.model_validate_json(v) for v in values]


def code_of(sealer, letter: CredentialsIssued) -> str:
    return sealer.unseal(letter.activation_code, context=CredentialsIssued.sealing_context(letter.user_id))


def forged_staff_token(settings, clock, staff: User) -> dict[str, str]:
    """A staff member's token signed by a key identity never had, under identity's key id."""
    forger = TokenSigner(parse_signing_keys(f"t1:{generate_signing_key()}"), "t1")
    token = forger.sign(
        subject=staff.id,
        session_id=str(uuid.uuid4()),
        tenant=None,
        role="support",
        grants=[],
        functions=[],
        now=clock.now(),
        lifetime=timedelta(minutes=5),
    )
    return {"Authorization": f"Bearer {token}"}


def resend(client: httpx.AsyncClient, user_id: str, headers: dict[str, str]):
    return client.post(f"/v1/support/users/{user_id}/resend-letter", headers=headers)


async def test_support_sends_the_letter_again_with_a_new_code_and_the_old_code_stops_working(
    db, clock, sealer, settings, client
) -> None:
    user, first = await letter_login(db, clock, sealer, language="en")
    staff = await add_user(db, clock, grants={}, functions=[], role="support", tenant=None)
    clock.advance(timedelta(minutes=10))

    answer = await resend(client, user.id, await bearer(db, clock, settings, staff))

    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert (body["user_id"], body["username"], body["recipient_cvr"]) == (user.id, user.username, LETTER_CVR)
    letters = await sent_letters(db)
    assert len(letters) == 2
    again = letters[1]
    # The same letter as the application's, with a new code, due within S2's two hours; it is
    # not the application's delivery, so onboarding does not follow it.
    assert (again.username, again.recipient_cvr, again.company_name, again.language) == (
        first.username,
        LETTER_CVR,
        "Fiskehuset Nord ApS",
        "en",
    )
    assert again.applicant == first.applicant and again.applicant is not None
    assert again.application_id is None and first.application_id is not None
    assert again.deliver_by == clock.now() + timedelta(hours=2)
    assert again.expires_at == clock.now() + timedelta(days=7)  # ADGANG_IDENTITY_ACTIVATION_CODE_TTL
    assert datetime.fromisoformat(body["expires_at"]) == again.expires_at
    old_code, new_code = code_of(sealer, first), code_of(sealer, again)
    assert old_code != new_code

    old = await start_letter_activation(client, user.username, old_code)
    assert old.status_code == 400, old.text  # as a wrong code: the old letter no longer works
    activated = await activate_from_letter(client, db, sealer, user.username, new_code)
    assert activated.status_code == 200, activated.text

    async with db.transaction() as session:
        entries = list(
            await session.scalars(select(AuditEntry).where(AuditEntry.action == "support.resend-letter"))
        )
    assert [(e.actor_id, e.actor_role, e.target_user_id, e.tenant_cvr) for e in entries] == [
        (staff.id, "support", user.id, LETTER_CVR)
    ]
    assert entries[0].client_address


async def test_only_support_staff_send_a_letter_again_also_when_customers_and_strangers_try_at_once(
    db, clock, sealer, settings, client
) -> None:
    await company_group(db, clock)
    user, _ = await letter_login(db, clock, sealer)
    staff = await add_user(db, clock, grants={}, functions=[], role="support", tenant=None)
    as_staff = await bearer(db, clock, settings, staff)
    as_admin = await bearer(db, clock, settings, await group_administrator(db, clock))
    as_colleague = await bearer(
        db, clock, settings, await add_user(db, clock, grants={PARENT: "all"}, functions=["invoices"])
    )
    forged = forged_staff_token(settings, clock, staff)

    callers = [("staff", as_staff)] + [
        (name, headers)
        for name, headers in (
            ("administrator", as_admin),
            ("colleague", as_colleague),
            ("no token", {}),
            ("forged staff token", forged),
        )
        for _ in range(3)
    ]
    answers = await asyncio.gather(*[resend(client, user.id, headers) for _, headers in callers])

    statuses = {}
    for (name, _), answer in zip(callers, answers, strict=True):
        statuses.setdefault(name, set()).add(answer.status_code)
        if answer.status_code != 202:
            assert answer.headers["content-type"] == "application/problem+json", answer.text
    assert statuses == {
        "staff": {202},
        "administrator": {403},
        "colleague": {403},
        "no token": {401},
        "forged staff token": {401},
    }
    assert len(await sent_letters(db)) == 2  # the application's and the one staff sent


async def test_at_most_three_letters_of_a_login_go_out_a_day_also_when_staff_ask_at_once(
    db, clock, sealer, settings, client
) -> None:
    user, _ = await letter_login(db, clock, sealer)
    staff = await add_user(db, clock, grants={}, functions=[], role="support", tenant=None)
    as_staff = await bearer(db, clock, settings, staff)

    answers = await asyncio.gather(*[resend(client, user.id, as_staff) for _ in range(6)])

    assert sorted(a.status_code for a in answers) == [202, 202, 429, 429, 429, 429]
    refused = next(a for a in answers if a.status_code == 429)
    assert problem_type(refused) == "rate-limited" and "newest one's code works" in refused.json()["detail"]
    assert refused.headers["retry-after"] == str(24 * 3600 + 1)  # when the first letter is a day old
    assert len(await sent_letters(db)) == 3  # the application's letter counts

    clock.advance(timedelta(hours=24) - timedelta(seconds=1))
    still = await resend(client, user.id, await bearer(db, clock, settings, staff))
    clock.advance(timedelta(seconds=1))
    tomorrow = await resend(client, user.id, await bearer(db, clock, settings, staff))
    assert (still.status_code, tomorrow.status_code) == (429, 202), tomorrow.text
    assert len(await sent_letters(db)) == 4


async def test_an_activated_login_a_colleagues_login_a_staff_login_and_unknown_ids_get_no_letter(
    db, clock, sealer, settings, client
) -> None:
    await company_group(db, clock)
    user, first = await letter_login(db, clock, sealer)
    assert (
        await activate_from_letter(client, db, sealer, user.username, code_of(sealer, first))
    ).status_code == 200
    pending_colleague = await add_user(
        db, clock, grants={PARENT: "all"}, functions=["invoices"], status="pending"
    )
    staff = await add_user(db, clock, grants={}, functions=[], role="support", tenant=None)
    other_staff = await add_user(db, clock, grants={}, functions=[], role="support", tenant=None)
    as_staff = await bearer(db, clock, settings, staff)

    activated, emailed, staff_login, unknown, too_long = await asyncio.gather(
        resend(client, user.id, as_staff),
        resend(client, pending_colleague.id, as_staff),
        resend(client, other_staff.id, as_staff),
        resend(client, str(uuid.uuid4()), as_staff),
        resend(client, "x" * 37, as_staff),
    )

    assert (activated.status_code, problem_type(activated)) == (409, "already-activated")
    assert "DELETE /v1/support/users/" in activated.json()["detail"]
    assert (emailed.status_code, problem_type(emailed)) == (409, "not-a-letter-login")
    assert (staff_login.status_code, unknown.status_code) == (404, 404)
    assert too_long.status_code == 422
    assert len(await sent_letters(db)) == 1
