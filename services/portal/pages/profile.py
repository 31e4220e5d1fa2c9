"""Min profil: the user's own details and second factors, and setting up an authenticator
app (S7), for customers and support staff alike.

The authenticator app is set up in three pages:
1. `/profil/godkendelsesapp`: a button starts the enrolment (identity `POST /v1/me/totp`).
   Identity asks for a login within 15 minutes, or a code of the app the user has now; without
   either the page says why and offers that code's field (when there is an app) and a fresh login.
2. The same page then shows the QR code (drawn here with segno, an image needing no script)
   and the secret as text, and asks for a code from the app (`POST /v1/me/totp/confirm`). The
   secret stays in the session (sealed server-side) until then, never in the page's form.
3. `/profil/gendannelseskoder` shows the ten recovery codes once: the session forgets them as
   the page is made, so a reload does not show them again.
"""

from __future__ import annotations

import contextlib
import re
from typing import Annotated, Any

import segno
from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from services.portal.clients import ServiceProblem
from services.portal.deps import Form, SignedInPage
from services.portal.i18n import LANGUAGES
from services.portal.pages.public import set_language_cookie
from services.portal.web import LoginRequired, PageContext, clear_session_cookie, field_errors, text_field

router = APIRouter()

AUTHENTICATOR_PATH = "/profil/godkendelsesapp"
RECOVERY_CODES_PATH = "/profil/gendannelseskoder"
# Identity's recovery codes: ten characters of its code alphabet, `XXXXX-XXXXX`.
RECOVERY_CODE = re.compile(r"^[0-9A-Z]{5}-[0-9A-Z]{5}$")
RECOVERY_CODE_COUNT = 10


async def _me(page: PageContext) -> dict[str, Any]:
    """The user as identity knows them now (the session's copy is from the login)."""
    try:
        return await page.services.identity.me(page.caller)
    except ServiceProblem as problem:
        await _ended_at_identity(page, problem)
        raise


async def _ended_at_identity(page: PageContext, problem: ServiceProblem) -> None:
    """A 401: identity ended the session (logout elsewhere, disabled, ...); so does the portal,
    and the user logs in again and comes back here."""
    if problem.status == 401:
        await page.portal.sessions.end(page.cookie)
        raise LoginRequired(page.request.url.path)


# --- the profile ---------------------------------------------------------------------------


# What `/profil?gemt=...` says was saved: the own changes of `myprofile.py`.
SAVED_NOTICES = {
    "adgangskode": "myprofile.password-saved",
    "email": "myprofile.email-saved",
    "mobil": "myprofile.mobile-saved",
}


@router.get("/profil", response_class=HTMLResponse)
async def profile(
    page: SignedInPage,
    saved: Annotated[str, Query(alias="sprog-gemt", max_length=1)] = "",
    changed: Annotated[str, Query(alias="gemt", max_length=20)] = "",
) -> HTMLResponse:
    return _profile_page(
        page, await _me(page), language_saved=saved == "1", saved_notice=SAVED_NOTICES.get(changed)
    )


def _profile_page(
    page: PageContext,
    me: dict[str, Any],
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    language_saved: bool = False,
    saved_notice: str | None = None,
) -> HTMLResponse:
    return page.render(
        "profile.html",
        status=status,
        me=me,
        languages=LANGUAGES,
        errors=errors or {},
        language_saved=language_saved,
        saved_notice=page._(saved_notice) if saved_notice else None,
        chosen_language=me.get("language") or page.language,
    )


@router.post("/profil/sprog", response_class=HTMLResponse)
async def choose_language(page: SignedInPage, form: Form) -> Response:
    """The user's language, stored with their login by identity: every message to them (codes,
    notices, order and invoice emails) and the portal after each login use it. This browser
    switches at once, like the switch in the header."""
    language = text_field(form, "language", max_length=5)
    if language not in LANGUAGES:
        return _profile_page(
            page, await _me(page), status=422, errors={"language": page._("profile.language-missing")}
        )
    try:
        await page.services.identity.set_language(page.caller, language)
    except ServiceProblem as problem:
        await _ended_at_identity(page, problem)
        raise
    response = page.redirect("/profil?sprog-gemt=1")
    set_language_cookie(response, page.portal.settings, language)
    return response


# --- the authenticator app -----------------------------------------------------------------


def _enrolment(page: PageContext) -> dict[str, str] | None:
    assert page.user is not None
    enrolment = page.user.data.get("totp_enrolment")
    return enrolment if isinstance(enrolment, dict) else None


def _authenticator_page(
    page: PageContext,
    me: dict[str, Any],
    *,
    status: int = 200,
    reauthenticate: bool = False,
    errors: dict[str, str] | None = None,
    problem: str | None = None,
) -> HTMLResponse:
    enrolment = _enrolment(page)
    scan = None
    if enrolment is not None:
        secret = enrolment["secret"]
        scan = {
            "qr": segno.make(enrolment["uri"], error="m").svg_data_uri(scale=4, border=4),
            "uri": enrolment["uri"],
            # In groups of four, as people read and type it.
            "secret": " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
        }
    return page.render(
        "authenticator.html",
        status=status,
        has_app=bool(me.get("totp_enabled")),
        scan=scan,
        reauthenticate=reauthenticate,
        errors=errors or {},
        problem=problem,
    )


