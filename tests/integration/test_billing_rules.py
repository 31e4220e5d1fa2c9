"""The edges of billing's rules: nothing outside the grants by any path, revocations, the
month's boundary in Danish time, concurrent changes and invoice runs (S8–S12, S14)."""

# ruff: noqa: F811 - fixtures are imported from billing_fixtures and used by name

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta

import httpx
from sqlalchemy import func, select

from services.billing.bootstrap import BillingParts
from services.billing.demo import subscription_id_for
from services.billing.models import Invoice, InvoiceLine, Order, Subscription
from services.billing.worker import handlers as billing_handlers
from shared.clock import FrozenClock
from shared.db import Database
from shared.events import Event, UserDeleted, UserDisabled, UserEnabled
from tests.integration.billing_fixtures import (  # noqa: F401 - fixtures
    Tokens,
    active_subscription,
    billing,
    billing_clock,
    billing_db,
    billing_parts,
    billing_url,
    idempotency_key,
    tokens,
)
from tests.integration.test_activation import envelope_of
from tests.support.asgi import AppTransport

COLLEAGUE_GRANT = [{"cvr": "37826111", "accounts": ["10000021", "10000022"]}]
NOBODY = "00000000-0000-4000-8000-000000000000"


async def test_every_path_answers_alike_for_not_yours_and_not_there(
    billing: httpx.AsyncClient, tokens: Tokens, billing_db: Database
) -> None:
    colleague = tokens.caller(COLLEAGUE_GRANT, ["invoices", "orders", "master_data", "telephony"])
    hidden = await active_subscription(billing_db, "10000023", "TLF-")  # same company, not granted
    admin = tokens.group_admin()
    placed = await billing.post(
        "/v1/orders",
        json={"account_number": "10000023", "product_code": "TLF-FAST"},
        headers={**admin.headers, **idempotency_key()},
    )
    assert placed.status_code == 201
    pairs = [
        (f"/v1/subscriptions/{hidden.id}/settings", f"/v1/subscriptions/{NOBODY}/settings"),
        (f"/v1/subscriptions/{hidden.id}", f"/v1/subscriptions/{NOBODY}"),
        ("/v1/accounts/10000023/invoice-format", "/v1/accounts/99999999/invoice-format"),
        (f"/v1/orders/{placed.json()['id']}", f"/v1/orders/{NOBODY}"),
    ]
    for theirs, nothing in pairs:
        a = await billing.get(theirs, headers=colleague.headers)
        b = await billing.get(nothing, headers=colleague.headers)
        assert a.status_code == b.status_code == 404, theirs
        assert {k: a.json()[k] for k in ("type", "title")} == {k: b.json()[k] for k in ("type", "title")}
    upgrade_theirs = await billing.post(
        f"/v1/subscriptions/{hidden.id}/upgrade",
        json={"product_code": "TLF-OMST"},
        headers={**colleague.headers, **idempotency_key()},
    )
    upgrade_nothing = await billing.post(
        f"/v1/subscriptions/{NOBODY}/upgrade",
        json={"product_code": "TLF-OMST"},
        headers={**colleague.headers, **idempotency_key()},
    )
    assert upgrade_theirs.status_code == upgrade_nothing.status_code == 404
    assert upgrade_theirs.json()["detail"] == upgrade_nothing.json()["detail"]


async def test_an_add_on_attaches_only_to_a_mobile_subscription_within_the_grants(
    billing: httpx.AsyncClient, tokens: Tokens, billing_db: Database
) -> None:
    colleague = tokens.caller(COLLEAGUE_GRANT, ["orders"])
    elsewhere = await active_subscription(billing_db, "10000031", "MOBIL-")  # another company
    mine = await active_subscription(billing_db, "10000021", "MOBIL-")
    for target in (elsewhere.id, NOBODY):
        response = await billing.post(
            "/v1/orders",
            json={
                "account_number": "10000021",
                "product_code": "ROAM-WORLD",
                "options": {"attach_to": target},
            },
            headers={**colleague.headers, **idempotency_key()},
        )
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "options.attach_to"
    ok = await billing.post(
        "/v1/orders",
        json={"account_number": "10000021", "product_code": "ROAM-WORLD", "options": {"attach_to": mine.id}},
        headers={**colleague.headers, **idempotency_key()},
    )
    assert ok.status_code == 201, ok.text


