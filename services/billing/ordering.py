"""Orders (S9): a new subscription on an account the user may use, or an upgrade of one along
an allowed path. A retried request with the same `Idempotency-Key` finds its first order.

A new subscription is `pending` (its order `received`) until the fulfilment job provisions it:
it gets its number (the ported one, or a new one) or its line id and becomes `active`, and the
order `completed` (`OrderCompleted`). An upgrade takes effect at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import uuid
from dataclasses import dataclass
from typing import Any

import phonenumbers
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.billing.access import Access, granted
from services.billing.audit import announce
from services.billing.catalogue import BY_CODE, upgrades_from
from services.billing.models import Account, Order, Product, Subscription
from shared.clock import Clock
from shared.db import Database
from shared.events import OrderCompleted, SubscriptionOrdered, SubscriptionUpgraded
from shared.messaging import Outbox
from shared.problems import Conflict, InvalidField, NotFound, Problem
from shared.validation import normalise_danish_phone

log = logging.getLogger(__name__)


class IdempotencyKeyReused(Problem):
    status = 422
    type_suffix = "idempotency-key-reused"
    title = "The idempotency key was used for another request"


class UpgradeNotAllowed(Problem):
    status = 422
    type_suffix = "upgrade-not-allowed"
    title = "This upgrade is not offered"


class CatalogueNotLoaded(Problem):
    status = 503
    type_suffix = "catalogue-not-loaded"
    title = "The product catalogue is not loaded yet"

    def __init__(self) -> None:
        super().__init__(
            "Billing is starting and has not loaded its product catalogue yet. Try again in a moment.",
            headers={"Retry-After": "5"},
        )


class SubscriptionNotActive(Conflict):
    type_suffix = "subscription-not-active"
    title = "The subscription is not active"


class _TwinPlaced(Exception):
    """A concurrent request with the same key placed its order while this one waited for the
    row lock; its order is the answer (read again in a transaction of its own)."""


@dataclass(frozen=True)
class Placed:
    order: Order
    replayed: bool


OPTION_FIELDS: dict[str, dict[str, str]] = {
    "mobile": {
        "port_number": "a Danish number to move here from another operator",
        "sim": "'esim' or 'physical'",
    },
    "telephony": {"port_number": "a Danish number to move here from another operator"},
    "personal_number": {"port_number": "a Danish number to move here from another operator"},
    "broadband": {"installation_address": "street, number, postal code and city of the line"},
    "addon": {"attach_to": "id of the mobile subscription the add-on is for"},
}


def checked_options(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """The order's options for a product of `kind`, normalised, or 422 naming the option."""
    known = OPTION_FIELDS[kind]
    for name in options:
        if name not in known:
            offered = ", ".join(f"{k} ({v})" for k, v in known.items())
            raise InvalidField(f"options.{name}", f"is not an option of this product; options: {offered}")
    result: dict[str, Any] = {}
    if (number := options.get("port_number")) is not None:
        try:
            result["port_number"] = normalise_danish_phone(str(number))
        except ValueError as exc:
            raise InvalidField("options.port_number", str(exc)) from None
    if (sim := options.get("sim")) is not None:
        if sim not in ("esim", "physical"):
            raise InvalidField("options.sim", "must be 'esim' or 'physical'")
        result["sim"] = sim
    if kind == "broadband":
        address = options.get("installation_address")
        if not isinstance(address, str) or not 5 <= len(address.strip()) <= 200:
            raise InvalidField(
                "options.installation_address", "the address where the line is to be installed"
            )
        result["installation_address"] = address.strip()
    if kind == "addon":
        target = options.get("attach_to")
        if not isinstance(target, str):
            raise InvalidField("options.attach_to", known["attach_to"])
        result["attach_to"] = target
    return result


def named(order: Order) -> dict[str, Any]:
    """The fields by which each event of an order names it: the order, its company, account and
    subscription."""
    return {
        "order_id": uuid.UUID(order.id),
        "cvr": order.cvr,
        "account_number": order.account_number,
        "subscription_id": uuid.UUID(order.subscription_id),
    }


