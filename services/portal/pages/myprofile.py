"""Min profil, the user's own changes (issue 10, item 2): a new password, a new email or mobile
number confirmed by a code sent to it, and the user's own sessions.

- `/profil/adgangskode`: the current password and a new one (identity `POST /v1/me/password`);
  the other sessions end, this one goes on.
- `/profil/email` and `/profil/mobil`: the new address (`POST /v1/me/email|mobile`), then
  `/profil/email/kode` or `/profil/mobil/kode`: the code sent to it
  (`POST /v1/me/contact-changes/{id}/confirm`). The change's id waits in the portal session.
  Identity asks for a login within 15 minutes first; without it the page offers a fresh login
  that comes back here.
- `/profil/sessioner`: the user's live sessions (`GET /v1/me/sessions`), each with a button
  that ends it, and one that ends all but this one.

Every rule is identity's; these pages show its answers in words, next to the field.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from services.portal.clients import ServiceProblem
from services.portal.deps import Form, SignedInPage
from services.portal.web import (
    LoginRequired,
    PageContext,
    clear_session_cookie,
    field_errors,
    safe_next,
    text_field,
)

router = APIRouter()

PASSWORD_PATH = "/profil/adgangskode"  # noqa: S105 - a page path, not a secret
SESSIONS_PATH = "/profil/sessioner"
# The path's slug for each field identity changes by a code sent to the new address.
CONTACT_SLUGS = {"email": "email", "mobil": "mobile"}


async def _ended_at_identity(page: PageContext, problem: ServiceProblem) -> None:
    """A 401: identity ended the session; so does the portal, and the user logs in again."""
    if problem.status == 401:
        await page.portal.sessions.end(page.cookie)
        raise LoginRequired(page.request.url.path)


def _wait(page: PageContext, problem: ServiceProblem) -> str:
    return page._("myprofile.wait", seconds=problem.retry_after or 30)


# --- password ------------------------------------------------------------------------------


def _password_page(
    page: PageContext, *, status: int = 200, errors: dict[str, str] | None = None, problem: str | None = None
) -> HTMLResponse:
    return page.render("profile_password.html", status=status, errors=errors or {}, problem=problem)


@router.get(PASSWORD_PATH, response_class=HTMLResponse)
async def password_form(page: SignedInPage) -> HTMLResponse:
    return _password_page(page)


@router.post(PASSWORD_PATH, response_class=HTMLResponse)
async def change_password(page: SignedInPage, form: Form) -> Response:
    current = text_field(form, "current_password", max_length=256)
    new = text_field(form, "new_password", max_length=256)
    repeated = text_field(form, "new_password_repeat", max_length=256)
    errors = {}
    if not current:
        errors["current_password"] = page._("myprofile.current-password-missing")
    if not new:
        errors["new_password"] = page._("myprofile.new-password-missing")
    elif new != repeated:
        errors["new_password_repeat"] = page._("myprofile.new-password-differs")
    if errors:
        return _password_page(page, status=422, errors=errors)
    try:
        await page.services.identity.change_password(page.caller, current, new)
    except ServiceProblem as problem:
        await _ended_at_identity(page, problem)
        if problem.status == 422:
            return _password_page(page, status=422, errors=field_errors(page, problem, "myprofile"))
        if problem.status == 429:
            return _password_page(page, status=429, problem=_wait(page, problem))
        if problem.status == 409:
            return _password_page(page, status=409, problem=page._("myprofile.password-changed-meanwhile"))
        raise
    return page.redirect("/profil?gemt=adgangskode")


# --- email and mobile ----------------------------------------------------------------------


def _pending_change(page: PageContext, field: str) -> dict[str, Any] | None:
    assert page.user is not None
    change = page.user.data.get("contact_change")
    return change if isinstance(change, dict) and change.get("field") == field else None


def _contact_page(
    page: PageContext,
    slug: str,
    me: dict[str, Any] | None,
    *,
    status: int = 200,
    value: str = "",
    errors: dict[str, str] | None = None,
    problem: str | None = None,
) -> HTMLResponse:
    field = CONTACT_SLUGS[slug]
    return page.render(
        "profile_contact.html",
        status=status,
        slug=slug,
        kind=field,
        current=(me or {}).get(field, ""),
        value=value,
        errors=errors or {},
        problem=problem,
    )


async def contact_form(page: PageContext, slug: str) -> HTMLResponse:
    return _contact_page(page, slug, await _me(page))


async def start_contact_change(page: PageContext, form: FormData, slug: str) -> Response:
    field = CONTACT_SLUGS[slug]
    assert page.user is not None
    value = text_field(form, field, max_length=320)
    if not value:
        return _contact_page(
            page, slug, await _me(page), status=422, errors={field: page._(f"myprofile.{field}-missing")}
        )
    try:
        started = await page.services.identity.start_contact_change(page.caller, field, value)
    except ServiceProblem as problem:
        await _ended_at_identity(page, problem)
        if problem.status == 403 and problem.kind == "reauthentication-required":
            return page.render("profile_reauthenticate.html", status=403, back_to=f"/profil/{slug}")
        if problem.status == 422:
            errors = field_errors(page, problem, "myprofile")
            return _contact_page(page, slug, await _me(page), status=422, value=value, errors=errors)
        if problem.status == 429:
            return _contact_page(page, slug, await _me(page), status=429, value=value, problem=_wait(page, problem))
        raise
    await page.portal.sessions.remember(page.user, contact_change=started)
    return page.redirect(f"/profil/{slug}/kode")


def _code_page(
    page: PageContext,
    slug: str,
    change: dict[str, Any],
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    problem: str | None = None,
) -> HTMLResponse:
    return page.render(
        "profile_contact_code.html",
        status=status,
        slug=slug,
        kind=CONTACT_SLUGS[slug],
        sent_to=change.get("sent_to", ""),
        expires=page.texts.when(change.get("expires_at")),
        errors=errors or {},
        problem=problem,
    )


async def code_form(page: PageContext, slug: str) -> Response:
    change = _pending_change(page, CONTACT_SLUGS[slug])
    if change is None:
        return page.redirect(f"/profil/{slug}")
    return _code_page(page, slug, change)


async def confirm_contact_change(page: PageContext, form: FormData, slug: str) -> Response:
    assert page.user is not None
    change = _pending_change(page, CONTACT_SLUGS[slug])
    if change is None:
        return page.redirect(f"/profil/{slug}")
    code = "".join(text_field(form, "code", max_length=20).split())
    if not code:
        return _code_page(page, slug, change, status=422, errors={"code": page._("myprofile.code-missing")})
    try:
        await page.services.identity.confirm_contact_change(page.caller, change["change_id"], code)
    except ServiceProblem as problem:
        await _ended_at_identity(page, problem)
        if problem.status in (400, 422):
            return _code_page(
                page, slug, change, status=problem.status, errors={"code": page._("myprofile.code-wrong")}
            )
        if problem.status in (404, 409, 410):
            # The change is over (expired, blocked, replaced or made): start again from the address.
            await page.portal.sessions.remember(page.user, contact_change=None)
            return _contact_page(
                page, slug, await _me(page), status=problem.status, problem=page._("myprofile.start-again")
            )
        raise
    await page.portal.sessions.remember(page.user, contact_change=None)
    return page.redirect(f"/profil?gemt={slug}")


def _contact_routes(slug: str) -> None:
    """The two pages of a change of `slug`'s field: the new address, then the code sent to it."""
    path = f"/profil/{slug}"

    async def show(page: SignedInPage) -> HTMLResponse:
        return await contact_form(page, slug)

    async def start(page: SignedInPage, form: Form) -> Response:
        return await start_contact_change(page, form, slug)

    async def show_code(page: SignedInPage) -> Response:
        return await code_form(page, slug)

    async def confirm(page: SignedInPage, form: Form) -> Response:
        return await confirm_contact_change(page, form, slug)

    router.add_api_route(path, show, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route(path, start, methods=["POST"], response_class=HTMLResponse)
    router.add_api_route(f"{path}/kode", show_code, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route(f"{path}/kode", confirm, methods=["POST"], response_class=HTMLResponse)


for _slug in CONTACT_SLUGS:
    _contact_routes(_slug)


async def _me(page: PageContext) -> dict[str, Any]:
    try:
        return await page.services.identity.me(page.caller)
    except ServiceProblem as problem:
        await _ended_at_identity(page, problem)
        raise


# --- sessions ------------------------------------------------------------------------------


@router.get(SESSIONS_PATH, response_class=HTMLResponse)
async def sessions(
    page: SignedInPage,
    ended: Annotated[str, Query(alias="afsluttet", max_length=3)] = "",
    gone: Annotated[str, Query(alias="findes-ikke", max_length=1)] = "",
) -> HTMLResponse:
    try:
        listed = await page.services.identity.own_sessions(page.caller)
    except ServiceProblem as problem:
        await _ended_at_identity(page, problem)
        raise
    return page.render(
        "profile_sessions.html",
        sessions=listed,
        ended=int(ended) if ended.isdigit() else None,
        gone=gone == "1",
    )


@router.post(SESSIONS_PATH + "/afslut-andre")
async def end_other_sessions(page: SignedInPage, form: Form) -> RedirectResponse:
    try:
        ended = await page.services.identity.end_other_sessions(page.caller)
    except ServiceProblem as problem:
        await _ended_at_identity(page, problem)
        raise
    return page.redirect(f"{SESSIONS_PATH}?afsluttet={ended}")


@router.post(SESSIONS_PATH + "/{session_id}/afslut")
async def end_session(
    page: SignedInPage, form: Form, session_id: Annotated[str, Path(max_length=36)]
) -> RedirectResponse:
    try:
        await page.services.identity.end_own_session(page.caller, session_id)
    except ServiceProblem as problem:
        await _ended_at_identity(page, problem)
        if problem.status == 404:
            return page.redirect(f"{SESSIONS_PATH}?findes-ikke=1")
        raise
    return page.redirect(f"{SESSIONS_PATH}?afsluttet=1")


# --- a fresh login -------------------------------------------------------------------------


@router.post("/profil/log-ind-igen")
async def log_in_again(page: SignedInPage, form: Form) -> RedirectResponse:
    """Log out and back to the login, which returns to `next`: a fresh login is what identity
    asks for before the codes of the login may go somewhere new."""
    next_path = safe_next(text_field(form, "next", max_length=200), default="/profil")
    if not next_path.startswith("/profil"):
        next_path = "/profil"
    with contextlib.suppress(ServiceProblem):
        await page.services.identity.logout(page.caller)
    await page.portal.sessions.end(page.cookie)
    response = page.redirect(f"/log-ind?next={next_path}")
    clear_session_cookie(response, page.portal.settings)
    return response