async def test_a_replayed_order_is_not_shown_once_the_account_left_the_grants(
    billing: httpx.AsyncClient, tokens: Tokens
) -> None:
    user_id = str(uuid.uuid4())
    headers = idempotency_key()
    body = {
        "account_number": "10000022",
        "product_code": "BB-500",
        "options": {"installation_address": "Vestergade 4, 8000 Aarhus C"},
    }
    before = tokens.caller(COLLEAGUE_GRANT, ["orders"], user_id=user_id)
    assert (
        await billing.post("/v1/orders", json=body, headers={**before.headers, **headers})
    ).status_code == 201
    narrowed = tokens.caller([{"cvr": "37826111", "accounts": ["10000021"]}], ["orders"], user_id=user_id)
    again = await billing.post("/v1/orders", json=body, headers={**narrowed.headers, **headers})
    assert again.status_code == 404


async def test_deleted_users_stay_refused_and_a_token_of_the_second_of_a_change_is_refused(
    billing: httpx.AsyncClient,
    tokens: Tokens,
    billing_db: Database,
    billing_clock: FrozenClock,
    billing_parts: BillingParts,
) -> None:
    handlers = billing_handlers(billing_parts)

    async def handle(event: Event) -> None:
        envelope = envelope_of(event, billing_clock)
        async with billing_db.transaction() as session:
            await handlers[type(event)](session, envelope)

    user = uuid.uuid4()
    billing_clock.advance(timedelta(milliseconds=700))  # the change happens within a second
    same_second = tokens.caller(COLLEAGUE_GRANT, ["invoices"], user_id=str(user))
    await handle(UserDisabled(user_id=user, tenant_cvr="37826111", disabled_at=billing_clock.now()))
    await handle(UserEnabled(user_id=user, tenant_cvr="37826111", enabled_at=billing_clock.now()))
    # Issued after the disable but in its second: refused, as the seconds cannot tell.
    assert (await billing.get("/v1/invoices", headers=same_second.headers)).status_code == 401
    billing_clock.advance(timedelta(seconds=1))
    later = tokens.caller(COLLEAGUE_GRANT, ["invoices"], user_id=str(user))
    assert (await billing.get("/v1/invoices", headers=later.headers)).status_code == 200

    await handle(
        UserDeleted(
            user_id=user,
            tenant_cvr="37826111",
            role="user",
            reason="deleted-by-administrator",
            deleted_at=billing_clock.now(),
        )
    )
    await handle(UserEnabled(user_id=user, tenant_cvr="37826111", enabled_at=billing_clock.now()))
    billing_clock.advance(timedelta(seconds=2))
    newest = tokens.caller(COLLEAGUE_GRANT, ["invoices"], user_id=str(user))
    assert (await billing.get("/v1/invoices", headers=newest.headers)).status_code == 401


async def test_a_change_that_changes_nothing_keeps_the_version(
    billing: httpx.AsyncClient, tokens: Tokens
) -> None:
    admin = tokens.group_admin()
    read = await billing.get("/v1/companies/33112874/master-data", headers=admin.headers)
    same = await billing.patch(
        "/v1/companies/33112874/master-data",
        json={"city": read.json()["city"]},
        headers={**admin.headers, "If-Match": read.headers["etag"]},
    )
    assert same.status_code == 200 and same.headers["etag"] == read.headers["etag"]


async def test_two_changes_from_the_same_version_do_not_both_pass(
    billing: httpx.AsyncClient, tokens: Tokens
) -> None:
    admin = tokens.group_admin()
    read = await billing.get("/v1/companies/35657193/master-data", headers=admin.headers)
    tag = read.headers["etag"]
    first, second = await asyncio.gather(
        billing.patch(
            "/v1/companies/35657193/master-data",
            json={"city": "København Ø"},
            headers={**admin.headers, "If-Match": tag},
        ),
        billing.patch(
            "/v1/companies/35657193/master-data",
            json={"city": "København S"},
            headers={**admin.headers, "If-Match": tag},
        ),
    )
    assert sorted([first.status_code, second.status_code]) == [200, 412]


async def test_opening_hours_are_local_times_and_never_forward_to_the_number_itself(
    billing: httpx.AsyncClient, tokens: Tokens, billing_db: Database
) -> None:
    caller = tokens.caller([{"cvr": "37826111", "accounts": "all"}], ["telephony"])
    pn = await active_subscription(billing_db, "10000023", "PN-")
    path = f"/v1/subscriptions/{pn.id}/settings"
    for patch, field in (
        ({"schedule": [{"days": ["mon"], "opens": "08:00+01:00", "closes": "16:00"}]}, "schedule.0.opens"),
        ({"outside_hours": "forward", "outside_hours_target": pn.identifier}, "outside_hours_target"),
        ({"outside_hours": "forward"}, "outside_hours_target"),
    ):
        response = await billing.patch(path, json=patch, headers={**caller.headers, "If-Match": "*"})
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == field


