"""Attacks on billing's pages in the portal (S8–S11, S14), as an outsider and as each kind of
user: odd path and query values answered in words (never a server error, never another
resource), forms posted without their CSRF token or with another browser's, an order form's
idempotency key posted by someone it was not given to, and users reaching, through a page's
form or a document's address, what their function or grants do not cover — each fired in
parallel by several browsers at once."""

# ruff: noqa: F811 - fixtures are imported and used by name

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from services.billing.models import Order, Subscription
from services.identity.config import IdentitySettings
from services.portal.i18n import load_texts
from shared.clock import FrozenClock
from shared.db import Database
from shared.sealing import Sealer
from tests.integration.billing_fixtures import active_subscription, billing_db  # noqa: F401 - fixture
from tests.portal.billing_forms import browsers, form_fields, signed_in  # noqa: F401 - fixture
from tests.portal.conftest import csrf_of
from tests.security.world import PARENT, SUBSIDIARY, bearer, company_group

DANISH = load_texts()["da"]
ALL_FUNCTIONS = ["invoices", "orders", "master_data", "telephony"]
LIMITED = {SUBSIDIARY: ["10000021"]}
# Digits of other scripts: `str.isdigit` says yes to all of them, `int` to only some, and
# billing (like the forms' words) means 0–9.
SUPERSCRIPT_TWOS = "²" * 8
ARABIC_INDIC = "١٢٣٤٥٦٧٨"

Browsers = Callable[[], httpx.AsyncClient]


@pytest.fixture
def portal_transports(identity_transport, billing_transport) -> dict[str, httpx.AsyncBaseTransport]:
    return {"identity": identity_transport, "billing": billing_transport}


@pytest.fixture
async def billing_as(
    db: Database, clock: FrozenClock, settings: IdentitySettings, billing_transport: httpx.AsyncBaseTransport
) -> AsyncIterator[Callable[[Any], Any]]:
    """Billing's API as a given user, to read back what the pages stored (or did not)."""
    opened: list[httpx.AsyncClient] = []

    async def as_user(user: Any) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            transport=billing_transport, base_url="http://billing", headers=await bearer(db, clock, settings, user)
        )
        opened.append(client)
        return client

    yield as_user
    for client in opened:
        await client.aclose()


def words(message_id: str) -> str:
    """A catalogue text as a page shows it (escaped for HTML)."""
    return html.escape(DANISH.gettext(message_id), quote=True)


def not_a_server_error(answer: httpx.Response) -> None:
    assert answer.status_code < 500, (answer.request.url, answer.status_code)
    assert words("error.server") not in answer.text, answer.request.url


async def user_in(browser: httpx.AsyncClient, db: Database, clock: FrozenClock, sealer: Sealer, **access: Any) -> Any:
    return await signed_in(
        browser,
        db,
        clock,
        sealer,
        grants=access.get("grants", LIMITED),
        functions=access.get("functions", ALL_FUNCTIONS),
    )


# --- odd values in paths, queries and forms: words, never a server error ----------------------


async def test_an_account_number_or_cvr_in_digits_other_than_0_to_9_is_the_not_found_page_in_words(
    db, clock, sealer, browsers
) -> None:
    await company_group(db, clock)
    administrator, colleague = browsers(), browsers()
    await user_in(administrator, db, clock, sealer, grants={PARENT: "all", SUBSIDIARY: "all"})
    await user_in(colleague, db, clock, sealer)
    token = {browser: await csrf_of(browser, "/stamdata") for browser in (administrator, colleague)}

    def attempts(browser: httpx.AsyncClient) -> list[Any]:
        form = {"csrf_token": token[browser], "format": "paper", "etag": '"1"', "street": "Gade 1"}
        return [
            browser.get(f"/stamdata/konto/{SUPERSCRIPT_TWOS}"),
            browser.get(f"/stamdata/konto/{ARABIC_INDIC}"),
            browser.get(f"/stamdata/{SUPERSCRIPT_TWOS}"),
            browser.get(f"/stamdata/{ARABIC_INDIC}"),
            browser.get("/stamdata/konto", params={"konto": SUPERSCRIPT_TWOS}, follow_redirects=True),
            browser.post(f"/stamdata/konto/{SUPERSCRIPT_TWOS}", data=form),
            browser.post(f"/stamdata/{SUPERSCRIPT_TWOS}", data=form),
        ]

    answers = await asyncio.gather(*attempts(administrator), *attempts(colleague))
    for answer in answers:
        not_a_server_error(answer)
        assert answer.status_code == 404, (answer.request.url, answer.status_code)
        assert words("error.not-found") in answer.text or words("masterdata.error.account-number") in answer.text


