"""Billing's usage summed per month and category (`GET /v1/usage/summary`, S8) and the accounts
a caller may use (`GET /v1/accounts`, S9, S10): exactly what the caller's grants allow, in the
query; the sums are the rows of `GET /v1/usage` added up; an account's invoice address only for
a caller with `master_data`. Callers with different grants ask at the same time."""

# ruff: noqa: F811 - fixtures are imported from billing_fixtures and used by name

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import date
from typing import Any

import httpx
from sqlalchemy import select, text, update

from services.billing.access import Access
from services.billing.changes import format_of
from services.billing.models import Account, Customer, Subscription, UsageRecord
from services.billing.usage_api import usage_sums
from shared.db import Database
from tests.integration.billing_fixtures import (  # noqa: F401 - fixtures
    GROUP,
    Tokens,
    billing,
    billing_clock,
    billing_db,
    billing_url,
    tokens,
)
from tests.integration.test_billing_reading import COLLEAGUE_GRANT, all_pages

PARENT, SUBSIDIARY, OTHER_COMPANY = "35657193", "37826111", "22109340"
COLLEAGUE_ACCOUNTS = {"10000021", "10000022"}


def summed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`GET /v1/usage`'s rows added up per month, category and unit, in the summary's order."""
    sums: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        cell = sums[(row["period"], row["category"], row["unit"])]
        cell[0] += row["quantity"]
        cell[1] += row["amount_ore"]
    return [
        {"period": period, "category": category, "unit": unit, "quantity": q, "amount_ore": ore}
        for (period, category, unit), (q, ore) in sorted(sums.items())
    ]


async def summary(http: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    answer = await http.get("/v1/usage/summary", params=params, headers=headers)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


# --- usage summed ------------------------------------------------------------------------------


async def test_the_usage_summary_is_the_usage_rows_summed_for_each_caller_at_once(
    billing: httpx.AsyncClient, tokens: Tokens
) -> None:
    admin = tokens.group_admin()
    colleague = tokens.caller(COLLEAGUE_GRANT, ["invoices"])
    asks = [
        (admin, {}),
        (admin, {"from": "2026-05-01", "to": "2026-10-31"}),
        (admin, {"cvr": SUBSIDIARY, "from": "2026-01-15"}),
        (admin, {"account": ["10000011", "10000023"], "to": "2026-03-01"}),
        (colleague, {}),
        (colleague, {"from": "2026-05-01", "to": "2026-10-31"}),
        # Another company's usage, asked for by name, is nothing rather than a refusal.
        (colleague, {"cvr": PARENT}),
        (colleague, {"account": "10000023"}),
        (admin, {"cvr": OTHER_COMPANY}),
    ]

    answers = await asyncio.gather(
        *(summary(billing, caller.headers, **params) for caller, params in asks),
        *(all_pages(billing, "/v1/usage", caller.headers, limit=1000, **params) for caller, params in asks),
    )
    sums, rows = answers[: len(asks)], answers[len(asks) :]

    for (_caller, params), got, listed in zip(asks, sums, rows, strict=True):
        assert got == summed(listed), params
    everything, colleagues, parent_asked, other_account, foreign = (sums[i] for i in (0, 4, 6, 7, 8))
    assert len({row["period"] for row in everything}) == 12  # twelve months of usage
    assert [(r["period"], r["category"]) for r in everything] == sorted(
        (r["period"], r["category"]) for r in everything
    )  # oldest month first
    assert {(r["category"], r["unit"]) for r in everything} == {
        ("calls", "minutes"),
        ("data", "MB"),
        ("sms", "messages"),
    }
    assert colleagues and colleagues != everything
    assert parent_asked == other_account == foreign == []
    # The colleague's sums are those of their accounts only.
    assert {row["account_number"] for row in rows[4]} == {"10000021"}  # 10000022 is broadband


async def test_the_usage_summary_refuses_what_the_usage_list_refuses_in_the_same_words(
    billing: httpx.AsyncClient, tokens: Tokens
) -> None:
    admin = tokens.group_admin()
    for params in (
        {"from": "2026-09-01", "to": "2026-01-01"},
        {"from": "1780000000"},
        {"account": "x1"},
        {"cvr": "12345678"},
    ):
        listed, summed_up = await asyncio.gather(
            billing.get("/v1/usage", params=params, headers=admin.headers),
            billing.get("/v1/usage/summary", params=params, headers=admin.headers),
        )
        assert summed_up.status_code == listed.status_code == 422, params
        assert summed_up.headers["content-type"] == "application/problem+json"
        assert summed_up.json()["errors"] == listed.json()["errors"], params

    orders_only = tokens.caller([{"cvr": PARENT, "accounts": "all"}], ["orders"])
    refused = await billing.get("/v1/usage/summary", headers=orders_only.headers)
    assert refused.status_code == 403 and "'invoices'" in refused.json()["detail"]


async def test_the_usage_summary_is_planned_on_a_usage_index_of_the_company_or_of_the_accounts(
    billing_db: Database,
) -> None:
    """The summary's own statement, explained: a whole company's by a company index, a few
    accounts' by `ix_usage_records_account_period`. SQLite takes the covering
    `ix_usage_records_cvr_period_sums` (migration 0005). PostgreSQL would scan the small demo
    table whole; with sequential scans off and the table's statistics gathered (as autovacuum
    does in service), it takes one of the two company indexes, `ix_usage_records_cvr_period` or
    the covering one: which depends on those statistics, so either is right here."""
    whole = Access("u", frozenset({"invoices"}), frozenset(GROUP), {})
    limited = Access("u", frozenset({"invoices"}), frozenset(), {SUBSIDIARY: frozenset(COLLEAGUE_ACCOUNTS)})
    plans = {}
    if billing_db.engine.dialect.name == "postgresql":
        # As autovacuum leaves a table in service: statistics gathered and the visibility map
        # set, without which an index-only scan of the covering index costs a heap visit a row
        # and the planner's choice between the two company indexes is a coin toss.
        async with billing_db.engine.connect() as autocommit:
            await autocommit.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("VACUUM (ANALYZE) usage_records"))
    async with billing_db.transaction() as session:
        connection = await session.connection()
        sqlite = connection.dialect.name == "sqlite"
        if not sqlite:
            await session.execute(text("SET LOCAL enable_seqscan = off"))
        for name, access in (("whole", whole), ("limited", limited)):
            where = access.narrowed(UsageRecord.cvr, UsageRecord.account_number, cvr=None)
            where.append(UsageRecord.period >= date(2026, 5, 1))
            statement = usage_sums(where).compile(connection.sync_connection, compile_kwargs={"literal_binds": True})
            explain = ("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + str(statement)
            plans[name] = "\n".join(str(row) for row in (await session.execute(text(explain))).all())
    company_index = "ix_usage_records_cvr_period_sums" if sqlite else "ix_usage_records_cvr_period"
    assert company_index in plans["whole"], plans["whole"]
    assert "ix_usage_records_account_period" in plans["limited"], plans["limited"]
    assert not any("Seq Scan" in plan or "SCAN usage_records" in plan for plan in plans.values()), plans


# --- accounts ----------------------------------------------------------------------------------


async def test_the_accounts_are_the_granted_ones_with_company_and_format_by_keyset_pages(
    billing: httpx.AsyncClient, tokens: Tokens, billing_db: Database
) -> None:
    async with billing_db.transaction() as session:
        # An account with no subscription at all is an account too (a new customer's).
        session.add(Account(account_number="10000029", cvr=SUBSIDIARY, name="Ny afdeling"))
        await session.execute(
            update(Account)
            .where(Account.account_number == "10000021")
            .values(invoice_format="pdf_email", invoice_email="bogholderi@datter.dk")
        )
    async with billing_db.transaction() as session:
        expected = {
            a.account_number: (a, name)
            for a, name in (
                await session.execute(
                    select(Account, Customer.name)
                    .join(Customer, Customer.cvr == Account.cvr)
                    .where(Account.cvr.in_(GROUP))
                )
            ).all()
        }
        with_subscriptions = set(await session.scalars(select(Subscription.account_number)))
    assert "10000029" in expected and "10000029" not in with_subscriptions

    admin = tokens.group_admin()
    listed = await all_pages(billing, "/v1/accounts", admin.headers, limit=3)

    assert [a["account_number"] for a in listed] == sorted(expected)  # every one once, in order
    for item in listed:
        account, company_name = expected[item["account_number"]]
        address = {k: v for k, v in format_of(account).items() if k != "format"}
        assert item == {
            "account_number": account.account_number,
            "name": account.name,
            "cvr": account.cvr,
            "company_name": company_name,
            "invoice_format": account.invoice_format,
            "invoice_address": {"email": None, "gln": None, "scheme": None, "endpoint_id": None, **address},
        }
    by_number = {a["account_number"]: a for a in listed}
    assert by_number["10000021"]["invoice_address"]["email"] == "bogholderi@datter.dk"
    one_company = await all_pages(billing, "/v1/accounts", admin.headers, cvr=SUBSIDIARY)
    assert {a["account_number"] for a in one_company} == {
        n for n, (a, _) in expected.items() if a.cvr == SUBSIDIARY
    }


async def test_each_caller_lists_only_their_accounts_and_sees_addresses_only_with_master_data_at_once(
    billing: httpx.AsyncClient, tokens: Tokens
) -> None:
    admin = tokens.group_admin()
    colleague = tokens.caller(COLLEAGUE_GRANT, ["orders"])
    colleague_with_master_data = tokens.caller(COLLEAGUE_GRANT, ["master_data"])
    telephony = tokens.caller([{"cvr": PARENT, "accounts": "all"}], ["telephony"])
    invoices = tokens.caller([{"cvr": PARENT, "accounts": ["10000012"]}], ["invoices"])
    outsider = tokens.caller([{"cvr": OTHER_COMPANY, "accounts": "all"}], ["orders"])
    callers = [admin, colleague, colleague_with_master_data, telephony, invoices, outsider]

    answers = await asyncio.gather(
        *(all_pages(billing, "/v1/accounts", c.headers, limit=2) for c in callers),
        *(all_pages(billing, "/v1/accounts", c.headers, cvr=PARENT) for c in callers),
    )
    lists, parent_asked = answers[: len(callers)], answers[len(callers) :]

    numbers = [{a["account_number"] for a in found} for found in lists]
    assert numbers[1] == numbers[2] == COLLEAGUE_ACCOUNTS
    assert numbers[3] and all(a["cvr"] == PARENT for a in lists[3])
    assert numbers[4] == {"10000012"}
    assert numbers[5] and all(a["cvr"] == OTHER_COMPANY for a in lists[5])
    assert numbers[0] >= numbers[1] | numbers[3] and not numbers[0] & numbers[5]
    # The format is every caller's; where it is sent only for master_data.
    assert all(a["invoice_address"] is not None for a in lists[0] + lists[2])
    assert all(a["invoice_address"] is None and a["invoice_format"] for a in lists[1] + lists[3] + lists[4])
    # A company outside the grants, asked for by name, is nothing.
    assert parent_asked[1] == parent_asked[2] == parent_asked[5] == []
    assert {a["account_number"] for a in parent_asked[4]} == {"10000012"}


async def test_the_accounts_list_refuses_a_caller_without_any_billing_function_and_a_made_up_cursor(
    billing: httpx.AsyncClient, tokens: Tokens
) -> None:
    nobody = tokens.caller([{"cvr": PARENT, "accounts": "all"}], ["user_admin"])
    refused = await billing.get("/v1/accounts", headers=nobody.headers)
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("/missing-function")
    for function in ("'orders'", "'master_data'", "'telephony'", "'invoices'"):
        assert function in refused.json()["detail"]

    admin = tokens.group_admin()
    for cursor in ("bm9wZQ", "1234"):
        bad = await billing.get("/v1/accounts", params={"cursor": cursor}, headers=admin.headers)
        assert bad.status_code == 422
        assert [e["field"] for e in bad.json()["errors"]] == ["cursor"]
