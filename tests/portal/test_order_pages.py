"""Bestil og opgrader in the portal (S9): the catalogue with prices, orders and upgrades placed
through the pages reach billing once — a double click included — and billing's refusals
are shown in words; who may order what is billing's decision, shown as the portal's pages."""

# ruff: noqa: F811 - fixtures are imported and used by name
from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from services.billing.models import Order, Subscription
from tests.integration.billing_fixtures import active_subscription, billing_db  # noqa: F401 - fixture
from tests.portal.billing_forms import Browsers, browsers, form_fields, signed_in, text_of  # noqa: F401
from tests.security.world import PARENT, SUBSIDIARY, company_group


@pytest.fixture
def portal_transports(identity_transport, billing_transport) -> dict[str, httpx.AsyncBaseTransport]:
    return {"identity": identity_transport, "billing": billing_transport}


async def orders_of(billing_db, user_id: str) -> list[Order]:
    async with billing_db.transaction() as session:
        return list(await session.scalars(select(Order).where(Order.user_id == user_id)))


async def orderer(browser, db, clock, sealer, grants=None):  # noqa: ANN001, ANN201 - test helper
    await company_group(db, clock)
    return await signed_in(
        browser, db, clock, sealer, grants=grants or {PARENT: "all"}, functions=["orders", "master_data"]
    )


async def test_the_order_page_shows_the_catalogue_with_monthly_prices_and_only_the_users_accounts(
    db, clock, sealer, portal
) -> None:
    await orderer(portal, db, clock, sealer)
    page = await portal.get("/bestil")
    assert page.status_code == 200, page.text
    words = text_of(page.text)
    assert "Mobil Erhverv 10 GB" in words and "99,00 kr. pr. md." in words
    assert "Erhvervsbredbånd 1000/1000" in words and "499,00 kr. pr. md." in words
    order_form = form_fields(page.text, "/bestil")
    assert order_form["idempotency_key"] and order_form["idempotency_proof"]
    accounts = set(page.text.split('name="account_number"', 1)[1].split("</select>", 1)[0].split('value="')[2:])
    assert {a.split('"')[0] for a in accounts} == {"10000011", "10000012"}
    assert page.text.count("<h1") == 1


async def test_an_order_placed_through_the_page_reaches_billing_once_and_its_receipt_shows_the_status(
    db, clock, sealer, portal, billing_db
) -> None:
    user = await orderer(portal, db, clock, sealer)
    form = form_fields((await portal.get("/bestil")).text, "/bestil")
    placed = await portal.post(
        "/bestil",
        data={**form, "account_number": "10000011", "product_code": "MOBIL-50", "options.sim": "esim"},
    )
    assert placed.status_code == 303, text_of(placed.text)
    receipt = await portal.get(placed.headers["location"])
    assert receipt.status_code == 200
    words = text_of(receipt.text)
    assert "Tak for din bestilling" in words and "Modtaget" in words and "eSIM" in words
    orders = await orders_of(billing_db, user.id)
    assert [(o.account_number, o.product_code, o.status) for o in orders] == [("10000011", "MOBIL-50", "received")]
    assert placed.headers["location"] == f"/bestil/ordrer/{orders[0].id}"
    listed = await portal.get("/bestil/ordrer", params={"status": "received"})
    assert f"/bestil/ordrer/{orders[0].id}" in listed.text


async def test_two_concurrent_posts_of_one_order_form_place_one_order(
    db, clock, sealer, portal, billing_db
) -> None:
    user = await orderer(portal, db, clock, sealer)
    form = form_fields((await portal.get("/bestil")).text, "/bestil")
    typed = {**form, "account_number": "10000012", "product_code": "TLF-FAST"}
    first, second = await asyncio.gather(portal.post("/bestil", data=typed), portal.post("/bestil", data=typed))
    assert first.status_code == second.status_code == 303, (first.text, second.text)
    assert first.headers["location"] == second.headers["location"]
    assert len(await orders_of(billing_db, user.id)) == 1
    # The same form posted once more, later (a reload of the answer to the post): still one.
    again = await portal.post("/bestil", data=typed)
    assert again.headers["location"] == first.headers["location"]
    assert len(await orders_of(billing_db, user.id)) == 1


async def test_a_new_form_is_a_new_order_and_a_reused_form_with_another_product_is_refused_in_words(
    db, clock, sealer, portal, billing_db
) -> None:
    user = await orderer(portal, db, clock, sealer)
    form = form_fields((await portal.get("/bestil")).text, "/bestil")
    first = await portal.post("/bestil", data={**form, "account_number": "10000011", "product_code": "PN-BASIS"})
    assert first.status_code == 303
    changed = await portal.post("/bestil", data={**form, "account_number": "10000011", "product_code": "PN-PLUS"})
    assert changed.status_code == 422
    assert "Denne formular er allerede brugt til en bestilling" in text_of(changed.text)
    fresh = form_fields(changed.text, "/bestil")
    assert fresh["idempotency_key"] != form["idempotency_key"]
    second = await portal.post("/bestil", data={**fresh, "account_number": "10000011", "product_code": "PN-PLUS"})
    assert second.status_code == 303 and second.headers["location"] != first.headers["location"]
    assert sorted(o.product_code for o in await orders_of(billing_db, user.id)) == ["PN-BASIS", "PN-PLUS"]


