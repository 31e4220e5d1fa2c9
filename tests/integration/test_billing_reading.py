"""Invoices and usage (S8, S14) through billing's API: exactly what the caller's grants allow,
applied in the query; ids outside the grants answer 404; pages and the CSV export agree."""

# ruff: noqa: F811 - fixtures are imported from billing_fixtures and used by name

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import date, timedelta

import httpx
from sqlalchemy import select

from services.billing.models import Invoice, InvoiceLine
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

PROBLEM = "application/problem+json"
COLLEAGUE_GRANT = [{"cvr": "37826111", "accounts": ["10000021", "10000022"]}]


async def all_pages(
    http: httpx.AsyncClient, path: str, headers: dict[str, str], **params: object
) -> list[dict]:
    items: list[dict] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await http.get(path, params=query, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_the_group_administrator_sees_the_parent_and_every_subsidiary(
    billing: httpx.AsyncClient, tokens: Tokens, billing_db: Database
) -> None:
    admin = tokens.group_admin()
    invoices = await all_pages(billing, "/v1/invoices", admin.headers, limit=7)
    async with billing_db.transaction() as session:
        expected = set(await session.scalars(select(Invoice.id).where(Invoice.cvr.in_(GROUP))))
    assert {i["id"] for i in invoices} == expected
    assert {i["cvr"] for i in invoices} == set(GROUP)  # parent and subsidiaries, S8 and S14
    assert len(invoices) == len(expected)  # the pages neither repeat nor skip
    keys = [(i["issued_on"], i["id"]) for i in invoices]
    assert keys == sorted(keys, reverse=True)  # newest first
    assert all(i["amount_incl_vat_ore"] == i["amount_excl_vat_ore"] + i["vat_ore"] for i in invoices)
    assert all(i["vat_ore"] == (i["amount_excl_vat_ore"] * 25 + 50) // 100 for i in invoices)


async def test_a_colleague_limited_to_two_accounts_sees_only_those_and_404_for_every_other_id(
    billing: httpx.AsyncClient, tokens: Tokens, billing_db: Database
) -> None:
    colleague = tokens.caller(COLLEAGUE_GRANT, ["invoices"])
    mine = await all_pages(billing, "/v1/invoices", colleague.headers)
    assert mine and {i["account_number"] for i in mine} == {"10000021", "10000022"}

    async with billing_db.transaction() as session:
        others = list(
            await session.scalars(
                select(Invoice.id).where(Invoice.account_number.not_in(["10000021", "10000022"]))
            )
        )
    assert others
    for invoice_id in others:
        response = await billing.get(f"/v1/invoices/{invoice_id}", headers=colleague.headers)
        assert response.status_code == 404, invoice_id
        assert response.headers["content-type"] == PROBLEM
    unknown = await billing.get(
        "/v1/invoices/00000000-0000-0000-0000-000000000000", headers=colleague.headers
    )
    assert unknown.json()["detail"] == response.json()["detail"]  # not there and not yours read the same

    # Filters can only narrow: another company or account gives nothing, not an error that leaks.
    for params in ({"cvr": "35657193"}, {"account": "10000023"}, {"cvr": "22109340"}):
        page = await billing.get("/v1/invoices", params=params, headers=colleague.headers)
        assert page.status_code == 200 and page.json()["items"] == [], params

    detail = (await billing.get(f"/v1/invoices/{mine[0]['id']}", headers=colleague.headers)).json()
    assert detail["lines"]
    assert sum(line["amount_ore"] for line in detail["lines"]) == detail["amount_excl_vat_ore"]


async def test_invoice_filters_by_company_account_and_period(
    billing: httpx.AsyncClient, tokens: Tokens
) -> None:
    admin = tokens.group_admin()
    subsidiary = await all_pages(billing, "/v1/invoices", admin.headers, cvr="41204559")
    assert subsidiary and {i["cvr"] for i in subsidiary} == {"41204559"}
    one = await all_pages(billing, "/v1/invoices", admin.headers, account=["10000031", "10000011"])
    assert {i["account_number"] for i in one} == {"10000031", "10000011"}
    september = await all_pages(
        billing, "/v1/invoices", admin.headers, **{"from": "2026-09-01", "to": "2026-09-30"}
    )
    assert september and {i["period_start"] for i in september} == {"2026-09-01"}
    bad = await billing.get(
        "/v1/invoices", params={"from": "2026-09-01", "to": "2026-01-01"}, headers=admin.headers
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "from"


async def test_a_cursor_that_was_not_given_out_is_refused_clearly(
    billing: httpx.AsyncClient, tokens: Tokens
) -> None:
    response = await billing.get(
        "/v1/invoices", params={"cursor": "bm9wZQ"}, headers=tokens.group_admin().headers
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "cursor", "message": "is not a cursor this API gave out; start again without one"}
    ]


async def test_without_the_invoices_function_the_answer_is_403_naming_it(
    billing: httpx.AsyncClient, tokens: Tokens
) -> None:
    caller = tokens.caller([{"cvr": "35657193", "accounts": "all"}], ["orders"])
    for path in ("/v1/invoices", "/v1/usage"):
        response = await billing.get(path, headers=caller.headers)
        assert response.status_code == 403
        body = response.json()
        assert body["type"].endswith("/missing-function") and "'invoices'" in body["detail"]


async def test_tokens_that_are_missing_foreign_or_expired_get_401(
    billing: httpx.AsyncClient, tokens: Tokens, billing_clock
) -> None:
    assert (await billing.get("/v1/invoices")).status_code == 401
    stranger = Tokens(billing_clock).group_admin()  # signed by a key identity never published
    response = await billing.get("/v1/invoices", headers=stranger.headers)
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
    admin = tokens.group_admin()
    billing_clock.advance(timedelta(minutes=6))
    assert (await billing.get("/v1/invoices", headers=admin.headers)).status_code == 401


async def test_usage_filters_and_csv_agree_with_the_invoice_lines_of_the_period(
    billing: httpx.AsyncClient, tokens: Tokens, billing_db: Database
) -> None:
    colleague = tokens.caller(COLLEAGUE_GRANT, ["invoices"])
    period = {"from": "2026-08-01", "to": "2026-08-31"}
    rows = await all_pages(billing, "/v1/usage", colleague.headers, limit=9, **period)
    assert rows and {r["account_number"] for r in rows} <= {"10000021", "10000022"}
    assert {r["period"] for r in rows} == {"2026-08-01"}

    export = await billing.get("/v1/usage", params={**period, "format": "csv"}, headers=colleague.headers)
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    exported = list(csv.DictReader(io.StringIO(export.text)))
    assert [(r["subscription_id"], r["category"], int(r["amount_ore"])) for r in exported] == [
        (r["subscription_id"], r["category"], r["amount_ore"]) for r in rows
    ]

    usage_by_account: dict[str, int] = defaultdict(int)
    for r in rows:
        usage_by_account[r["account_number"]] += r["amount_ore"]
    async with billing_db.transaction() as session:
        lines = await session.execute(
            select(Invoice.account_number, InvoiceLine.amount_ore, InvoiceLine.category)
            .join(InvoiceLine, InvoiceLine.invoice_id == Invoice.id)
            .where(
                Invoice.period_start == date.fromisoformat(rows[0]["period"]),
                Invoice.account_number.in_(["10000021", "10000022"]),
            )
        )
        invoiced: dict[str, int] = defaultdict(int)
        for account, amount, category in lines:
            if category != "subscription":
                invoiced[account] += amount
    assert invoiced == usage_by_account

    one = rows[0]["subscription_id"]
    only = await all_pages(billing, "/v1/usage", colleague.headers, subscription=one)
    assert only and {r["subscription_id"] for r in only} == {one}
    assert len({r["period"] for r in only}) == 12  # twelve months of usage


async def test_subscriptions_are_listed_within_the_grants(billing: httpx.AsyncClient, tokens: Tokens) -> None:
    colleague = tokens.caller(COLLEAGUE_GRANT, ["telephony"])
    items = await all_pages(billing, "/v1/subscriptions", colleague.headers, limit=3)
    assert items and {s["account_number"] for s in items} <= {"10000021", "10000022"}
    admin_items = await all_pages(billing, "/v1/subscriptions", tokens.group_admin().headers)
    hidden = [s for s in admin_items if s["account_number"] not in ("10000021", "10000022")]
    assert hidden
    response = await billing.get(f"/v1/subscriptions/{hidden[0]['id']}", headers=colleague.headers)
    assert response.status_code == 404


async def test_csv_export_streams_past_its_batches(
    billing: httpx.AsyncClient, tokens: Tokens, monkeypatch
) -> None:
    from services.billing import usage_api

    monkeypatch.setattr(usage_api, "CsvRows", 7)  # many batches of the keyset walk
    admin = tokens.group_admin()
    rows = await all_pages(billing, "/v1/usage", admin.headers, limit=1000)
    export = await billing.get("/v1/usage", params={"format": "csv"}, headers=admin.headers)
    exported = list(csv.DictReader(io.StringIO(export.text)))
    assert len(rows) > 7 * 3
    assert [(r["subscription_id"], r["period"][:7], r["category"]) for r in rows] == [
        (r["subscription_id"], r["period"], r["category"]) for r in exported
    ]


async def test_cursors_with_tampered_ids_are_refused_not_failed(
    billing: httpx.AsyncClient, tokens: Tokens
) -> None:
    import base64
    import json

    admin = tokens.group_admin()
    for path, raw in (
        ("/v1/usage", ["2026-01-01", 10**30]),
        ("/v1/usage", ["2026-01-01", "x"]),
        ("/v1/usage", ["2026-01-01", -1]),
        ("/v1/invoices", ["2026-01-01", 1]),
        ("/v1/invoices", ["not a date", "x"]),
    ):
        cursor = base64.urlsafe_b64encode(json.dumps(raw).encode()).decode().rstrip("=")
        response = await billing.get(path, params={"cursor": cursor}, headers=admin.headers)
        assert response.status_code == 422, (path, raw)
    infinity = base64.urlsafe_b64encode(b'["2026-01-01", Infinity]').decode().rstrip("=")
    assert (
        await billing.get("/v1/usage", params={"cursor": infinity}, headers=admin.headers)
    ).status_code == 422


async def test_periods_are_dates_written_out(billing: httpx.AsyncClient, tokens: Tokens) -> None:
    admin = tokens.group_admin()
    for path in ("/v1/invoices", "/v1/usage"):
        for value in ("0", "1700000000", "2026-13-01", "26-01-01"):
            response = await billing.get(path, params={"from": value}, headers=admin.headers)
            assert response.status_code == 422, (path, value)
            assert response.json()["errors"][0]["field"] == "from"
