"""Bestil og opgrader (S9): the catalogue with monthly prices, the subscriptions on the accounts
the user may use, a form to order a new subscription on one of them and forms to upgrade a
subscription along the catalogue's upgrade paths; a receipt with the order's status, and the
list of orders.

Billing decides every rule (which accounts, which products and options, which upgrades); these
pages only offer what billing listed and put its refusals in words next to the field.

A double click never orders twice. Every order and upgrade form carries an idempotency key made
when the form is rendered, sent to billing as `Idempotency-Key`: two posts of one form are one
order (billing settles even concurrent twins, by a unique key per user and key). The key is a
hidden field, not kept in the session, because each form (several tabs, one upgrade form per
subscription) needs its own key and both posts of a double click must carry the same one; a
session entry would be overwritten by the next tab's form and, if used up by the first post,
would leave the second with nothing to send. The field is bound to the browser's session by a
keyed digest (`idempotency_proof`), so only a form this session was given is posted as an
order, and billing keeps keys per user, so no one's key can touch another user's orders.
"""

from __future__ import annotations

import asyncio
import secrets
from decimal import Decimal
from typing import Annotated, Any

from babel.numbers import format_currency
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from services.portal.clients import ServiceProblem
from services.portal.deps import Form, needs_function
from services.portal.web import PageContext, PageProblem, field_errors, text_field

router = APIRouter()

OrdersPage = Annotated[PageContext, Depends(needs_function("orders"))]
# Billing's ids are UUIDs: a longer path part is no order or subscription (the 404 page), never
# the one its first 36 characters name.
BillingId = Annotated[str, Path(max_length=36)]

# Which of the order form's options each kind of product takes (billing's `POST /v1/orders`
# contract, docs/billing.md): only those are sent, so a field filled in for another product
# before the user changed their mind is not held against them.
OPTIONS_BY_KIND: dict[str, tuple[str, ...]] = {
    "mobile": ("port_number", "sim"),
    "telephony": ("port_number",),
    "personal_number": ("port_number",),
    "broadband": ("installation_address",),
    "addon": ("attach_to",),
}
SIM_TYPES = ("physical", "esim")
ORDER_STATUSES = ("received", "completed")
ORDERS_PER_PAGE = 20
# Subscriptions listed per page of /bestil (billing's keyset pages; a large company has tens of
# thousands).
SUBSCRIPTIONS_PER_PAGE = 100
_BABEL_LOCALES = {"da": "da_DK", "en": "en_GB"}


def money(page: PageContext, ore: int) -> str:
    """An amount in øre as the user's language writes kroner ("99,00 kr." / "DKK 99.00")."""
    return format_currency(Decimal(ore) / 100, "DKK", locale=_BABEL_LOCALES[page.language])


def granted_companies(page: PageContext) -> list[dict[str, Any]]:
    """The user's grants as identity gave them at login: `{cvr, accounts}`, accounts `"all"` or
    a list of account numbers (S5.4, S14)."""
    assert page.user is not None
    return list(page.user.user.get("grants") or [])


def _new_key(page: PageContext) -> dict[str, str]:
    """A fresh idempotency key for one form, and its proof that this session made it."""
    key = secrets.token_urlsafe(24)
    return {"idempotency_key": key, "idempotency_proof": _proof(page, key)}


def _proof(page: PageContext, key: str) -> str:
    return page.portal.sessions.sealer.digest(f"{page.cookie}:{key}", context="portal-order-key")


def _posted_key(page: PageContext, form: FormData) -> str:
    """The form's idempotency key, once it proved to be one this session's page gave out."""
    key = text_field(form, "idempotency_key", max_length=100)
    proof = text_field(form, "idempotency_proof", max_length=200)
    if not key or not page.portal.sessions.sealer.digest_matches(
        f"{page.cookie}:{key}", proof, context="portal-order-key"
    ):
        raise PageProblem(400, "orders.error.stale-form")
    return key


async def _catalogue(page: PageContext) -> list[dict[str, Any]]:
    products = await page.services.billing.products(page.caller)
    return [{**p, "price": money(page, p["monthly_fee_ore"])} for p in products]


async def _render_order_page(
    page: PageContext,
    *,
    status: int = 200,
    typed: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    problem: str | None = None,
    upgrade_errors: dict[str, str] | None = None,
    side: str = "",
) -> HTMLResponse:
    """The page with one page of the subscriptions (`side`: billing's cursor, which can only
    narrow what the grants allow) and every account the user may order on."""
    products = await _catalogue(page)
    by_code = {p["code"]: p for p in products}
    try:
        listed, accounts = await asyncio.gather(
            page.services.billing.subscriptions(page.caller, cursor=side or None, limit=SUBSCRIPTIONS_PER_PAGE),
            page.services.billing.all_accounts(page.caller),
        )
    except ServiceProblem as refused:
        if refused.status == 422:  # a page address that billing did not give out
            raise PageProblem(404, "error.not-found") from None
        raise
    subscriptions = sorted(
        listed["items"], key=lambda s: (s["cvr"], s["account_number"], s["identifier"] or "~", s["id"])
    )
    rows = [
        {
            **s,
            "upgrades": [by_code[c] for c in s["product"]["upgrades_to"] if c in by_code],
            "form": _new_key(page),
        }
        for s in subscriptions
    ]
    mobiles = [s for s in subscriptions if s["product"]["kind"] == "mobile" and s["status"] == "active"]
    return page.render(
        "orders.html",
        status=status,
        products=products,
        orderable=[p for p in products if p["orderable"]],
        subscriptions=rows,
        next_cursor=listed.get("next_cursor"),
        side=side,
        accounts=accounts,
        mobiles=mobiles,
        sim_types=SIM_TYPES,
        typed=typed or {},
        errors=errors or {},
        problem=problem,
        upgrade_errors=upgrade_errors or {},
        order_form=_new_key(page),
    )


