"""JSON over HTTP to the services: who a call is made for (`Caller`), the client of one
service (`ServiceClient`), and how a refusal (`ServiceProblem`) or silence
(`ServiceUnavailable`) reaches the pages."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, TypedDict, Unpack

import httpx

from shared import correlation
from shared.tls import default_tls_context


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
        if correlation_id := correlation.current():  # the browser's request's, on to the service
            headers[correlation.HEADER] = correlation_id
        return headers


class Options(TypedDict, total=False):
    """What a call may send besides its method and path."""

    json: Any
    params: dict[str, Any] | list[tuple[str, Any]] | None
    headers: dict[str, str] | None


class ServiceClient:
    """JSON over HTTP to one service; problem+json answers become `ServiceProblem`."""

    def __init__(
        self, name: str, base_url: str, *, timeout_s: float, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.name = name
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout_s, transport=transport, verify=default_tls_context()
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def call(self, method: str, path: str, caller: Caller, **options: Unpack[Options]) -> Any:
        """The answer's JSON (None for an empty answer)."""
        response = await self.exchange(method, path, caller, **options)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    async def json_object(
        self, method: str, path: str, caller: Caller, **options: Unpack[Options]
    ) -> dict[str, Any]:
        """`call` for an answer that is a JSON object."""
        result: dict[str, Any] = await self.call(method, path, caller, **options)
        return result

    async def json_list(
        self, method: str, path: str, caller: Caller, **options: Unpack[Options]
    ) -> list[dict[str, Any]]:
        """`call` for an answer that is a JSON list of objects."""
        result: list[dict[str, Any]] = await self.call(method, path, caller, **options)
        return result

    async def versioned(
        self, method: str, path: str, caller: Caller, **options: Unpack[Options]
    ) -> tuple[dict[str, Any], str]:
        """A resource read or changed with its version: its JSON and its ETag, which a change
        sends back as `If-Match` (so a change made meanwhile is a 412, not overwritten)."""
        response = await self.exchange(method, path, caller, **options)
        return response.json(), response.headers.get("etag", "")

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


class ServiceApi:
    """One service's API as the pages call it: a method a call, over that service's client."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client


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
