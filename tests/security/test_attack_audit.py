"""The audit trail attacked (S13): what an administrator of narrower access, or a stranger, can
get out of it or put into it. A period or a cursor at the ends of time is a 422, not a 500;
an administrator sees that support acted on the company, but not who at support nor from
where, and of a login they may not see no id or address; a name typed into the username field
that is no username (a password, often) is not kept as typed; a wrong current password and
wrong password-reset codes are failures and locks in the trail like wrong passwords at login."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Callable
from datetime import UTC, timedelta, timezone

import httpx
import pytest
from sqlalchemy import select

from services.identity.api import create_api
from services.identity.audit import forget_unknown_usernames, keep_billing_entry
from services.identity.config import IdentitySettings
from services.identity.models import AuditEntry, messaging
from shared.envelope import encode, new_event_id
from shared.events import AuditRecorded, BillingAuditRecorded
from shared.messaging import ConsumedMessage, IdempotentConsumer
from shared.sealing import Sealer
from tests.integration.billing_fixtures import (  # noqa: F401 - fixtures
    Tokens,
    active_subscription,
    billing,
    billing_clock,
    billing_db,
    billing_url,
    events_since,
    outbox_position,
    tokens,
)
from tests.integration.test_activation import PASSWORD
from tests.integration.test_login import client, database_url  # noqa: F401 - fixtures
from tests.integration.test_password_reset import (
    NEW_PASSWORD,
    request_reset,
    reset_by_email_code,
    reset_codes,
    wrong,
)
from tests.security.test_audit_scope import world  # noqa: F401 - fixture
from tests.security.world import PARENT, SUBSIDIARY, add_user, bearer, company_group
from tests.support.asgi import AppTransport
from tests.support.dead_letters import KeptDeadLetters

LOCK_AFTER = 3


@pytest.fixture
def settings(identity_settings: Callable[..., IdentitySettings]) -> IdentitySettings:
    return identity_settings(
        password_reset_rate_limit_per_minute=0,
        login_free_failures=LOCK_AFTER,
        login_lock_after_failures=LOCK_AFTER,
        otp_max_attempts=LOCK_AFTER + 2,
    )


async def trail(db) -> list[AuditEntry]:
    async with db.transaction() as session:
        return list(await session.scalars(select(AuditEntry).order_by(AuditEntry.at, AuditEntry.id)))


# --- reading ------------------------------------------------------------------------------------

EARLIEST = "0001-01-01T00:00:00+14:00"  # before datetime.min once in UTC
LATEST = "9999-12-31T23:59:59-14:00"  # after datetime.max once in UTC


def raw_cursor(text: str) -> str:
    """A cursor as the service encodes one, around any text."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": EARLIEST}, "from"),
        ({"to": LATEST}, "to"),
        ({"from": LATEST}, "from"),
        ({"before": raw_cursor(f"{EARLIEST}|ffffffff-ffff-ffff-ffff-ffffffffffff")}, "before"),
        ({"before": raw_cursor(f"{LATEST}|ffffffff-ffff-ffff-ffff-ffffffffffff")}, "before"),
    ],
)
async def test_periods_and_cursors_past_the_ends_of_time_are_a_422_naming_them_for_every_reader_at_once(
    db, clock, settings, client, world, params, field
) -> None:
    people, _ = world
    admin = await bearer(db, clock, settings, people["group"])
    staff = await bearer(db, clock, settings, people["staff"])
    answers = await asyncio.gather(
        *(client.get("/v1/audit", params=params, headers=admin) for _ in range(3)),
        *(client.get("/v1/support/audit", params=params, headers=staff) for _ in range(3)),
    )
    for answer in answers:
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in answer.json()["errors"]] == [field], answer.text


async def test_a_period_in_a_far_zone_or_without_one_is_the_same_moment_as_in_utc(
    db, clock, settings, client, world
) -> None:
    people, _ = world
    admin = await bearer(db, clock, settings, people["group"])
    middle = clock.now() - timedelta(seconds=8)  # some of the world's entries before, some after
    moments = [
        middle.astimezone(UTC).isoformat(),
        middle.astimezone(UTC).replace(tzinfo=None).isoformat(),  # no zone: UTC
        middle.astimezone(timezone(timedelta(hours=14))).isoformat(),
        middle.astimezone(timezone(-timedelta(hours=12))).isoformat(),
    ]
    answers = await asyncio.gather(
        *(client.get("/v1/audit", params={"to": m}, headers=admin) for m in moments),
        *(client.get("/v1/audit", params={"from": m}, headers=admin) for m in moments),
    )
    assert {a.status_code for a in answers} == {200}
    before = [{e["id"] for e in a.json()} for a in answers[: len(moments)]]
    after = [{e["id"] for e in a.json()} for a in answers[len(moments) :]]
    assert before[0] and after[0] and not before[0] & after[0]
    assert all(b == before[0] for b in before) and all(a == after[0] for a in after)


