"""What every page of the portal shares: the language, the browser's session and its CSRF
token, rendering, the security headers, and the pages for errors.

Pages are thin (docs/portal.md): a route parses the form, calls one client method, and
renders one template named after the route. The dependencies below are `Annotated` aliases,
so a route says what it needs (`Page`, `Customer`, `Staff`, `Form`) and nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.datastructures import FormData

from services.portal.clients import Caller, ServiceProblem, Services, ServiceUnavailable
from services.portal.config import PortalSettings
from services.portal.i18n import DEFAULT_LANGUAGE, Texts, chosen_language
from services.portal.sessions import SessionStore, SignedIn, new_cookie_value
from shared.clock import Clock
from shared.ratelimit import client_address

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

# No inline script or style, nothing from another origin, no framing, forms post only here.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}

# Pages show personal data: no browser or shared cache keeps them (as `NoStoreByDefault`).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

# The left menu (S5.1): an entry shows only when the user's functions allow it.
MENU = (
    ("menu.overview", "/oversigt", None),
    ("menu.invoices", "/fakturaer", "invoices"),
    ("menu.usage", "/forbrug", "invoices"),
    ("menu.orders", "/bestil", "orders"),
    ("menu.master-data", "/stamdata", "master_data"),
    ("menu.telephony", "/telefoni", "telephony"),
    ("menu.users", "/brugere", "user_admin"),
    ("menu.profile", "/profil", None),
    ("menu.audit", "/revision", "user_admin"),
)


@dataclass
class Portal:
    """The parts a page uses, built once per process (`services.portal.api.create_api`)."""

    settings: PortalSettings
    services: Services
    sessions: SessionStore
    texts: dict[str, Texts]
    templates: Environment
    clock: Clock


def template_environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment


class PageProblem(Exception):
    """An answer in words instead of the page: 403 (not allowed), 404, or "try again"."""

    def __init__(self, status: int, message_id: str) -> None:
        super().__init__(message_id)
        self.status = status
        self.message_id = message_id


class LoginRequired(Exception):
    """No live session: to the login, and back to this page afterwards. `ended_at_identity`:
    identity refused the session's token (a logout elsewhere, a disabled login, changed
    access), so the portal forgets the session too."""

    def __init__(self, next_path: str, *, ended_at_identity: bool = False) -> None:
        super().__init__(next_path)
        self.next_path = next_path
        self.ended_at_identity = ended_at_identity


class CsrfRefused(Exception):
    pass


def safe_next(value: str | None, default: str = "/oversigt") -> str:
    """A path on this site to return to after login; anything else (another site, `//host`,
    a scheme) becomes `default`, so the login cannot be made to send people elsewhere."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    return value


