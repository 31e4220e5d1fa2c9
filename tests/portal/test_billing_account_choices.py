"""The accounts Bestil og opgrader (S9) and Stamdata og fakturaformat (S10) offer are billing's
list of the accounts the user may use (`GET /v1/accounts`), an account without subscriptions
included; the order page lists the subscriptions a page of billing's at a time, never all of
them at once. Users with different grants, at the same time, each get their own."""

# ruff: noqa: F811 - fixtures are imported and used by name
from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from sqlalchemy import select

from services.billing.models import Account, Subscription
from tests.integration.billing_fixtures import billing_db  # noqa: F401 - fixture
from tests.portal.billing_forms import Browsers, browsers, form_fields, signed_in, text_of  # noqa: F401
from tests.portal.test_invoice_pages import Recording
from tests.security.world import PARENT, SUBSIDIARY, company_group

# An account billing has no subscription on yet (a department that has ordered nothing).
EMPTY_ACCOUNT = "10000019"
ACCOUNT_OPTION = re.compile(r'<option value="(\d+)"[^>]*>([^<]*)</option>')
SUBSCRIPTION_ROW = re.compile(r'<tr id="abonnement-([^"]+)">')
NEXT = re.compile(r'<a href="(/bestil\?side=[^"#]+)#abonnementer" rel="next">')


@pytest.fixture
def recording(billing_transport) -> Recording:
    return Recording(billing_transport)


@pytest.fixture
def portal_transports(identity_transport, recording: Recording) -> dict[str, httpx.AsyncBaseTransport]:
    return {"identity": identity_transport, "billing": recording}


@pytest.fixture
async def empty_account(billing_db) -> str:
    async with billing_db.transaction() as session:
        if await session.get(Account, EMPTY_ACCOUNT) is None:
            session.add(Account(account_number=EMPTY_ACCOUNT, cvr=PARENT, name="Ny afdeling"))
    return EMPTY_ACCOUNT


def account_choices(page: httpx.Response) -> dict[str, str]:
    """The order form's account select: number → the words of its option."""
    select_body = page.text.split('name="account_number"', 1)[1].split("</select>", 1)[0]
    return {number: words for number, words in ACCOUNT_OPTION.findall(select_body)}


def format_links(page: httpx.Response) -> set[str]:
    return set(re.findall(r'href="/stamdata/konto/(\d+)"', page.text))


async def subscriptions_of(billing_db, *where) -> set[str]:  # noqa: ANN001 - test helper
    async with billing_db.transaction() as session:
        return set(await session.scalars(select(Subscription.id).where(*where)))


async def test_the_order_form_offers_every_account_billing_lists_with_its_name_an_empty_one_included(
    db, clock, sealer, portal, empty_account
) -> None:
    await company_group(db, clock)
    await signed_in(portal, db, clock, sealer, grants={PARENT: "all"}, functions=["orders"])

    page = await portal.get("/bestil")

    assert page.status_code == 200, page.text
    choices = account_choices(page)
    assert set(choices) == {"10000011", "10000012", empty_account}
    assert "Ny afdeling" in choices[empty_account]
    form = form_fields(page.text, "/bestil")
    placed = await portal.post(
        "/bestil", data={**form, "account_number": empty_account, "product_code": "TLF-FAST"}
    )
    assert placed.status_code == 303, text_of(placed.text)


async def test_the_order_page_lists_the_subscriptions_a_page_at_a_time_each_once(
    db, clock, sealer, portal, billing_db, recording, monkeypatch
) -> None:
    from services.portal.pages import billing_orders

    monkeypatch.setattr(billing_orders, "SUBSCRIPTIONS_PER_PAGE", 4)
    await company_group(db, clock)
    await signed_in(portal, db, clock, sealer, grants={PARENT: "all", SUBSIDIARY: "all"}, functions=["orders"])
    expected = await subscriptions_of(billing_db, Subscription.cvr.in_([PARENT, SUBSIDIARY]))

    seen: list[str] = []
    path: str | None = "/bestil"
    pages = 0
    while path is not None:
        recording.paths.clear()
        page = await portal.get(path.replace("&amp;", "&"))
        assert page.status_code == 200, page.text
        # One page of billing's subscriptions for each page of ours, never all of them.
        assert recording.paths.count("/v1/subscriptions") == 1, recording.paths
        rows = SUBSCRIPTION_ROW.findall(page.text)
        assert 0 < len(rows) <= 4
        seen += rows
        pages += 1
        found = NEXT.search(page.text)
        path = found.group(1) if found else None
        if pages > 1:
            assert 'href="/bestil#abonnementer"' in page.text  # back to the first page
    assert pages > 2
    assert len(seen) == len(set(seen)) and set(seen) == expected