async def test_a_refused_opening_hours_change_names_the_interval_to_correct_and_stores_nothing(
    billing: httpx.AsyncClient, tokens: Tokens, billing_db: Database
) -> None:
    """S11: a page puts the words next to the interval that overlaps, or the time to correct,
    so the problem names that entry of `schedule` rather than the whole list."""
    caller = tokens.caller([{"cvr": "37826111", "accounts": "all"}], ["telephony"])
    pn = await active_subscription(billing_db, "10000023", "PN-")
    path = f"/v1/subscriptions/{pn.id}/settings"
    before = await billing.get(path, headers=caller.headers)
    overlapping = [
        {"days": ["mon", "tue"], "opens": "08:00", "closes": "12:00"},
        {"days": ["wed"], "opens": "09:00", "closes": "10:00"},
        {"days": ["tue"], "opens": "11:30", "closes": "16:00"},
    ]
    backwards = [{"days": ["mon"], "opens": "16:00", "closes": "08:00"}]
    for schedule, field, words in (
        (overlapping, "schedule.2", "overlap on tue: 08:00–12:00 and 11:30–16:00"),
        (backwards, "schedule.0.closes", "closes must be after opens"),
    ):
        response = await billing.patch(
            path, json={"schedule": schedule}, headers={**caller.headers, "If-Match": before.headers["etag"]}
        )
        assert response.status_code == 422, response.text
        [error] = response.json()["errors"]
        assert error["field"] == field and words in error["message"], error
    after = await billing.get(path, headers=caller.headers)
    assert after.headers["etag"] == before.headers["etag"] and after.json() == before.json()


async def test_the_month_ends_at_midnight_danish_time_and_upgrades_do_not_reprice_it(
    billing_db: Database, billing_clock: FrozenClock, billing_parts: BillingParts
) -> None:
    account, period = "10000052", date(2026, 10, 1)
    copenhagen_midnight = datetime(2026, 10, 31, 23, 0, tzinfo=UTC)  # 1 November 00:00 in Copenhagen
    async with billing_db.transaction() as session:
        for identifier, activated in (
            ("+4528111111", copenhagen_midnight - timedelta(minutes=30)),  # 31 October, 23:30 Danish time
            ("+4528222222", copenhagen_midnight + timedelta(minutes=30)),  # 1 November, 00:30 Danish time
        ):
            session.add(
                Subscription(
                    id=subscription_id_for(account, identifier),
                    cvr="22109340",
                    account_number=account,
                    identifier=identifier,
                    product_code="MOBIL-10",
                    status="active",
                    settings="{}",
                    settings_version=1,
                    created_at=activated,
                    activated_at=activated,
                )
            )
        upgraded = await session.scalar(
            select(Subscription).where(
                Subscription.account_number == account, Subscription.product_code == "MOBIL-50"
            )
        )
        assert upgraded is not None
        upgraded.product_code = "MOBIL-FRI"  # upgraded in November: October keeps MOBIL-50's fee
        session.add(
            Order(
                id=str(uuid.uuid4()),
                user_id=str(uuid.uuid4()),
                idempotency_key="k-upgrade",
                request_hash="x",
                kind="upgrade",
                cvr="22109340",
                account_number=account,
                subscription_id=upgraded.id,
                product_code="MOBIL-FRI",
                from_product_code="MOBIL-50",
                options="{}",
                status="completed",
                created_at=billing_clock.now(),
                completed_at=billing_clock.now(),
            )
        )
    invoicing = billing_parts.invoicing
    async with billing_db.transaction() as session:
        await invoicing.issue(session, period, accounts=[account])
        lines = list(
            await session.execute(
                select(InvoiceLine.identifier, InvoiceLine.description, InvoiceLine.amount_ore)
                .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
                .where(
                    Invoice.account_number == account,
                    Invoice.period_start == period,
                    InvoiceLine.category == "subscription",
                )
            )
        )
    identifiers = {identifier for identifier, _, _ in lines}
    assert "+4528111111" in identifiers and "+4528222222" not in identifiers
    [(_, description, fee)] = [line for line in lines if line[0] == upgraded.identifier]
    assert (description, fee) == ("Mobil Erhverv 50 GB", 14_900)


async def test_two_invoice_runs_at_once_issue_each_invoice_once(
    billing_db: Database, billing_parts: BillingParts
) -> None:
    period = date(2026, 10, 1)
    invoicing = billing_parts.invoicing

    async def run() -> int:
        async with billing_db.transaction() as session:
            return (await invoicing.issue(session, period)).invoices

    async with billing_db.transaction() as session:
        before = await session.scalar(
            select(func.count()).select_from(Invoice).where(Invoice.period_start == period)
        )
    first, second = await asyncio.gather(run(), run())
    async with billing_db.transaction() as session:
        after = await session.scalar(
            select(func.count()).select_from(Invoice).where(Invoice.period_start == period)
        )
        lines = await session.scalar(
            select(func.count()).select_from(InvoiceLine).join(Invoice).where(Invoice.period_start == period)
        )
        distinct = await session.scalar(
            select(func.count(func.distinct(InvoiceLine.invoice_id)))
            .join(Invoice)
            .where(Invoice.period_start == period)
        )
    assert first + second == after - (before or 0) > 0
    assert distinct == after and lines and lines > after  # every invoice has its lines, once


