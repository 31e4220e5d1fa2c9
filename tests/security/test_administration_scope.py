"""An administrator sees and acts on a login only when that login's whole access (companies,
accounts, functions, role) lies within the administrator's own (S4, S5, S12, S14); any other
login answers 404 exactly as an id that does not exist, in lists too."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import dataclass

import httpx
from sqlalchemy import select

from services.identity.models import AuditEntry, User, UserGrant, messaging
from tests.integration.test_login import client, database_url, settings  # noqa: F401 - fixtures
from tests.security.world import (
    ACCOUNTS,
    OTHER_TENANT,
    PARENT,
    SUBSIDIARY,
    Accounts,
    add_user,
    bearer,
    company_group,
)

ALL_FUNCTIONS = ["invoices", "master_data", "orders", "telephony", "user_admin"]


async def snapshot(db, user_id: str) -> tuple:
    """Everything an administrator could change about a login."""
    async with db.transaction() as session:
        user = await session.get(User, user_id)
        grants = sorted(
            (g.cvr, str(g.accounts))
            for g in await session.scalars(select(UserGrant).where(UserGrant.user_id == user_id))
        )
    assert user is not None
    return (user.name, user.email, user.mobile, user.status, tuple(user.functions), tuple(grants))


def every_route(user_id: str) -> list[tuple[str, str, dict | None]]:
    """Every route that reads or changes one login, with a body that would change something."""
    return [
        ("GET", f"/v1/users/{user_id}", None),
        ("PATCH", f"/v1/users/{user_id}", {"email": "attacker@evil.example", "mobile": "+4529999999"}),
        ("PATCH", f"/v1/users/{user_id}", {"name": "Overtaget"}),
        (
            "PATCH",
            f"/v1/users/{user_id}",
            {"grants": [{"cvr": SUBSIDIARY, "accounts": "all"}], "functions": ["invoices"]},
        ),
        ("POST", f"/v1/users/{user_id}/resend-activation", None),
        ("POST", f"/v1/users/{user_id}/reset-2fa", None),
        ("POST", f"/v1/users/{user_id}/disable", None),
        ("POST", f"/v1/users/{user_id}/enable", None),
        ("POST", f"/v1/users/{user_id}/unlock", None),
        ("DELETE", f"/v1/users/{user_id}", None),
    ]


async def fire(client: httpx.AsyncClient, headers: dict, routes) -> list[httpx.Response]:
    return await asyncio.gather(
        *(client.request(method, path, headers=headers, json=body) for method, path, body in routes)
    )


async def test_a_user_administrator_of_one_subsidiary_cannot_take_over_broader_logins(
    db, clock, settings, client
) -> None:
    """The attack: a colleague with user_admin on one subsidiary re-addressed a pending login that
    holds the whole group, resent its activation to themselves, and so became a group
    administrator; and disabled, deleted, reset and narrowed an active broader user."""
    await company_group(db, clock)
    everything = {PARENT: "all", SUBSIDIARY: "all"}
    await add_user(db, clock, grants=everything, functions=ALL_FUNCTIONS, role="administrator")
    pending_broad = await add_user(db, clock, grants=everything, functions=ALL_FUNCTIONS, status="pending")
    active_broad = await add_user(db, clock, grants=everything, functions=["invoices", "orders"])
    limited = await add_user(db, clock, grants={SUBSIDIARY: "all"}, functions=["invoices", "user_admin"])
    headers = await bearer(db, clock, settings, limited)
    before = {u.id: await snapshot(db, u.id) for u in (pending_broad, active_broad)}
    async with db.transaction() as session:
        outbox_before = len((await session.execute(select(messaging.outbox.c.seq))).all())

    routes = every_route(pending_broad.id) + every_route(active_broad.id) + every_route(str(uuid.uuid4()))
    answers = await fire(client, headers, routes)

    assert [a.status_code for a in answers] == [404] * len(routes), [
        (r[:2], a.text) for r, a in zip(routes, answers, strict=True)
    ]
    unknown = answers[-1].json()
    for answer in answers:  # the same answer as for an id that does not exist: nothing leaks
        assert {k: v for k, v in answer.json().items() if k not in ("detail", "instance")} == {
            k: v for k, v in unknown.items() if k not in ("detail", "instance")
        }
    listed = (await client.get("/v1/users", headers=headers)).json()
    assert [u["id"] for u in listed] == [limited.id]
    assert {u.id: await snapshot(db, u.id) for u in (pending_broad, active_broad)} == before
    async with db.transaction() as session:
        outbox_after = len((await session.execute(select(messaging.outbox.c.seq))).all())
        audited = (await session.scalars(select(AuditEntry).where(AuditEntry.actor_id == limited.id))).all()
    assert outbox_after == outbox_before and audited == []  # no email, no event, nothing done


# --- the permission matrix ---------------------------------------------------------------------

GRANT_SETS: dict[str, dict[str, Accounts]] = {
    "whole group": {PARENT: "all", SUBSIDIARY: "all"},
    "one account": {SUBSIDIARY: ACCOUNTS[SUBSIDIARY][:1]},
    "parent in part": {PARENT: ACCOUNTS[PARENT][:1], SUBSIDIARY: "all"},
    "every account listed": {SUBSIDIARY: list(ACCOUNTS[SUBSIDIARY])},
}
FUNCTION_SETS = {
    "admin+invoices+orders": ["invoices", "orders", "user_admin"],
    "admin+invoices": ["invoices", "user_admin"],
    "invoices": ["invoices"],
}


@dataclass(frozen=True)
class Access:
    role: str
    grants: str
    functions: str

    def capabilities(self) -> set[tuple[str, str]]:
        """What the access allows, spelled out: each account it may use, and for a company held
        in full also its future accounts."""
        caps = set()
        for cvr, accounts in GRANT_SETS[self.grants].items():
            if accounts == "all":
                caps |= {(cvr, a) for a in ACCOUNTS[cvr]} | {(cvr, "accounts added later")}
            else:
                caps |= {(cvr, a) for a in accounts}
        return caps

    def within(self, other: Access) -> bool:
        """The rule, stated independently of the code under test."""
        rank = {"user": 0, "administrator": 1}
        return (
            rank[self.role] <= rank[other.role]
            and set(FUNCTION_SETS[self.functions]) <= set(FUNCTION_SETS[other.functions])
            and self.capabilities() <= other.capabilities()
        )


CALLERS = [
    Access("user", grants, functions)
    for grants, functions in itertools.product(GRANT_SETS, ("admin+invoices+orders", "admin+invoices"))
    if (grants, functions) != ("whole group", "admin+invoices+orders")
] + [Access("administrator", "whole group", "admin+invoices+orders")]
TARGETS = [
    Access("user", grants, functions) for grants, functions in itertools.product(GRANT_SETS, FUNCTION_SETS)
] + [Access("administrator", "whole group", "admin+invoices+orders")]


async def test_every_user_route_follows_the_rule_for_every_pair_of_caller_and_target_access(
    db, clock, settings, client
) -> None:
    await company_group(db, clock)
    # A second administrator, so that removing a target administrator is never the last one.
    await add_user(db, clock, grants=GRANT_SETS["whole group"], functions=ALL_FUNCTIONS, role="administrator")
    callers = {}
    for access in CALLERS:
        user = await add_user(
            db,
            clock,
            grants=GRANT_SETS[access.grants],
            functions=FUNCTION_SETS[access.functions],
            role=access.role,
        )
        callers[access] = await bearer(db, clock, settings, user)
    outsider = await add_user(
        db, clock, grants={OTHER_TENANT: "all"}, functions=ALL_FUNCTIONS, tenant=OTHER_TENANT
    )

    within = 0
    for caller, target in itertools.product(CALLERS, TARGETS):
        headers = callers[caller]
        user = await add_user(
            db,
            clock,
            grants=GRANT_SETS[target.grants],
            functions=FUNCTION_SETS[target.functions],
            role=target.role,
        )
        pair = f"{caller} on {target}"
        listed = {u["id"] for u in (await client.get("/v1/users", headers=headers)).json()}
        if not target.within(caller):
            before = await snapshot(db, user.id)
            answers = await fire(client, headers, every_route(user.id))
            assert {a.status_code for a in answers} == {404}, pair
            assert user.id not in listed, pair
            assert await snapshot(db, user.id) == before, pair
            continue
        within += 1
        assert user.id in listed, pair
        # Each route answers for what it is, never "not found": reads and changes that do not
        # depend on each other at once, then the ones that do, in order.
        answers = await fire(
            client,
            headers,
            [
                ("GET", f"/v1/users/{user.id}", None),
                ("PATCH", f"/v1/users/{user.id}", {"name": "Nyt Navn"}),
                ("POST", f"/v1/users/{user.id}/unlock", None),
                ("POST", f"/v1/users/{user.id}/reset-2fa", None),
                ("POST", f"/v1/users/{user.id}/resend-activation", None),  # 409: already active
            ],
        )
        assert [a.status_code for a in answers] == [200, 200, 200, 200, 409], (
            pair,
            [a.text for a in answers],
        )
        for method, path, expected in (
            ("POST", f"/v1/users/{user.id}/disable", 200),
            ("POST", f"/v1/users/{user.id}/enable", 200),
            ("DELETE", f"/v1/users/{user.id}", 204),
        ):
            answer = await client.request(method, path, headers=headers)
            assert answer.status_code == expected, (pair, path, answer.text)
        # Another company's administrator never sees it, whatever it holds.
    outsider_headers = await bearer(db, clock, settings, outsider)
    assert [u["id"] for u in (await client.get("/v1/users", headers=outsider_headers)).json()] == [
        outsider.id
    ]
    assert 0 < within < len(CALLERS) * len(TARGETS)  # both sides of the rule were exercised