async def test_a_settings_form_with_a_version_or_seconds_in_other_digits_is_answered_in_words(
    db, clock, sealer, browsers, billing_as
) -> None:
    await company_group(db, clock)
    one, other = browsers(), browsers()
    user = await user_in(one, db, clock, sealer, functions=["telephony"])
    await user_in(other, db, clock, sealer, functions=["telephony"])
    billing = await billing_as(user)
    listed = (await billing.get("/v1/subscriptions", params={"account": "10000021", "limit": 500})).json()
    line = next(s for s in listed["items"] if s["product"]["kind"] == "mobile" and s["status"] == "active")
    before = (await billing.get(f"/v1/subscriptions/{line['id']}/settings")).json()
    action = f"/telefoni/{line['id']}/indstillinger"

    async def post(browser: httpx.AsyncClient, **changes: str) -> httpx.Response:
        fields = form_fields((await browser.get(f"/telefoni/{line['id']}")).text, action)
        return await browser.post(action, data={**fields, **changes})

    answers = await asyncio.gather(
        post(one, version=SUPERSCRIPT_TWOS[:1]),
        post(other, version=ARABIC_INDIC[:1]),
        post(one, **{"call_forwarding.mode": "no_answer", "call_forwarding.target": "+4520123456",
                     "call_forwarding.no_answer_seconds": SUPERSCRIPT_TWOS[:2]}),
        post(other, **{"call_forwarding.mode": "no_answer", "call_forwarding.target": "+4520123456",
                       "call_forwarding.no_answer_seconds": ARABIC_INDIC[:2]}),
    )
    for answer in answers:
        not_a_server_error(answer)
        assert answer.status_code in (409, 422), (answer.request.url, answer.status_code)
    # A form whose version is not a version is the changed-meanwhile page: nothing is stored.
    assert answers[0].status_code == answers[1].status_code == 409
    assert (await billing.get(f"/v1/subscriptions/{line['id']}/settings")).json() == before


@pytest.mark.parametrize(
    "query",
    [
        {"from": "0000-01"},
        {"to": "0000-12"},
        {"from": "9999-12", "to": "9999-12"},
        {"from": "٢٠٢٦-٠١", "to": "٢٠٢٦-٠٣"},
    ],
)
async def test_a_month_filter_outside_the_calendar_or_in_other_digits_is_refused_next_to_the_field(
    db, clock, sealer, browsers, query
) -> None:
    await company_group(db, clock)
    group, colleague = browsers(), browsers()
    await user_in(group, db, clock, sealer, grants={PARENT: "all", SUBSIDIARY: "all"}, functions=["invoices"])
    await user_in(colleague, db, clock, sealer, functions=["invoices"])
    answers = await asyncio.gather(
        *(browser.get(path, params=query) for browser in (group, colleague) for path in ("/fakturaer", "/forbrug")),
        *(browser.get("/forbrug.csv", params=query) for browser in (group, colleague)),
    )
    pages, downloads = answers[:4], answers[4:]
    for answer in pages:
        not_a_server_error(answer)
        assert answer.status_code == 422, (answer.request.url, answer.status_code)
        name = next(iter(query))
        assert words(f"invoices.invalid.{name}") in answer.text
    for answer in downloads:
        # The CSV of a filter the page refuses is the page, which says why.
        assert answer.status_code == 303, (answer.request.url, answer.status_code)
        assert answer.headers["location"].startswith("/forbrug?")


async def test_an_order_or_subscription_address_with_more_after_its_id_is_not_found_and_upgrades_nothing(
    db, clock, sealer, browsers, billing_db
) -> None:
    """An address is one resource or none: `/bestil/ordrer/<id>zzz` was the receipt of `<id>`, and
    a post to `/bestil/opgrader/<id>zzz` upgraded subscription `<id>`."""
    await company_group(db, clock)
    one, other = browsers(), browsers()
    user = await user_in(one, db, clock, sealer, grants={PARENT: "all"}, functions=["orders"])
    await user_in(other, db, clock, sealer, grants={PARENT: "all"}, functions=["orders"])
    order_form = form_fields((await one.get("/bestil")).text, "/bestil")
    placed = await one.post("/bestil", data={**order_form, "account_number": "10000011", "product_code": "PN-BASIS"})
    assert placed.status_code == 303, placed.text
    receipt = placed.headers["location"]
    subscription = await active_subscription(billing_db, "10000012", "MOBIL-10")
    action = f"/bestil/opgrader/{subscription.id}"
    forms = {b: form_fields((await b.get("/bestil")).text, action) for b in (one, other)}
    answers = await asyncio.gather(
        one.get(receipt + "zzz"),
        other.get(receipt + "-0"),
        one.post(action + "zzz", data={**forms[one], "product_code": "MOBIL-FRI"}),
        other.post(action + "0", data={**forms[other], "product_code": "MOBIL-50"}),
    )
    for answer in answers:
        not_a_server_error(answer)
        assert answer.status_code == 404, (answer.request.url, answer.status_code)
        assert "Tak for din bestilling" not in answer.text
    async with billing_db.transaction() as session:
        assert (await session.get(Subscription, subscription.id)).product_code == "MOBIL-10"
        upgrades = await session.scalars(select(Order).where(Order.kind == "upgrade", Order.user_id == user.id))
        assert list(upgrades) == []
    assert (await one.get(receipt)).status_code == 200