async def test_an_upgrade_refused_on_a_later_page_is_shown_on_that_page(
    db, clock, sealer, portal, monkeypatch
) -> None:
    from services.portal.pages import billing_orders

    monkeypatch.setattr(billing_orders, "SUBSCRIPTIONS_PER_PAGE", 4)
    await company_group(db, clock)
    await signed_in(portal, db, clock, sealer, grants={PARENT: "all", SUBSIDIARY: "all"}, functions=["orders"])
    first = await portal.get("/bestil")
    second_path = NEXT.search(first.text)
    assert second_path
    second = await portal.get(second_path.group(1).replace("&amp;", "&"))
    forms = re.findall(r'<form method="post" action="(/bestil/opgrader/[^"]+)"', second.text)
    assert forms, "no upgradable subscription on the second page"
    action = forms[0]
    fields = form_fields(second.text, action)
    assert fields["side"]

    refused = await portal.post(action, data={**fields, "product_code": "NO-SUCH-PRODUCT"})

    assert refused.status_code == 422
    subscription_id = action.rsplit("/", 1)[1]
    assert f'id="f-upgrade-{subscription_id}-error"' in refused.text
    assert SUBSCRIPTION_ROW.findall(refused.text) == SUBSCRIPTION_ROW.findall(second.text)


async def test_master_data_lists_every_account_with_its_format_for_a_user_with_only_master_data(
    db, clock, sealer, portal, empty_account
) -> None:
    await company_group(db, clock)
    await signed_in(
        portal, db, clock, sealer, grants={PARENT: "all", SUBSIDIARY: ["10000021"]}, functions=["master_data"]
    )

    page = await portal.get("/stamdata")

    assert page.status_code == 200, page.text
    assert format_links(page) == {"10000011", "10000012", empty_account, "10000021"}
    words = text_of(page.text)
    assert "Ny afdeling" in words
    assert re.search(r"Ny afdeling: (PDF på e-mail|OIOUBL|Peppol|Papir med posten)", words), words


async def test_users_with_different_grants_each_get_their_own_accounts_at_the_same_time(
    db, clock, sealer, browsers: Browsers, empty_account
) -> None:
    await company_group(db, clock)
    people = {
        "group": ({PARENT: "all", SUBSIDIARY: "all"}, ["orders", "master_data"]),
        "one_subsidiary_account": ({SUBSIDIARY: ["10000021"]}, ["orders", "master_data"]),
        "one_parent_account": ({PARENT: ["10000012"]}, ["orders"]),
        "parent_master_data": ({PARENT: "all"}, ["master_data"]),
    }
    signed: dict[str, httpx.AsyncClient] = {}
    for name, (grants, functions) in people.items():
        signed[name] = browsers()
        await signed_in(signed[name], db, clock, sealer, grants=grants, functions=functions)
    asks = [
        (name, path)
        for name in people
        for path in ("/bestil", "/stamdata")
        for _ in range(2)
    ]

    answers = await asyncio.gather(*(signed[name].get(path) for name, path in asks))

    subsidiary = {"10000021", "10000022", "10000023"}
    parent = {"10000011", "10000012", empty_account}
    expected = {
        "group": parent | subsidiary,
        "one_subsidiary_account": {"10000021"},
        "one_parent_account": {"10000012"},
        "parent_master_data": parent,
    }
    for (name, path), answer in zip(asks, answers, strict=True):
        functions = people[name][1]
        needed = "orders" if path == "/bestil" else "master_data"
        if needed not in functions:
            assert answer.status_code == 403, (name, path)
            continue
        assert answer.status_code == 200, (name, path, answer.text)
        shown = set(account_choices(answer)) if path == "/bestil" else format_links(answer)
        assert shown == expected[name], (name, path, shown)