def request_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Ordering:
    def __init__(self, *, db: Database, outbox: Outbox, clock: Clock) -> None:
        self.db = db
        self.outbox = outbox
        self.clock = clock

    async def _new_order(
        self,
        session: AsyncSession,
        access: Access,
        key: str,
        fingerprint: str,
        subscription: Subscription,
        **fields: Any,
    ) -> Order:
        """An order of the caller's on `subscription`, remembered under its idempotency key."""
        order = Order(
            id=str(uuid.uuid4()),
            user_id=access.user_id,
            idempotency_key=key,
            request_hash=fingerprint,
            cvr=subscription.cvr,
            account_number=subscription.account_number,
            subscription_id=subscription.id,
            created_at=self.clock.now(),
            **fields,
        )
        session.add(order)
        await session.flush()
        return order

    async def _replay(
        self, session: AsyncSession, access: Access, key: str, fingerprint: str
    ) -> Order | None:
        order = await session.scalar(
            select(Order).where(Order.user_id == access.user_id, Order.idempotency_key == key)
        )
        if order is None:
            return None
        if order.request_hash != fingerprint:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was already used for a different order. Use a new key for a new order."
            )
        if not access.may_use(order.cvr, order.account_number):  # the grants changed since
            raise NotFound("There is no order with this key among the accounts you may use.")
        return order

    async def _once(self, access: Access, key: str, fingerprint: str, place) -> Placed:  # noqa: ANN001
        """Run `place` once per (user, key): a concurrent twin that loses the race on the
        unique key answers with the winner's order."""
        try:
            async with self.db.transaction() as session:
                if (existing := await self._replay(session, access, key, fingerprint)) is not None:
                    return Placed(existing, replayed=True)
                return Placed(await place(session), replayed=False)
        except (IntegrityError, _TwinPlaced):
            async with self.db.transaction() as session:
                existing = await self._replay(session, access, key, fingerprint)
            if existing is None:
                raise
            return Placed(existing, replayed=True)

    async def order(
        self,
        access: Access,
        *,
        key: str,
        account_number: str,
        product_code: str,
        options: dict[str, Any],
        client: str | None,
    ) -> Placed:
        access.require("orders")
        fingerprint = request_hash(
            {"kind": "new", "account": account_number, "product": product_code, "options": options}
        )

        async def place(session: AsyncSession) -> Order:
            account = await granted(session, access, Account, account_number)
            if account is None:
                raise InvalidField("account_number", "is not one of the accounts you may order on")
            product = BY_CODE.get(product_code)
            if product is None or not product.orderable:
                raise InvalidField("product_code", f"is not a product in the catalogue: {sorted(BY_CODE)}")
            if await session.get(Product, product.code) is None:
                raise CatalogueNotLoaded()
            checked = checked_options(product.kind, options)
            if product.kind == "addon":
                await self._check_addon_target(session, access, account, checked)
            now = self.clock.now()
            subscription = Subscription(
                id=str(uuid.uuid4()),
                cvr=account.cvr,
                account_number=account.account_number,
                identifier="",
                product_code=product.code,
                status="pending",
                settings="{}",
                settings_version=1,
                created_at=now,
            )
            session.add(subscription)
            await session.flush()
            order = await self._new_order(
                session,
                access,
                key,
                fingerprint,
                subscription,
                kind="new",
                product_code=product.code,
                options=json.dumps(checked),
                status="received",
            )
            await announce(
                session,
                self.outbox,
                access,
                SubscriptionOrdered(
                    **named(order),
                    product_code=product.code,
                    product_name=product.name,
                    monthly_fee_ore=product.monthly_fee_ore,
                    options=checked,
                    ordered_by=uuid.UUID(access.user_id),
                    ordered_at=now,
                ),
                action="order.placed",
                target=order.id,
                at=now,
                client=client,
                details={"product": product.code, "account": account.account_number},
            )
            return order

        return await self._once(access, key, fingerprint, place)

    async def _check_addon_target(
        self, session: AsyncSession, access: Access, account: Account, options: dict[str, Any]
    ) -> None:
        target_id = options.get("attach_to")
        target = (
            await granted(session, access, Subscription, str(target_id))
            if isinstance(target_id, str)
            else None
        )
        if (
            target is None
            or target.account_number != account.account_number
            or BY_CODE[target.product_code].kind != "mobile"
            or target.status != "active"
        ):
            raise InvalidField(
                "options.attach_to",
                "an add-on needs the id of an active mobile subscription on the same account",
            )

    async def upgrade(
        self, access: Access, *, key: str, subscription_id: str, product_code: str, client: str | None
    ) -> Placed:
        access.require("orders")
        fingerprint = request_hash(
            {"kind": "upgrade", "subscription": subscription_id, "product": product_code}
        )

        async def place(session: AsyncSession) -> Order:
            subscription = await granted(session, access, Subscription, subscription_id, for_update=True)
            if subscription is None:
                raise NotFound("There is no subscription with this id among the accounts you may use.")
            # A twin of this request (a double click) may have upgraded it while this one waited
            # for the lock: the subscription's product has changed, and its order is the answer.
            if await self._replay(session, access, key, fingerprint) is not None:
                raise _TwinPlaced()
            if subscription.status != "active":
                raise SubscriptionNotActive(
                    f"The subscription is {subscription.status}; it can be upgraded once it is active."
                )
            allowed = upgrades_from(subscription.product_code)
            if product_code not in allowed:
                offered = ", ".join(allowed) if allowed else "none"
                raise UpgradeNotAllowed(
                    f"{subscription.product_code} cannot be upgraded to {product_code}. Upgrades offered: {offered}.",
                    errors=[
                        {"field": "product_code", "message": f"not an allowed upgrade; allowed: {offered}"}
                    ],
                    allowed=allowed,
                )
            product = BY_CODE[product_code]
            now = self.clock.now()
            previous = subscription.product_code
            subscription.product_code = product.code
            order = await self._new_order(
                session,
                access,
                key,
                fingerprint,
                subscription,
                kind="upgrade",
                product_code=product.code,
                from_product_code=previous,
                options="{}",
                status="completed",
                completed_at=now,
            )
            await announce(
                session,
                self.outbox,
                access,
                SubscriptionUpgraded(
                    **named(order),
                    identifier=subscription.identifier,
                    from_product_code=previous,
                    to_product_code=product.code,
                    to_product_name=product.name,
                    monthly_fee_ore=product.monthly_fee_ore,
                    ordered_by=uuid.UUID(access.user_id),
                    upgraded_at=now,
                ),
                action="subscription.upgraded",
                target=subscription.id,
                at=now,
                client=client,
                details={"from": previous, "to": product.code, "order": order.id},
            )
            return order

        return await self._once(access, key, fingerprint, place)

    async def fulfil_pending(self, batch: int = 100) -> int:
        """Provision received orders for new subscriptions: number or line id, then active."""
        done = 0
        async with self.db.transaction() as session:
            orders = list(
                await session.scalars(
                    select(Order)
                    .where(Order.status == "received")
                    .order_by(Order.created_at)
                    .limit(batch)
                    .with_for_update(skip_locked=True)  # two workers never provision one order
                )
            )
            for order in orders:
                subscription = await session.get(Subscription, order.subscription_id, with_for_update=True)
                assert subscription is not None
                options = json.loads(order.options)
                subscription.identifier = await self._identifier(session, subscription, options)
                now = self.clock.now()
                subscription.status, subscription.activated_at = "active", now
                order.status, order.completed_at = "completed", now
                await self.outbox.add(
                    session,
                    OrderCompleted(
                        **named(order),
                        identifier=subscription.identifier,
                        completed_at=now,
                    ),
                )
                done += 1
        if done:
            log.info("fulfilled %d orders", done)
        return done

    async def _identifier(
        self, session: AsyncSession, subscription: Subscription, options: dict[str, Any]
    ) -> str:
        kind = BY_CODE[subscription.product_code].kind
        if kind == "broadband":
            return f"BB-{uuid.UUID(subscription.id).int % 10**8:08d}"
        if kind == "addon":
            target = await session.get(Subscription, str(options.get("attach_to")))
            return target.identifier if target else ""
        if isinstance(options.get("port_number"), str):
            return str(options["port_number"])
        rng = random.Random(subscription.id)
        while True:  # a free number in the operator's new-number range
            candidate = f"+4528{rng.randrange(0, 1_000_000):06d}"
            taken = await session.scalar(select(Subscription.id).where(Subscription.identifier == candidate))
            if taken is None and phonenumbers.is_valid_number(phonenumbers.parse(candidate)):
                return candidate
