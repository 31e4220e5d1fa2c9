"""Orders and upgrades (S9), master data and invoice format (S10), telephony and Personligt
Nummer settings (S11), revocations from identity (S12) and the monthly invoice run (S8)."""

# ruff: noqa: F811 - fixtures are imported from billing_fixtures and used by name

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from services.billing.bootstrap import BillingParts
from services.billing.models import (
    AuditEntry,
    Invoice,
    InvoiceLine,
    Order,
    UsageRecord,
)
from services.billing.worker import handlers as billing_handlers
from shared.clock import FrozenClock
from shared.db import Database
from shared.events import (
    Event,
    InvoiceFormatChanged,
    InvoiceIssued,
    MasterDataChanged,
    OrderCompleted,
    SubscriptionOrdered,
    SubscriptionSettingsChanged,
    SubscriptionUpgraded,
    UserDisabled,
    UserEnabled,
    UserGrantsChanged,
)
from tests.integration.billing_fixtures import (  # noqa: F401 - fixtures
    NOW,
    Tokens,
    active_subscription,
    billing,
    billing_clock,
    billing_db,
    billing_parts,
    billing_url,
    events_since,
    idempotency_key,
    outbox_position,
    tokens,
)
from tests.integration.test_activation import envelope_of

COLLEAGUE_GRANT = [{"cvr": "37826111", "accounts": ["10000021", "10000022"]}]


# --- orders (S9) ------------------------------------------------------------------------------


async def test_an_order_is_received_then_completed_and_announced(
    billing: httpx.AsyncClient,
    tokens: Tokens,
    billing_db: Database,
    billing_clock: FrozenClock,
    billing_parts: BillingParts,
) -> None:
    caller = tokens.caller(COLLEAGUE_GRANT, ["orders"])
    start = await outbox_position(billing_db)
    headers = {**caller.headers, **idempotency_key()}
    body = {"account_number": "10000021", "product_code": "MOBIL-50", "options": {"sim": "esim"}}
    response = await billing.post("/v1/orders", json=body, headers=headers)
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "received" and order["kind"] == "new"
    assert response.headers["location"] == f"/v1/orders/{order['id']}"

    again = await billing.post("/v1/orders", json=body, headers=headers)  # a retry: the same order
    assert again.status_code == 200 and again.json()["id"] == order["id"]
    assert again.headers["idempotent-replayed"] == "true"
    async with billing_db.transaction() as session:
        count = await session.scalar(
            select(func.count()).select_from(Order).where(Order.user_id == caller.user_id)
        )
    assert count == 1

    [ordered] = await events_since(billing_db, start, SubscriptionOrdered)
    assert str(ordered.order_id) == order["id"] and str(ordered.ordered_by) == caller.user_id
    assert ordered.monthly_fee_ore == 14_900

    await billing_parts.ordering.fulfil_pending()
    done = (await billing.get(f"/v1/orders/{order['id']}", headers=caller.headers)).json()
    assert done["status"] == "completed"
    subscription = (
        await billing.get(
            f"/v1/subscriptions/{order['subscription_id']}",
            headers=tokens.caller(COLLEAGUE_GRANT, ["orders"]).headers,
        )
    ).json()
    assert subscription["status"] == "active" and subscription["identifier"].startswith("+45")
    [completed] = [
        e for e in await events_since(billing_db, start, OrderCompleted) if str(e.order_id) == order["id"]
    ]
    assert completed.identifier == subscription["identifier"]


async def test_the_same_key_for_another_order_is_refused(billing: httpx.AsyncClient, tokens: Tokens) -> None:
    caller = tokens.caller(COLLEAGUE_GRANT, ["orders"])
    headers = {**caller.headers, **idempotency_key()}
    first = await billing.post(
        "/v1/orders", json={"account_number": "10000021", "product_code": "MOBIL-10"}, headers=headers
    )
    assert first.status_code == 201
    other = await billing.post(
        "/v1/orders", json={"account_number": "10000021", "product_code": "MOBIL-FRI"}, headers=headers
    )
    assert other.status_code == 422 and other.json()["type"].endswith("/idempotency-key-reused")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"account_number": "10000023", "product_code": "MOBIL-10"}, "account_number"),  # not granted
        ({"account_number": "10000051", "product_code": "MOBIL-10"}, "account_number"),  # another customer
        ({"account_number": "99999999", "product_code": "MOBIL-10"}, "account_number"),  # no such account
        ({"account_number": "10000021", "product_code": "NOPE"}, "product_code"),
        (
            {"account_number": "10000021", "product_code": "MOBIL-10", "options": {"port_number": "123"}},
            "options.port_number",
        ),
        (
            {"account_number": "10000021", "product_code": "MOBIL-10", "options": {"colour": "red"}},
            "options.colour",
        ),
        ({"account_number": "10000022", "product_code": "BB-100"}, "options.installation_address"),
    ],
)
async def test_orders_outside_the_grants_or_the_catalogue_are_refused_naming_the_field(
    billing: httpx.AsyncClient, tokens: Tokens, body: dict, field: str
) -> None:
    caller = tokens.caller(COLLEAGUE_GRANT, ["orders"])
    response = await billing.post("/v1/orders", json=body, headers={**caller.headers, **idempotency_key()})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == field


