"""Audit for everyone (S13): every login's success, failure and lock and every change of a
second factor is an `AuditRecorded` with who, what, target, company, when and from where;
billing's changes reach identity's trail from `billing.audit`, once each; the trail is read
with filters and pages (`GET /v1/audit`, `GET /v1/support/audit`)."""

# ruff: noqa: F811 - fixtures are imported from test_login and billing_fixtures and used by name

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import httpx
import pyotp
import pytest
from sqlalchemy import func, select

from services.identity.api import create_api
from services.identity.audit import AuditTrail, keep_billing_entry
from services.identity.config import IdentitySettings
from services.identity.models import AuditEntry, messaging
from shared.clock import FrozenClock
from shared.db import Database
from shared.envelope import Envelope
from shared.events import AuditRecorded, BillingAuditRecorded
from shared.messaging import Outbox
from shared.sealing import Sealer
from tests.integration.billing_fixtures import (  # noqa: F401 - fixtures
    Tokens,
    billing,
    billing_clock,
    billing_db,
    billing_url,
    events_since,
    idempotency_key,
    outbox_position,
    tokens,
)
from tests.integration.test_activation import PASSWORD
from tests.integration.test_login import database_url, last_code  # noqa: F401 - fixtures
from tests.security.world import (
    PARENT,
    SUBSIDIARY,
    add_user,
    bearer,
    company_group,
    group_administrator,
)

ADDRESS = "192.0.2.7"
LOCK_AFTER = 3
PROBLEM = "application/problem+json"


@pytest.fixture
def settings(identity_settings: Callable[..., IdentitySettings]) -> IdentitySettings:
    return identity_settings(login_free_failures=LOCK_AFTER, login_lock_after_failures=LOCK_AFTER)


