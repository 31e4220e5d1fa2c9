"""Logging in with two factors (S7) and out.

1. `/log-ind`: username and password (identity `POST /v1/login`).
2. `/log-ind/kode`: the second factor — a code sent by SMS or email, the authenticator app's
   code, or a recovery code (`POST /v1/login/{id}/send`, `.../verify`).
3. The session gets a new cookie value and the tokens; the device token identity gives
   (so a stranger's wrong passwords do not lock this browser out) is kept sealed in a cookie.

A username that strangers' wrong passwords locked: a browser without a device token asks for
an unlock email (`/log-ind/laas-op`) and types its code with the password (field
`device_token`, as identity calls it); the code then is this browser's device token.
"""

from __future__ import annotations

import base64
import contextlib
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.portal.clients import Caller, ServiceProblem
from services.portal.deps import Form, Page
from services.portal.i18n import LANGUAGES
from services.portal.pages.public import set_language_cookie
from services.portal.sessions import LoggingIn
from services.portal.web import (
    PageContext,
    clear_session_cookie,
    field_errors,
    safe_next,
    set_session_cookie,
    text_field,
)
from shared.sealing import SealedSecret, SealingError

router = APIRouter()

DEVICE_COOKIE_MAX_AGE_S = 90 * 24 * 3600  # identity trusts a device 90 days


@router.get("/log-ind", response_class=HTMLResponse)
async def login_form(
    page: Page,
    next: Annotated[str, Query(max_length=2000)] = "",
    udloebet: Annotated[str, Query(max_length=1)] = "",
    username: Annotated[str, Query(max_length=100)] = "",
) -> Response:
    if page.user is not None:
        return page.redirect(_landing(page, next))
    return page.render(
        "login.html",
        next=safe_next(next, default=""),
        expired=udloebet == "1",
        # Filled in by the link at the end of an activation.
        **{**_empty_login(), "username": username.strip()},
    )


def _empty_login() -> dict[str, Any]:
    # `unlock`: the field for the emailed unlock code is shown (the username is locked).
    return {"username": "", "errors": {}, "problem": None, "locked": False, "message": None, "unlock": False}


def _landing(page: PageContext, next_path: str) -> str:
    default = "/support" if page.user is not None and page.user.is_staff else "/oversigt"
    return safe_next(next_path, default=default)


@router.post("/log-ind", response_class=HTMLResponse)
async def login(page: Page, form: Form) -> Response:
    username = text_field(form, "username", max_length=100)
    password = form.get("password") if isinstance(form.get("password"), str) else ""
    next_path = safe_next(text_field(form, "next", max_length=2000), default="")
    # The unlock code from the email, typed as it is read (in groups, with spaces).
    unlock_code = "".join(text_field(form, "device_token", max_length=200).split())
    values = {
        **_empty_login(),
        "username": username,
        "next": next_path,
        "expired": False,
        "unlock": bool(unlock_code),
    }
    errors = {}
    if not username:
        errors["username"] = page._("login.username-missing")
    if not password:
        errors["password"] = page._("login.password-missing")
    if errors:
        return page.render("login.html", status=422, **{**values, "errors": errors})
    try:
        challenge = await page.services.identity.login(
            page.anonymous_caller, username, str(password), unlock_code or _device_token(page)
        )
    except ServiceProblem as problem:
        if problem.status == 429:
            return page.render(
                "login.html",
                status=429,
                **{**values, "problem": _wait_text(page, problem), "locked": True, "unlock": True},
            )
        if problem.status == 422:
            return page.render(
                "login.html", status=422, **{**values, "errors": field_errors(page, problem, "login")}
            )
        return page.render(
            "login.html", status=problem.status, **{**values, "problem": page._("login.invalid")}
        )
    challenge = {**challenge, "next": next_path, "username": username}
    if unlock_code:
        # Identity keeps trusting the device of an unlock code that led to a login and gives no
        # new token for it: the code becomes this browser's device cookie after the login.
        challenge["unlock_code"] = unlock_code
    response = page.redirect("/log-ind/kode")
    set_session_cookie(
        response,
        page.portal.settings,
        await page.portal.sessions.begin_login(page.cookie, challenge),
    )
    return response


def _wait_text(page: PageContext, problem: ServiceProblem) -> str:
    """A lockout or delay, with the time to try again in Danish time."""
    seconds = problem.retry_after or 60
    at = page.texts.time_of_day(page.portal.clock.now() + timedelta(seconds=seconds))
    return page._("login.locked", time=at)


def _device_token(page: PageContext) -> str | None:
    settings = page.portal.settings
    sealed = page.request.cookies.get(settings.device_cookie)
    if not sealed:
        return None
    try:
        secret = SealedSecret.model_validate_json(base64.urlsafe_b64decode(sealed.encode()))
        return page.portal.sessions.sealer.unseal(secret, context="portal-device")
    except (SealingError, ValueError):
        return None


async def _logging_in(page: PageContext) -> LoggingIn | None:
    return await page.portal.sessions.logging_in(page.cookie)


@router.get("/log-ind/kode", response_class=HTMLResponse)
async def code_form(page: Page) -> Response:
    login = await _logging_in(page)
    if login is None:
        return page.redirect("/log-ind?udloebet=1")
    return _code_page(page, login)


