"""Attacks on billing's pages in the portal (S8–S11, S14), as an outsider and as each kind of
user: odd path and query values answered in words (never a server error, never another
resource), forms posted without their CSRF token or with another browser's, an order form's
idempotency key posted by someone it was not given to, and users reaching, through a page's
form or a document's address, what their function or grants do not cover — each fired in
parallel by several browsers at once."""

# ruff: noqa: F811 - fixtures are imported and used by name

from __future__ import annotations

import asyncio
import csv
import html
import io
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from services.billing.models import Account, Customer, Order, Subscription
from services.identity.config import IdentitySettings
from services.identity.support import create_staff
from services.portal.i18n import load_texts
from shared.clock import FrozenClock
from shared.db import Database
from shared.sealing import Sealer
from tests.integration.billing_fixtures import active_subscription, billing_db  # noqa: F401 - fixture
from tests.integration.test_activation import PASSWORD
from tests.portal.billing_forms import browsers, form_fields, signed_in  # noqa: F401 - fixture
from tests.portal.conftest import csrf_of, log_in_through_portal, post_form
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


# --- forms posted without their token, with another's, or after the session ended -------------


async def billing_state(billing_db: Database, user_ids: list[str], line_id: str) -> tuple[Any, ...]:
    """What the billing forms change: master data, an account's format, a line's settings,
    the users' orders."""
    async with billing_db.transaction() as session:
        customer = await session.get(Customer, SUBSIDIARY)
        account = await session.get(Account, "10000021")
        line = await session.get(Subscription, line_id)
        orders = list(await session.scalars(select(Order.id).where(Order.user_id.in_(user_ids))))
        assert customer is not None and account is not None and line is not None
        return (customer.contact_name, account.invoice_format, line.settings_version, line.product_code, orders)


async def test_no_billing_form_changes_anything_without_the_browsers_own_csrf_token_or_by_a_get(
    db, clock, sealer, browsers, billing_db
) -> None:
    """S8–S11: every post of billing's pages, fired at once by two users of the whole company,
    without a token, with the other browser's, with a visitor's, and as a GET with the form's
    fields in the address: the 403 page in words for the posts, the page for the GETs, and
    billing unchanged."""
    await company_group(db, clock)
    one, two, visitor = browsers(), browsers(), browsers()
    users = [
        await user_in(browser, db, clock, sealer, grants={SUBSIDIARY: "all"}) for browser in (one, two)
    ]
    line = await active_subscription(billing_db, "10000021", "MOBIL-10")
    visitor_token = await csrf_of(visitor, "/log-ind")
    before = await billing_state(billing_db, [u.id for u in users], line.id)

    async def forms(browser: httpx.AsyncClient) -> dict[str, dict[str, str]]:
        order_page = (await browser.get("/bestil")).text
        return {
            "/bestil": {
                **form_fields(order_page, "/bestil"),
                "account_number": "10000021",
                "product_code": "PN-BASIS",
            },
            f"/bestil/opgrader/{line.id}": {
                **form_fields(order_page, f"/bestil/opgrader/{line.id}"),
                "product_code": "MOBIL-FRI",
            },
            f"/stamdata/{SUBSIDIARY}": {
                **form_fields((await browser.get(f"/stamdata/{SUBSIDIARY}")).text, f"/stamdata/{SUBSIDIARY}"),
                "contact_name": "Falsk Kontakt",
            },
            "/stamdata/konto/10000021": {
                **form_fields((await browser.get("/stamdata/konto/10000021")).text, "/stamdata/konto/10000021"),
                "format": "paper",
            },
            f"/telefoni/{line.id}/indstillinger": {
                **form_fields((await browser.get(f"/telefoni/{line.id}")).text, f"/telefoni/{line.id}/indstillinger"),
                "call_forwarding.mode": "always",
                "call_forwarding.target": "+4520123456",
            },
        }

    mine, theirs = await forms(one), await forms(two)
    attempts = []
    for action, fields in mine.items():
        without = {k: v for k, v in fields.items() if k != "csrf_token"}
        attempts += [
            one.post(action, data=without),
            one.post(action, data={**without, "csrf_token": theirs[action]["csrf_token"]}),
            one.post(action, data={**without, "csrf_token": visitor_token}),
            one.post(action, data={**without, "csrf_token": ""}),
            two.post(action, data=fields),  # the first browser's whole form, token included
        ]
    refused = await asyncio.gather(*attempts)
    for answer in refused:
        assert answer.status_code == 403, (answer.request.url, answer.status_code)
        assert words("error.csrf") in answer.text
    read = await asyncio.gather(
        *(one.get(action, params=fields) for action, fields in mine.items() if not action.startswith("/bestil/"))
    )
    for answer in read:
        assert answer.status_code in (200, 405), (answer.request.url, answer.status_code)
    assert await billing_state(billing_db, [u.id for u in users], line.id) == before


