"""Who reads which audit entries (S13), with everyone reading at once: a company's
administrators read the entries of the logins they may see and of the companies and accounts
they hold, never more, whatever filter or cursor they send; a login without user
administration gets 403; support reads everything."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.identity.audit import AuditTrail, Cursor, keep_billing_entry
from services.identity.models import User, messaging
from shared.clock import FrozenClock
from shared.db import Database
from shared.envelope import Envelope
from shared.events import BillingAuditRecorded
from shared.messaging import Outbox
from tests.integration.test_login import client, database_url, settings  # noqa: F401 - fixtures
from tests.security.world import (
    OTHER_TENANT,
    PARENT,
    SUBSIDIARY,
    add_user,
    bearer,
    company_group,
    group_administrator,
)


class Trail:
    """Entries made for the test, each under a name, and who made them."""

    def __init__(self, db: Database, clock: FrozenClock) -> None:
        self.db, self.clock = db, clock
        self.audit = AuditTrail(outbox=Outbox(messaging, clock), clock=clock)
        self.ids: dict[str, str] = {}

    async def identity(self, name: str, actor: User | None, action: str, **kwargs: object) -> None:
        self.clock.advance(timedelta(seconds=1))
        async with self.db.transaction() as session:
            entry = await self.audit.record(session, actor=actor, action=action, **kwargs)  # type: ignore[arg-type]
        self.ids[name] = entry.id

    async def billing(self, name: str, actor: User, action: str, cvr: str, account: str | None) -> None:
        self.clock.advance(timedelta(seconds=1))
        event = BillingAuditRecorded(
            audit_id=uuid.uuid4(),
            actor_id=uuid.UUID(actor.id),
            action=action,
            cvr=cvr,
            account_number=account,
            target=account or cvr,
            at=self.clock.now(),
        )
        envelope = Envelope(
            id=str(uuid.uuid4()), source=event.SOURCE, type=event.TYPE, time=self.clock.now(), subject=cvr, event=event
        )
        async with self.db.transaction() as session:
            await keep_billing_entry(session, envelope)
        self.ids[name] = str(event.audit_id)

    def named(self, *names: str) -> set[str]:
        return {self.ids[n] for n in names}


@pytest.fixture
async def world(db, clock):
    """The group (parent with a subsidiary) and another company; administrators of four scopes,
    a plain user, support, and entries about each of them."""
    await company_group(db, clock)
    people = {
        "group": await group_administrator(db, clock),
        "subsidiary": await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices", "user_admin"]),
        "one-account": await add_user(
            db, clock, grants={SUBSIDIARY: ["10000021"]}, functions=["invoices", "user_admin"]
        ),
        "other": await add_user(
            db, clock, grants={OTHER_TENANT: "all"}, functions=["invoices", "user_admin"], role="administrator", tenant=OTHER_TENANT
        ),
        "plain": await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices"]),
        "parent-user": await add_user(db, clock, grants={PARENT: "all"}, functions=["invoices"]),
        "account-user": await add_user(db, clock, grants={SUBSIDIARY: ["10000021"]}, functions=["invoices"]),
        "other-user": await add_user(db, clock, grants={OTHER_TENANT: "all"}, functions=["invoices"], tenant=OTHER_TENANT),
        "staff": await add_user(db, clock, grants={}, functions=[], role="support", tenant=None),
    }
    trail = Trail(db, clock)
    for name in ("group", "subsidiary", "one-account", "other", "plain", "parent-user", "account-user", "other-user"):
        await trail.identity(f"login:{name}", people[name], "login.succeeded", target=people[name])
    await trail.identity("reset:account-user", people["group"], "second-factor.changed", target=people["account-user"])
    await trail.identity("reset:parent-user", people["group"], "second-factor.changed", target=people["parent-user"])
    await trail.identity("support:parent", people["staff"], "support.list-users", tenant_cvr=PARENT)
    await trail.identity("support:other", people["staff"], "support.list-users", tenant_cvr=OTHER_TENANT)
    await trail.identity("nobody", None, "login.failed", subject_username=f"{PARENT}-nobody")
    await trail.billing("master:parent", people["group"], "master_data.changed", PARENT, None)
    await trail.billing("master:subsidiary", people["group"], "master_data.changed", SUBSIDIARY, None)
    await trail.billing("format:21", people["group"], "invoice_format.changed", SUBSIDIARY, "10000021")
    await trail.billing("format:22", people["group"], "invoice_format.changed", SUBSIDIARY, "10000022")
    await trail.billing("order:other", people["other"], "order.placed", OTHER_TENANT, "10000051")
    return people, trail


def expected(trail: Trail) -> dict[str, set[str]]:
    """Written out by hand from the rules in services/identity/audit.py."""
    everyone_in_subsidiary = ("login:subsidiary", "login:one-account", "login:plain", "login:account-user")
    return {
        "group": trail.named(
            "login:group",
            *everyone_in_subsidiary,
            "login:parent-user",
            "reset:account-user",
            "reset:parent-user",
            "support:parent",
            "master:parent",
            "master:subsidiary",
            "format:21",
            "format:22",
        ),
        "subsidiary": trail.named(
            *everyone_in_subsidiary, "reset:account-user", "support:parent", "master:subsidiary", "format:21", "format:22"
        ),
        "one-account": trail.named(
            "login:one-account", "login:account-user", "reset:account-user", "support:parent", "master:subsidiary", "format:21"
        ),
        "other": trail.named("login:other", "login:other-user", "support:other", "order:other"),
        "staff": set(trail.ids.values()),
    }


async def walk(client: httpx.AsyncClient, path: str, headers: dict[str, str], limit: int, **params: str) -> list[str]:
    """Every page, following each page's last cursor: the ids in order."""
    ids: list[str] = []
    before: str | None = None
    while True:
        query = {**params, "limit": str(limit), **({"before": before} if before else {})}
        answer = await client.get(path, params=query, headers=headers)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        if not page:
            return ids
        ids += [e["id"] for e in page]
        before = page[-1]["cursor"]