async def test_an_order_needs_the_orders_function_and_an_idempotency_key(
    billing: httpx.AsyncClient, tokens: Tokens
) -> None:
    body = {"account_number": "10000021", "product_code": "MOBIL-10"}
    no_function = tokens.caller(COLLEAGUE_GRANT, ["invoices"])
    response = await billing.post(
        "/v1/orders", json=body, headers={**no_function.headers, **idempotency_key()}
    )
    assert response.status_code == 403 and "'orders'" in response.json()["detail"]
    caller = tokens.caller(COLLEAGUE_GRANT, ["orders"])
    response = await billing.post("/v1/orders", json=body, headers=caller.headers)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "Idempotency-Key"


async def test_upgrades_follow_the_allowed_paths_only(
    billing: httpx.AsyncClient, tokens: Tokens, billing_db: Database
) -> None:
    caller = tokens.caller(COLLEAGUE_GRANT, ["orders"])
    mobile = await active_subscription(billing_db, "10000021", "MOBIL-10")
    start = await outbox_position(billing_db)

    down = await billing.post(
        f"/v1/subscriptions/{mobile.id}/upgrade",
        json={"product_code": "BB-1000"},
        headers={**caller.headers, **idempotency_key()},
    )
    assert down.status_code == 422
    assert down.json()["type"].endswith("/upgrade-not-allowed") and down.json()["allowed"] == [
        "MOBIL-50",
        "MOBIL-FRI",
    ]

    up = await billing.post(
        f"/v1/subscriptions/{mobile.id}/upgrade",
        json={"product_code": "MOBIL-FRI"},
        headers={**caller.headers, **idempotency_key()},
    )
    assert up.status_code == 201 and up.json()["status"] == "completed"
    assert up.json()["from_product_code"] == "MOBIL-10"
    [upgraded] = await events_since(billing_db, start, SubscriptionUpgraded)
    assert upgraded.to_product_code == "MOBIL-FRI" and str(upgraded.ordered_by) == caller.user_id
    after = (await billing.get(f"/v1/subscriptions/{mobile.id}", headers=caller.headers)).json()
    assert after["product"]["code"] == "MOBIL-FRI" and after["product"]["upgrades_to"] == []

    elsewhere = await active_subscription(billing_db, "10000023", "TLF-FAST")  # not granted to the colleague
    hidden = await billing.post(
        f"/v1/subscriptions/{elsewhere.id}/upgrade",
        json={"product_code": "TLF-OMST"},
        headers={**caller.headers, **idempotency_key()},
    )
    assert hidden.status_code == 404


# --- master data and invoice format (S10) -----------------------------------------------------


