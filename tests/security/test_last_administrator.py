"""A company always keeps an active administrator: two administrators removing each other at
the same moment cannot both succeed (the company is locked for every change that can reduce
its active administrators)."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import asyncio

from sqlalchemy import select, update

from services.identity.models import User
from tests.integration.test_login import client, database_url, settings  # noqa: F401 - fixtures
from tests.security.world import PARENT, SUBSIDIARY, add_user, bearer, company_group

EVERYTHING = {PARENT: "all", SUBSIDIARY: "all"}
ALL_FUNCTIONS = ["invoices", "master_data", "orders", "telephony", "user_admin"]
ROUNDS = [
    ("disable", "disable"),
    ("delete", "delete"),
    ("disable", "demote"),
    ("delete", "disable"),
    ("demote", "demote"),
    ("disable", "delete"),
    ("demote", "delete"),
]


def request(action: str, user_id: str) -> tuple[str, str, dict | None]:
    return {
        "disable": ("POST", f"/v1/users/{user_id}/disable", None),
        "delete": ("DELETE", f"/v1/users/{user_id}", None),
        "demote": ("PATCH", f"/v1/users/{user_id}", {"functions": ["invoices"]}),
    }[action]


async def live_administrators(db) -> list[str]:
    async with db.transaction() as session:
        users = await session.scalars(select(User).where(User.tenant_cvr == PARENT, User.status == "active"))
        return [u.id for u in users if "user_admin" in u.functions]


async def test_two_administrators_removing_each_other_at_once_leave_one(db, clock, settings, client) -> None:
    await company_group(db, clock)
    for first, second in ROUNDS:
        async with db.transaction() as session:  # the company's other administrators have left
            await session.execute(update(User).where(User.tenant_cvr == PARENT).values(status="disabled"))
        anna = await add_user(db, clock, grants=EVERYTHING, functions=ALL_FUNCTIONS)
        bo = await add_user(db, clock, grants=EVERYTHING, functions=ALL_FUNCTIONS)
        as_anna, as_bo = await bearer(db, clock, settings, anna), await bearer(db, clock, settings, bo)

        answers = await asyncio.gather(
            *(
                client.request(method, path, headers=headers, json=body)
                for headers, (method, path, body) in (
                    (as_anna, request(first, bo.id)),
                    (as_bo, request(second, anna.id)),
                )
            )
        )

        codes = sorted(a.status_code for a in answers)
        assert len(await live_administrators(db)) == 1, (first, second, [a.text for a in answers])
        assert codes[0] in (200, 204) and codes[1] in (403, 409), (first, second, [a.text for a in answers])
