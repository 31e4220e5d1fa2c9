"""What every page of the portal shares: one request as a page sees it (`PageContext`),
rendering, the cookies, the security headers, and the pages for errors.

Pages are thin (docs/portal.md): a route parses the form, calls one client method, and
renders one template named after the route. What a route depends on is in `deps.py`
(`Page`, `CustomerPage`, `StaffPage`, `Form`, ...).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData
from starlette.routing import Match

from services.portal.bootstrap import PortalParts
from services.portal.clients import Caller, ServiceProblem, Services
from services.portal.config import PortalSettings
from services.portal.i18n import DEFAULT_LANGUAGE, Texts, chosen_language
from services.portal.sessions import SignedIn, new_cookie_value
from shared.ratelimit import client_address

log = logging.getLogger(__name__)

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
    portal: PortalParts
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
            here=here(self.request),
            **values,
        )
        return HTMLResponse(page, status_code=status)

    def redirect(self, path: str) -> RedirectResponse:
        return RedirectResponse(path, status_code=303)


def here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def page_here(request: Request) -> str | None:
    """`here`, when asking for it (GET) gives a page: a form's path shows the form afresh. None
    for a path that is only ever sent to (logging out, ending the other sessions), where a link
    would only lead to 'page not found'."""
    asked = {**request.scope, "method": "GET"}
    if any(route.matches(asked)[0] is Match.FULL for route in request.app.router.routes):
        return here(request)
    return None


def parts_of(request: Request) -> PortalParts:
    parts: PortalParts = request.app.state.parts
    return parts


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
    portal = parts_of(request)
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
    # The 503 page's 'try again' asks for the page once more (following a link changes nothing).
    try_again = page_here(request) if status == 503 else None
    response = context.render(
        "error.html", status=status, message_id=message_id, status_code=status, try_again=try_again
    )
    # A 500 is answered outside the middleware that adds these to every other answer, and it
    # shows the person as every page does: not to be kept by any cache either.
    response.headers.update(SECURITY_HEADERS)
    response.headers.update(NO_STORE)
    return response
