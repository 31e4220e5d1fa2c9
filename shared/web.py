"""The common shape of every HTTP API: problem+json errors, health, readiness and metrics,
and its edge (docs/security.md): a bounded request body, `Cache-Control: no-store`,
documentation and metrics only where configured, and the server that runs it."""

from __future__ import annotations

import hmac
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import correlation
from shared.db import Database, database_unavailable, unavailable_errors
from shared.kafka import broker_reachable
from shared.observability import metrics_text
from shared.problems import (
    MEDIA_TYPE,
    InvalidField,
    RequestTooLarge,
    ServiceUnavailable,
    Unauthenticated,
    install_problem_handlers,
    problem_response,
)
from shared.ratelimit import client_address
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

# The methods the HTTP metrics name; any other a client sends is counted as `other`, so that a
# client cannot add label values (series) at will.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# What a 503 asks a client to wait before sending the request again while the database is away.
DATABASE_RETRY_AFTER_S = 5


async def _client_address(request: Request) -> str:
    """`client_address` as a dependency: `async`, or FastAPI would run it in a worker thread."""
    return client_address(request)


# The caller's address as a route dependency (audit entries and per-address limits name it).
ClientAddress = Annotated[str, Depends(_client_address)]


def create_app(
    *,
    title: str,
    description: str,
    settings: ServiceSettings,
    db: Database,
    on_shutdown: list[Callable[[], Awaitable[None]]] | None = None,
    readiness_checks: dict[str, Callable[[], Awaitable[str]]] | None = None,
    uses_broker: bool = True,
    on_startup: list[Callable[[], Awaitable[None]]] | None = None,
) -> FastAPI:
    """`readiness_checks` are extra named checks for `/readyz`, each answering "ok" or why not.
    A service that `uses_broker` is ready only while the broker is reachable. An API measures no
    outbox: its service's worker, which relays the outbox, reports the backlog on its own
    `/metrics` (`shared.worker`)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for hook in on_startup or []:
            await hook()
        yield
        for hook in on_shutdown or []:
            await hook()
        await db.dispose()

    docs = settings.serves_api_docs
    app = FastAPI(
        title=title,
        description=description,
        version="1.0.0",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    install_problem_handlers(app)
    _answer_database_outages(app)

    registry = CollectorRegistry()
    requests = Counter(
        "http_requests_total", "HTTP requests", ["method", "route", "status"], registry=registry
    )
    latency = Histogram(
        "http_request_seconds", "HTTP request latency", ["method", "route"], registry=registry
    )

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": settings.service}

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Database and broker are reachable",
        responses={503: {"description": "Not ready: the body names the failing checks"}},
    )
    async def readyz() -> JSONResponse:
        checks: dict[str, Any] = {}
        try:
            await db.ping()
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        if uses_broker:
            reachable = await broker_reachable(settings.kafka_bootstrap_servers)
            checks["broker"] = "ok" if reachable else "unreachable"
        for name, check in (readiness_checks or {}).items():
            try:
                checks[name] = await check()
            except Exception as exc:
                checks[name] = f"failed: {type(exc).__name__}"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not-ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    if settings.serves_metrics:
        token = settings.metrics_token

        @app.get(
            "/metrics",
            tags=["operations"],
            summary="Prometheus metrics"
            + (" (Authorization: Bearer with the metrics token)" if token is not None else ""),
            response_class=Response,
            responses={
                200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Prometheus text"},
                **({401: {"description": "The metrics token is missing or wrong"}} if token is not None else {}),
            },
        )
        async def metrics(request: Request) -> Response:
            if token is not None:
                _require_bearer(request, token.get_secret_value())
            # The HTTP metrics of this app, then the domain metrics of the process.
            return Response(metrics_text(registry), media_type=CONTENT_TYPE_LATEST)

    # Pure ASGI middleware (Starlette's `BaseHTTPMiddleware` runs every request through a task
    # group and memory streams: it cost more than a cheap route itself). Innermost first.
    app.add_middleware(HttpMetrics, requests=requests, latency=latency)
    app.add_middleware(RefuseNulCharacters)
    # Added last, so outermost: the limit applies before anything reads the body, and every
    # answer, the limit's 413 too, gets its Cache-Control.
    app.add_middleware(RequestBodyLimit, max_bytes=settings.max_request_body_bytes)
    app.add_middleware(NoStoreByDefault)
    app.add_middleware(CorrelationId)  # outermost: every log line of the request carries it
    _describe_errors_as_problems(app)
    return app


def _answer_database_outages(app: FastAPI) -> None:
    """While the database cannot be reached (stopped, restarting, out of connections), every
    route answers 503 problem+json with `Retry-After`, not a 500 with a stack trace in the log:
    the request was fine, and the same request will work once the database is back. Any other
    database error stays a 500 (`shared.problems`)."""

    async def unavailable(request: Request, error: Exception) -> Response:
        if not database_unavailable(error):
            raise error  # not an outage: the 500 handler logs it with its trace
        log.warning(
            "database unavailable on %s %s: %s", request.method, request.url.path, type(error).__name__
        )
        problem = ServiceUnavailable(
            "The database is not reachable at the moment, so the request could not be completed. "
            f"Send it again in {DATABASE_RETRY_AFTER_S} seconds.",
            retry_after=DATABASE_RETRY_AFTER_S,
        )
        return problem_response(problem, request)

    for error_class in (*unavailable_errors(), DBAPIError):
        app.add_exception_handler(error_class, unavailable)


# How long an API keeps an idle HTTP/1.1 connection open, in seconds. Longer than the time the
# suite's clients (httpx: 5 s, `httpx.Limits().keepalive_expiry`) and common proxies reuse an
# idle connection: with uvicorn's 5 s both ends let go at the same moment, and a request sent on
# the connection the server was closing failed with "Server disconnected without sending a
# response" (one invoice read in a soak run).
KEEP_ALIVE_S = 75


def server_config(settings: ServiceSettings, app: ASGIApp) -> uvicorn.Config:
    """How `adgang api` serves an API with uvicorn.

    The one place that decides the client address (`shared.ratelimit.client_address`): proxy
    headers are honoured only when `trust_forwarded_for` is set, and then only from the peers
    in `trusted_proxies`. uvicorn's own defaults (proxy headers on, trusted `127.0.0.1` or
    `FORWARDED_ALLOW_IPS`) are never used: with them, any caller on the same host chose its
    address with `X-Forwarded-For`.
    """
    trusted = settings.trust_forwarded_for
    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.port,
        log_config=None,
        access_log=True,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=KEEP_ALIVE_S,
        proxy_headers=trusted,
        forwarded_allow_ips=list(settings.trusted_proxies) if trusted else [],
    )


def reuse_port_supported() -> bool:
    """Whether this system lets several processes listen on one port (SO_REUSEPORT: Linux 3.9+,
    the BSDs, macOS); where it does not, instances serve alternative ports."""
    if not hasattr(socket, "SO_REUSEPORT"):
        return False
    with socket.socket() as probe:
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        except OSError:
            return False
    return True


def shared_port_socket(settings: ServiceSettings) -> socket.socket:
    """The API's listening socket, bound with SO_REUSEPORT so that every instance of the
    service binds the same port and the kernel spreads new connections among them; clients
    need no load balancer. Listening starts only once the app has started (uvicorn), so a
    starting instance receives no connection. Raises OSError when the port is taken by a
    process that did not set SO_REUSEPORT, or when the system has no SO_REUSEPORT."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("SO_REUSEPORT is not available on this system; give each instance its own port")
    family = socket.AF_INET6 if ":" in settings.http_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((settings.http_host, settings.port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _require_bearer(request: Request, expected: str) -> None:
    """401 unless the request carries `Authorization: Bearer <expected>`; compared in constant
    time, so the answer's timing does not tell how much of a guess was right."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if not (scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())):
        raise Unauthenticated(
            "Send the metrics token as 'Authorization: Bearer <token>' (the service's METRICS_TOKEN setting)."
        )


class HttpMetrics:
    """`http_requests_total` and `http_request_seconds` by method, route template and status.
    The route is the template the router matched (`scope["route"]`, set in the shared scope),
    `unmatched` for none; a method not in `_KNOWN_METHODS` counts as `other`."""

    def __init__(self, app: ASGIApp, *, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, send_noting_status)
        path = getattr(scope.get("route"), "path", "unmatched")
        method = scope["method"] if scope["method"] in _KNOWN_METHODS else "other"
        self.requests.labels(method, path, str(status)).inc()
        self.latency.labels(method, path).observe(time.perf_counter() - started)


class RefuseNulCharacters:
    """A NUL character is never meaningful in this product's text, and PostgreSQL cannot store
    one: refuse it up front, for every service and every field, with a 422.

    The body read here is at most `max_request_body_bytes` (`RequestBodyLimit` is outside); the
    app then receives it as one message, and whatever comes after (a disconnect) from the
    server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        where = None
        if b"%00" in scope.get("query_string", b"") or b"%00" in scope.get("raw_path", b""):
            where = "query"
        elif scope["method"] in ("POST", "PUT", "PATCH"):
            chunks = []
            more = True
            while more:
                message = await receive()
                if message["type"] != "http.request":  # the client went away: hand that on
                    await self.app(scope, _replay([message], receive), send)
                    return
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            body = b"".join(chunks)
            if b"\\u0000" in body or b"\x00" in body:
                where = "body"
            else:
                replayed: Message = {"type": "http.request", "body": body, "more_body": False}
                await self.app(scope, _replay([replayed], receive), send)
                return
        if where is None:
            await self.app(scope, receive, send)
            return
        problem = InvalidField(where, "text must not contain NUL characters (\\u0000)")
        await problem_response(problem, Request(scope))(scope, _nothing_more, send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that gives `messages` first, then what the server sends."""
    pending = list(messages)

    async def replaying() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replaying


class CorrelationId:
    """Gives each request a correlation id (`shared.correlation`): the caller's
    `X-Correlation-ID` when it is well formed, else a new one; echoed in the response's
    `X-Correlation-ID`. It is set for the request's own task and not reset afterwards, so the
    server's access line and an error logged on the way out carry it too (uvicorn runs each
    request in a task of its own)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next(
            (value for name, value in scope["headers"] if name == b"x-correlation-id"), None
        )
        correlation_id = correlation.well_formed(given.decode("latin-1") if given else None)
        correlation_id = correlation_id or correlation.new_correlation_id()
        correlation.set_current(correlation_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[correlation.HEADER] = correlation_id
            await send(message)

        await self.app(scope, receive, send_with_id)


class _BodyTooLarge(Exception):
    """Raised into whoever reads past the limit; `RequestBodyLimit` turns it into the 413."""


class RequestBodyLimit:
    """Refuses a request body larger than `max_bytes` with 413 problem+json.

    At once when `Content-Length` says the body is larger, without reading any of it; for a
    body without a length (chunked), as soon as the bytes received pass the limit: the read
    that passes it fails, nothing after it is read, and whatever the app made of the cut-off
    body is replaced by the 413. Pure ASGI and outermost, so no middleware buffers more than
    the limit (`RefuseNulCharacters` reads whole bodies).

    What the client still sends after the answer, uvicorn discards as it arrives, without
    keeping it, and the connection stays usable. Closing it instead would make the kernel
    reset the connection over the unread bytes, and most clients would then lose the 413.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send)
            return
        received = 0
        exceeded = False
        responding = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal responding
            if exceeded and not responding:
                return  # the answer to a cut-off body is the 413, whatever the app made of it
            responding = responding or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded or responding:
                raise
        if exceeded and not responding:
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        problem = RequestTooLarge(
            f"The request body is larger than {self.max_bytes} bytes, the most this API accepts. "
            "Send a smaller body."
        )
        response: Response
        if _wants_html(scope):
            # A person's browser posting a form (the portal): words, in both languages, since
            # nothing of the request has been read to know which.
            response = HTMLResponse(_TOO_LARGE_PAGE, status_code=problem.status)
        else:
            response = JSONResponse(
                problem.body(instance=scope.get("path")), status_code=problem.status, media_type=MEDIA_TYPE
            )
        await response(scope, _nothing_more, send)


_TOO_LARGE_PAGE = """<!doctype html>
<html lang="da"><head><meta charset="utf-8"><title>For stort / Too large</title></head>
<body><main><h1>Det, du sendte, er for stort</h1>
<p>Gå tilbage, og send mindre ad gangen.</p>
<p lang="en">What you sent is too large. Go back and send less at a time.</p></main></body></html>
"""


def _wants_html(scope: Scope) -> bool:
    """A browser's request: it asks for HTML first (`Accept: text/html,...`)."""
    for name, value in scope.get("headers", []):
        if name == b"accept":
            return value.split(b",")[0].strip().startswith(b"text/html")
    return False


async def _nothing_more() -> Message:
    return {"type": "http.disconnect"}


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before the app sees it
    return None


class NoStoreByDefault:
    """`Cache-Control: no-store` and `Pragma: no-cache` on every answer whose route set no
    Cache-Control of its own.

    Every answer of these APIs is personal or security-relevant: access and refresh tokens,
    TOTP secrets and recovery codes, invoices, names and numbers. No browser, proxy or shared
    cache may keep one.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_not_to_be_stored(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
                    headers.setdefault("Pragma", "no-cache")
            await send(message)

        await self.app(scope, receive, send_not_to_be_stored)


class ProblemDetails(BaseModel):
    """RFC 9457 problem details: the body of every error answer."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[dict[str, str]] | None = Field(
        default=None, description="One entry per field: field, message"
    )


def _describe_errors_as_problems(app: FastAPI) -> None:
    """Every error answer is problem+json; say so in the OpenAPI document for every route."""
    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = base_openapi()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ProblemDetails"] = ProblemDetails.model_json_schema()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if "parameters" in operation or "requestBody" in operation:
                    responses.setdefault("422", {"description": "A field is not valid"})
                if "requestBody" in operation:
                    responses.setdefault("400", {"description": "The body is not valid JSON"})
                for status, response in responses.items():
                    if status.isdigit() and int(status) >= 400 and int(status) != 503:
                        response["content"] = {
                            MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}
                        }
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