async def test_billings_refusals_of_an_order_are_words_next_to_the_field(
    db, clock, sealer, portal, billing_db
) -> None:
    user = await orderer(portal, db, clock, sealer)
    form = form_fields((await portal.get("/bestil")).text, "/bestil")
    no_address = await portal.post("/bestil", data={**form, "account_number": "10000011", "product_code": "BB-100"})
    assert no_address.status_code == 422
    assert 'id="f-options-installation_address-error">Skriv adressen, hvor bredbåndet skal installeres' in no_address.text
    bad_number = await portal.post(
        "/bestil",
        data={**form, "account_number": "10000011", "product_code": "MOBIL-10", "options.port_number": "12"},
    )
    assert bad_number.status_code == 422
    assert 'id="f-options-port_number-error">Skriv et dansk telefonnummer' in bad_number.text
    assert 'value="12"' in bad_number.text  # what the user typed stays in the field
    nothing = await portal.post("/bestil", data=form)
    assert nothing.status_code == 422
    assert "Vælg den konto, abonnementet skal på." in text_of(nothing.text)
    assert await orders_of(billing_db, user.id) == []


async def test_an_upgrade_through_the_page_follows_an_allowed_path_once_even_posted_twice_at_once(
    db, clock, sealer, portal, billing_db
) -> None:
    user = await orderer(portal, db, clock, sealer)
    subscription = await active_subscription(billing_db, "10000012", "MOBIL-10")
    page = await portal.get("/bestil")
    action = f"/bestil/opgrader/{subscription.id}"
    form = form_fields(page.text, action)
    offered = page.text.split(f'id="f-upgrade-{subscription.id}"', 1)[1].split("</select>", 1)[0]
    assert 'value="MOBIL-50"' in offered and 'value="MOBIL-FRI"' in offered and 'value="BB-100"' not in offered
    typed = {**form, "product_code": "MOBIL-FRI"}
    first, second = await asyncio.gather(portal.post(action, data=typed), portal.post(action, data=typed))
    assert first.status_code == second.status_code == 303, (first.text, second.text)
    assert first.headers["location"] == second.headers["location"]
    orders = await orders_of(billing_db, user.id)
    assert [(o.kind, o.from_product_code, o.product_code, o.status) for o in orders] == [
        ("upgrade", "MOBIL-10", "MOBIL-FRI", "completed")
    ]
    async with billing_db.transaction() as session:
        assert (await session.get(Subscription, subscription.id)).product_code == "MOBIL-FRI"
    receipt = text_of((await portal.get(first.headers["location"])).text)
    assert "Dit abonnement er opgraderet" in receipt and "Gennemført" in receipt


async def test_an_upgrade_that_is_not_an_allowed_path_is_refused_in_words_next_to_the_subscription(
    db, clock, sealer, portal, billing_db
) -> None:
    user = await orderer(portal, db, clock, sealer)
    subscription = await active_subscription(billing_db, "10000011", "MOBIL-50")
    action = f"/bestil/opgrader/{subscription.id}"
    form = form_fields((await portal.get("/bestil")).text, action)
    refused = await portal.post(action, data={**form, "product_code": "MOBIL-10"})
    assert refused.status_code == 422
    assert (
        f'id="f-upgrade-{subscription.id}-error">Abonnementet kan ikke opgraderes til det produkt' in refused.text
    )
    assert await orders_of(billing_db, user.id) == []


async def test_a_form_from_another_session_or_with_a_made_up_key_orders_nothing(
    db, clock, sealer, browsers: Browsers, billing_db
) -> None:
    first, second = browsers(), browsers()
    user = await orderer(first, db, clock, sealer)
    await signed_in(second, db, clock, sealer, grants={PARENT: "all"}, functions=["orders"])
    theirs = form_fields((await first.get("/bestil")).text, "/bestil")
    mine = form_fields((await second.get("/bestil")).text, "/bestil")
    typed = {"account_number": "10000011", "product_code": "MOBIL-10"}
    borrowed = await second.post("/bestil", data={**theirs, **typed, "csrf_token": mine["csrf_token"]})
    made_up = await first.post("/bestil", data={**theirs, **typed, "idempotency_key": "my-own-key-1234"})
    for answer in (borrowed, made_up):
        assert answer.status_code == 400
        assert "Formularen er for gammel eller fra en anden session" in text_of(answer.text)
    assert await orders_of(billing_db, user.id) == []