async def test_an_administrator_sees_that_support_acted_but_not_who_nor_from_where(
    db, clock, settings, client, world
) -> None:
    people, trail_ = world
    staff_id = people["staff"].id
    async with db.transaction() as session:
        # Support's entries, and the group administrator's, carry where they acted from.
        for entry in await session.scalars(select(AuditEntry)):
            entry.client_address = f"198.51.100.{len(entry.actor_id or '')}"
    readers = ("group", "subsidiary", "one-account", "other")
    headers = {name: await bearer(db, clock, settings, people[name]) for name in readers}
    answers = await asyncio.gather(
        *(client.get("/v1/audit", params={"limit": "200"}, headers=headers[name]) for name in readers),
        # Asking by the staff login's id confirms nothing either.
        *(client.get("/v1/audit", params={"user_id": staff_id}, headers=headers[name]) for name in readers),
    )
    assert {a.status_code for a in answers} == {200}
    pages = dict(zip(readers, (a.json() for a in answers[: len(readers)]), strict=True))
    for name, page in pages.items():
        support_entries = [e for e in page if e["actor_role"] == "support"]
        assert support_entries, f"{name} should see that support acted on the company"
        assert all(e["actor_id"] is None and e["client_address"] is None for e in support_entries), name
    assert all(a.json() == [] for a in answers[len(readers) :])
    # The one-account administrator sees what the group administrator did to what it holds,
    # but not the group administrator's login, so neither its id nor its address.
    broader = [e for e in pages["one-account"] if e["actor_role"] == "administrator"]
    assert broader and all(e["actor_id"] is None and e["client_address"] is None for e in broader)
    own = [e for e in pages["group"] if e["actor_id"] == people["group"].id]
    assert own and all(e["client_address"] for e in own)
    # Support still sees everything as it was kept.
    as_staff = await client.get(
        "/v1/support/audit", params={"limit": "500"}, headers=await bearer(db, clock, settings, people["staff"])
    )
    assert {e["actor_id"] for e in as_staff.json() if e["actor_role"] == "support"} == {staff_id}
    assert all(e["client_address"] for e in as_staff.json() if e["actor_id"])


# --- writing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        "Sommer2026!Hemmeligt",  # a password typed into the username field
        "ida@solsikke.example",  # an email address
        "35657193 Kodeord123",
    ],
)
async def test_a_name_typed_that_is_no_username_is_not_kept_as_typed(db, clock, settings, client, typed) -> None:
    answers = await asyncio.gather(
        *(client.post("/v1/login", json={"username": typed, "password": f"x{n}"}) for n in range(LOCK_AFTER - 1))
    )
    assert {a.status_code for a in answers} == {401}
    entries = await trail(db)
    assert len(entries) == LOCK_AFTER - 1
    async with db.transaction() as session:
        values = list(
            await session.scalars(
                select(messaging.outbox.c.value).where(messaging.outbox.c.topic == "identity.audit")
            )
        )
    events = [AuditRecorded.model_validate_json(v) for v in values]
    kept = {e.subject_username for e in entries} | {e.subject_username for e in events}
    # Not the text typed, nor the most of it.
    assert kept and all(k and typed.lower()[1:-1] not in k.lower() for k in kept), kept
    # A name of a username's shape is kept as typed: support sees who is being tried.
    await client.post("/v1/login", json={"username": f" {PARENT}-Abcd ", "password": "x"})
    assert {e.subject_username for e in await trail(db)} - kept == {f"{PARENT}-abcd"}


