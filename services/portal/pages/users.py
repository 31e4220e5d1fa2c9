"""Selvbetjeningsbrugere (S4, S5, S12, S14): the company's self-service users, the wizard that
creates one (S5, and the email it sends, S6), and one user's page.

Every page needs the user administration function (`needs_function`); identity decides again
with the token and shows an administrator only the logins that lie within their own access, so
another company's user, or a broader one, is simply not found (docs/identity.md).

The wizard keeps no state on the server: each step's form carries what the earlier steps
collected in hidden fields, so Back and Next lose nothing, and the CSRF token guards every post.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from services.portal.clients import ServiceProblem
from services.portal.deps import Form, needs_function
from services.portal.pages.account import FUNCTIONS_IN_ORDER
from services.portal.web import (
    LoginRequired,
    PageContext,
    PageProblem,
    clear_session_cookie,
    field_errors,
    safe_next,
    text_field,
)
from shared.validation import normalise_danish_mobile, normalise_email

router = APIRouter()

UserAdminPage = Annotated[PageContext, Depends(needs_function("user_admin"))]
T = TypeVar("T")

# The wizard's steps in the seed's order (S5.3–S5.6); "company" only for an administrator who
# holds several companies (S5.4, S14).
STEPS = ("details", "company", "access", "functions")
# The languages a login's codes, notices and pages can be in (identity's `language`).
LANGUAGES = ("da", "en")

# What a user's page can do, by the last part of its path: identity's action, and whether it
# asks first (an action that locks someone out or removes something cannot be undone by a click).
ACTIONS = {
    "deaktiver": ("disable", True),
    "genaktiver": ("enable", False),
    "nulstil-totrin": ("reset-2fa", True),
    "send-aktivering": ("resend-activation", False),
    "laas-op": ("unlock", False),
    "slet": ("delete", True),
}
_GRANT_FIELD = re.compile(r"^grants\[(\d+)\]\.(cvr|accounts)$")


async def _ask(page: PageContext, call: Awaitable[T]) -> T:
    """Identity's answer; a refusal that is the same on every page becomes that page: a session
    identity ended → the login (and back here), not allowed → 403, not found → 404, each in words.
    Other refusals are raised for the page to put in words."""
    try:
        return await call
    except ServiceProblem as problem:
        if problem.status == 401:
            # After the login, back to the page this form was on (a GET of the same place).
            path = page.request.url.path
            raise LoginRequired(
                path if page.request.method == "GET" else "/".join(path.split("/")[:3]),
                ended_at_identity=True,
            ) from None
        if problem.status == 404:
            raise PageProblem(404, "error.not-found") from None
        if problem.status == 403 and problem.kind != "reauthentication-required":
            raise PageProblem(403, "error.needs-user_admin") from None
        raise


def _held(page: PageContext) -> set[str]:
    """The administrator's own functions: the only ones they may give (S12)."""
    return page.user.functions if page.user is not None else set()


def _status(user: dict[str, Any], now: datetime) -> str:
    """Pending, active, disabled or expired (never activated, the code expired: a new one must
    be sent) as identity says; a pending user whose code passed its expiry since identity
    answered is expired too."""
    expires = user.get("expires_at")
    if user["status"] == "pending" and expires and datetime.fromisoformat(expires) <= now:
        return "expired"
    return str(user["status"])


def _locked_until(user: dict[str, Any], now: datetime) -> datetime | None:
    until = user.get("login_locked_until")
    moment = datetime.fromisoformat(until) if until else None
    return moment if moment and moment > now else None


def _done(page: PageContext, action: str) -> str | None:
    """The success notice after an action (`?udfoert=<action>`); an unknown value shows none."""
    if action not in (*ACTIONS, "adgang"):
        return None
    return page._(f"users.done.{action}")


# --- the list ---------------------------------------------------------------------------------


@router.get("/brugere", response_class=HTMLResponse)
async def users(
    page: UserAdminPage,
    q: Annotated[str, Query(max_length=200)] = "",
    udfoert: Annotated[str, Query(max_length=30)] = "",
) -> Response:
    """The company's users, with a search by name or email (S12)."""
    listed = await _ask(page, page.services.identity.users(page.caller))
    wanted = " ".join(q.split()).casefold()
    now = page.portal.clock.now()
    rows = [
        {**user, "shown_status": _status(user, now), "locked_until": _locked_until(user, now)}
        for user in listed
        if not wanted or wanted in user["name"].casefold() or wanted in user["email"].casefold()
    ]
    return page.render("users.html", users=rows, q=q, total=len(listed), done=_done(page, udfoert))