def _code_page(
    page: PageContext,
    login: LoggingIn,
    *,
    status: int = 200,
    problem: str | None = None,
    errors: dict[str, str] | None = None,
) -> HTMLResponse:
    challenge = login.challenge
    sent = None
    if challenge.get("sent_to"):
        sent = page._(f"login-code.sent-{challenge['sent_method']}", to=challenge["sent_to"])
    wait_until = None
    wait_until_iso = ""
    if challenge.get("wait_until"):
        moment = datetime.fromisoformat(challenge["wait_until"])
        if moment > page.portal.clock.now():
            wait_until = page.texts.time_of_day(moment)
            wait_until_iso = moment.isoformat()
    return page.render(
        "login_code.html",
        status=status,
        methods=challenge.get("methods", []),
        sent=sent,
        sent_method=challenge.get("sent_method"),
        wait_until=wait_until,
        wait_until_iso=wait_until_iso,
        problem=problem,
        errors=errors or {},
    )


@router.post("/log-ind/send", response_class=HTMLResponse)
async def send_code(page: Page, form: Form) -> Response:
    login = await _logging_in(page)
    if login is None:
        return page.redirect("/log-ind?udloebet=1")
    method = text_field(form, "method", max_length=10)
    if method not in ("sms", "email"):
        return _code_page(page, login, status=422, problem=page._("login-code.choose"))
    try:
        sent = await page.services.identity.send_code(
            page.anonymous_caller, login.challenge["challenge_id"], method
        )
    except ServiceProblem as problem:
        if problem.status == 429 and problem.retry_after:
            login.challenge["wait_until"] = (
                page.portal.clock.now() + timedelta(seconds=problem.retry_after)
            ).isoformat()
            await page.portal.sessions.update_login(login)
            return _code_page(page, login, status=429, problem=page._("login-code.too-soon"))
        if problem.status in (404, 410, 429):
            return _code_page(page, login, status=problem.status, problem=page._("login-code.expired"))
        return _code_page(page, login, status=problem.status, problem=problem.detail)
    login.challenge.update(
        sent_method=method,
        sent_to=sent.get("sent_to"),
        wait_until=(page.portal.clock.now() + timedelta(seconds=RESEND_COOLDOWN_S)).isoformat(),
    )
    await page.portal.sessions.update_login(login)
    return page.redirect("/log-ind/kode")


# Identity allows a new code 30 s after the last (OTP_RESEND_COOLDOWN); the page shows when.
RESEND_COOLDOWN_S = 30


@router.post("/log-ind/kode", response_class=HTMLResponse)
async def verify_code(page: Page, form: Form) -> Response:
    login = await _logging_in(page)
    if login is None:
        return page.redirect("/log-ind?udloebet=1")
    code = text_field(form, "code", max_length=40).replace(" ", "")
    if not code:
        return _code_page(page, login, status=422, errors={"code": page._("login-code.code-missing")})
    identity = page.services.identity
    try:
        tokens = await identity.verify(page.anonymous_caller, login.challenge["challenge_id"], code)
    except ServiceProblem as problem:
        if problem.status in (400, 401, 422):
            return _code_page(page, login, status=problem.status, errors={"code": page._("login-code.wrong")})
        return _code_page(page, login, status=problem.status, problem=page._("login-code.expired"))
    user = await identity.me(
        Caller(
            address=page.anonymous_caller.address,
            access_token=tokens["access_token"],
            user_agent=page.anonymous_caller.user_agent,
        )
    )
    settings = page.portal.settings
    cookie = await page.portal.sessions.sign_in(page.cookie, tokens, user)
    staff = user.get("tenant_cvr") is None
    next_path = safe_next(login.challenge.get("next"), default="/support" if staff else "/oversigt")
    response = page.redirect(next_path)
    set_session_cookie(response, settings, cookie)
    if user.get("language") in LANGUAGES:
        # The language the user chose for their login (their profile) from now on in this browser.
        set_language_cookie(response, settings, user["language"])
    device_token = tokens.get("device_token") or login.challenge.get("unlock_code")
    if device_token:
        sealed = page.portal.sessions.sealer.seal(device_token, context="portal-device")
        response.set_cookie(
            settings.device_cookie,
            base64.urlsafe_b64encode(sealed.model_dump_json().encode()).decode(),
            max_age=DEVICE_COOKIE_MAX_AGE_S,
            httponly=True,
            secure=settings.secure_cookies,
            samesite="lax",
            path="/",
        )
    return response


@router.post("/log-ind/laas-op", response_class=HTMLResponse)
async def unlock(page: Page, form: Form) -> Response:
    """Ask for an unlock email (identity sends one only while the username is locked)."""
    username = text_field(form, "username", max_length=100)
    if username:
        # The answer is the same whether or not an email went: nothing to tell a stranger.
        with contextlib.suppress(ServiceProblem):
            await page.services.identity.unlock(page.anonymous_caller, username)
    return page.render(
        "login.html",
        **{
            **_empty_login(),
            "username": username,
            "next": "",
            "expired": False,
            "message": page._("login.unlock-sent"),
            "unlock": True,
        },
    )


@router.post("/log-ud")
async def logout(page: Page, form: Form) -> RedirectResponse:
    """End the identity session, forget the tokens, and clear the cookie."""
    if page.user is not None:
        # Already ended at identity (a 401): forgetting it here is all that is left.
        with contextlib.suppress(ServiceProblem):
            await page.services.identity.logout(page.caller)
    await page.portal.sessions.end(page.cookie)
    response = page.redirect("/?logget-ud=1")
    clear_session_cookie(response, page.portal.settings)
    return response
