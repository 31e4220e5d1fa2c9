"""Support (S3, S13): staff find a company's logins, delete the orphaned only administrator,
and every step is in the audit trail with the staff user's id."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from services.identity.models import messaging
from services.identity.support import create_staff
from shared.events import UserDeleted
from tests.integration.test_administration import activate_and_log_in, colleague, group_admin

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name
from tests.integration.test_login import client, database_url, settings  # noqa: F401


async def staff_login(db, clock, sealer, client) -> tuple[dict, str]:
    async with db.transaction() as session:
        staff, code = await create_staff(
            session,
            clock,
            username="support.anna",
            name="Anna Support",
            email="anna@adgang.example",
            mobile="+4520999999",
        )
    return await activate_and_log_in(client, db, sealer, "support.anna", code), staff.id


async def test_support_deletes_the_only_administrator_and_the_audit_trail_shows_it(
    db, clock, sealer, client
) -> None:
    admin = await group_admin(db, clock, sealer, client)
    admin_id = (await client.get("/v1/me", headers=admin)).json()["user_id"]
    staff, staff_id = await staff_login(db, clock, sealer, client)

    users = await client.get("/v1/support/companies/35657193/users", headers=staff)
    clock.advance(timedelta(seconds=1))
    assert users.status_code == 200, users.text
    assert [u["id"] for u in users.json()] == [admin_id]

    deleted = await client.delete(f"/v1/support/users/{admin_id}", headers=staff)
    assert deleted.status_code == 204, deleted.text
    assert (await client.get("/v1/me", headers=admin)).status_code == 401  # the admin's session ended

    async with db.transaction() as session:
        values = (await session.execute(select(messaging.outbox.c.value, messaging.outbox.c.headers))).all()
    deletions = [UserDeleted.model_validate_json(v) for v, h in values if UserDeleted.TYPE in h]
    assert [(str(d.user_id), d.reason) for d in deletions] == [(admin_id, "deleted-by-support")]

    trail = (await client.get("/v1/support/audit", params={"cvr": "35657193"}, headers=staff)).json()
    actions = [(e["action"], e["actor_id"]) for e in reversed(trail) if not e["action"].startswith("login.")]
    assert actions == [("support.list-users", staff_id), ("support.delete-user", staff_id)]
    assert all(e["client_address"] for e in trail)


async def test_admin_actions_are_audited_with_the_administrators_id(db, clock, sealer, client) -> None:
    admin = await group_admin(db, clock, sealer, client)
    admin_id = (await client.get("/v1/me", headers=admin)).json()["user_id"]
    created = (await client.post("/v1/users", headers=admin, json=colleague())).json()
    clock.advance(timedelta(seconds=1))
    await client.post(f"/v1/users/{created['id']}/disable", headers=admin)
    staff, _ = await staff_login(db, clock, sealer, client)
    trail = (await client.get("/v1/support/audit", params={"user_id": created["id"]}, headers=staff)).json()
    assert [(e["action"], e["actor_id"]) for e in reversed(trail)] == [
        ("user.create", admin_id),
        ("user.disable", admin_id),
    ]


async def test_customers_cannot_use_the_support_operations(db, clock, sealer, client) -> None:
    admin = await group_admin(db, clock, sealer, client)
    assert (await client.get("/v1/support/companies/35657193/users", headers=admin)).status_code == 403
    assert (await client.get("/v1/support/audit", headers=admin)).status_code == 403
    staff, _ = await staff_login(db, clock, sealer, client)
    assert (await client.get("/v1/users", headers=staff)).status_code == 403  # staff administer no company
