"""What the portal's pages depend on, as `Annotated` aliases: a route says what it needs
(`Page`, `SignedInPage`, `CustomerPage`, `StaffPage`, `Form`, a function's page from
`needs_function`) and nothing more. They read the parts the app was built with
(`app.state.parts`, `services.portal.bootstrap`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import FormData

from services.portal.clients import ServiceUnavailable
from services.portal.i18n import chosen_language
from services.portal.sessions import new_cookie_value
from services.portal.web import CsrfRefused, LoginRequired, PageContext, PageProblem, here, parts_of


async def page_context(request: Request) -> PageContext:
    portal = parts_of(request)
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
        raise LoginRequired(here(context.request))
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