# --- the wizard (S5) --------------------------------------------------------------------------


@dataclass
class Draft:
    """What the wizard has collected so far, posted back by every step."""

    name: str = ""
    email: str = ""
    mobile: str = ""
    cvr: str = ""
    access: str = ""
    accounts: list[str] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)
    language: str = "da"

    @classmethod
    def of(cls, form: FormData) -> Draft:
        return cls(
            name=text_field(form, "name"),
            email=text_field(form, "email", max_length=320),
            mobile=text_field(form, "mobile", max_length=32),
            language=text_field(form, "language", max_length=8),
            cvr=text_field(form, "grants.cvr", max_length=16),
            access=text_field(form, "access", max_length=4),
            accounts=_values(form, "grants.accounts", max_count=200),
            functions=_values(form, "functions", max_count=len(FUNCTIONS_IN_ORDER)),
        )

    def hidden(self, step: str) -> list[tuple[str, str]]:
        """The fields of the other steps, to carry through this one's form."""
        fields: dict[str, list[tuple[str, str]]] = {
            "details": [
                ("name", self.name),
                ("email", self.email),
                ("mobile", self.mobile),
                ("language", self.language),
            ],
            "company": [("grants.cvr", self.cvr)],
            "access": [("access", self.access), *(("grants.accounts", a) for a in self.accounts)],
            "functions": [("functions", f) for f in self.functions],
        }
        return [pair for name, pairs in fields.items() if name != step for pair in pairs]

    def user(self) -> dict[str, Any]:
        """The body of identity's `POST /v1/users`."""
        accounts: str | list[str] = "all" if self.access == "all" else self.accounts
        return {
            "name": self.name,
            "email": self.email,
            "mobile": self.mobile,
            "grants": [{"cvr": self.cvr, "accounts": accounts}],
            "functions": self.functions,
            "language": self.language,
        }


def _values(form: FormData, name: str, *, max_count: int) -> list[str]:
    """A checkbox group's ticked values, in order, once each."""
    values: list[str] = []
    for value in form.getlist(name)[:max_count]:
        if isinstance(value, str) and value.strip() and value.strip() not in values:
            values.append(value.strip()[:32])
    return values


def _steps(companies: list[dict[str, Any]]) -> list[str]:
    return [s for s in STEPS if s != "company" or len(companies) > 1]


def _company(companies: list[dict[str, Any]], cvr: str) -> dict[str, Any] | None:
    return next((c for c in companies if c["cvr"] == cvr), None)


def _check(page: PageContext, step: str, draft: Draft, companies: list[dict[str, Any]]) -> dict[str, str]:
    """The step's own rules, before Next: what identity would refuse, said in this language."""
    errors: dict[str, str] = {}
    if step == "details":
        if not draft.name:
            errors["name"] = page._("users.missing.name")
        for name, check in (("email", normalise_email), ("mobile", normalise_danish_mobile)):
            value = getattr(draft, name)
            if not value:
                errors[name] = page._(f"users.missing.{name}")
                continue
            try:
                check(value)
            except ValueError:
                errors[name] = page._(f"users.invalid.{name}")
        if not draft.language:
            errors["language"] = page._("users.missing.language")
        elif draft.language not in LANGUAGES:
            errors["language"] = page._("users.invalid.language")
    elif step == "company":
        if _company(companies, draft.cvr) is None:
            errors["grants.cvr"] = page._("users.missing.cvr")
    elif step == "access":
        company = _company(companies, draft.cvr)
        if draft.access not in ("all", "some"):
            errors["access"] = page._("users.missing.access")
        elif draft.access == "all" and company is not None and not company["all_accounts"]:
            errors["access"] = page._("users.invalid.grants.all")
        elif draft.access == "some" and not draft.accounts:
            errors["grants.accounts"] = page._("users.missing.accounts")
        elif (
            draft.access == "some" and company is not None and set(draft.accounts) - set(company["accounts"])
        ):
            errors["grants.accounts"] = page._("users.invalid.grants.accounts")
    elif step == "functions":
        if not draft.functions:
            errors["functions"] = page._("users.missing.functions")
        elif not set(draft.functions) <= _held(page):
            errors["functions"] = page._("users.invalid.functions")
    return errors


