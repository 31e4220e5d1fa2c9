"""The portal: the website people use (S1–S7, S12–S14), in Danish and English.

A backend-for-frontend (docs/portal.md): server-rendered pages that call onboarding and
identity over their HTTP APIs with the user's token, kept here and never sent to the browser.
This builds the app from the portal's parts (`bootstrap.build`); the pages are the routers in
`pages/`, what they share is in `web.py` and `deps.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from services.portal.bootstrap import PortalParts, build
from services.portal.clients import ServiceProblem, ServiceUnavailable
from services.portal.config import PortalSettings
from services.portal.pages import (
    account,
    activation,
    apply,
    audit,
    billing_invoices,
    billing_master_data,
    billing_orders,
    billing_telephony,
    billing_usage,
    login,
    myprofile,
    password_reset,
    profile,
    public,
    support,
    takeover,
    users,
)
from services.portal.web import (
    SECURITY_HEADERS,
    CsrfRefused,
    LoginRequired,
    PageProblem,
    login_redirect,
    parts_of,
    render_problem,
    set_session_cookie,
)
from shared.clock import Clock
from shared.db import database_unavailable, unavailable_errors
from shared.web import DATABASE_RETRY_AFTER_S, create_app

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
# A body over the limit never reaches these: shared.web.RequestBodyLimit answers it first.
_STATUS_MESSAGES = {404: "error.not-found", 405: "error.not-found"}


def create_api(
    settings: PortalSettings | None = None,
    *,
    clock: Clock | None = None,
    transports: dict[str, httpx.AsyncBaseTransport] | None = None,
) -> FastAPI:
    """`transports` lets tests put the services in-process (`tests/support/asgi.py`)."""
    parts = build(settings, clock=clock, transports=transports)
    purging: list[asyncio.Task[None]] = []

    async def start_purging() -> None:
        purging.append(asyncio.create_task(_purge_sessions(parts)))

    async def stop() -> None:
        for task in purging:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await parts.services.close()

    app = create_app(
        title="Adgang portal",
        description="The self-service website.",
        settings=parts.settings,
        db=parts.db,
        uses_broker=False,
        on_startup=[start_purging],
        on_shutdown=[stop],
    )
    app.state.parts = parts
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for pages in (
        public,
        login,
        account,
        profile,
        apply,
        activation,
        users,
        support,
        password_reset,
        myprofile,
        audit,
        takeover,
        billing_telephony,
        billing_orders,
        billing_master_data,
        billing_invoices,
        billing_usage,
    ):
        app.include_router(pages.router)
    _install_error_pages(app)
    app.add_middleware(SecurityHeaders)
    return app


async def _purge_sessions(parts: PortalParts) -> None:
    while True:
        await asyncio.sleep(parts.settings.sessions_purge_interval_s)
        try:
            await parts.sessions.purge()
        except Exception:
            log.exception("purging ended browser sessions failed; trying again later")


class SecurityHeaders(BaseHTTPMiddleware):
    """The headers of every answer (docs/portal.md), the time the answer took, and the first
    visit's session cookie."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        # How long the portal took, the services' calls included (bench/portal_users.py reads it).
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.path.startswith("/static/") and response.status_code in (200, 304):
            # Only the files themselves: an error page there shows the person (their name, their
            # form token) and stays `no-store` like every page.
            response.headers["Cache-Control"] = "public, max-age=3600"
            if "pragma" in response.headers:
                del response.headers["pragma"]
        new_cookie = getattr(request.state, "new_cookie", None)
        settings = parts_of(request).settings
        already = any(
            value.startswith(settings.session_cookie + "=")
            for value in response.headers.getlist("set-cookie")
        )
        if new_cookie and not already:
            set_session_cookie(response, settings, new_cookie)
        return response


def _install_error_pages(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if exc.ended_at_identity:
            # Else the login page would take the browser for signed in and send it back here.
            parts = parts_of(request)
            await parts.sessions.end(request.cookies.get(parts.settings.session_cookie))
        return login_redirect(exc.next_path)

    @app.exception_handler(ServiceProblem)
    async def refused(request: Request, exc: ServiceProblem) -> Response:
        """A refusal the page did not put in words itself."""
        if exc.status == 401:
            return await login_required(request, LoginRequired(request.url.path, ended_at_identity=True))
        if exc.status in (403, 404):
            return await render_problem(
                request, exc.status, "error.forbidden" if exc.status == 403 else "error.not-found"
            )
        log.warning("a service refused a page's call", extra={"status": exc.status, "problem": exc.kind})
        return await render_problem(request, 500, "error.server")

    @app.exception_handler(PageProblem)
    async def page_problem(request: Request, exc: PageProblem) -> Response:
        return await render_problem(request, exc.status, exc.message_id)

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, exc: CsrfRefused) -> Response:
        return await render_problem(request, 403, "error.csrf")

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(request: Request, exc: ServiceUnavailable) -> Response:
        log.warning("a service did not answer", extra={"service": exc.service})
        return await render_problem(request, 503, "error.unavailable")

    async def database_away(request: Request, exc: Exception) -> Response:
        """The portal's own database away: the page asks the person to try again, as when a
        service does not answer (shared.web answers the APIs' clients with problem+json)."""
        if not database_unavailable(exc):
            raise exc  # not an outage: the 500 page, with the trace in the log
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        response = await render_problem(request, 503, "error.unavailable")
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
        return response

    for error_class in (*unavailable_errors(), DBAPIError):
        app.add_exception_handler(error_class, database_away)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path in ("/healthz", "/readyz", "/metrics"):
            raise exc
        return await render_problem(
            request, exc.status_code, _STATUS_MESSAGES.get(exc.status_code, "error.not-found")
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        return await render_problem(request, 404, "error.not-found")

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("a page failed")
        return await render_problem(request, 500, "error.server")