@router.get("/bestil", response_class=HTMLResponse)
async def orders_page(page: OrdersPage, side: Annotated[str, Query(max_length=100)] = "") -> Response:
    """The catalogue, a page of the user's subscriptions with their upgrades, and the order
    form (S9)."""
    return await _render_order_page(page, side=side)


def _typed_order(form: FormData) -> dict[str, str]:
    names = ("account_number", "product_code", *{o for opts in OPTIONS_BY_KIND.values() for o in opts})
    return {
        name: text_field(form, name if name in ("account_number", "product_code") else f"options.{name}", max_length=200)
        for name in names
    }


@router.post("/bestil", response_class=HTMLResponse)
async def place_order(page: OrdersPage, form: Form) -> Response:
    """Order a subscription on an account; a second post of the same form finds the first order."""
    key = _posted_key(page, form)
    typed = _typed_order(form)
    side = text_field(form, "side", max_length=100)
    products = {p["code"]: p for p in await page.services.billing.products(page.caller)}
    chosen = products.get(typed["product_code"])
    wanted = OPTIONS_BY_KIND.get(chosen["kind"], ()) if chosen else ()
    order = {
        "account_number": typed["account_number"],
        "product_code": typed["product_code"],
        "options": {name: typed[name] for name in wanted if typed[name]},
    }
    errors: dict[str, str] = {}
    if not typed["account_number"]:
        errors["account_number"] = page._("orders.missing.account_number")
    if not typed["product_code"]:
        errors["product_code"] = page._("orders.missing.product_code")
    if errors:
        return await _render_order_page(page, status=422, typed=typed, errors=errors, side=side)
    try:
        placed = await page.services.billing.place_order(page.caller, key, order)
    except ServiceProblem as problem:
        if problem.status != 422:
            raise
        if problem.kind == "idempotency-key-reused":
            # Back, changed and sent again: the form's key belongs to the first order.
            return await _render_order_page(
                page, status=422, typed=typed, problem=page._("orders.refused.key-reused"), side=side
            )
        return await _render_order_page(
            page,
            status=422,
            typed=typed,
            errors=field_errors(page, problem, "orders"),
            problem=page._("orders.refused.invalid"),
            side=side,
        )
    return page.redirect(f"/bestil/ordrer/{placed['id']}")


@router.post("/bestil/opgrader/{subscription_id}", response_class=HTMLResponse)
async def upgrade(page: OrdersPage, subscription_id: BillingId, form: Form) -> Response:
    """Upgrade a subscription to one of the products its catalogue entry allows (S9)."""
    key = _posted_key(page, form)
    product_code = text_field(form, "product_code", max_length=40)
    side = text_field(form, "side", max_length=100)
    if not product_code:
        return await _render_order_page(
            page, status=422, upgrade_errors={subscription_id: page._("orders.missing.upgrade")}, side=side
        )
    try:
        placed = await page.services.billing.upgrade(page.caller, key, subscription_id, product_code)
    except ServiceProblem as problem:
        words = {
            "upgrade-not-allowed": "orders.refused.upgrade-not-allowed",
            "subscription-not-active": "orders.refused.not-active",
            "idempotency-key-reused": "orders.refused.key-reused",
        }.get(problem.kind)
        if problem.status not in (409, 422) or words is None:
            raise
        return await _render_order_page(
            page, status=problem.status, upgrade_errors={subscription_id: page._(words)}, side=side
        )
    return page.redirect(f"/bestil/ordrer/{placed['id']}")


@router.get("/bestil/ordrer", response_class=HTMLResponse)
async def order_list(
    page: OrdersPage,
    side: Annotated[str, Query(max_length=200)] = "",
    status: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    """Orders and upgrades, newest first, with their status; keyset pages (`side` is billing's
    cursor)."""
    chosen_status = status if status in ORDER_STATUSES else ""
    try:
        found = await page.services.billing.orders(
            page.caller, cursor=side or None, status=chosen_status or None, limit=ORDERS_PER_PAGE
        )
    except ServiceProblem as problem:
        if problem.status == 422:  # a page address that billing did not give out
            raise PageProblem(404, "error.not-found") from None
        raise
    names = {p["code"]: p["name"] for p in await page.services.billing.products(page.caller)}
    return page.render(
        "orders_list.html",
        orders=found["items"],
        next_cursor=found["next_cursor"],
        first_page=not side,
        chosen_status=chosen_status,
        statuses=ORDER_STATUSES,
        names=names,
    )


@router.get("/bestil/ordrer/{order_id}", response_class=HTMLResponse)
async def receipt(page: OrdersPage, order_id: BillingId) -> Response:
    """The order's receipt and status, as billing has it now."""
    order = await page.services.billing.order(page.caller, order_id)
    products = {p["code"]: p for p in await _catalogue(page)}
    return page.render(
        "orders_receipt.html",
        order=order,
        product=products.get(order["product_code"]),
        from_product=products.get(order["from_product_code"] or ""),
    )