async def test_wrong_current_passwords_at_once_are_failures_and_the_lock_is_recorded_once(
    db, clock, settings, client
) -> None:
    await company_group(db, clock)
    user = await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices"])
    headers = await bearer(db, clock, settings, user)
    answers = await asyncio.gather(
        *(
            client.post(
                "/v1/me/password",
                json={"current_password": f"not it {n}", "new_password": NEW_PASSWORD},
                headers=headers,
            )
            for n in range(LOCK_AFTER + 2)
        )
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [422] * LOCK_AFTER + [429] * 2, [a.text for a in answers]
    entries = await trail(db)
    assert sorted((e.action, str(e.details)) for e in entries) == sorted(
        [("login.failed", "{'step': 'current-password'}")] * LOCK_AFTER
        + [("login.locked", "{'counter': 'username'}")]
    )
    assert all(
        (e.actor_id, e.target_user_id, e.tenant_cvr, e.client_address) == (user.id, user.id, PARENT, "127.0.0.1")
        for e in entries
    ), [(e.actor_id, e.client_address) for e in entries]


async def test_wrong_password_reset_codes_at_once_are_failures_and_the_lock_they_cause_is_recorded(
    db, clock, settings, sealer: Sealer, client
) -> None:
    await company_group(db, clock)
    user = await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices"])
    asked = await request_reset(client, user.username)
    assert asked.status_code == 202, asked.text
    reset_id = asked.json()["reset_id"]
    (_, code), = await reset_codes(db, sealer)
    answers = await asyncio.gather(
        *(
            client.post(f"/v1/password-reset/{reset_id}/email-code", json={"code": wrong(wrong(code)) if n else wrong(code)})
            for n in range(LOCK_AFTER + 1)
        )
    )
    assert sorted(a.status_code for a in answers) == [400] * LOCK_AFTER + [429], [a.text for a in answers]
    entries = [e for e in await trail(db) if e.action.startswith("login.")]
    assert sorted((e.action, str(e.details)) for e in entries) == sorted(
        [("login.failed", "{'step': 'password-reset-email-code'}")] * LOCK_AFTER
        + [("login.locked", "{'counter': 'username'}")]
    )
    assert {(e.actor_id, e.target_user_id, e.tenant_cvr) for e in entries} == {(user.id, user.id, PARENT)}


async def test_a_wrong_second_factor_in_a_password_reset_is_a_failure(db, clock, settings, sealer: Sealer, client) -> None:
    await company_group(db, clock)
    user = await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices"])
    reset_id = await reset_by_email_code(client, db, sealer, user.username)
    answer = await client.post(
        f"/v1/password-reset/{reset_id}/complete", json={"code": "000000", "password": NEW_PASSWORD}
    )
    assert answer.status_code == 400, answer.text
    [entry] = [e for e in await trail(db) if e.action.startswith("login.")]
    assert (entry.action, entry.details, entry.target_user_id) == (
        "login.failed",
        {"step": "password-reset-second-factor"},
        user.id,
    )
    assert (await client.post("/v1/login", json={"username": user.username, "password": PASSWORD})).status_code == 200


async def test_a_change_of_telephony_settings_is_a_billing_audit_record_of_the_account(
    billing, tokens: Tokens, billing_db
) -> None:
    """The one billing change issue 10 names that no other test follows into `billing.audit`."""
    acting = tokens.caller([{"cvr": SUBSIDIARY, "accounts": "all"}], ["telephony"])
    line = await active_subscription(billing_db, "10000023", "TLF-FAST")
    path = f"/v1/subscriptions/{line.id}/settings"
    read = await billing.get(path, headers=acting.headers)
    start = await outbox_position(billing_db)
    done = await billing.patch(
        path, json={"voicemail": {"enabled": False}}, headers={**acting.headers, "If-Match": read.headers["etag"]}
    )
    assert done.status_code == 200, done.text
    [event] = await events_since(billing_db, start, BillingAuditRecorded)
    assert (event.action, event.cvr, event.account_number, str(event.actor_id), event.target) == (
        "subscription.settings_changed",
        SUBSIDIARY,
        "10000023",
        acting.user_id,
        line.id,
    )
    assert event.details["before"] != event.details["after"]


async def test_a_stranger_adds_at_most_the_per_address_limit_of_entries_a_minute_from_each_address(
    db, clock, settings, sealer: Sealer, monkeypatch
) -> None:
    """The trail's growth under failed logins for random usernames (docs/identity.md, Audit
    trail: volume): one entry per failed login, so each address (an IPv6 address's /64) adds at
    most `login_rate_limit_per_minute` entries a minute, however many it sends at once."""
    limit = 5
    monkeypatch.setattr(IdentitySettings, "sealer", lambda self: sealer)
    app = create_api(settings.model_copy(update={"login_rate_limit_per_minute": limit}), clock=clock)
    transport = AppTransport(app=app)
    addresses = ["192.0.2.1", "192.0.2.2", "198.51.100.9", "2001:db8:0:1::1", "2001:db8:0:1::2"]
    async with httpx.AsyncClient(transport=transport, base_url="http://identity") as http:
        for n, address in enumerate(addresses):
            transport.client = (address, 40000)  # type: ignore[misc]
            answers = await asyncio.gather(
                *(
                    http.post("/v1/login", json={"username": f"{PARENT}-x{n}y{k}", "password": "gæt"})
                    for k in range(limit * 3)
                )
            )
            assert {a.status_code for a in answers} <= {401, 429}
    entries = await trail(db)
    parties = 4  # the two IPv6 addresses share a /64
    assert len(entries) == parties * limit
    assert {e.action for e in entries} == {"login.failed"}


async def test_entries_of_unknown_usernames_are_forgotten_after_the_retention_and_nothing_else_is(
    db, clock, settings, client, world
) -> None:
    people, trail_ = world
    old_kept = {e.id for e in await trail(db)}
    answers = await asyncio.gather(
        *(client.post("/v1/login", json={"username": f"{PARENT}-old{n}", "password": "x"}) for n in range(4))
    )
    assert {a.status_code for a in answers} == {401}
    clock.advance(settings.audit_unknown_usernames_retention)
    await client.post("/v1/login", json={"username": f"{PARENT}-new", "password": "x"})
    clock.advance(timedelta(seconds=1))

    forgotten = await asyncio.gather(
        *(forget_unknown_usernames(db, clock, settings.audit_unknown_usernames_retention) for _ in range(3))
    )
    # The world's own entry of a username nobody has is as old as the four: gone with them.
    assert sum(forgotten) == 5
    left = await trail(db)
    assert {e.id for e in left} == (old_kept - trail_.named("nobody")) | {
        e.id for e in left if e.subject_username == f"{PARENT}-new"
    }
    assert [e.subject_username for e in left if e.actor_id is None and e.tenant_cvr is None] == [f"{PARENT}-new"]


async def test_a_malformed_billing_audit_event_is_dead_lettered_and_the_next_is_kept_once(db, clock) -> None:
    """Identity's consumer of `billing.audit`: a message it cannot read goes to the dead letters
    and the partition moves on; a redelivered event, or the same entry in a new envelope, is
    kept once."""
    letters = KeptDeadLetters()
    consumer = IdempotentConsumer(
        name="identity-audit-test",
        db=db,
        tables=messaging,
        handlers={BillingAuditRecorded: keep_billing_entry},
        dead_letters=letters,
        clock=clock,
        retries=2,
        backoff=0.0,
    )
    event = BillingAuditRecorded(
        audit_id=uuid.uuid4(),
        actor_id=uuid.uuid4(),
        action="invoice_format.changed",
        cvr=SUBSIDIARY,
        account_number="10000021",
        target="10000021",
        at=clock.now(),
    )

    def message(value: bytes | None = None, event_id: str | None = None) -> ConsumedMessage:
        record = encode(event, event_id=event_id or new_event_id(), time=clock.now())
        return ConsumedMessage(
            topic=record.topic, key=record.key, value=record.value if value is None else value, headers=record.headers
        )

    without_cvr = json.loads(message().value or b"")
    del without_cvr["cvr"]
    good = message()
    outcomes = [
        await consumer.process(message(b"{not json")),
        await consumer.process(message(json.dumps(without_cvr).encode())),
        await consumer.process(good),
        await consumer.process(good),
        await consumer.process(message()),  # the same entry, published again
    ]
    assert outcomes == ["dead-lettered", "dead-lettered", "handled", "duplicate", "handled"]
    assert len(letters.sent) == 2
    assert [(e.id, e.source, e.action) for e in await trail(db)] == [
        (str(event.audit_id), "billing", "invoice_format.changed")
    ]


async def test_like_wildcards_in_an_action_prefix_match_only_themselves(db, clock, settings, client, world) -> None:
    people, trail_ = world
    headers = await bearer(db, clock, settings, people["staff"])
    prefixes = ["login_", "_ogin.", "login.succeeded_", "master_data", "master_", "_", "%"]
    answers = await asyncio.gather(
        *(client.get("/v1/support/audit", params={"action": p, "limit": "500"}, headers=headers) for p in prefixes)
    )
    found = {p: {e["action"] for e in a.json()} for p, a in zip(prefixes, answers, strict=True) if a.status_code == 200}
    # `%` is no action's character: refused, naming the filter.
    assert answers[-1].status_code == 422 and answers[-1].json()["errors"][0]["field"] == "action"
    assert found == {
        "login_": set(),
        "_ogin.": set(),
        "login.succeeded_": set(),
        "master_data": {"master_data.changed"},
        "master_": {"master_data.changed"},
        "_": set(),
    }