async def test_administrators_of_different_scopes_reading_at_once_each_see_exactly_their_own(
    db, clock, settings, client, world
) -> None:
    people, trail = world
    want = expected(trail)
    headers = {name: await bearer(db, clock, settings, people[name]) for name in (*want, "plain", "parent-user")}
    readers = [name for name in want if name != "staff"]
    forged = Cursor(datetime(2100, 1, 1, tzinfo=UTC), "ffffffff-ffff-ffff-ffff-ffffffffffff").encode()

    calls = []
    for _ in range(2):
        for name in readers:
            calls += [
                ("all", name, walk(client, "/v1/audit", headers[name], 200)),
                ("all", name, walk(client, "/v1/audit", headers[name], 2)),
                # A cursor of its own making only moves where a page starts, never the scope.
                ("all", name, walk(client, "/v1/audit", headers[name], 3, before=forged)),
                # Asking for another company's or user's entries finds nothing more.
                ("none-outside", name, walk(client, "/v1/audit", headers[name], 50, user_id=people["other-user"].id)),
                ("all", name, walk(client, "/v1/audit", headers[name], 50, cvr=OTHER_TENANT)),
            ]
        calls.append(("all", "staff", walk(client, "/v1/support/audit", headers["staff"], 4)))
    refused = [
        client.get("/v1/audit", headers=headers[name]) for name in ("plain", "parent-user", "staff") for _ in range(3)
    ] + [client.get("/v1/support/audit", headers=headers[name]) for name in readers]
    results = await asyncio.gather(*(call for _, _, call in calls), *refused)

    for (kind, name, _), ids in zip(calls, results[: len(calls)], strict=True):
        assert len(ids) == len(set(ids)), f"{name} was given an entry twice"
        if kind == "all":
            assert set(ids) == want[name], name
        else:
            assert set(ids) <= want[name] and set(ids) == (trail.named("login:other-user") & want[name]), name
    assert [r.status_code for r in results[len(calls) :]] == [403] * len(refused)


async def test_a_narrower_administrator_asking_for_broader_logins_entries_finds_none(
    db, clock, settings, client, world
) -> None:
    people, trail = world
    as_one_account = await bearer(db, clock, settings, people["one-account"])
    broader = [people[n].id for n in ("group", "subsidiary", "plain", "parent-user")]
    answers = await asyncio.gather(
        *(client.get("/v1/audit", params={"user_id": user_id}, headers=as_one_account) for user_id in broader),
        client.get("/v1/audit", headers=as_one_account),
    )
    assert [a.status_code for a in answers] == [200] * (len(broader) + 1)
    # The group administrator reset the account user's second factor and changed the subsidiary's
    # master data and the held account's invoice format: those are theirs to see, as changes to
    # what they hold, but without the group administrator's id, which would name a login they may
    # not see; asking by that id finds nothing, nor do the broader logins' own logins.
    assert [a.json() for a in answers[:-1]] == [[]] * len(broader)
    by_broader = {e["id"]: e for e in answers[-1].json() if e["id"] in trail.named("reset:account-user", "master:subsidiary", "format:21")}
    assert set(by_broader) == trail.named("reset:account-user", "master:subsidiary", "format:21")
    assert {(e["actor_id"], e["actor_role"]) for e in by_broader.values()} == {(None, "administrator")}