@dataclass
class PageContext:
    """One request as a page sees it."""

    request: Request
    portal: Portal
    cookie: str
    language: str
    user: SignedIn | None

    @property
    def texts(self) -> Texts:
        return self.portal.texts[self.language]

    @property
    def services(self) -> Services:
        return self.portal.services

    @property
    def caller(self) -> Caller:
        """The browser's address, and the user's token when logged in, for a service call."""
        return Caller(
            address=client_address(self.request),
            access_token=self.user.access_token if self.user else None,
            user_agent=self.request.headers.get("user-agent"),
        )

    @property
    def anonymous_caller(self) -> Caller:
        return Caller(address=client_address(self.request), user_agent=self.request.headers.get("user-agent"))

    def _(self, message_id: str, **values: object) -> str:
        return self.texts.gettext(message_id, **values)

    def render(self, template: str, *, status: int = 200, **values: Any) -> HTMLResponse:
        menu = []
        if self.user is not None and not self.user.is_staff:
            menu = [
                (self._(label), path)
                for label, path, function in MENU
                if function is None or function in self.user.functions
            ]
        elif self.user is not None:
            menu = [(self._("menu.support"), "/support"), (self._("menu.profile"), "/profil")]
        page = self.portal.templates.get_template(template).render(
            _=self._,
            when=self.texts.when,
            lang=self.language,
            other_language="en" if self.language == "da" else "da",
            csrf_token=self.portal.sessions.csrf_token(self.cookie),
            user=self.user,
            menu=menu,
            path=self.request.url.path,
            here=_here(self.request),
            **values,
        )
        return HTMLResponse(page, status_code=status)

    def redirect(self, path: str) -> RedirectResponse:
        return RedirectResponse(path, status_code=303)


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def portal_of(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


async def page_context(request: Request) -> PageContext:
    portal = portal_of(request)
    cookie = request.cookies.get(portal.settings.session_cookie) or ""
    if not cookie:
        # A first visit: a fresh value, set on the answer (`SessionCookieMiddleware`), so the
        # page's forms carry a CSRF token bound to it. No row is stored for a visitor.
        cookie = new_cookie_value()
        request.state.new_cookie = cookie
    context = PageContext(
        request=request,
        portal=portal,
        cookie=cookie,
        language=chosen_language(request.cookies.get(portal.settings.language_cookie)),
        user=None,
    )
    try:
        context.user = await portal.sessions.signed_in(
            cookie, portal.services.identity, context.anonymous_caller
        )
    except ServiceUnavailable:
        raise PageProblem(503, "error.unavailable") from None
    return context


async def signed_in_context(context: Annotated[PageContext, Depends(page_context)]) -> PageContext:
    if context.user is None:
        raise LoginRequired(_here(context.request))
    return context


async def customer_context(context: Annotated[PageContext, Depends(signed_in_context)]) -> PageContext:
    """A customer's pages; support staff, who belong to no company, have the console instead."""
    if context.user is not None and context.user.is_staff:
        raise PageProblem(403, "error.customers-only")
    return context


async def staff_context(context: Annotated[PageContext, Depends(signed_in_context)]) -> PageContext:
    if context.user is not None and not context.user.is_staff:
        raise PageProblem(403, "error.staff-only")
    return context


def needs_function(function: str) -> Callable[[PageContext], Awaitable[PageContext]]:
    """A page for users with `function` (S5.6); others get a 403 that says so in words. The
    service behind the page decides again with the token."""

    async def check(context: Annotated[PageContext, Depends(customer_context)]) -> PageContext:
        if context.user is not None and function not in context.user.functions:
            raise PageProblem(403, f"error.needs-{function}")
        return context

    return check


async def checked_form(request: Request, context: Annotated[PageContext, Depends(page_context)]) -> FormData:
    """The posted form, once its CSRF token matched the browser's cookie."""
    form = await request.form()
    token = form.get("csrf_token")
    if not isinstance(token, str) or not context.portal.sessions.csrf_matches(context.cookie, token):
        raise CsrfRefused()
    if any(isinstance(value, str) and "\x00" in value for _, value in form.multi_items()):
        # No text of the product holds one, and the services' refusal of it names no field of
        # any form (`body`): said here, in words, before any service is asked.
        raise PageProblem(422, "error.nul")
    return form


Page = Annotated[PageContext, Depends(page_context)]
SignedInPage = Annotated[PageContext, Depends(signed_in_context)]
CustomerPage = Annotated[PageContext, Depends(customer_context)]
StaffPage = Annotated[PageContext, Depends(staff_context)]
Form = Annotated[FormData, Depends(checked_form)]


def text_field(form: FormData, name: str, *, max_length: int = 500) -> str:
    value = form.get(name)
    return value.strip()[:max_length] if isinstance(value, str) else ""


def field_errors(page: PageContext, problem: ServiceProblem, area: str) -> dict[str, str]:
    """The service's field errors, in this language where the catalogue has words for the
    field (`<area>.invalid.<field>`), else the service's own message."""
    errors = {}
    for name, message in problem.field_errors().items():
        key = f"{area}.invalid.{name}"
        text = page._(key)
        errors[name] = text if text != key else message
    return errors


def set_session_cookie(response: Response, settings: PortalSettings, value: str) -> None:
    response.set_cookie(
        settings.session_cookie,
        value,
        httponly=True,
        secure=settings.secure_cookies,
        samesite="lax",
        path="/",
    )


def clear_session_cookie(response: Response, settings: PortalSettings) -> None:
    response.delete_cookie(
        settings.session_cookie, path="/", secure=settings.secure_cookies, httponly=True, samesite="lax"
    )


def login_redirect(next_path: str) -> RedirectResponse:
    return RedirectResponse(f"/log-ind?next={quote(next_path, safe='/')}&udloebet=1", status_code=303)


async def render_problem(request: Request, status: int, message_id: str) -> HTMLResponse:
    """An error page in the visitor's language, with one `h1` and a way on."""
    portal = portal_of(request)
    language = chosen_language(request.cookies.get(portal.settings.language_cookie)) or DEFAULT_LANGUAGE
    cookie = request.cookies.get(portal.settings.session_cookie) or getattr(request.state, "new_cookie", "")
    context = PageContext(
        request=request, portal=portal, cookie=cookie or new_cookie_value(), language=language, user=None
    )
    try:
        context.user = await portal.sessions.signed_in(
            cookie, portal.services.identity, context.anonymous_caller
        )
    except Exception:  # an error page must not fail on the session
        context.user = None
    response = context.render("error.html", status=status, message_id=message_id, status_code=status)
    # A 500 is answered outside the middleware that adds these to every other answer, and it
    # shows the person as every page does: not to be kept by any cache either.
    response.headers.update(SECURITY_HEADERS)
    response.headers.update(NO_STORE)
    return response
