"""Activating a login with its activation code (S2), both kinds (docs/identity.md, "Activation").

1. `/aktiver`: the username (filled in from the letter's or the email's link), the activation
   code, a new password typed twice, and — only for the login from the letter in the company's
   e-Boks — one's own name, email and mobile number (identity `POST /v1/activation`). A
   colleague's or support login is then active (200). The letter's login gets codes by SMS and
   email (202); sent without email and mobile it is refused as `contact-details-required`, and
   the same page asks for them.
2. `/aktiver/bekraeft/{activation_id}`: the two codes (`POST /v1/activation/{id}/confirm`).
3. `/aktiver/faerdig`: the login is active; on to the login.

Nothing secret is carried between the pages: the password is sent to identity once, by the
first page, and never kept here or put back into a page. The confirmation page carries only
the activation's id and the masked addresses identity showed, which are not secret.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from services.portal.clients import ServiceProblem
from services.portal.deps import Form, Page
from services.portal.web import PageContext, field_errors, text_field

router = APIRouter()

CONTACT_FIELDS = ("name", "email", "mobile")
CODE_FIELDS = ("sms_code", "email_code")

# The confirmation and done pages show what their address carries, and anyone can send a link
# to them: only values of the shape identity gives are shown (its masked addresses,
# `shared.logs.mask_contact`, and a username), never a sentence of someone else's.
MASKED_MOBILE = re.compile(r"^\+?\d{1,3} •• •• •\d \d{2}$|^•••$")
MASKED_EMAIL = re.compile(r"^[^\s@•]?•••@[^\s@]{1,253}$")
USERNAME = re.compile(r"^[\w.@-]{1,100}$")


def _shaped(value: str, shape: re.Pattern[str]) -> str:
    """`value` if it has identity's shape, else nothing."""
    return value if shape.match(value) else ""


@router.get("/aktiver", response_class=HTMLResponse)
async def activation_form(page: Page, username: Annotated[str, Query(max_length=100)] = "") -> Response:
    return _form(
        page, {"username": username.strip(), "activation_code": "", **dict.fromkeys(CONTACT_FIELDS, "")}
    )


def _form(
    page: PageContext,
    values: dict[str, str],
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    problem: str | None = None,
    links: list[tuple[str, str]] | None = None,
) -> HTMLResponse:
    return page.render(
        "activate.html", status=status, values=values, errors=errors or {}, problem=problem, links=links or []
    )