async def test_master_data_changes_need_the_current_etag(
    billing: httpx.AsyncClient, tokens: Tokens, billing_db: Database
) -> None:
    admin = tokens.group_admin()
    read = await billing.get("/v1/companies/41204559/master-data", headers=admin.headers)
    assert read.status_code == 200 and read.json()["city"] == "Odense C"
    tag = read.headers["etag"]
    start = await outbox_position(billing_db)

    missing = await billing.patch(
        "/v1/companies/41204559/master-data", json={"city": "Odense M"}, headers=admin.headers
    )
    assert missing.status_code == 428, missing.text
    changed = await billing.patch(
        "/v1/companies/41204559/master-data",
        json={"street": "Rugårdsvej 10", "postal_code": "5000", "contact_phone": "66 12 34 99"},
        headers={**admin.headers, "If-Match": tag},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["contact_phone"] == "+4566123499" and changed.headers["etag"] != tag
    stale = await billing.patch(
        "/v1/companies/41204559/master-data",
        json={"city": "Svendborg"},
        headers={**admin.headers, "If-Match": tag},
    )
    assert stale.status_code == 412 and stale.json()["current_etag"] == changed.headers["etag"]

    [event] = await events_since(billing_db, start, MasterDataChanged)
    assert event.street == "Rugårdsvej 10" and str(event.changed_by) == admin.user_id
    async with billing_db.transaction() as session:
        entry = await session.scalar(
            select(AuditEntry).where(
                AuditEntry.actor_id == admin.user_id, AuditEntry.action == "master_data.changed"
            )
        )
    assert entry is not None and json.loads(entry.details)["before"]["street"] == "Kongensgade 88"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"contact_phone": "12"}, "contact_phone"),
        ({"contact_phone": "+46701234567"}, "contact_phone"),
        ({"postal_code": "ABCD"}, "postal_code"),
        ({"contact_email": "not-an-email"}, "contact_email"),
    ],
)
async def test_invalid_master_data_is_refused_naming_the_field(
    billing: httpx.AsyncClient, tokens: Tokens, body: dict, field: str
) -> None:
    response = await billing.patch(
        "/v1/companies/35657193/master-data",
        json=body,
        headers={**tokens.group_admin().headers, "If-Match": '"1"'},
    )
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == field


