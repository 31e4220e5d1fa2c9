"""The portal's clients of the services' HTTP APIs: one method per call a page makes.

The portal owns no business data and decides no rule: every page calls the service that
owns the rule, with the user's access token, and shows its answer. A refusal arrives as
problem+json and is raised as `ServiceProblem`, which pages turn into words next to the
field or a sentence that says what to do next.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from services.portal.config import PortalSettings


@dataclass
class ServiceProblem(Exception):
    """A service said no (RFC 9457 problem+json)."""

    status: int
    type: str
    title: str
    detail: str
    errors: list[dict[str, str]] = field(default_factory=list)
    retry_after: int | None = None
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The last part of the problem type, e.g. `admin-exists`."""
        return self.type.rstrip("/").rsplit("/", 1)[-1] if self.type else ""

    def field_errors(self) -> dict[str, str]:
        """Field name (dotted, like the form's `name`s) → the service's message."""
        return {e.get("field", ""): e.get("message", "") for e in self.errors}

    def __str__(self) -> str:
        return f"{self.status} {self.kind}: {self.detail}"


class ServiceUnavailable(Exception):
    """A service did not answer (down, or too slow): the page says "try again"."""

    def __init__(self, service: str) -> None:
        super().__init__(f"{service} did not answer")
        self.service = service


@dataclass(frozen=True)
class Caller:
    """Who a call is made for: the browser's address (so the services' per-client limits count
    the person, where they trust the portal as a proxy) and the user's access token, if any."""

    address: str | None = None
    access_token: str | None = None
    # The browser's, so that identity shows the user which browser a session of theirs is.
    user_agent: str | None = None

    def headers(self) -> dict[str, str]:
        headers = {}
        if self.address:
            headers["X-Forwarded-For"] = self.address
        if self.access_token:
            headers["Authorization"] = f"Bearer {self.access_token}"
        if self.user_agent:
            headers["User-Agent"] = self.user_agent
        return headers