async def test_an_order_form_from_before_a_logout_orders_nothing_after_logging_in_again(
    db, clock, sealer, browsers, billing_db
) -> None:
    """The form's key is bound to the browser's session: after a logout and a new login in the
    same browser (a new session cookie), the old form is stale even with the new page's token,
    while the same user's other browser orders with its own form at the same time."""
    await company_group(db, clock)
    browser, elsewhere = browsers(), browsers()
    user = await user_in(browser, db, clock, sealer, grants={PARENT: "all"}, functions=["orders"])
    await log_in_through_portal(elsewhere, db, sealer, user.username)
    old = form_fields((await browser.get("/bestil")).text, "/bestil")
    assert (await post_form(browser, "/log-ud", {}, form_on="/oversigt")).status_code == 303
    await log_in_through_portal(browser, db, sealer, user.username)
    new_token = form_fields((await browser.get("/bestil")).text, "/bestil")["csrf_token"]
    typed = {"account_number": "10000011", "product_code": "PN-BASIS"}
    other_form = form_fields((await elsewhere.get("/bestil")).text, "/bestil")
    stale, borrowed, placed = await asyncio.gather(
        browser.post("/bestil", data={**old, **typed, "csrf_token": new_token}),
        elsewhere.post("/bestil", data={**old, **typed, "csrf_token": other_form["csrf_token"]}),
        elsewhere.post("/bestil", data={**other_form, **typed}),
    )
    for answer in (stale, borrowed):
        assert answer.status_code == 400, answer.status_code
        assert words("orders.error.stale-form") in answer.text
    assert placed.status_code == 303
    async with billing_db.transaction() as session:
        orders = list(await session.scalars(select(Order).where(Order.user_id == user.id)))
    assert len(orders) == 1


# --- another company's or account's things, through a form's hidden fields or the address -----