@pytest.fixture
async def client(
    settings: IdentitySettings, clock: FrozenClock, sealer: Sealer, monkeypatch
) -> AsyncIterator[httpx.AsyncClient]:
    """Identity's API, called from `ADDRESS`."""
    from tests.support.asgi import AppTransport

    monkeypatch.setattr(IdentitySettings, "sealer", lambda self: sealer)
    app = create_api(settings, clock=clock)
    transport = AppTransport(app=app, client=(ADDRESS, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://identity") as http:
        yield http


async def trail(db: Database) -> list[AuditEntry]:
    async with db.transaction() as session:
        return list(await session.scalars(select(AuditEntry).order_by(AuditEntry.at, AuditEntry.id)))


async def published(db: Database) -> dict[str, AuditRecorded]:
    """The `AuditRecorded` events in identity's outbox, by audit id."""
    async with db.transaction() as session:
        values = await session.scalars(
            select(messaging.outbox.c.value).where(messaging.outbox.c.topic == "identity.audit")
        )
        events = [AuditRecorded.model_validate_json(v) for v in values]
    return {str(e.audit_id): e for e in events}


async def password_step(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/v1/login", json={"username": username, "password": password})


async def test_a_login_is_recorded_as_succeeded_with_who_when_which_company_and_from_where(
    db, clock, sealer, client
) -> None:
    await company_group(db, clock)
    user = await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices"])
    challenge = (await password_step(client, user.username)).json()
    assert await trail(db) == []  # the password alone is not a login
    await client.post(f"/v1/login/{challenge['challenge_id']}/send", json={"method": "sms"})
    _, code = await last_code(db, sealer)
    clock.advance(timedelta(seconds=5))
    verified = await client.post(f"/v1/login/{challenge['challenge_id']}/verify", json={"code": code})
    assert verified.status_code == 200, verified.text

    [entry] = await trail(db)
    assert (entry.action, entry.actor_id, entry.actor_role, entry.target_user_id, entry.tenant_cvr) == (
        "login.succeeded",
        user.id,
        "user",
        user.id,
        PARENT,
    )
    assert entry.client_address == ADDRESS and entry.source == "identity"
    event = (await published(db))[entry.id]
    assert (str(event.actor_id), event.action, event.tenant_cvr, event.client_address, event.at) == (
        user.id,
        "login.succeeded",
        PARENT,
        ADDRESS,
        clock.now(),
    )


async def test_a_wrong_password_and_a_wrong_code_are_recorded_as_failed_saying_which_step(
    db, clock, sealer, client
) -> None:
    await company_group(db, clock)
    user = await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices"])
    assert (await password_step(client, user.username, "not the password")).status_code == 401
    clock.advance(timedelta(seconds=1))  # the trail's order is the order of time
    challenge = (await password_step(client, user.username)).json()
    await client.post(f"/v1/login/{challenge['challenge_id']}/send", json={"method": "email"})
    wrong = await client.post(f"/v1/login/{challenge['challenge_id']}/verify", json={"code": "000000"})
    assert wrong.status_code == 401

    entries = await trail(db)
    assert [(e.action, e.details, e.actor_id, e.target_user_id, e.tenant_cvr) for e in entries] == [
        ("login.failed", {"step": "password"}, user.id, user.id, PARENT),
        ("login.failed", {"step": "code", "wrong_codes": 1}, user.id, user.id, PARENT),
    ]
    events = await published(db)
    assert [events[e.id].details for e in entries] == [{"step": "password"}, {"step": "code", "wrong_codes": 1}]


async def test_a_username_nobody_has_is_recorded_without_a_user_and_only_support_sees_it(
    db, clock, settings, client
) -> None:
    await company_group(db, clock)
    admin = await group_administrator(db, clock)
    staff = await add_user(db, clock, grants={}, functions=[], role="support", tenant=None)
    assert (await password_step(client, f"{PARENT}-nobody")).status_code == 401

    [entry] = await trail(db)
    assert (entry.action, entry.actor_id, entry.actor_role, entry.tenant_cvr, entry.subject_username) == (
        "login.failed",
        None,
        None,
        None,
        f"{PARENT}-nobody",
    )
    event = (await published(db))[entry.id]
    assert event.actor_id is None and event.subject_username == f"{PARENT}-nobody" and event.key() == "staff"
    as_admin = await client.get("/v1/audit", headers=await bearer(db, clock, settings, admin))
    assert as_admin.status_code == 200 and as_admin.json() == []
    as_staff = (await client.get("/v1/support/audit", headers=await bearer(db, clock, settings, staff))).json()
    assert [(e["action"], e["actor_id"], e["subject_username"]) for e in as_staff] == [
        ("login.failed", None, f"{PARENT}-nobody")
    ]


async def test_the_wrong_password_that_locks_the_username_is_recorded_as_locked_once(
    db, clock, client
) -> None:
    await company_group(db, clock)
    user = await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices"])
    answers = []
    for n in range(LOCK_AFTER + 1):
        clock.advance(timedelta(seconds=1))
        answers.append((await password_step(client, user.username, f"guess {n}")).status_code)
    assert answers == [401] * LOCK_AFTER + [429]  # the refused try is not a checked password

    entries = await trail(db)
    last = clock.now() - timedelta(seconds=1)  # the third try: its failure and the lock
    assert sorted((e.action, str(e.details), e.at == last.replace(tzinfo=e.at.tzinfo)) for e in entries) == sorted(
        [("login.failed", "{'step': 'password'}", False)] * (LOCK_AFTER - 1)
        + [("login.failed", "{'step': 'password'}", True), ("login.locked", "{'counter': 'username'}", True)]
    )
    assert {(e.actor_id, e.target_user_id, e.tenant_cvr, e.client_address) for e in entries} == {
        (user.id, user.id, PARENT, ADDRESS)
    }


async def test_the_wrong_password_that_locks_a_trusted_device_is_recorded_as_the_devices_lock(
    db, clock, sealer, client
) -> None:
    await company_group(db, clock)
    user = await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices"])
    challenge = (await password_step(client, user.username)).json()
    await client.post(f"/v1/login/{challenge['challenge_id']}/send", json={"method": "sms"})
    _, code = await last_code(db, sealer)
    tokens = (await client.post(f"/v1/login/{challenge['challenge_id']}/verify", json={"code": code})).json()
    for n in range(LOCK_AFTER):
        clock.advance(timedelta(seconds=1))
        answer = await client.post(
            "/v1/login",
            json={"username": user.username, "password": f"guess {n}", "device_token": tokens["device_token"]},
        )
        assert answer.status_code == 401

    locks = [e for e in await trail(db) if e.action == "login.locked"]
    assert [(e.details, e.actor_id, e.tenant_cvr) for e in locks] == [({"counter": "device"}, user.id, PARENT)]


async def test_the_right_password_at_the_last_try_locks_nothing_and_records_no_lock(db, clock, sealer, client) -> None:
    await company_group(db, clock)
    user = await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices"])
    for n in range(LOCK_AFTER - 1):
        assert (await password_step(client, user.username, f"guess {n}")).status_code == 401
    assert (await password_step(client, user.username)).status_code == 200
    assert [e.action for e in await trail(db)] == ["login.failed"] * (LOCK_AFTER - 1)


async def test_setting_up_replacing_and_an_administrators_reset_of_the_authenticator_are_second_factor_changes(
    db, clock, settings, client
) -> None:
    await company_group(db, clock)
    admin = await group_administrator(db, clock)
    user = await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices"])
    as_user = await bearer(db, clock, settings, user)
    for _ in range(2):  # set up, then replaced by another phone
        secret = (await client.post("/v1/me/totp", headers=as_user)).json()["secret"]
        clock.advance(timedelta(seconds=30))
        confirmed = await client.post(
            "/v1/me/totp/confirm", headers=as_user, json={"code": pyotp.TOTP(secret).at(clock.now())}
        )
        assert confirmed.status_code == 200, confirmed.text
    clock.advance(timedelta(seconds=1))
    reset = await client.post(f"/v1/users/{user.id}/reset-2fa", headers=await bearer(db, clock, settings, admin))
    assert reset.status_code == 200, reset.text

    entries = await trail(db)
    assert [(e.action, e.actor_id, e.target_user_id, e.tenant_cvr, e.details) for e in entries] == [
        (
            "second-factor.changed",
            user.id,
            user.id,
            PARENT,
            {"change": "authenticator-set-up", "recovery_codes": "regenerated"},
        ),
        (
            "second-factor.changed",
            user.id,
            user.id,
            PARENT,
            {"change": "authenticator-replaced", "recovery_codes": "regenerated"},
        ),
        ("second-factor.changed", admin.id, user.id, PARENT, {"change": "reset-by-administrator"}),
    ]
    assert all(e.client_address == ADDRESS for e in entries)
    assert {e.id for e in entries} <= set(await published(db))


# --- billing's changes ---------------------------------------------------------------------------


def envelope(event: BillingAuditRecorded, clock: FrozenClock) -> Envelope:
    return Envelope(
        id=str(uuid.uuid4()),
        source=event.SOURCE,
        type=event.TYPE,
        time=clock.now(),
        subject=event.key(),
        event=event,
    )


async def test_billing_changes_are_published_with_the_change_and_reach_identitys_trail_once_each(
    db, clock, settings, client, billing, tokens: Tokens, billing_db
) -> None:
    await company_group(db, clock)
    admin = await group_administrator(db, clock)
    acting = tokens.caller([{"cvr": SUBSIDIARY, "accounts": "all"}], user_id=admin.id)
    start = await outbox_position(billing_db)
    ordered = await billing.post(
        "/v1/orders",
        json={"account_number": "10000021", "product_code": "MOBIL-10"},
        headers={**acting.headers, **idempotency_key()},
    )
    assert ordered.status_code == 201, ordered.text
    read = await billing.get("/v1/accounts/10000022/invoice-format", headers=acting.headers)
    changed = await billing.put(
        "/v1/accounts/10000022/invoice-format",
        json={"format": "pdf_email", "email": "bogholderi@nordlys.example"},
        headers={**acting.headers, "If-Match": read.headers["etag"]},
    )
    assert changed.status_code == 200, changed.text
    read = await billing.get(f"/v1/companies/{SUBSIDIARY}/master-data", headers=acting.headers)
    changed = await billing.patch(
        f"/v1/companies/{SUBSIDIARY}/master-data",
        json={"city": "Vejle"},
        headers={**acting.headers, "If-Match": read.headers["etag"]},
    )
    assert changed.status_code == 200, changed.text

    events = await events_since(billing_db, start, BillingAuditRecorded)
    assert [(e.action, e.cvr, e.account_number, str(e.actor_id)) for e in events] == [
        ("order.placed", SUBSIDIARY, "10000021", admin.id),
        ("invoice_format.changed", SUBSIDIARY, "10000022", admin.id),
        ("master_data.changed", SUBSIDIARY, None, admin.id),
    ]
    assert events[0].target == ordered.json()["id"] and events[2].details["after"]["city"] == "Vejle"

    for event in [*events, *events]:  # each arrives twice: kept once
        async with db.transaction() as session:
            await keep_billing_entry(session, envelope(event, clock))
    kept = await trail(db)  # billing's clock stood still: one moment, in no particular order
    assert sorted((e.id, e.source, e.action, e.tenant_cvr, e.account_number, e.actor_role) for e in kept) == sorted(
        (str(e.audit_id), "billing", e.action, SUBSIDIARY, e.account_number, "administrator") for e in events
    )
    shown = await client.get(
        "/v1/audit", params={"action": "invoice_format."}, headers=await bearer(db, clock, settings, admin)
    )
    assert [(e["action"], e["target"], e["account_number"], e["source"]) for e in shown.json()] == [
        ("invoice_format.changed", "10000022", "10000022", "billing")
    ]
    assert shown.json()[0]["details"]["after"]["format"] == "pdf_email"


# --- filters and pages ---------------------------------------------------------------------------


async def recorded(db: Database, clock: FrozenClock, actions: list[tuple[str, object]]) -> None:
    """Entries one second apart: (action, acting user)."""
    audit = AuditTrail(outbox=Outbox(messaging, clock), clock=clock)
    for action, actor in actions:
        clock.advance(timedelta(seconds=1))
        async with db.transaction() as session:
            await audit.record(session, actor=actor, action=action, target=actor)  # type: ignore[arg-type]


async def test_the_trail_is_read_with_a_period_an_action_prefix_a_user_and_pages_newest_first(
    db, clock, settings, client
) -> None:
    await company_group(db, clock)
    admin = await group_administrator(db, clock)
    one = await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices"])
    two = await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices"])
    start = clock.now()
    await recorded(db, clock, [("login.failed", one), ("login.succeeded", one), ("login.succeeded", two)] * 5)
    headers = await bearer(db, clock, settings, admin)

    async def read(**params: object) -> list[dict]:
        answer = await client.get("/v1/audit", params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.json()

    everything = await read(limit=200)
    assert len(everything) == 15 and [e["at"] for e in everything] == sorted((e["at"] for e in everything), reverse=True)
    assert len(await read(action="login.succeeded")) == 10
    assert {e["action"] for e in await read(action="login.")} == {"login.failed", "login.succeeded"}
    assert {e["target_user_id"] for e in await read(user_id=two.id)} == {two.id}
    window = await read(**{"from": (start + timedelta(seconds=2)).isoformat(), "to": (start + timedelta(seconds=5)).isoformat()})
    assert [e["action"] for e in window] == ["login.failed", "login.succeeded", "login.succeeded"]

    pages, before = [], None
    while True:
        page = await read(limit=4, **({"before": before} if before else {}))
        if not page:
            break
        pages.append(page)
        before = page[-1]["cursor"]
    assert [len(p) for p in pages] == [4, 4, 4, 3]
    assert [e["id"] for p in pages for e in p] == [e["id"] for e in everything]


async def test_entries_of_one_moment_are_paged_without_loss_or_repeat(db, clock, settings, client) -> None:
    await company_group(db, clock)
    admin = await group_administrator(db, clock)
    audit = AuditTrail(outbox=Outbox(messaging, clock), clock=clock)
    async with db.transaction() as session:  # all at the same instant: the id orders them
        for _ in range(7):
            await audit.record(session, actor=admin, action="login.succeeded", target=admin)
    headers = await bearer(db, clock, settings, admin)
    first = (await client.get("/v1/audit", params={"limit": 3}, headers=headers)).json()
    second = (await client.get("/v1/audit", params={"limit": 3, "before": first[-1]["cursor"]}, headers=headers)).json()
    third = (await client.get("/v1/audit", params={"limit": 3, "before": second[-1]["cursor"]}, headers=headers)).json()
    ids = [e["id"] for e in first + second + third]
    assert len(ids) == 7 == len(set(ids))


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-12-02T10:00:00Z", "to": "2026-12-01T10:00:00Z"}, "to"),
        ({"from": "yesterday"}, "from"),
        ({"before": "not-a-cursor"}, "before"),
        ({"action": "LOGIN%"}, "action"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
    ],
)
async def test_a_bad_filter_is_a_problem_naming_it(db, clock, settings, client, params, field) -> None:
    await company_group(db, clock)
    admin = await group_administrator(db, clock)
    answer = await client.get("/v1/audit", params=params, headers=await bearer(db, clock, settings, admin))
    assert answer.status_code == 422 and answer.headers["content-type"].startswith(PROBLEM)
    assert field in {e["field"].split(".")[-1] for e in answer.json()["errors"]}, answer.json()


async def test_support_reads_with_the_same_filters_and_the_old_parameters_still_work(
    db, clock, settings, client
) -> None:
    await company_group(db, clock)
    admin = await group_administrator(db, clock)
    staff = await add_user(db, clock, grants={}, functions=[], role="support", tenant=None)
    other = await add_user(db, clock, grants={"22109340": "all"}, functions=["user_admin"], tenant="22109340")
    await recorded(db, clock, [("login.succeeded", admin), ("login.failed", other), ("user.create", admin)])
    headers = await bearer(db, clock, settings, staff)

    async def read(**params: object) -> list[dict]:
        answer = await client.get("/v1/support/audit", params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.json()

    assert [e["action"] for e in await read(cvr=PARENT)] == ["user.create", "login.succeeded"]
    assert [e["action"] for e in await read(user_id=other.id)] == ["login.failed"]
    assert [e["action"] for e in await read(limit=1)] == ["user.create"]
    assert [e["action"] for e in await read(action="login.", cvr=PARENT)] == ["login.succeeded"]
    newest = await read(limit=1)
    assert [e["action"] for e in await read(before=newest[0]["cursor"])] == ["login.failed", "login.succeeded"]
    bad = await client.get("/v1/support/audit", params={"before": "x"}, headers=headers)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "before"
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(AuditEntry)) == 3  # reading records nothing
