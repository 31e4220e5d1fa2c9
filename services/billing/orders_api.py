"""The catalogue, subscriptions and orders (S9): what may be ordered, what the accounts the
caller may use hold, new subscriptions and upgrades (with `Idempotency-Key`) and their orders."""

import json
from datetime import datetime
from enum import Enum
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from sqlalchemy import select

from services.billing.catalogue import BY_CODE, PRODUCTS, upgrades_from
from services.billing.deps import Caller, DbDep, OrderingDep
from services.billing.models import Order, Subscription
from services.billing.ordering import Placed
from services.billing.paging import cut, decode_cursor, newest_first
from services.billing.schemas import (
    AccountFilter,
    Id,
    IdempotencyKey,
    OrderIn,
    OrderOut,
    OrderPage,
    ProductOut,
    SubscriptionOut,
    SubscriptionPage,
    UpgradeIn,
)
from shared.clock import as_utc
from shared.problems import PROBLEM, NotFound
from shared.validation import CvrNumber
from shared.web import ClientAddress

router = APIRouter(responses={401: PROBLEM, 403: PROBLEM, 422: PROBLEM})
TAGS: list[str | Enum] = ["subscriptions and orders"]


def product_out(code: str) -> ProductOut:
    p = BY_CODE[code]
    return ProductOut(
        code=p.code,
        name=p.name,
        kind=p.kind,
        monthly_fee_ore=p.monthly_fee_ore,
        description=p.description,
        orderable=p.orderable,
        upgrades_to=upgrades_from(p.code),
    )


def subscription_out(s: Subscription) -> SubscriptionOut:
    return SubscriptionOut(
        id=s.id,
        cvr=s.cvr,
        account_number=s.account_number,
        identifier=s.identifier,
        product=product_out(s.product_code),
        status=s.status,
        created_at=as_utc(s.created_at),
        activated_at=as_utc(s.activated_at) if s.activated_at else None,
    )


def order_out(o: Order) -> OrderOut:
    return OrderOut(
        id=o.id,
        kind=o.kind,  # type: ignore[arg-type]
        status=o.status,  # type: ignore[arg-type]
        cvr=o.cvr,
        account_number=o.account_number,
        subscription_id=o.subscription_id,
        product_code=o.product_code,
        from_product_code=o.from_product_code,
        options=json.loads(o.options),
        created_at=as_utc(o.created_at),
        completed_at=as_utc(o.completed_at) if o.completed_at else None,
    )


def placed(result: Placed, response: Response) -> OrderOut:
    response.status_code = 200 if result.replayed else 201
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/orders/{result.order.id}"
    return order_out(result.order)


@router.get("/v1/products", tags=["catalogue"], summary="The product catalogue and its upgrade paths")
async def products(_: Caller) -> list[ProductOut]:
    return [product_out(p.code) for p in PRODUCTS]


@router.get("/v1/subscriptions", tags=TAGS, summary="Subscriptions on the accounts you may use (S9, S11)")
async def list_subscriptions(
    access: Caller,
    db: DbDep,
    cvr: Annotated[CvrNumber | None, Query(max_length=16)] = None,
    account: AccountFilter = None,
    cursor: Annotated[
        str | None, Query(max_length=100, description="The last id of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> SubscriptionPage:
    access.require("orders", "telephony", "invoices")
    query = select(Subscription).where(
        *access.narrowed(Subscription.cvr, Subscription.account_number, cvr=cvr, accounts=account or [])
    )
    if cursor is not None:
        query = query.where(Subscription.id > cursor)
    query = query.order_by(Subscription.id).limit(limit + 1)
    async with db.reading() as session:
        rows = list(await session.scalars(query))
    items = [subscription_out(s) for s in rows[:limit]]
    return SubscriptionPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)


@router.get(
    "/v1/subscriptions/{subscription_id}", tags=TAGS, summary="One subscription", responses={404: PROBLEM}
)
async def get_subscription(access: Caller, db: DbDep, subscription_id: Id) -> SubscriptionOut:
    access.require("orders", "telephony", "invoices")
    async with db.reading() as session:
        s = await session.scalar(
            select(Subscription).where(
                Subscription.id == subscription_id,
                access.rows(Subscription.cvr, Subscription.account_number),
            )
        )
    if s is None:
        raise NotFound("There is no subscription with this id among the accounts you may use.")
    return subscription_out(s)


@router.get(
    "/v1/orders", tags=TAGS, summary="Orders and upgrades on the accounts you may use, newest first (S9)"
)
async def list_orders(
    access: Caller,
    db: DbDep,
    cvr: Annotated[CvrNumber | None, Query(max_length=16)] = None,
    account: AccountFilter = None,
    status: Annotated[Literal["received", "completed"] | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> OrderPage:
    access.require("orders")
    query = select(Order).where(
        *access.narrowed(Order.cvr, Order.account_number, cvr=cvr, accounts=account or [])
    )
    if status is not None:
        query = query.where(Order.status == status)
    after = decode_cursor(cursor, str, datetime) if cursor is not None else None
    query = newest_first(query, Order.created_at, Order.id, after=after, limit=limit + 1)
    async with db.reading() as session:
        rows = list(await session.scalars(query))
    page, next_cursor = cut(rows, limit, lambda o: (as_utc(o.created_at), o.id))
    return OrderPage(items=[order_out(o) for o in page], next_cursor=next_cursor)


@router.get("/v1/orders/{order_id}", tags=TAGS, summary="One order and its status", responses={404: PROBLEM})
async def get_order(access: Caller, db: DbDep, order_id: Id) -> OrderOut:
    access.require("orders")
    async with db.reading() as session:
        o = await session.scalar(
            select(Order).where(Order.id == order_id, access.rows(Order.cvr, Order.account_number))
        )
    if o is None:
        raise NotFound("There is no order with this id among the accounts you may use.")
    return order_out(o)


@router.post(
    "/v1/orders",
    tags=TAGS,
    status_code=201,
    summary="Order a new subscription on one of your accounts (S9)",
    responses={200: {"description": "A retry with the same Idempotency-Key: the first order"}, 404: PROBLEM},
)
async def place_order(
    access: Caller,
    ordering: OrderingDep,
    body: OrderIn,
    key: IdempotencyKey,
    client: ClientAddress,
    response: Response,
) -> OrderOut:
    result = await ordering.order(
        access,
        key=key,
        account_number=body.account_number,
        product_code=body.product_code,
        options={k: v for k, v in body.options.items() if v is not None},
        client=client,
    )
    return placed(result, response)


@router.post(
    "/v1/subscriptions/{subscription_id}/upgrade",
    tags=TAGS,
    status_code=201,
    summary="Upgrade a subscription along an allowed path (S9)",
    responses={200: {"description": "A retry with the same Idempotency-Key"}, 404: PROBLEM, 409: PROBLEM},
)
async def upgrade(
    access: Caller,
    ordering: OrderingDep,
    subscription_id: Id,
    body: UpgradeIn,
    key: IdempotencyKey,
    client: ClientAddress,
    response: Response,
) -> OrderOut:
    result = await ordering.upgrade(
        access,
        key=key,
        subscription_id=subscription_id,
        product_code=body.product_code,
        client=client,
    )
    return placed(result, response)