async def test_a_limited_colleague_reaches_no_other_accounts_things_by_editing_a_forms_address_or_fields(
    db, clock, sealer, browsers, billing_db
) -> None:
    """S10, S11, S14, in parallel with the administrator changing the same things: a colleague
    limited to 10000021 takes their own forms (token, ETag, version, idempotency key) and posts
    them to the addresses of 10000022 (same company) and 10000011 (the parent); each is the 404
    page (or the whole-company 403) in words, shows nothing of the other account or company,
    and billing keeps what the administrator saved."""
    await company_group(db, clock)
    administrator, colleague, outsider = browsers(), browsers(), browsers()
    await user_in(administrator, db, clock, sealer, grants={PARENT: "all", SUBSIDIARY: "all"})
    await user_in(colleague, db, clock, sealer)
    own_line = await active_subscription(billing_db, "10000021", "MOBIL-10")
    foreign_lines = [
        await active_subscription(billing_db, "10000022", ""),
        await active_subscription(billing_db, "10000011", "MOBIL"),
    ]
    own_format = form_fields((await colleague.get("/stamdata/konto/10000021")).text, "/stamdata/konto/10000021")
    own_settings = form_fields(
        (await colleague.get(f"/telefoni/{own_line.id}")).text, f"/telefoni/{own_line.id}/indstillinger"
    )
    own_order = form_fields((await colleague.get("/bestil")).text, "/bestil")
    admin_format = {
        n: form_fields((await administrator.get(f"/stamdata/konto/{n}")).text, f"/stamdata/konto/{n}")
        for n in ("10000022", "10000011")
    }
    async with billing_db.transaction() as session:
        parent_before = (await session.get(Customer, PARENT)).contact_name  # type: ignore[union-attr]
        foreign_versions = [(await session.get(Subscription, s.id)).settings_version for s in foreign_lines]  # type: ignore[union-attr]

    attempts = [
        colleague.post(
            f"/stamdata/konto/{n}",
            data={**own_format, "format": "pdf_email", "email": "angriber@example.com", "etag": etag},
        )
        for n in ("10000022", "10000011")
        for etag in (own_format["etag"], admin_format[n]["etag"], '"999"')
    ]
    attempts += [
        colleague.post(
            f"/telefoni/{line.id}/indstillinger",
            data={**own_settings, "call_forwarding.mode": "always", "call_forwarding.target": "+4520999999"},
        )
        for line in foreign_lines
    ]
    attempts += [colleague.get(f"/telefoni/{line.id}") for line in foreign_lines]
    attempts += [
        colleague.post(f"/bestil/opgrader/{line.id}", data={**own_order, "product_code": "MOBIL-FRI"})
        for line in foreign_lines
    ]
    attempts += [
        colleague.get(f"/stamdata/{PARENT}"),
        colleague.post(f"/stamdata/{PARENT}", data={**own_format, "contact_name": "Angriber"}),
    ]
    changes = [
        administrator.post(
            f"/stamdata/konto/{n}", data={**admin_format[n], "format": "pdf_email", "email": f"faktura-{n}@example.com"}
        )
        for n in ("10000022", "10000011")
    ]
    answers = await asyncio.gather(*attempts, *changes)
    refused, saved = answers[: len(attempts)], answers[len(attempts) :]
    for answer in refused:
        not_a_server_error(answer)
        assert answer.status_code == 404, (answer.request.url, answer.status_code)
        assert "angriber@example.com" not in answer.text and "faktura-100000" not in answer.text
    assert [a.status_code for a in saved] == [303, 303], [a.text[:300] for a in saved]
    # Nobody outside the portal reaches a document or the CSV: to the login, with nothing else.
    invoice_ids = re.findall(r'href="/fakturaer/([0-9a-f-]{36})"', (await administrator.get("/fakturaer")).text)
    outside = await asyncio.gather(
        *(outsider.get(f"/fakturaer/{i}/pdf") for i in invoice_ids[:3]), outsider.get("/forbrug.csv")
    )
    for answer in outside:
        assert answer.status_code == 303 and answer.headers["location"].startswith("/log-ind?"), answer.status_code
        assert not answer.content.startswith(b"%PDF") and b"period,cvr" not in answer.content
    async with billing_db.transaction() as session:
        for n in ("10000022", "10000011"):
            account = await session.get(Account, n)
            assert account is not None and account.invoice_format == "pdf_email"
            assert account.invoice_email == f"faktura-{n}@example.com"
        assert (await session.get(Customer, PARENT)).contact_name == parent_before  # type: ignore[union-attr]
        assert [
            (await session.get(Subscription, s.id)).settings_version for s in foreign_lines  # type: ignore[union-attr]
        ] == foreign_versions