def _wizard_page(
    page: PageContext,
    step: str,
    draft: Draft,
    companies: list[dict[str, Any]],
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    problem: str | None = None,
) -> HTMLResponse:
    steps = _steps(companies)
    company = _company(companies, draft.cvr)
    return page.render(
        "users_new.html",
        status=status,
        step=step,
        steps=steps,
        number=steps.index(step) + 1,
        first=steps[0] == step,
        last=steps[-1] == step,
        draft=draft,
        hidden=draft.hidden(step),
        companies=companies,
        company=company,
        functions=[f for f in FUNCTIONS_IN_ORDER if f in _held(page)],
        languages=LANGUAGES,
        errors=errors or {},
        problem=problem,
    )


@router.get("/brugere/ny", response_class=HTMLResponse)
async def new_user(page: UserAdminPage) -> Response:
    """S5.2: "Opret selvbetjeningsbruger" opens the wizard at its first step. The colleague's
    language starts as the one the administrator reads the portal in: the one most likely
    theirs too, and a choice the administrator sees and can change on the same step."""
    companies = await _ask(page, page.services.identity.companies(page.caller))
    draft = Draft(
        cvr=companies[0]["cvr"] if len(companies) == 1 else "",
        language=page.language if page.language in LANGUAGES else "da",
    )
    return _wizard_page(page, "details", draft, companies)


@router.post("/brugere/ny", response_class=HTMLResponse)
async def new_user_step(page: UserAdminPage, form: Form) -> Response:
    """One step of the wizard: Back shows the step before with everything kept; Next checks
    this step and shows the next one; the last step's Next creates the user."""
    companies = await _ask(page, page.services.identity.companies(page.caller))
    steps = _steps(companies)
    draft = Draft.of(form)
    if len(companies) == 1:
        draft.cvr = companies[0]["cvr"]
    step = text_field(form, "step", max_length=20)
    if step not in steps:
        step = steps[0]
    at = steps.index(step)
    if text_field(form, "action", max_length=10) == "back":
        return _wizard_page(page, steps[max(at - 1, 0)], draft, companies)
    errors = _check(page, step, draft, companies)
    if errors:
        return _wizard_page(page, step, draft, companies, status=422, errors=errors)
    if step != steps[-1]:
        return _wizard_page(page, steps[at + 1], draft, companies)
    # The last step: every earlier step is checked again, since its hidden fields came back
    # from the browser, and the first one with a problem is shown.
    for earlier in steps:
        errors = _check(page, earlier, draft, companies)
        if errors:
            return _wizard_page(page, earlier, draft, companies, status=422, errors=errors)
    try:
        created = await _ask(page, page.services.identity.create_user(page.caller, draft.user()))
    except ServiceProblem as problem:
        if problem.kind == "reauthentication-required":
            return _reauthenticate(page, "/brugere/ny", "users.reauthenticate.create")
        if problem.status == 422:
            where, errors = _wizard_errors(page, problem, steps)
            return _wizard_page(page, where, draft, companies, status=422, errors=errors)
        return _wizard_page(
            page, step, draft, companies, status=problem.status, problem=page._("users.refused.other")
        )
    assert page.user is not None
    await page.portal.sessions.remember(
        page.user,
        created_user={k: created[k] for k in ("id", "username", "name", "email", "language")},
    )
    return page.redirect("/brugere/ny/oprettet")