async def test_an_order_before_the_catalogue_is_loaded_is_asked_to_wait(
    database_factory, tokens: Tokens, billing_clock: FrozenClock, tmp_path
) -> None:
    from services.billing.api import create_api
    from services.billing.bootstrap import build
    from services.billing.config import BillingSettings
    from services.billing.demo import DEMO_COMPANIES
    from services.registry import SERVICES
    from shared.db import migrate

    url = database_factory("billing")
    await asyncio.to_thread(migrate, SERVICES["billing"].migrations, url)  # it runs its own loop
    settings = BillingSettings(
        database_url=url, var_dir=tmp_path, identity_jwks_url="http://identity.test/jwks"
    )
    parts = build(settings, clock=billing_clock)
    async with parts.db.transaction() as session:  # the worker has not started: no catalogue yet
        await parts.registry.register(session, DEMO_COMPANIES[4])
    await parts.db.dispose()
    app = create_api(settings, clock=billing_clock, jwks_client=tokens.jwks_client())
    caller = tokens.caller([{"cvr": "22109340", "accounts": "all"}], ["orders"])
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://billing.test") as http:
        response = await http.post(
            "/v1/orders",
            json={"account_number": "10000052", "product_code": "MOBIL-10"},
            headers={**caller.headers, **idempotency_key()},
        )
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json()["type"].endswith("/catalogue-not-loaded")


async def test_orders_are_listed_newest_first_within_the_grants(
    billing: httpx.AsyncClient, tokens: Tokens, billing_clock: FrozenClock
) -> None:
    colleague = tokens.caller(COLLEAGUE_GRANT, ["orders"])
    admin = tokens.group_admin()
    placed = []
    for n in range(5):
        if n % 2:
            billing_clock.advance(timedelta(seconds=1))  # some at the same moment: ties by id
        response = await billing.post(
            "/v1/orders",
            json={"account_number": "10000021", "product_code": "MOBIL-10"},
            headers={**colleague.headers, **idempotency_key()},
        )
        placed.append(response.json()["id"])
    hidden = await billing.post(
        "/v1/orders",
        json={"account_number": "10000023", "product_code": "TLF-FAST"},
        headers={**admin.headers, **idempotency_key()},
    )
    listed, cursor = [], None
    while True:
        page = await billing.get(
            "/v1/orders",
            params={"limit": 2, **({"cursor": cursor} if cursor else {})},
            headers=colleague.headers,
        )
        assert page.status_code == 200, page.text
        listed += page.json()["items"]
        if (cursor := page.json()["next_cursor"]) is None:
            break
    ids = [o["id"] for o in listed]
    assert set(placed) <= set(ids) and hidden.json()["id"] not in ids
    assert len(ids) == len(set(ids))
    keys = [(o["created_at"], o["id"]) for o in listed]
    assert keys == sorted(keys, reverse=True)
    received = await billing.get("/v1/orders", params={"status": "completed"}, headers=colleague.headers)
    assert all(o["status"] == "completed" for o in received.json()["items"])
    bad = await billing.get(
        "/v1/orders", params={"cursor": "WyJub3QgYSB0aW1lIiwgIngiXQ"}, headers=colleague.headers
    )
    assert bad.status_code == 422


async def test_two_concurrent_twins_of_one_upgrade_answer_the_same_order(
    billing: httpx.AsyncClient, tokens: Tokens, billing_db: Database
) -> None:
    """A double click on an upgrade: the twin that waited for the subscription's row lock finds
    the order its key already placed, instead of taking the upgraded product for a path not
    allowed (S9)."""
    caller = tokens.caller([{"cvr": "37826111", "accounts": "all"}], ["orders"])
    mobile = await active_subscription(billing_db, "10000021", "MOBIL-10")
    headers = {**caller.headers, **idempotency_key()}
    first, second = await asyncio.gather(
        *(
            billing.post(
                f"/v1/subscriptions/{mobile.id}/upgrade", json={"product_code": "MOBIL-50"}, headers=headers
            )
            for _ in range(2)
        )
    )
    assert sorted([first.status_code, second.status_code]) == [200, 201], (first.text, second.text)
    assert first.json()["id"] == second.json()["id"]
    async with billing_db.transaction() as session:
        orders = await session.scalar(
            select(func.count()).select_from(Order).where(Order.user_id == caller.user_id)
        )
    assert orders == 1