async def test_an_etag_field_edited_to_match_any_version_does_not_overwrite_a_change_made_meanwhile(
    db, clock, sealer, browsers, billing_db
) -> None:
    """S10: the forms carry the ETag they were read at in a hidden field; edited to `*` or to a
    list of tags (which match any version), the change would overwrite one made meanwhile. Posted
    at once from two browsers after another user saved, each is the changed-meanwhile page."""
    await company_group(db, clock)
    saver, one, two = browsers(), browsers(), browsers()
    for browser in (saver, one, two):
        await user_in(browser, db, clock, sealer, grants={SUBSIDIARY: "all"}, functions=["master_data"])
    company, account = f"/stamdata/{SUBSIDIARY}", "/stamdata/konto/10000021"
    read = {
        b: (form_fields((await b.get(company)).text, company), form_fields((await b.get(account)).text, account))
        for b in (one, two)
    }
    saver_company = form_fields((await saver.get(company)).text, company)
    saver_account = form_fields((await saver.get(account)).text, account)
    saved = await asyncio.gather(
        saver.post(company, data={**saver_company, "contact_name": "Gemt Først"}),
        saver.post(account, data={**saver_account, "format": "pdf_email", "email": "gemt@example.com"}),
    )
    assert [a.status_code for a in saved] == [303, 303]
    any_version = ["*", '"1", "2", "3", "4", "5", "6", "7", "8", "9"', 'W/"1", *']
    answers = await asyncio.gather(
        *(
            b.post(company, data={**read[b][0], "etag": etag, "contact_name": "Overskrevet"})
            for b in (one, two)
            for etag in any_version
        ),
        *(
            b.post(account, data={**read[b][1], "etag": etag, "format": "paper"})
            for b in (one, two)
            for etag in any_version
        ),
    )
    for answer in answers:
        assert answer.status_code == 409, (answer.request.url, answer.status_code)
    async with billing_db.transaction() as session:
        assert (await session.get(Customer, SUBSIDIARY)).contact_name == "Gemt Først"  # type: ignore[union-attr]
        assert (await session.get(Account, "10000021")).invoice_format == "pdf_email"  # type: ignore[union-attr]


# --- who reaches billing's pages at all ----------------------------------------------------------


async def test_staff_a_user_without_the_function_and_a_visitor_reach_no_billing_page_document_or_csv(
    db, clock, sealer, browsers, billing_db, client
) -> None:
    """S5.6, S8–S11, in parallel with a user who may: every billing address, its documents and
    the CSV are the 403 page in words to support staff and to a user of the whole group without
    the page's function, and the login to a visitor; their posts (with their own valid token)
    are refused the same way. What the user who may sees is never kept by a cache."""
    await company_group(db, clock)
    allowed, lacking, staff, visitor = browsers(), browsers(), browsers(), browsers()
    await user_in(allowed, db, clock, sealer, grants={PARENT: "all", SUBSIDIARY: "all"})
    await user_in(lacking, db, clock, sealer, grants={PARENT: "all", SUBSIDIARY: "all"}, functions=[])
    async with db.transaction() as session:
        _, code = await create_staff(
            session, clock, username="support.bo", name="Bo Support", email="bo@adgang.example", mobile="+4520999998"
        )
    activated = await client.post(
        "/v1/activation", json={"username": "support.bo", "activation_code": code, "password": PASSWORD}
    )
    assert activated.status_code == 200, activated.text
    await log_in_through_portal(staff, db, sealer, "support.bo")
    line = await active_subscription(billing_db, "10000021", "MOBIL-10")
    invoice_id = re.findall(r'href="/fakturaer/([0-9a-f-]{36})"', (await allowed.get("/fakturaer")).text)[0]
    order = form_fields((await allowed.get("/bestil")).text, "/bestil")
    placed = await allowed.post("/bestil", data={**order, "account_number": "10000011", "product_code": "PN-BASIS"})
    needs = {
        "/fakturaer": "invoices",
        f"/fakturaer/{invoice_id}": "invoices",
        f"/fakturaer/{invoice_id}/pdf": "invoices",
        "/forbrug": "invoices",
        "/forbrug.csv": "invoices",
        "/bestil": "orders",
        "/bestil/ordrer": "orders",
        placed.headers["location"]: "orders",
        "/stamdata": "master_data",
        f"/stamdata/{SUBSIDIARY}": "master_data",
        "/stamdata/konto/10000021": "master_data",
        "/telefoni": "telephony",
        f"/telefoni/{line.id}": "telephony",
    }
    posts = ["/bestil", f"/bestil/opgrader/{line.id}", f"/stamdata/{SUBSIDIARY}", "/stamdata/konto/10000021",
             f"/telefoni/{line.id}/indstillinger"]
    tokens = {b: await csrf_of(b, "/profil" if b is not visitor else "/log-ind") for b in (lacking, staff, visitor)}
    paths = list(needs)
    answers = await asyncio.gather(
        *(allowed.get(path) for path in paths),
        *(b.get(path) for b in (lacking, staff, visitor) for path in paths),
        *(b.post(path, data={"csrf_token": tokens[b], "product_code": "MOBIL-FRI", "format": "paper"})
          for b in (lacking, staff) for path in posts),
        *(visitor.post(path, data={"csrf_token": tokens[visitor]}) for path in posts),
    )
    n = len(paths)
    for path, answer in zip(paths, answers[:n], strict=True):
        assert answer.status_code == 200, (path, answer.status_code)
        assert answer.headers["cache-control"] == "no-store", path
    for path, answer in zip(paths, answers[n : 2 * n], strict=True):
        assert answer.status_code == 403, (path, answer.status_code)
        assert words(f"error.needs-{needs[path]}") in answer.text, path
    for path, answer in zip(paths, answers[2 * n : 3 * n], strict=True):
        assert answer.status_code == 403, (path, answer.status_code)
        assert words("error.customers-only") in answer.text, path
    for path, answer in zip(paths, answers[3 * n : 4 * n], strict=True):
        assert answer.status_code == 303 and answer.headers["location"].startswith("/log-ind?"), path
    for answer in answers[4 * n : 4 * n + 2 * len(posts)]:
        # A form of a page the user may not open: refused before anything is read from it.
        assert answer.status_code == 403, (answer.request.url, answer.status_code)
    for answer in answers[4 * n + 2 * len(posts) :]:
        assert answer.status_code == 303 and answer.headers["location"].startswith("/log-ind?"), answer.status_code


