"""Billing's pages in the menu (S8–S11): each entry shows only to users with its function, and
the billing the portal's tests put in-process trusts the tokens identity signs."""

# ruff: noqa: F811 - fixtures are imported and used by name

from __future__ import annotations

import re

import httpx
import pytest

from tests.portal.conftest import log_in_through_portal
from tests.security.world import PARENT, SUBSIDIARY, add_user, bearer, company_group, group_administrator

MENU_ENTRY = re.compile(r'<li><a href="(/[^"]*)"')
BILLING_PAGES = {"/fakturaer", "/forbrug", "/bestil", "/stamdata", "/telefoni"}


@pytest.fixture
def portal_transports(identity_transport, billing_transport) -> dict[str, httpx.AsyncBaseTransport]:
    return {"identity": identity_transport, "billing": billing_transport}


@pytest.mark.parametrize(
    ("functions", "shown"),
    [
        (["invoices"], {"/fakturaer", "/forbrug"}),
        (["orders", "master_data"], {"/bestil", "/stamdata"}),
        (["telephony"], {"/telefoni"}),
        (["invoices", "orders", "master_data", "telephony"], BILLING_PAGES),
    ],
)
async def test_the_menu_offers_each_billing_page_only_with_its_function(
    db, clock, sealer, portal, functions, shown
) -> None:
    await company_group(db, clock)
    user = await add_user(db, clock, grants={SUBSIDIARY: ["10000021"]}, functions=functions)
    await log_in_through_portal(portal, db, sealer, user.username)
    overview = await portal.get("/oversigt")
    assert overview.status_code == 200, overview.text
    assert set(MENU_ENTRY.findall(overview.text)) & BILLING_PAGES == shown


async def test_billing_in_process_answers_a_token_identity_signed_within_its_grants(
    db, clock, settings, billing_transport
) -> None:
    await company_group(db, clock)
    admin = await group_administrator(db, clock)
    async with httpx.AsyncClient(transport=billing_transport, base_url="http://billing") as billing:
        answer = await billing.get("/v1/invoices", params={"limit": 200}, headers=await bearer(db, clock, settings, admin))
        refused = await billing.get("/v1/invoices", headers={"Authorization": "Bearer not-a-token"})
    assert answer.status_code == 200, answer.text
    assert {invoice["cvr"] for invoice in answer.json()["items"]} == {PARENT, SUBSIDIARY}
    assert refused.status_code == 401
