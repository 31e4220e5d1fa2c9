"""A forgotten password (S7; docs/identity.md, "Forgotten password").

1. `/glemt-adgangskode`: the username or the email address (identity `POST /v1/password-reset`).
   The next page is the same whether or not a login has it: identity answers alike.
2. `/glemt-adgangskode/{reset_id}/kode`: the code from the email (`.../email-code`).
3. `/glemt-adgangskode/{reset_id}/ny-adgangskode`: the second factor — an SMS code the page
   can have sent (`.../send`), the authenticator app's code or a recovery code — and the new
   password typed twice (`.../complete`).
4. `/glemt-adgangskode/skiftet`: done; every session has ended; on to the login.

Nothing secret is kept between the pages: the reset's id is in the address (it is worth
nothing without the emailed code), and so are the username, the second factors and the masked
mobile identity named after the right code, shown only when they have identity's shapes.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from services.portal.clients import ServiceProblem
from services.portal.deps import Form, Page
from services.portal.pages.activation import MASKED_MOBILE, USERNAME
from services.portal.web import PageContext, field_errors, text_field

router = APIRouter()

METHODS = ("sms", "totp", "recovery_code")
START = "/glemt-adgangskode"


def _again_at(page: PageContext, retry_after: int | None) -> str:
    return page.texts.time_of_day(page.portal.clock.now() + timedelta(seconds=retry_after or 60))


def _password(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""  # as typed: spaces may be part of it


def _refusal(page: PageContext, problem: ServiceProblem) -> tuple[str, list[tuple[str, str]]]:
    """A refusal of a reset's step in words, with the links that lead on."""
    if problem.status == 429:
        return page._("reset.too-many", time=_again_at(page, problem.retry_after)), []
    if problem.kind == "reset-completed":
        return page._("reset.already-done"), [("/log-ind", page._("reset.log-in"))]
    if problem.status == 404 or problem.kind == "reset-restart-required":
        return page._("reset.start-again"), [(START, page._("reset.start-link"))]
    if problem.kind == "reset-not-possible":
        return page._("reset.not-possible"), []
    return problem.detail or page._("reset.failed"), []


# --- 1: the username or the email -------------------------------------------------------


@router.get(START, response_class=HTMLResponse)
async def request_form(page: Page) -> Response:
    return page.render("reset.html", value="", errors={}, problem=None)


@router.post(START, response_class=HTMLResponse)
async def request_reset(page: Page, form: Form) -> Response:
    value = text_field(form, "username_or_email", max_length=320)
    if not value:
        errors = {"username_or_email": page._("reset.name-missing")}
        return page.render("reset.html", status=422, value=value, errors=errors, problem=None)
    try:
        answer = await page.services.identity.request_password_reset(page.anonymous_caller, value)
    except ServiceProblem as problem:
        if problem.status == 422:
            errors = field_errors(page, problem, "reset")
            return page.render("reset.html", status=422, value=value, errors=errors, problem=None)
        text, _ = _refusal(page, problem)
        return page.render("reset.html", status=problem.status, value=value, errors={}, problem=text)
    return page.redirect(f"{START}/{answer['reset_id']}/kode")


# --- 2: the code from the email ------------------------------------------------------------


def _code_page(
    page: PageContext,
    reset_id: str,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    problem: str | None = None,
    links: list[tuple[str, str]] | None = None,
) -> HTMLResponse:
    return page.render(
        "reset_code.html",
        status=status,
        reset_id=reset_id,
        errors=errors or {},
        problem=problem,
        links=links or [],
    )


@router.get(START + "/{reset_id}/kode", response_class=HTMLResponse)
async def code_form(page: Page, reset_id: uuid.UUID) -> Response:
    return _code_page(page, str(reset_id))


@router.post(START + "/{reset_id}/kode", response_class=HTMLResponse)
async def email_code(page: Page, form: Form, reset_id: uuid.UUID) -> Response:
    code = "".join(text_field(form, "code", max_length=40).split())
    if not code:
        return _code_page(page, str(reset_id), status=422, errors={"code": page._("reset.code-missing")})
    try:
        answer = await page.services.identity.confirm_password_reset_email(
            page.anonymous_caller, str(reset_id), code
        )
    except ServiceProblem as problem:
        if problem.status == 422 or problem.kind == "invalid-reset-code":
            words = "reset.wrong-code" if problem.kind == "invalid-reset-code" else "reset.code-shape"
            return _code_page(page, str(reset_id), status=problem.status, errors={"code": page._(words)})
        if problem.kind == "reset-step-out-of-order":
            return page.redirect(f"{START}/{reset_id}/ny-adgangskode")
        text, links = _refusal(page, problem)
        return _code_page(page, str(reset_id), status=problem.status, problem=text, links=links)
    query = {
        "brugernavn": answer.get("username", ""),
        "metoder": ",".join(m for m in answer.get("methods", []) if m in METHODS),
        "sms": answer.get("sms_to") or "",
    }
    return page.redirect(f"{START}/{reset_id}/ny-adgangskode?{urlencode(query)}")