def _password(form: Any, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""  # as typed: spaces may be part of it


@router.post("/aktiver", response_class=HTMLResponse)
async def activate(page: Page, form: Form) -> Response:
    values = {
        "username": text_field(form, "username", max_length=100),
        "activation_code": text_field(form, "activation_code", max_length=100),
        **{name: text_field(form, name, max_length=320) for name in CONTACT_FIELDS},
    }
    password = _password(form, "password")
    errors = {}
    if not values["username"]:
        errors["username"] = page._("activate.username-missing")
    if not values["activation_code"]:
        errors["activation_code"] = page._("activate.code-missing")
    if not password:
        errors["password"] = page._("activate.password-missing")
    elif password != _password(form, "password_again"):
        errors["password_again"] = page._("activate.password-mismatch")
    if errors:
        return _form(page, values, status=422, errors=errors)

    activation: dict[str, Any] = {
        "username": values["username"],
        "activation_code": values["activation_code"],
        "password": password,
    }
    # The contact details are sent only when given: they belong to the letter's login alone.
    activation.update({name: values[name] for name in CONTACT_FIELDS if values[name]})
    try:
        answer = await page.services.identity.activate(page.anonymous_caller, activation)
    except ServiceProblem as problem:
        return _refused(page, problem, values)
    if "activation_id" in answer:  # 202: the letter's login, codes sent to mobile and email
        query = urlencode(
            {
                "username": values["username"],
                "sms_sent_to": answer.get("sms_sent_to", ""),
                "email_sent_to": answer.get("email_sent_to", ""),
                "expires_at": answer.get("expires_at", ""),
            }
        )
        return page.redirect(f"/aktiver/bekraeft/{answer['activation_id']}?{query}")
    return page.redirect(_done(answer.get("username") or values["username"]))


def _done(username: str) -> str:
    return "/aktiver/faerdig?" + urlencode({"username": username})


def _refused(page: PageContext, problem: ServiceProblem, values: dict[str, str]) -> HTMLResponse:
    status, kind = problem.status, problem.kind
    if kind == "contact-details-required":
        errors = {
            name: page._(f"activate.required.{name}")
            for name in problem.field_errors()
            if name in CONTACT_FIELDS
        }
        errors["password"] = page._("activate.password-again")
        return _form(page, values, status=422, errors=errors, problem=page._("activate.from-letter"))
    if kind == "contact-details-not-accepted":
        errors = {name: page._("activate.not-accepted") for name in problem.field_errors()}
        return _form(page, values, status=422, errors=errors, problem=page._("activate.details-set-by-admin"))
    if status == 422 and problem.errors:
        return _form(page, values, status=422, errors=field_errors(page, problem, "activate"))
    links: list[tuple[str, str]] = []
    if kind == "already-activated":
        text = page._("activate.already-active")
        links = [(_login_link(values["username"]), page._("activate.log-in"))]
    elif kind == "activation-code-expired":
        text = page._("activate.code-expired")
        links = [("/ansoeg", page._("activate.apply-again"))]
    elif kind == "takeover-notice-period" and isinstance(problem.body.get("usable_from"), str):
        text = page._("takeover.activate-too-early", time=page.texts.when(datetime.fromisoformat(problem.body["usable_from"])))
    elif status == 429:
        text = page._("activate.too-many", time=_again_at(page, problem.retry_after))
    elif kind == "invalid-activation-code":
        text = page._("activate.wrong-code")
    else:
        text = problem.detail or page._("activate.failed")
    return _form(page, values, status=status, problem=text, links=links)


def _again_at(page: PageContext, retry_after: int | None) -> str:
    return page.texts.time_of_day(page.portal.clock.now() + timedelta(seconds=retry_after or 60))


def _login_link(username: str) -> str:
    return "/log-ind?" + urlencode({"username": username}) if username else "/log-ind"


# --- the letter's login: the codes sent to the mobile number and the email ----------------


@router.get("/aktiver/bekraeft/{activation_id}", response_class=HTMLResponse)
async def confirm_form(
    page: Page,
    activation_id: uuid.UUID,
    username: Annotated[str, Query(max_length=100)] = "",
    sms_sent_to: Annotated[str, Query(max_length=100)] = "",
    email_sent_to: Annotated[str, Query(max_length=400)] = "",
    expires_at: Annotated[str, Query(max_length=40)] = "",
) -> Response:
    return _confirm_page(page, str(activation_id), username, sms_sent_to, email_sent_to, expires_at)


def _confirm_page(
    page: PageContext,
    activation_id: str,
    username: str,
    sms_sent_to: str,
    email_sent_to: str,
    expires_at: str,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    problem: str | None = None,
    links: list[tuple[str, str]] | None = None,
    ended: bool = False,
) -> HTMLResponse:
    return page.render(
        "activate_confirm.html",
        status=status,
        activation_id=activation_id,
        username=_shaped(username, USERNAME),
        sms_sent_to=_shaped(sms_sent_to, MASKED_MOBILE),
        email_sent_to=_shaped(email_sent_to, MASKED_EMAIL),
        expires_at=_time_of(page, expires_at),
        expires_at_iso=expires_at if _time_of(page, expires_at) else "",
        errors=errors or {},
        problem=problem,
        links=links or [],
        ended=ended,  # the activation cannot go on: no form, only the way on
    )


def _time_of(page: PageContext, moment: str) -> str:
    """Identity's `expires_at` as a time of day in Danish time; nothing if it is not a time
    (it arrives in the address, so anyone may have written it)."""
    try:
        parsed = datetime.fromisoformat(moment)
    except ValueError:
        return ""
    return page.texts.time_of_day(parsed) if parsed.tzinfo else ""


@router.post("/aktiver/bekraeft/{activation_id}", response_class=HTMLResponse)
async def confirm(page: Page, activation_id: uuid.UUID, form: Form) -> Response:
    username = text_field(form, "username", max_length=100)
    sent_to = (
        text_field(form, "sms_sent_to", max_length=100),
        text_field(form, "email_sent_to", max_length=400),
        text_field(form, "expires_at", max_length=40),
    )
    codes = {name: "".join(text_field(form, name, max_length=20).split()) for name in CODE_FIELDS}

    def again(**values: Any) -> HTMLResponse:
        return _confirm_page(page, str(activation_id), username, *sent_to, **values)

    missing = {name: page._(f"activate-confirm.missing.{name}") for name in CODE_FIELDS if not codes[name]}
    if missing:
        return again(status=422, errors=missing)
    try:
        done = await page.services.identity.confirm_activation(
            page.anonymous_caller, str(activation_id), codes["sms_code"], codes["email_code"]
        )
    except ServiceProblem as problem:
        kind = problem.kind
        if kind == "invalid-confirmation-code":
            wrong = {name: page._(f"activate-confirm.wrong.{name}") for name in problem.field_errors()}
            return again(status=400, errors=wrong, problem=page._("activate-confirm.wrong"))
        if problem.status == 422 and problem.errors:
            return again(status=422, errors=field_errors(page, problem, "activate-confirm"))
        if problem.status == 429:
            return again(
                status=429, problem=page._("activate.too-many", time=_again_at(page, problem.retry_after))
            )
        restart = [("/aktiver?" + urlencode({"username": username}), page._("activate-confirm.start-again"))]
        if kind == "already-activated":
            text, links = (
                page._("activate.already-active"),
                [(_login_link(username), page._("activate.log-in"))],
            )
        elif kind == "activation-code-expired":
            text, links = page._("activate.code-expired"), [("/ansoeg", page._("activate.apply-again"))]
        elif kind == "activation-restart-required":
            text, links = page._("activate-confirm.restart"), restart
        elif problem.status == 404:
            text, links = page._("activate-confirm.unknown"), restart
        else:
            text, links = problem.detail or page._("activate.failed"), restart
        return again(status=problem.status, problem=text, links=links, ended=True)
    return page.redirect(_done(done.get("username") or username))


@router.get("/aktiver/faerdig", response_class=HTMLResponse)
async def activated(page: Page, username: Annotated[str, Query(max_length=100)] = "") -> Response:
    username = _shaped(username.strip(), USERNAME)
    return page.render("activate_done.html", username=username, login_link=_login_link(username))