@router.get(AUTHENTICATOR_PATH, response_class=HTMLResponse)
async def authenticator(page: SignedInPage) -> HTMLResponse:
    return _authenticator_page(page, await _me(page))


@router.post(AUTHENTICATOR_PATH + "/start", response_class=HTMLResponse)
async def start_authenticator(page: SignedInPage, form: Form) -> Response:
    """A new secret from identity, kept in the session for the next page."""
    assert page.user is not None
    current_code = "".join(text_field(form, "current_code", max_length=40).split()) or None
    try:
        started = await page.services.identity.start_totp(page.caller, current_code)
    except ServiceProblem as problem:
        await _ended_at_identity(page, problem)
        if problem.status == 403 and current_code is not None:
            # Identity ended the session: a copied token gets one guess at a current code.
            return await _logged_out_for_safety(page)
        if problem.status == 403:
            return _authenticator_page(page, await _me(page), status=403, reauthenticate=True)
        if problem.status == 422:
            return _authenticator_page(
                page,
                await _me(page),
                status=422,
                reauthenticate=True,
                errors=field_errors(page, problem, "authenticator"),
            )
        raise
    await page.portal.sessions.remember(
        page.user, totp_enrolment={"secret": started["secret"], "uri": started["otpauth_uri"]}
    )
    return page.redirect(AUTHENTICATOR_PATH)


async def _logged_out_for_safety(page: PageContext) -> HTMLResponse:
    await page.portal.sessions.end(page.cookie)
    page.user = None
    response = page.render("authenticator_logged_out.html", status=403, next=AUTHENTICATOR_PATH)
    clear_session_cookie(response, page.portal.settings)
    return response


@router.post(AUTHENTICATOR_PATH + "/log-ind-igen")
async def log_in_again(page: SignedInPage, form: Form) -> RedirectResponse:
    """Log out and back to the login, which returns to the set-up: a fresh login is what
    identity asks for before a new authenticator app."""
    with contextlib.suppress(ServiceProblem):
        await page.services.identity.logout(page.caller)
    await page.portal.sessions.end(page.cookie)
    # Not `login_redirect`: its "your session ended" notice is not what happened; the page
    # before said why (`authenticator.reauthenticate`).
    response = page.redirect(f"/log-ind?next={AUTHENTICATOR_PATH}")
    clear_session_cookie(response, page.portal.settings)
    return response


@router.post(AUTHENTICATOR_PATH, response_class=HTMLResponse)
async def confirm_authenticator(page: SignedInPage, form: Form) -> Response:
    """The first code from the app turns it on; identity answers with the recovery codes."""
    assert page.user is not None
    if _enrolment(page) is None:
        return page.redirect(AUTHENTICATOR_PATH)
    code = "".join(text_field(form, "code", max_length=20).split())
    if not code:
        return _authenticator_page(
            page, await _me(page), status=422, errors={"code": page._("authenticator.code-missing")}
        )
    try:
        recovery_codes = await page.services.identity.confirm_totp(page.caller, code)
    except ServiceProblem as problem:
        await _ended_at_identity(page, problem)
        if problem.status == 422:
            return _authenticator_page(
                page, await _me(page), status=422, errors=field_errors(page, problem, "authenticator")
            )
        if problem.status == 409:
            # Identity has no enrolment under way (started again elsewhere, or reset): start over.
            await page.portal.sessions.remember(page.user, totp_enrolment=None)
            page.user.data.pop("totp_enrolment", None)
            return _authenticator_page(
                page, await _me(page), status=409, problem=page._("authenticator.start-again")
            )
        raise
    await page.portal.sessions.remember(page.user, totp_enrolment=None, recovery_codes=recovery_codes)
    return page.redirect(RECOVERY_CODES_PATH)


# --- the recovery codes, once --------------------------------------------------------------


@router.get(RECOVERY_CODES_PATH, response_class=HTMLResponse)
async def recovery_codes(page: SignedInPage) -> HTMLResponse:
    assert page.user is not None
    codes = page.user.data.get("recovery_codes")
    if codes:
        await page.portal.sessions.remember(page.user, recovery_codes=None)
    return page.render("recovery_codes.html", codes=codes or [])


@router.post(RECOVERY_CODES_PATH + "/hent")
async def download_recovery_codes(page: SignedInPage, form: Form) -> Response:
    """The codes on the page, as a text file to keep. They come from the page's own form (the
    session forgot them when it showed them), so only codes of their shape are written."""
    codes = [c for c in form.getlist("recovery_codes") if isinstance(c, str) and RECOVERY_CODE.match(c)]
    if not codes or len(codes) > RECOVERY_CODE_COUNT:
        return page.redirect(RECOVERY_CODES_PATH)
    assert page.user is not None
    lines = [
        page._("recovery-codes.file-heading", username=page.user.user.get("username", "")),
        page._("recovery-codes.file-made", when=page.texts.when(page.portal.clock.now())),
        "",
        page._("recovery-codes.how"),
        "",
        *codes,
        "",
    ]
    return PlainTextResponse(
        "\n".join(lines),
        headers={
            "Content-Disposition": f'attachment; filename="{page._("recovery-codes.file-name")}"'
        },
    )