async def test_master_data_of_a_company_needs_all_of_its_accounts_and_the_function(
    billing: httpx.AsyncClient, tokens: Tokens
) -> None:
    limited = tokens.caller(COLLEAGUE_GRANT, ["master_data"])
    assert (
        await billing.get("/v1/companies/37826111/master-data", headers=limited.headers)
    ).status_code == 200
    response = await billing.patch(
        "/v1/companies/37826111/master-data",
        json={"city": "Aarhus N"},
        headers={**limited.headers, "If-Match": "*"},
    )
    assert response.status_code == 403
    assert (
        await billing.get("/v1/companies/22109340/master-data", headers=limited.headers)
    ).status_code == 404
    no_function = tokens.caller([{"cvr": "37826111", "accounts": "all"}], ["invoices"])
    assert (
        await billing.get("/v1/companies/37826111/master-data", headers=no_function.headers)
    ).status_code == 403


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"format": "oioubl", "gln": "5790000435967"}, "oioubl.gln"),  # wrong check digit
        ({"format": "oioubl", "gln": "579000043596"}, "oioubl.gln"),  # 12 digits
        ({"format": "pdf_email", "email": "faktura@"}, "pdf_email.email"),
        ({"format": "peppol", "scheme": "0184", "endpoint_id": "DK12345678"}, "endpoint_id"),
        ({"format": "peppol", "scheme": "9999", "endpoint_id": "x"}, "peppol.scheme"),
        ({"format": "fax"}, "body"),  # the message lists the formats there are
    ],
)
async def test_invalid_invoice_formats_are_refused_naming_the_field(
    billing: httpx.AsyncClient, tokens: Tokens, body: dict, field: str
) -> None:
    response = await billing.put(
        "/v1/accounts/10000021/invoice-format",
        json=body,
        headers={**tokens.group_admin().headers, "If-Match": "*"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field


async def test_invoice_format_is_set_with_the_etag_and_announced(
    billing: httpx.AsyncClient, tokens: Tokens, billing_db: Database
) -> None:
    caller = tokens.caller(COLLEAGUE_GRANT, ["master_data"])
    read = await billing.get("/v1/accounts/10000022/invoice-format", headers=caller.headers)
    assert read.json()["format"] == "paper"
    start = await outbox_position(billing_db)
    oioubl = await billing.put(
        "/v1/accounts/10000022/invoice-format",
        json={"format": "oioubl", "gln": "5790000435968"},
        headers={**caller.headers, "If-Match": read.headers["etag"]},
    )
    assert oioubl.status_code == 200 and oioubl.json()["gln"] == "5790000435968"
    stale = await billing.put(
        "/v1/accounts/10000022/invoice-format",
        json={"format": "paper"},
        headers={**caller.headers, "If-Match": read.headers["etag"]},
    )
    assert stale.status_code == 412
    peppol = await billing.put(
        "/v1/accounts/10000022/invoice-format",
        json={"format": "peppol", "scheme": "0184", "endpoint_id": "DK37826111"},
        headers={**caller.headers, "If-Match": oioubl.headers["etag"]},
    )
    assert peppol.status_code == 200 and peppol.json()["endpoint_id"] == "37826111"
    events = await events_since(billing_db, start, InvoiceFormatChanged)
    assert [e.format for e in events] == ["oioubl", "peppol"]
    other = await billing.get("/v1/accounts/10000023/invoice-format", headers=caller.headers)
    assert other.status_code == 404


# --- telephony and Personligt Nummer (S11) ----------------------------------------------------


async def test_call_forwarding_voicemail_and_caller_id_are_validated_and_announced(
    billing: httpx.AsyncClient, tokens: Tokens, billing_db: Database
) -> None:
    caller = tokens.caller([{"cvr": "37826111", "accounts": "all"}], ["telephony"])
    line = await active_subscription(billing_db, "10000023", "TLF-FAST")
    path = f"/v1/subscriptions/{line.id}/settings"
    read = await billing.get(path, headers=caller.headers)
    assert read.status_code == 200 and read.json()["settings"]["call_forwarding"]["mode"] == "off"
    tag = read.headers["etag"]

    for patch, field in (
        ({"call_forwarding": {"mode": "busy"}}, "call_forwarding"),
        ({"call_forwarding": {"mode": "always", "target": "+46701234567"}}, "call_forwarding.target"),
        ({"call_forwarding": {"mode": "always", "target": line.identifier}}, "call_forwarding.target"),
        ({"caller_id": {"presentation": "main_number"}}, "caller_id"),
    ):
        refused = await billing.patch(path, json=patch, headers={**caller.headers, "If-Match": tag})
        assert refused.status_code == 422, patch
        assert refused.json()["errors"][0]["field"] == field, refused.json()

    start = await outbox_position(billing_db)
    done = await billing.patch(
        path,
        json={
            "call_forwarding": {"mode": "no_answer", "target": "20 12 34 56", "no_answer_seconds": 15},
            "caller_id": {"presentation": "hidden"},
        },
        headers={**caller.headers, "If-Match": tag},
    )
    assert done.status_code == 200, done.text
    assert done.json()["settings"]["call_forwarding"]["target"] == "+4520123456"
    assert (
        await billing.patch(path, json={}, headers={**caller.headers, "If-Match": tag})
    ).status_code == 412
    [event] = await events_since(billing_db, start, SubscriptionSettingsChanged)
    assert event.settings["caller_id"]["presentation"] == "hidden" and event.product_kind == "telephony"


async def test_personal_number_members_strategy_and_opening_hours(
    billing: httpx.AsyncClient, tokens: Tokens, billing_db: Database
) -> None:
    caller = tokens.caller([{"cvr": "37826111", "accounts": "all"}], ["telephony"])
    pn = await active_subscription(billing_db, "10000023", "PN-")
    path = f"/v1/subscriptions/{pn.id}/settings"
    tag = (await billing.get(path, headers=caller.headers)).headers["etag"]
    overlapping = {
        "members": [{"number": "+4520123456", "label": "Mobil"}],
        "schedule": [
            {"days": ["mon", "tue"], "opens": "08:00", "closes": "12:00"},
            {"days": ["tue"], "opens": "11:30", "closes": "16:00"},
        ],
    }
    refused = await billing.patch(path, json=overlapping, headers={**caller.headers, "If-Match": tag})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "schedule.1"
    assert "tue" in refused.json()["errors"][0]["message"]
    twice = {"members": [{"number": "+4520123456"}, {"number": "20123456"}]}
    assert (
        await billing.patch(path, json=twice, headers={**caller.headers, "If-Match": tag})
    ).status_code == 422
    foreign = {"members": [{"number": "+4412345678"}]}
    response = await billing.patch(path, json=foreign, headers={**caller.headers, "If-Match": tag})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "members.0.number"

    good = {
        "members": [
            {"number": "+4520123456", "label": "Mobil"},
            {"number": "+4533123456", "label": "Kontor"},
        ],
        "ring_strategy": "in_order",
        "schedule": [{"days": ["mon", "tue", "wed", "thu", "fri"], "opens": "08:00", "closes": "16:00"}],
        "outside_hours": "voicemail",
    }
    done = await billing.patch(path, json=good, headers={**caller.headers, "If-Match": tag})
    assert done.status_code == 200, done.text
    assert done.json()["settings"]["ring_strategy"] == "in_order"
    assert [m["number"] for m in done.json()["settings"]["members"]] == ["+4520123456", "+4533123456"]


async def test_settings_need_the_telephony_function_and_a_product_that_has_them(
    billing: httpx.AsyncClient, tokens: Tokens, billing_db: Database
) -> None:
    broadband = await active_subscription(billing_db, "10000022", "BB-")
    caller = tokens.caller([{"cvr": "37826111", "accounts": "all"}], ["telephony"])
    response = await billing.patch(
        f"/v1/subscriptions/{broadband.id}/settings",
        json={"voicemail": {"enabled": False}},
        headers={**caller.headers, "If-Match": "*"},
    )
    assert response.status_code == 422 and "no telephony settings" in response.json()["detail"]
    no_function = tokens.caller([{"cvr": "37826111", "accounts": "all"}], ["orders"])
    response = await billing.get(f"/v1/subscriptions/{broadband.id}/settings", headers=no_function.headers)
    assert response.status_code == 403


# --- revocation (S12) -------------------------------------------------------------------------


async def test_a_disabled_users_token_is_refused_at_once_and_grant_changes_end_older_tokens(
    billing: httpx.AsyncClient,
    tokens: Tokens,
    billing_db: Database,
    billing_clock: FrozenClock,
    billing_parts: BillingParts,
) -> None:
    user_id = str(uuid.uuid4())
    before = tokens.caller(COLLEAGUE_GRANT, ["invoices"], user_id=user_id)
    assert (await billing.get("/v1/invoices", headers=before.headers)).status_code == 200
    handlers = billing_handlers(billing_parts)

    async def handle(event: Event) -> None:
        envelope = envelope_of(event, billing_clock)
        async with billing_db.transaction() as session:
            await handlers[type(event)](session, envelope)

    billing_clock.advance(timedelta(seconds=2))
    await handle(
        UserDisabled(user_id=uuid.UUID(user_id), tenant_cvr="37826111", disabled_at=billing_clock.now())
    )
    response = await billing.get("/v1/invoices", headers=before.headers)
    assert response.status_code == 401 and "ended" in response.json()["detail"]

    billing_clock.advance(timedelta(seconds=2))
    await handle(
        UserEnabled(user_id=uuid.UUID(user_id), tenant_cvr="37826111", enabled_at=billing_clock.now())
    )
    assert (await billing.get("/v1/invoices", headers=before.headers)).status_code == 401  # ended then
    after_enable = tokens.caller(COLLEAGUE_GRANT, ["invoices"], user_id=user_id)
    billing_clock.advance(timedelta(seconds=2))
    assert (await billing.get("/v1/invoices", headers=after_enable.headers)).status_code == 200

    await handle(
        UserGrantsChanged(
            user_id=uuid.UUID(user_id),
            tenant_cvr="37826111",
            grants=[],
            functions=[],
            changed_at=billing_clock.now(),
        )
    )
    assert (await billing.get("/v1/invoices", headers=after_enable.headers)).status_code == 401
    billing_clock.advance(timedelta(seconds=2))
    fresh = tokens.caller(COLLEAGUE_GRANT, ["invoices"], user_id=user_id)
    assert (await billing.get("/v1/invoices", headers=fresh.headers)).status_code == 200


# --- the monthly invoice run (S8) -------------------------------------------------------------


async def test_the_monthly_run_issues_the_closed_month_once_and_announces_it(
    billing_db: Database, billing_parts: BillingParts
) -> None:
    run = billing_parts.invoice_run
    start = await outbox_position(billing_db)
    first = await run.run_once()
    assert first.period.isoformat() == "2026-10-01" and first.invoices > 0
    assert (await run.run_once()).invoices == 0  # idempotent
    issued = await events_since(billing_db, start, InvoiceIssued)
    assert len(issued) == first.invoices
    async with billing_db.transaction() as session:
        for event in issued:
            invoice = await session.get(Invoice, str(event.invoice_id))
            assert invoice is not None and invoice.issued_on == NOW.date()
            assert invoice.due_on == NOW.date() + timedelta(days=14)
            lines = list(
                await session.scalars(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id))
            )
            usage = await session.scalar(
                select(func.coalesce(func.sum(UsageRecord.amount_ore), 0)).where(
                    UsageRecord.account_number == invoice.account_number,
                    UsageRecord.period == invoice.period_start,
                )
            )
            assert sum(line.amount_ore for line in lines if line.category != "subscription") == usage
            assert sum(line.amount_ore for line in lines) == event.amount_excl_vat_ore