# --- 3: the second factor and the new password ----------------------------------------------


def _password_page(
    page: PageContext,
    reset_id: str,
    shown: dict[str, str],
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    problem: str | None = None,
    links: list[tuple[str, str]] | None = None,
    sent_to: str = "",
) -> HTMLResponse:
    methods = [m for m in shown.get("metoder", "").split(",") if m in METHODS]
    return page.render(
        "reset_password.html",
        status=status,
        reset_id=reset_id,
        username=shown["brugernavn"] if USERNAME.match(shown.get("brugernavn", "")) else "",
        methods=methods,
        methods_value=",".join(methods),
        sms_to=shown["sms"] if MASKED_MOBILE.match(shown.get("sms", "")) else "",
        sent_to=sent_to if MASKED_MOBILE.match(sent_to) else "",
        errors=errors or {},
        problem=problem,
        links=links or [],
    )


@router.get(START + "/{reset_id}/ny-adgangskode", response_class=HTMLResponse)
async def password_form(
    page: Page,
    reset_id: uuid.UUID,
    brugernavn: Annotated[str, Query(max_length=100)] = "",
    metoder: Annotated[str, Query(max_length=60)] = "",
    sms: Annotated[str, Query(max_length=40)] = "",
    sendt: Annotated[str, Query(max_length=40)] = "",
) -> Response:
    shown = {"brugernavn": brugernavn, "metoder": metoder, "sms": sms}
    return _password_page(page, str(reset_id), shown, sent_to=sendt)


def _shown(form: Any) -> dict[str, str]:
    return {
        "brugernavn": text_field(form, "brugernavn", max_length=100),
        "metoder": text_field(form, "metoder", max_length=60),
        "sms": text_field(form, "sms", max_length=40),
    }


@router.post(START + "/{reset_id}/sms", response_class=HTMLResponse)
async def send_sms(page: Page, form: Form, reset_id: uuid.UUID) -> Response:
    shown = _shown(form)
    try:
        answer = await page.services.identity.send_password_reset_sms(page.anonymous_caller, str(reset_id))
    except ServiceProblem as problem:
        text, links = _refusal(page, problem)
        return _password_page(page, str(reset_id), shown, status=problem.status, problem=text, links=links)
    query = urlencode({**shown, "sendt": answer.get("sent_to", "")})
    return page.redirect(f"{START}/{reset_id}/ny-adgangskode?{query}")


@router.post(START + "/{reset_id}/ny-adgangskode", response_class=HTMLResponse)
async def complete(page: Page, form: Form, reset_id: uuid.UUID) -> Response:
    shown = _shown(form)
    code = text_field(form, "code", max_length=40)
    password = _password(form, "password")
    errors = {}
    if not code:
        errors["code"] = page._("reset.code-missing")
    if not password:
        errors["password"] = page._("reset.password-missing")
    elif password != _password(form, "password_again"):
        errors["password_again"] = page._("reset.password-mismatch")
    if errors:
        return _password_page(page, str(reset_id), shown, status=422, errors=errors)
    try:
        answer = await page.services.identity.complete_password_reset(
            page.anonymous_caller, str(reset_id), code, password
        )
    except ServiceProblem as problem:
        if problem.status == 422:
            errors = field_errors(page, problem, "reset")
            return _password_page(page, str(reset_id), shown, status=422, errors=errors)
        if problem.kind == "invalid-reset-code":
            errors = {"code": page._("reset.wrong-second-factor")}
            return _password_page(page, str(reset_id), shown, status=400, errors=errors)
        if problem.kind == "reset-step-out-of-order":
            return page.redirect(f"{START}/{reset_id}/kode")
        text, links = _refusal(page, problem)
        return _password_page(page, str(reset_id), shown, status=problem.status, problem=text, links=links)
    return page.redirect(f"{START}/skiftet?{urlencode({'brugernavn': answer.get('username', '')})}")


# --- 4: done ---------------------------------------------------------------------------------


@router.get(START + "/skiftet", response_class=HTMLResponse)
async def done(page: Page, brugernavn: Annotated[str, Query(max_length=100)] = "") -> Response:
    username = brugernavn if USERNAME.match(brugernavn) else ""
    login_link = "/log-ind?" + urlencode({"username": username}) if username else "/log-ind"
    return page.render("reset_done.html", username=username, login_link=login_link)
