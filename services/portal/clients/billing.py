"""Billing's API as the pages call it (S8–S11, S14)."""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import quote

import httpx

from services.portal.clients.http import Caller, ServiceApi


class Billing(ServiceApi):
    """Billing's API (S8–S11, S14): invoices, usage, orders, master data, telephony. Every call
    carries the user's token; billing answers within its grants and functions."""

    # --- telephony
    async def subscriptions(
        self, caller: Caller, *, cursor: str | None = None, limit: int = 500
    ) -> dict[str, Any]:
        """One page of the subscriptions on the accounts the user may use."""
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        return await self.client.json_object("GET", "/v1/subscriptions", caller, params=params)

    async def subscription(self, caller: Caller, subscription_id: str) -> dict[str, Any]:
        return await self.client.json_object(
            "GET", f"/v1/subscriptions/{quote(subscription_id, safe='')}", caller
        )

    async def settings(self, caller: Caller, subscription_id: str) -> dict[str, Any]:
        """A subscription's telephony or Personligt Nummer settings (S11), with `version`."""
        return await self.client.json_object(
            "GET", f"/v1/subscriptions/{quote(subscription_id, safe='')}/settings", caller
        )

    async def change_settings(
        self, caller: Caller, subscription_id: str, patch: dict[str, Any], *, version: int
    ) -> dict[str, Any]:
        """A JSON merge patch of the settings, sent with the version read as `If-Match`, so a
        change made meanwhile is a 412 rather than overwritten."""
        return await self.client.json_object(
            "PATCH",
            f"/v1/subscriptions/{quote(subscription_id, safe='')}/settings",
            caller,
            json=patch,
            headers={"If-Match": f'"{version}"'},
        )

    # --- orders and master data (S9, S10) ---------------------------------------------------

    async def products(self, caller: Caller) -> list[dict[str, Any]]:
        """The catalogue: each product's code, name, kind, monthly fee and `upgrades_to`."""
        return await self.client.json_list("GET", "/v1/products", caller)

    async def orders(
        self, caller: Caller, *, cursor: str | None = None, status: str | None = None, limit: int = 20
    ) -> dict[str, Any]:
        """A page of orders and upgrades, newest first: `{items, next_cursor}`."""
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        if status:
            params["status"] = status
        return await self.client.json_object("GET", "/v1/orders", caller, params=params)

    async def order(self, caller: Caller, order_id: str) -> dict[str, Any]:
        return await self.client.json_object("GET", f"/v1/orders/{quote(order_id, safe='')}", caller)

    async def place_order(self, caller: Caller, key: str, order: dict[str, Any]) -> dict[str, Any]:
        """A new subscription; a second call with the same `key` answers the first order."""
        return await self.client.json_object(
            "POST", "/v1/orders", caller, json=order, headers={"Idempotency-Key": key}
        )

    async def upgrade(
        self, caller: Caller, key: str, subscription_id: str, product_code: str
    ) -> dict[str, Any]:
        return await self.client.json_object(
            "POST",
            f"/v1/subscriptions/{quote(subscription_id, safe='')}/upgrade",
            caller,
            json={"product_code": product_code},
            headers={"Idempotency-Key": key},
        )

    async def master_data(self, caller: Caller, cvr: str) -> tuple[dict[str, Any], str]:
        """A company's master data and its ETag, to send back as `If-Match` with a change."""
        return await self.client.versioned("GET", f"/v1/companies/{quote(cvr, safe='')}/master-data", caller)

    async def change_master_data(
        self, caller: Caller, cvr: str, etag: str, changes: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        return await self.client.versioned(
            "PATCH",
            f"/v1/companies/{quote(cvr, safe='')}/master-data",
            caller,
            json=changes,
            headers={"If-Match": etag},
        )

    async def invoice_format(self, caller: Caller, account_number: str) -> tuple[dict[str, Any], str]:
        return await self.client.versioned(
            "GET", f"/v1/accounts/{quote(account_number, safe='')}/invoice-format", caller
        )

    async def set_invoice_format(
        self, caller: Caller, account_number: str, etag: str, invoice_format: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        return await self.client.versioned(
            "PUT",
            f"/v1/accounts/{quote(account_number, safe='')}/invoice-format",
            caller,
            json=invoice_format,
            headers={"If-Match": etag},
        )

    # --- invoices and usage (S8, S14) ------------------------------------------------------

    async def invoices(self, caller: Caller, params: list[tuple[str, str]]) -> dict[str, Any]:
        """`GET /v1/invoices` (`cvr`, `account`, `from`, `to`, `cursor`, `limit`): `{items, next_cursor}`,
        newest first."""
        return await self.client.json_object("GET", "/v1/invoices", caller, params=params)

    async def invoice(self, caller: Caller, invoice_id: str) -> dict[str, Any]:
        """One invoice with its lines; 404 for an id outside the caller's grants."""
        return await self.client.json_object("GET", f"/v1/invoices/{quote(invoice_id, safe='')}", caller)

    async def invoice_document(self, caller: Caller, invoice_id: str, document_format: str) -> httpx.Response:
        """The invoice as a document (`pdf`, `oioubl`, `peppol`): its bytes, content type and
        `Content-Disposition`, as billing rendered it."""
        return await self.client.exchange(
            "GET",
            f"/v1/invoices/{quote(invoice_id, safe='')}/document",
            caller,
            params={"format": document_format},
        )

    def usage_csv(
        self, caller: Caller, params: list[tuple[str, str]]
    ) -> contextlib.AbstractAsyncContextManager[httpx.Response]:
        """Every row of `GET /v1/usage` as CSV, streamed (`format=csv`)."""
        return self.client.stream("GET", "/v1/usage", caller, params=[*params, ("format", "csv")])

    # --- usage sums and the accounts list (S8–S10)

    async def usage_summary(self, caller: Caller, params: list[tuple[str, str]]) -> dict[str, Any]:
        """`GET /v1/usage/summary` (`cvr`, `account`, `from`, `to`): `{items}` of quantity and
        amount per month, category and unit, oldest month first."""
        return await self.client.json_object("GET", "/v1/usage/summary", caller, params=params)

    async def all_accounts(self, caller: Caller) -> list[dict[str, Any]]:
        """Every account the caller may use (`GET /v1/accounts`, all pages), by account number:
        its company and invoice format, and with `master_data` its invoice address."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = await self.client.call("GET", "/v1/accounts", caller, params=params)
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return items