async def test_the_usage_csv_and_invoice_filters_give_a_limited_colleague_only_their_accounts_whatever_is_asked(
    db, clock, sealer, browsers
) -> None:
    """S8, S14, at once with a group administrator asking the same: the colleague limited to
    10000021 asks the CSV and the invoice list for the parent, another account, repeated
    accounts and a CVR with an account of another company — and gets only 10000021's rows, or
    none."""
    await company_group(db, clock)
    administrator, colleague = browsers(), browsers()
    await user_in(administrator, db, clock, sealer, grants={PARENT: "all", SUBSIDIARY: "all"}, functions=["invoices"])
    await user_in(colleague, db, clock, sealer, functions=["invoices"])
    asked: list[list[tuple[str, str]]] = [
        [("cvr", PARENT)],
        [("account", "10000011")],
        [("account", "10000022")],
        [("account", "10000021"), ("account", "10000011")],
        [("account", "10000011"), ("account", "10000021")],
        [("cvr", SUBSIDIARY), ("account", "10000011")],
        [("cvr", PARENT), ("cvr", SUBSIDIARY)],
        [],
    ]
    period = [("from", "2025-01"), ("to", "2026-12")]
    answers = await asyncio.gather(
        *(b.get("/forbrug.csv", params=[*q, *period]) for b in (colleague, administrator) for q in asked),
        *(b.get("/fakturaer", params=q) for b in (colleague, administrator) for q in asked),
    )
    downloads, pages = answers[: 2 * len(asked)], answers[2 * len(asked) :]
    colleague_rows = [list(csv.DictReader(io.StringIO(a.text))) for a in downloads[: len(asked)]]
    for query, rows in zip(asked, colleague_rows, strict=True):
        assert {row["account_number"] for row in rows} <= {"10000021"}, query
    assert colleague_rows[-1], "the colleague's own usage is in the CSV"
    administrator_all = list(csv.DictReader(io.StringIO(downloads[2 * len(asked) - 1].text)))
    assert {row["cvr"] for row in administrator_all} == {PARENT, SUBSIDIARY}
    for query, page in zip(asked, pages[: len(asked)], strict=True):
        assert page.status_code in (200, 422), (query, page.status_code)
        shown = set(re.findall(r"\b1000001[12]\b|\b1000002[23]\b", re.sub(r"<(select|datalist|form).*?</\1>", "", page.text, flags=re.S)))
        assert shown == set(), (query, shown)