class ServiceClient:
    """JSON over HTTP to one service; problem+json answers become `ServiceProblem`."""

    def __init__(
        self, name: str, base_url: str, *, timeout_s: float, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.name = name
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, transport=transport)

    async def close(self) -> None:
        await self._http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        caller: Caller,
        *,
        json: Any = None,
        params: dict[str, Any] | list[tuple[str, Any]] | None = None,
    ) -> Any:
        response = await self.exchange(method, path, caller, json=json, params=params)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    async def exchange(
        self,
        method: str,
        path: str,
        caller: Caller,
        *,
        json: Any = None,
        params: dict[str, Any] | list[tuple[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """The whole answer (its headers: an ETag, a document's type), for a call whose body is
        not only JSON or whose request needs headers (`If-Match`, `Idempotency-Key`, `Accept`)."""
        try:
            response = await self._http.request(
                method, path, json=json, params=params, headers={**caller.headers(), **(headers or {})}
            )
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(self.name) from exc
        if response.status_code >= 500:
            raise ServiceUnavailable(self.name)
        if response.status_code >= 400:
            raise _problem(response)
        return response

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        caller: Caller,
        *,
        params: dict[str, Any] | list[tuple[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """The answer with its body still to be read (`aiter_bytes`), for a download passed on to
        the browser as it arrives (a CSV export of every row) rather than held whole in memory.
        Refusals are raised before the body is read, as `exchange` raises them."""
        request = self._http.build_request(
            method, path, params=params, headers={**caller.headers(), **(headers or {})}
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(self.name) from exc
        try:
            if response.status_code >= 500:
                raise ServiceUnavailable(self.name)
            if response.status_code >= 400:
                await response.aread()
                raise _problem(response)
            yield response
        finally:
            await response.aclose()


def _problem(response: httpx.Response) -> ServiceProblem:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    retry_after = response.headers.get("retry-after")
    return ServiceProblem(
        status=response.status_code,
        type=str(body.get("type", "")),
        title=str(body.get("title", "")),
        detail=str(body.get("detail", "")),
        errors=[e for e in body.get("errors") or [] if isinstance(e, dict)],
        retry_after=int(retry_after) if retry_after and retry_after.isdigit() else None,
        body=body,
    )


class Onboarding:
    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    async def apply(self, caller: Caller, application: dict[str, Any]) -> dict[str, Any]:
        """S1: `{id, status, deliver_by}`."""
        result: dict[str, Any] = await self.client.call("POST", "/v1/applications", caller, json=application)
        return result

    async def application(self, caller: Caller, application_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call("GET", f"/v1/applications/{application_id}", caller)
        return result

    # Takeover

    async def request_takeover(self, caller: Caller, application: dict[str, Any]) -> dict[str, Any]:
        """The application with `takeover: true`: `{id, status, deliver_by, kind}`."""
        result: dict[str, Any] = await self.client.call(
            "POST", "/v1/applications", caller, json={**application, "takeover": True}
        )
        return result


class Identity:
    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    # --- login (S7) ---------------------------------------------------------------------

    async def login(
        self, caller: Caller, username: str, password: str, device_token: str | None
    ) -> dict[str, Any]:
        body = {"username": username, "password": password}
        if device_token:
            body["device_token"] = device_token
        result: dict[str, Any] = await self.client.call("POST", "/v1/login", caller, json=body)
        return result

    async def send_code(self, caller: Caller, challenge_id: str, method: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call(
            "POST", f"/v1/login/{challenge_id}/send", caller, json={"method": method}
        )
        return result

    async def verify(self, caller: Caller, challenge_id: str, code: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call(
            "POST", f"/v1/login/{challenge_id}/verify", caller, json={"code": code}
        )
        return result

    async def unlock(self, caller: Caller, username: str) -> None:
        await self.client.call("POST", "/v1/login/unlock", caller, json={"username": username})

    async def refresh(self, caller: Caller, refresh_token: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call(
            "POST", "/v1/token/refresh", caller, json={"refresh_token": refresh_token}
        )
        return result

    async def logout(self, caller: Caller) -> None:
        await self.client.call("POST", "/v1/logout", caller)

    async def me(self, caller: Caller) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call("GET", "/v1/me", caller)
        return result

    # --- Min profil: the authenticator app (S7) -------------------------------------------

    async def start_totp(self, caller: Caller, current_code: str | None = None) -> dict[str, Any]:
        """`{secret, otpauth_uri}`; 403 `reauthentication-required` when the login is older than
        15 minutes and no (right) `current_code` came — a wrong one also ends the session."""
        body = {"current_code": current_code} if current_code else {}
        result: dict[str, Any] = await self.client.call("POST", "/v1/me/totp", caller, json=body)
        return result

    async def confirm_totp(self, caller: Caller, code: str) -> list[str]:
        """The ten recovery codes, given once."""
        result: dict[str, Any] = await self.client.call(
            "POST", "/v1/me/totp/confirm", caller, json={"code": code}
        )
        return list(result["recovery_codes"])

    # --- activation (S2) ----------------------------------------------------------------

    async def activate(self, caller: Caller, activation: dict[str, Any]) -> dict[str, Any]:
        """`POST /v1/activation`: the active login `{user_id, username, status}` (200) for a
        colleague's or support login; for the letter's, `{activation_id, sms_sent_to,
        email_sent_to, expires_at}` (202): codes went to the mobile number and the email."""
        result: dict[str, Any] = await self.client.call("POST", "/v1/activation", caller, json=activation)
        return result

    async def confirm_activation(
        self, caller: Caller, activation_id: str, sms_code: str, email_code: str
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call(
            "POST",
            f"/v1/activation/{activation_id}/confirm",
            caller,
            json={"sms_code": sms_code, "email_code": email_code},
        )
        return result


    # --- self-service users (S4, S5, S12, S14) ------------------------------------------

    async def companies(self, caller: Caller) -> list[dict[str, Any]]:
        """The companies and accounts the caller may grant (the wizard's steps 4 and 5)."""
        result: list[dict[str, Any]] = await self.client.call("GET", "/v1/companies", caller)
        return result

    async def users(self, caller: Caller) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.client.call("GET", "/v1/users", caller)
        return result

    async def user(self, caller: Caller, user_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call("GET", f"/v1/users/{user_id}", caller)
        return result

    async def create_user(self, caller: Caller, user: dict[str, Any]) -> dict[str, Any]:
        """S5: `{name, email, mobile, grants, functions}`; identity emails the user (S6)."""
        result: dict[str, Any] = await self.client.call("POST", "/v1/users", caller, json=user)
        return result

    async def change_user(self, caller: Caller, user_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call(
            "PATCH", f"/v1/users/{user_id}", caller, json=changes
        )
        return result

    async def act_on_user(self, caller: Caller, user_id: str, action: str) -> dict[str, Any]:
        """`disable`, `enable`, `reset-2fa`, `resend-activation` or `unlock`."""
        result: dict[str, Any] = await self.client.call("POST", f"/v1/users/{user_id}/{action}", caller)
        return result

    async def delete_user(self, caller: Caller, user_id: str) -> None:
        await self.client.call("DELETE", f"/v1/users/{user_id}", caller)

    # --- support console (S3, S13) -------------------------------------------------------

    async def company_users(self, caller: Caller, cvr: str) -> list[dict[str, Any]]:
        """A company's logins, for support staff (audited by identity as `support.list-users`)."""
        result: list[dict[str, Any]] = await self.client.call(
            "GET", f"/v1/support/companies/{cvr}/users", caller
        )
        return result

    async def support_delete_user(self, caller: Caller, user_id: str) -> None:
        await self.client.call("DELETE", f"/v1/support/users/{quote(user_id, safe='')}", caller)

    async def unlock_user(self, caller: Caller, user_id: str) -> None:
        await self.client.call("POST", f"/v1/support/users/{quote(user_id, safe='')}/unlock", caller)

    async def resend_letter(self, caller: Caller, user_id: str) -> dict[str, Any]:
        """`{user_id, username, recipient_cvr, expires_at, deliver_by}` of the new letter."""
        result: dict[str, Any] = await self.client.call(
            "POST", f"/v1/support/users/{quote(user_id, safe='')}/resend-letter", caller
        )
        return result

    # Audit

    async def company_audit(self, caller: Caller, filters: dict[str, str]) -> list[dict[str, Any]]:
        """The caller's company's audit trail within their grants, newest first; `filters` are
        `GET /v1/audit`'s (`from`, `to`, `action`, `user_id`, `before`, `limit`)."""
        result: list[dict[str, Any]] = await self.client.call("GET", "/v1/audit", caller, params=filters)
        return result

    async def support_audit(self, caller: Caller, cvr: str, filters: dict[str, str]) -> list[dict[str, Any]]:
        """One company's audit trail for support staff, with the same filters."""
        result: list[dict[str, Any]] = await self.client.call(
            "GET", "/v1/support/audit", caller, params={**filters, "cvr": cvr}
        )
        return result

    # Forgotten password (docs/identity.md, "Forgotten password")

    async def request_password_reset(self, caller: Caller, username_or_email: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call(
            "POST", "/v1/password-reset", caller, json={"username_or_email": username_or_email}
        )
        return result

    async def confirm_password_reset_email(self, caller: Caller, reset_id: str, code: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call(
            "POST", f"/v1/password-reset/{quote(reset_id, safe='')}/email-code", caller, json={"code": code}
        )
        return result

    async def send_password_reset_sms(self, caller: Caller, reset_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call(
            "POST", f"/v1/password-reset/{quote(reset_id, safe='')}/send", caller
        )
        return result

    async def complete_password_reset(
        self, caller: Caller, reset_id: str, code: str, password: str
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call(
            "POST",
            f"/v1/password-reset/{quote(reset_id, safe='')}/complete",
            caller,
            json={"code": code, "password": password},
        )
        return result

    # Own profile
    async def set_language(self, caller: Caller, language: str) -> dict[str, Any]:
        """The user's own language, for every message to them; answers the new `me`."""
        result: dict[str, Any] = await self.client.call("PATCH", "/v1/me", caller, json={"language": language})
        return result

    async def change_password(self, caller: Caller, current_password: str, new_password: str) -> dict[str, Any]:
        """`{sessions_ended}`: the user's other sessions end, this one goes on."""
        result: dict[str, Any] = await self.client.call(
            "POST",
            "/v1/me/password",
            caller,
            json={"current_password": current_password, "new_password": new_password},
        )
        return result

    async def start_contact_change(self, caller: Caller, field: str, value: str) -> dict[str, Any]:
        """`field` is `email` or `mobile`: `{change_id, field, sent_to, expires_at}`; a code went to `value`."""
        result: dict[str, Any] = await self.client.call("POST", f"/v1/me/{field}", caller, json={field: value})
        return result

    async def confirm_contact_change(self, caller: Caller, change_id: str, code: str) -> dict[str, Any]:
        """The new `me`, once the code sent to the new address came back."""
        result: dict[str, Any] = await self.client.call(
            "POST", f"/v1/me/contact-changes/{quote(change_id, safe='')}/confirm", caller, json={"code": code}
        )
        return result

    async def own_sessions(self, caller: Caller) -> list[dict[str, Any]]:
        """`{id, device, user_agent, client_address, started_at, last_used_at, current}`, latest use first."""
        result: list[dict[str, Any]] = await self.client.call("GET", "/v1/me/sessions", caller)
        return result

    async def end_own_session(self, caller: Caller, session_id: str) -> None:
        await self.client.call("DELETE", f"/v1/me/sessions/{quote(session_id, safe='')}", caller)

    async def end_other_sessions(self, caller: Caller) -> int:
        result: dict[str, Any] = await self.client.call("POST", "/v1/me/sessions/end-others", caller)
        return int(result["sessions_ended"])

    # Takeover

    async def takeover_by_link(self, caller: Caller, cancel_token: str) -> dict[str, Any]:
        """What a takeover notice's cancel link would cancel; nothing changes."""
        result: dict[str, Any] = await self.client.call(
            "POST", "/v1/takeovers/lookup", caller, json={"cancel_token": cancel_token}
        )
        return result

    async def cancel_takeover_by_link(self, caller: Caller, cancel_token: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call(
            "POST", "/v1/takeovers/cancel", caller, json={"cancel_token": cancel_token}
        )
        return result

    async def open_takeovers(self, caller: Caller) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.client.call("GET", "/v1/takeovers", caller)
        return result

    async def cancel_takeover(self, caller: Caller, takeover_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call(
            "POST", f"/v1/takeovers/{quote(takeover_id, safe='')}/cancel", caller
        )
        return result


# --- support console (S3, S13) -------------------------------------------------------------


class OnboardingSupport:
    """Onboarding's read for support staff: a company's applications."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    async def applications(self, caller: Caller, cvr: str) -> list[dict[str, Any]]:
        """Newest first: `{id, status, status_detail, submitted_at, deliver_by, delivered_at, ...}`."""
        result: list[dict[str, Any]] = await self.client.call(
            "GET", "/v1/support/applications", caller, params={"cvr": cvr}
        )
        return result


class Notifier:
    """The notifier's delivery records, for support staff."""

    # A letter's recipient is the company's CVR number (docs/notifications.md).
    LETTER = "credentials_letter"

    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    async def letters(self, caller: Caller, cvr: str, limit: int = 20) -> list[dict[str, Any]]:
        """The letters to a company's e-Boks, newest first."""
        result: list[dict[str, Any]] = await self.client.call(
            "GET", "/v1/deliveries", caller, params={"recipient": cvr, "kind": self.LETTER, "limit": limit}
        )
        return result


class Billing:
    """Billing's API (S8–S11, S14): invoices, usage, orders, master data, telephony. Every call
    carries the user's token; billing answers within its grants and functions."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    # --- telephony
    async def subscriptions(self, caller: Caller, *, cursor: str | None = None, limit: int = 500) -> dict[str, Any]:
        """One page of the subscriptions on the accounts the user may use."""
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        result: dict[str, Any] = await self.client.call("GET", "/v1/subscriptions", caller, params=params)
        return result

    async def subscription(self, caller: Caller, subscription_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call(
            "GET", f"/v1/subscriptions/{quote(subscription_id, safe='')}", caller
        )
        return result

    async def settings(self, caller: Caller, subscription_id: str) -> dict[str, Any]:
        """A subscription's telephony or Personligt Nummer settings (S11), with `version`."""
        response = await self.client.exchange(
            "GET", f"/v1/subscriptions/{quote(subscription_id, safe='')}/settings", caller
        )
        result: dict[str, Any] = response.json()
        return result

    async def change_settings(
        self, caller: Caller, subscription_id: str, patch: dict[str, Any], *, version: int
    ) -> dict[str, Any]:
        """A JSON merge patch of the settings, sent with the version read as `If-Match`, so a
        change made meanwhile is a 412 rather than overwritten."""
        response = await self.client.exchange(
            "PATCH",
            f"/v1/subscriptions/{quote(subscription_id, safe='')}/settings",
            caller,
            json=patch,
            headers={"If-Match": f'"{version}"'},
        )
        result: dict[str, Any] = response.json()
        return result

    # --- orders and master data (S9, S10) ---------------------------------------------------

    async def products(self, caller: Caller) -> list[dict[str, Any]]:
        """The catalogue: each product's code, name, kind, monthly fee and `upgrades_to`."""
        result: list[dict[str, Any]] = await self.client.call("GET", "/v1/products", caller)
        return result

    async def orders(
        self, caller: Caller, *, cursor: str | None = None, status: str | None = None, limit: int = 20
    ) -> dict[str, Any]:
        """A page of orders and upgrades, newest first: `{items, next_cursor}`."""
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        if status:
            params["status"] = status
        result: dict[str, Any] = await self.client.call("GET", "/v1/orders", caller, params=params)
        return result

    async def order(self, caller: Caller, order_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.call("GET", f"/v1/orders/{quote(order_id, safe='')}", caller)
        return result

    async def place_order(self, caller: Caller, key: str, order: dict[str, Any]) -> dict[str, Any]:
        """A new subscription; a second call with the same `key` answers the first order."""
        response = await self.client.exchange(
            "POST", "/v1/orders", caller, json=order, headers={"Idempotency-Key": key}
        )
        result: dict[str, Any] = response.json()
        return result

    async def upgrade(self, caller: Caller, key: str, subscription_id: str, product_code: str) -> dict[str, Any]:
        response = await self.client.exchange(
            "POST",
            f"/v1/subscriptions/{quote(subscription_id, safe='')}/upgrade",
            caller,
            json={"product_code": product_code},
            headers={"Idempotency-Key": key},
        )
        result: dict[str, Any] = response.json()
        return result

    async def master_data(self, caller: Caller, cvr: str) -> tuple[dict[str, Any], str]:
        """A company's master data and its ETag, to send back as `If-Match` with a change."""
        response = await self.client.exchange("GET", f"/v1/companies/{quote(cvr, safe='')}/master-data", caller)
        return response.json(), response.headers.get("etag", "")

    async def change_master_data(
        self, caller: Caller, cvr: str, etag: str, changes: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        response = await self.client.exchange(
            "PATCH",
            f"/v1/companies/{quote(cvr, safe='')}/master-data",
            caller,
            json=changes,
            headers={"If-Match": etag},
        )
        return response.json(), response.headers.get("etag", "")

    async def invoice_format(self, caller: Caller, account_number: str) -> tuple[dict[str, Any], str]:
        response = await self.client.exchange(
            "GET", f"/v1/accounts/{quote(account_number, safe='')}/invoice-format", caller
        )
        return response.json(), response.headers.get("etag", "")

    async def set_invoice_format(
        self, caller: Caller, account_number: str, etag: str, invoice_format: dict[str, Any]
    ) -> tuple[dict[str, Any], str]:
        response = await self.client.exchange(
            "PUT",
            f"/v1/accounts/{quote(account_number, safe='')}/invoice-format",
            caller,
            json=invoice_format,
            headers={"If-Match": etag},
        )
        return response.json(), response.headers.get("etag", "")
    # --- invoices and usage (S8, S14) ------------------------------------------------------

    async def invoices(self, caller: Caller, params: list[tuple[str, str]]) -> dict[str, Any]:
        """`GET /v1/invoices` (`cvr`, `account`, `from`, `to`, `cursor`, `limit`): `{items, next_cursor}`,
        newest first."""
        result: dict[str, Any] = await self.client.call("GET", "/v1/invoices", caller, params=params)
        return result

    async def invoice(self, caller: Caller, invoice_id: str) -> dict[str, Any]:
        """One invoice with its lines; 404 for an id outside the caller's grants."""
        result: dict[str, Any] = await self.client.call(
            "GET", f"/v1/invoices/{quote(invoice_id, safe='')}", caller
        )
        return result

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
        result: dict[str, Any] = await self.client.call("GET", "/v1/usage/summary", caller, params=params)
        return result

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


@dataclass
class Services:
    """The clients a page may call, built once per process."""

    onboarding: Onboarding
    identity: Identity
    _clients: list[ServiceClient]
    # --- support console (S3, S13)
    onboarding_support: OnboardingSupport
    notifier: Notifier
    # --- billing's pages (S8–S11)
    billing: Billing

    @classmethod
    def connect(
        cls, settings: PortalSettings, transports: dict[str, httpx.AsyncBaseTransport] | None = None
    ) -> Services:
        transports = transports or {}

        def client(name: str, url: str) -> ServiceClient:
            return ServiceClient(
                name, url, timeout_s=settings.service_timeout_s, transport=transports.get(name)
            )

        onboarding = client("onboarding", settings.onboarding_url)
        identity = client("identity", settings.identity_url)
        notifier = client("notifier", settings.notifier_url)
        billing = client("billing", settings.billing_url)
        return cls(
            onboarding=Onboarding(onboarding),
            identity=Identity(identity),
            _clients=[onboarding, identity, notifier, billing],
            onboarding_support=OnboardingSupport(onboarding),
            notifier=Notifier(notifier),
            billing=Billing(billing),
        )

    async def close(self) -> None:
        for client in self._clients:
            await client.close()