def _wizard_errors(
    page: PageContext, problem: ServiceProblem, steps: list[str]
) -> tuple[str, dict[str, str]]:
    """Identity's field errors, by the wizard's field names, and the first step that has one."""
    errors: dict[str, str] = {}
    for name, text in field_errors(page, problem, "users").items():
        grant = _GRANT_FIELD.match(name)
        if grant:
            name, text = f"grants.{grant.group(2)}", page._(f"users.invalid.grants.{grant.group(2)}")
        elif name == "grants":
            name = "grants.cvr"
        elif name.startswith("functions"):
            name, text = "functions", page._("users.invalid.functions")
        errors.setdefault(name, text)
    fields_of = {
        "details": ("name", "email", "mobile", "language"),
        "company": ("grants.cvr",),
        "access": ("access", "grants.accounts"),
        "functions": ("functions",),
    }
    if "company" not in steps and "grants.cvr" in errors:
        # One company: no step to choose it, so its problem is told where the access is chosen.
        errors["grants.accounts"] = errors.pop("grants.cvr")
    for step in steps:
        if any(name in errors for name in fields_of[step]):
            return step, errors
    return steps[-1], errors


@router.get("/brugere/ny/oprettet", response_class=HTMLResponse)
async def new_user_created(page: UserAdminPage) -> Response:
    """The wizard's last page: the user is created, and the email went to them (S6)."""
    assert page.user is not None
    created = page.user.data.get("created_user")
    if not created:
        return page.redirect("/brugere")
    return page.render("users_new_created.html", created=created)


# --- a login that is not recent enough --------------------------------------------------------


def _reauthenticate(page: PageContext, back_to: str, reason: str) -> HTMLResponse:
    """Identity asks for a login within the last 15 minutes for this (docs/identity.md): say why,
    and offer to log in again and come back here."""
    return page.render("users_reauthenticate.html", status=403, reason=reason, back_to=back_to)


@router.post("/brugere/log-ind-igen")
async def log_in_again(page: UserAdminPage, form: Form) -> Response:
    """Ends this login (at identity too) and opens the login page, which returns to `next`."""
    back_to = safe_next(text_field(form, "next", max_length=2000), default="/brugere")
    with contextlib.suppress(ServiceProblem):  # already ended at identity: nothing more to end
        await page.services.identity.logout(page.caller)
    await page.portal.sessions.end(page.cookie)
    response = page.redirect(f"/log-ind?next={quote(back_to, safe='/')}")
    clear_session_cookie(response, page.portal.settings)
    return response


# --- one user ---------------------------------------------------------------------------------