async def test_the_orders_list_pages_through_the_orders_newest_first(
    db, clock, sealer, portal, billing_db
) -> None:
    await orderer(portal, db, clock, sealer, grants={SUBSIDIARY: ["10000022"]})
    locations = []
    for _ in range(21):
        form = form_fields((await portal.get("/bestil")).text, "/bestil")
        placed = await portal.post("/bestil", data={**form, "account_number": "10000022", "product_code": "PN-BASIS"})
        assert placed.status_code == 303
        locations.append(placed.headers["location"])
        clock.advance(timedelta(seconds=1))
    first = await portal.get("/bestil/ordrer")
    assert first.status_code == 200
    assert first.text.count('<a href="/bestil/ordrer/') == 20
    assert first.text.index(locations[-1]) < first.text.index(locations[-2])
    assert locations[0] not in first.text
    next_link = first.text.split('rel="next"', 1)[0].rsplit('href="', 1)[1].split('"', 1)[0]
    second = await portal.get(next_link.replace("&amp;", "&"))
    assert locations[0] in second.text and "Første side" in second.text
    made_up = await portal.get("/bestil/ordrer", params={"side": "not-a-cursor"})
    assert made_up.status_code == 404


async def test_who_may_order_is_decided_for_each_user_at_the_same_time(
    db, clock, sealer, browsers: Browsers, billing_db
) -> None:
    """S9, S14, in parallel: a user with the orders function and the whole company orders; one
    without the function gets a 403 page in words; a colleague limited to one account of another
    company cannot order on this one (billing refuses, the page says so next to the field)."""
    await company_group(db, clock)
    allowed, no_function, limited = browsers(), browsers(), browsers()
    users = [  # logged in one after the other: the login codes are read from one mailbox
        await signed_in(allowed, db, clock, sealer, grants={PARENT: "all"}, functions=["orders"]),
        await signed_in(no_function, db, clock, sealer, grants={PARENT: "all"}, functions=["invoices"]),
        await signed_in(limited, db, clock, sealer, grants={SUBSIDIARY: ["10000021"]}, functions=["orders"]),
    ]
    allowed_page, refused_page, limited_page = await asyncio.gather(
        allowed.get("/bestil"), no_function.get("/bestil"), limited.get("/bestil")
    )
    assert refused_page.status_code == 403
    assert "Du har ikke adgang til at bestille" in text_of(refused_page.text)
    assert 'value="10000011"' not in limited_page.text and 'value="10000021"' in limited_page.text
    typed = {"account_number": "10000011", "product_code": "MOBIL-10"}
    posts = await asyncio.gather(
        allowed.post("/bestil", data={**form_fields(allowed_page.text, "/bestil"), **typed}),
        no_function.post(
            "/bestil", data={**typed, "csrf_token": form_fields(allowed_page.text, "/bestil")["csrf_token"]}
        ),
        limited.post("/bestil", data={**form_fields(limited_page.text, "/bestil"), **typed}),
        no_function.get("/bestil/ordrer"),
    )
    assert posts[0].status_code == 303
    assert posts[1].status_code in (403,)  # the function first: nothing else of the form is looked at
    assert posts[2].status_code == 422
    assert 'id="f-account_number-error">Vælg en af de konti, du må bestille på.' in posts[2].text
    assert posts[3].status_code == 403
    counts = [len(await orders_of(billing_db, u.id)) for u in users]
    assert counts == [1, 0, 0]


async def test_an_order_or_subscription_outside_the_grants_is_a_not_found_page_for_that_user_only(
    db, clock, sealer, browsers: Browsers, billing_db
) -> None:
    await company_group(db, clock)
    owner, outsider = browsers(), browsers()
    await signed_in(owner, db, clock, sealer, grants={PARENT: "all"}, functions=["orders"])
    other = await signed_in(outsider, db, clock, sealer, grants={SUBSIDIARY: ["10000021"]}, functions=["orders"])
    form = form_fields((await owner.get("/bestil")).text, "/bestil")
    placed = await owner.post("/bestil", data={**form, "account_number": "10000011", "product_code": "PN-PLUS"})
    receipt = placed.headers["location"]
    foreign = await active_subscription(billing_db, "10000011", "MOBIL")
    outsider_form = form_fields((await outsider.get("/bestil")).text, "/bestil")
    seen, refused_receipt, refused_upgrade = await asyncio.gather(
        owner.get(receipt),
        outsider.get(receipt),
        outsider.post(f"/bestil/opgrader/{foreign.id}", data={**outsider_form, "product_code": "MOBIL-FRI"}),
    )
    assert seen.status_code == 200
    for refused in (refused_receipt, refused_upgrade):
        assert refused.status_code == 404
        assert "Vi kan ikke finde siden" in text_of(refused.text)
    assert await orders_of(billing_db, other.id) == []
    async with billing_db.transaction() as session:
        assert (await session.get(Subscription, foreign.id)).product_code == foreign.product_code