def _grants_form(companies: list[dict[str, Any]], grants: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per company the administrator may grant: none, all or some accounts, and which."""
    held = {g["cvr"]: g["accounts"] for g in grants}
    chosen = {}
    for company in companies:
        accounts = held.get(company["cvr"])
        if accounts is None:
            chosen[company["cvr"]] = {"access": "none", "accounts": []}
        elif accounts == "all":
            chosen[company["cvr"]] = {"access": "all", "accounts": []}
        else:
            chosen[company["cvr"]] = {"access": "some", "accounts": list(accounts)}
    return chosen


def _user_page(
    page: PageContext,
    user: dict[str, Any],
    companies: list[dict[str, Any]],
    *,
    status: int = 200,
    chosen: dict[str, dict[str, Any]] | None = None,
    functions: list[str] | None = None,
    errors: dict[str, str] | None = None,
    problem: str | None = None,
    done: str | None = None,
) -> HTMLResponse:
    now = page.portal.clock.now()
    return page.render(
        "user.html",
        status=status,
        shown=user,
        shown_status=_status(user, now),
        locked_until=_locked_until(user, now),
        companies=companies,
        chosen=chosen if chosen is not None else _grants_form(companies, user["grants"]),
        chosen_functions=functions if functions is not None else user["functions"],
        functions=[f for f in FUNCTIONS_IN_ORDER if f in _held(page)],
        errors=errors or {},
        problem=problem,
        done=done,
    )


@router.get("/brugere/{user_id}", response_class=HTMLResponse)
async def user_page(
    page: UserAdminPage, user_id: uuid.UUID, udfoert: Annotated[str, Query(max_length=30)] = ""
) -> Response:
    """One user: details, status, access, functions, and what can be done to the login."""
    identity = page.services.identity
    user = await _ask(page, identity.user(page.caller, str(user_id)))
    companies = await _ask(page, identity.companies(page.caller))
    return _user_page(page, user, companies, done=_done(page, udfoert))


@router.post("/brugere/{user_id}/adgang", response_class=HTMLResponse)
async def change_access(page: UserAdminPage, form: Form, user_id: uuid.UUID) -> Response:
    """New companies, accounts and functions (S12, S14); identity ends the user's sessions, so
    their next login carries exactly these."""
    identity = page.services.identity
    companies = await _ask(page, identity.companies(page.caller))
    chosen = {
        c["cvr"]: {
            "access": text_field(form, f"grants.{c['cvr']}.access", max_length=4) or "none",
            "accounts": _values(form, f"grants.{c['cvr']}.accounts", max_count=200),
        }
        for c in companies
    }
    functions = _values(form, "functions", max_count=len(FUNCTIONS_IN_ORDER))
    granted = [cvr for cvr, choice in chosen.items() if choice["access"] in ("all", "some")]
    grants = [
        {"cvr": cvr, "accounts": "all" if chosen[cvr]["access"] == "all" else chosen[cvr]["accounts"]}
        for cvr in granted
    ]
    errors: dict[str, str] = {}
    if not grants:
        errors["grants"] = page._("users.missing.grants")
    if not functions:
        errors["functions"] = page._("users.missing.functions")
    problem = None
    status = 422
    if not errors:
        try:
            await _ask(
                page,
                identity.change_user(page.caller, str(user_id), {"grants": grants, "functions": functions}),
            )
            return page.redirect(f"/brugere/{user_id}?udfoert=adgang")
        except ServiceProblem as refused:
            status = refused.status
            if refused.status == 422:
                errors = _access_errors(page, refused, granted)
            else:
                problem = _refusal(page, refused, "adgang")
    user = await _ask(page, identity.user(page.caller, str(user_id)))
    return _user_page(
        page,
        user,
        companies,
        status=status,
        chosen=chosen,
        functions=functions,
        errors=errors,
        problem=problem,
    )


def _access_errors(page: PageContext, problem: ServiceProblem, granted: list[str]) -> dict[str, str]:
    """Identity's field errors of a change of access, by the company they are about."""
    errors: dict[str, str] = {}
    for name, text in field_errors(page, problem, "users").items():
        grant = _GRANT_FIELD.match(name)
        if grant and int(grant.group(1)) < len(granted):
            errors.setdefault(
                f"grants.{granted[int(grant.group(1))]}", page._(f"users.invalid.grants.{grant.group(2)}")
            )
        elif name.startswith("functions"):
            errors.setdefault("functions", text)
        else:
            errors.setdefault("grants", text)
    return errors


def _refusal(page: PageContext, problem: ServiceProblem, action: str) -> str:
    """Identity's refusal of an action, as a sentence that says what to do next."""
    if problem.kind == "last-administrator":
        return page._("users.refused.last-administrator")
    if problem.status == 409:
        return page._(f"users.refused.{action}")
    if problem.status == 429:
        return page._("users.refused.too-often")
    return page._("users.refused.other")


@router.post("/brugere/{user_id}/{action}", response_class=HTMLResponse)
async def act_on_user(page: UserAdminPage, form: Form, user_id: uuid.UUID, action: str) -> Response:
    """Disable, enable, reset the second factor, resend the activation, unlock or delete. The
    ones that cannot be undone by a click ask first: without `confirmed=ja` (which the script
    adds once the browser's own dialog said yes) the answer is a page that asks."""
    if action not in ACTIONS:
        raise PageProblem(404, "error.not-found")
    call, asks_first = ACTIONS[action]
    identity = page.services.identity
    if asks_first and text_field(form, "confirmed", max_length=3) != "ja":
        user = await _ask(page, identity.user(page.caller, str(user_id)))
        return page.render("user_confirm.html", shown=user, action=action)
    try:
        if call == "delete":
            await _ask(page, identity.delete_user(page.caller, str(user_id)))
            return page.redirect("/brugere?udfoert=slet")
        await _ask(page, identity.act_on_user(page.caller, str(user_id), call))
    except ServiceProblem as refused:
        if refused.kind == "reauthentication-required":
            reason = f"users.reauthenticate.{'send-aktivering' if action == 'send-aktivering' else 'other'}"
            return _reauthenticate(page, f"/brugere/{user_id}", reason)
        user = await _ask(page, identity.user(page.caller, str(user_id)))
        companies = await _ask(page, identity.companies(page.caller))
        return _user_page(
            page, user, companies, status=refused.status, problem=_refusal(page, refused, action)
        )
    return page.redirect(f"/brugere/{user_id}?udfoert={action}")
