"""The support console (S3, S13): staff find a company by CVR and see its logins, its
applications, its audit trail and the letters to its e-Boks; they delete an orphaned
administrator, unlock a locked login and send a pending letter login's letter again.

Every page is for support staff only (`StaffPage`); the services decide again from the staff
member's token, and identity audits every look-up and every action. A section whose service
does not answer says so in a sentence; the rest of the page is still shown.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse, Response

from services.portal.clients import ServiceProblem, ServiceUnavailable
from services.portal.deps import Form, StaffPage
from services.portal.pages.audit import ACTION_GROUPS, TrailFilter, support_trail, trail_filter
from services.portal.web import PageContext, PageProblem

log = logging.getLogger(__name__)

router = APIRouter()

CVR = re.compile(r"^[0-9]{8}$")
CvrPath = Annotated[str, Path(pattern=r"^[0-9]{8}$")]
UserIdPath = Annotated[str, Path(max_length=36, pattern=r"^[0-9a-f-]+$")]

# The audit filters (the same as an administrator's, `pages/audit.py`), as query parameters.
AuditText = Annotated[str | None, Query(max_length=100)]


@dataclass
class Section:
    """What one service said for a part of the company page, or that it could not be read."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    unavailable: bool = False
    more: str | None = None  # the link to the next page, where there is one


async def _read(service: str, call: Awaitable[list[dict[str, Any]]]) -> Section:
    try:
        return Section(rows=await call)
    except (ServiceUnavailable, ServiceProblem) as exc:
        log.warning(
            "a section of the support console could not be read", extra={"service": service, "error": str(exc)}
        )
        return Section(unavailable=True)


@router.get("/support", response_class=HTMLResponse)
async def search(page: StaffPage, cvr: Annotated[str | None, Query()] = None) -> Response:
    """Find a company by its CVR number (a search, so a GET form)."""
    if cvr is None:
        return page.render("support.html", cvr="", errors={})
    wanted = cvr.replace(" ", "")[:50]
    if not CVR.fullmatch(wanted):
        return page.render(
            "support.html", status=422, cvr=cvr[:50], errors={"cvr": page._("support.invalid.cvr")}
        )
    return page.redirect(f"/support/virksomheder/{wanted}")


@router.get("/support/virksomheder/{cvr}", response_class=HTMLResponse)
async def company(
    page: StaffPage,
    cvr: CvrPath,
    since: Annotated[str | None, Query(alias="from", max_length=100)] = None,
    until: Annotated[str | None, Query(alias="to", max_length=100)] = None,
    action: AuditText = None,
    user_id: AuditText = None,
    before: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    wanted = trail_filter(page, since=since, until=until, action=action, user_id=user_id, before=before)
    return await _company_page(page, cvr, wanted=wanted, status=422 if wanted.errors else 200)


async def _company_page(
    page: PageContext,
    cvr: str,
    *,
    status: int = 200,
    problem: str | None = None,
    wanted: TrailFilter | None = None,
) -> HTMLResponse:
    identity = page.services.identity
    wanted = wanted or trail_filter(page, since=None, until=None, action=None, user_id=None, before=None)

    async def logins_then_audit() -> tuple[Section, Section]:
        # One after the other, so the trail shows this very look-up (`support.list-users`).
        logins = await _read("identity", identity.company_users(page.caller, cvr))
        names = {login["id"]: login["name"] for login in logins.rows}
        try:
            rows, older = await support_trail(page, cvr, wanted, names)
        except (ServiceUnavailable, ServiceProblem) as exc:
            log.warning("the audit trail could not be read", extra={"service": "identity", "error": str(exc)})
            return logins, Section(unavailable=True)
        return logins, Section(rows=rows, more=older)

    (logins, audit), applications, letters = await asyncio.gather(
        logins_then_audit(),
        _read("onboarding", page.services.onboarding_support.applications(page.caller, cvr)),
        _read("notifier", page.services.notifier.letters(page.caller, cvr)),
    )
    usernames = {login["id"]: login["username"] for login in logins.rows}
    response = page.render(
        "support_company.html",
        status=status,
        cvr=cvr,
        logins=logins,
        applications=applications,
        audit=audit,
        wanted=wanted,
        groups=ACTION_GROUPS,
        letters=letters,
        usernames=usernames,
        me=page.user.user.get("user_id") if page.user else None,
        words=_words_of(page),
        problem=problem,
        done=await _take_notice(page, cvr),
    )
    return response


def _words(page: PageContext, prefix: str, value: object) -> str:
    """The catalogue's words for a service's value (a status, a role, an audit action), or the
    value itself where the catalogue has none, so a new value shows rather than a key."""
    key = f"{prefix}.{value}"
    text = page._(key)
    return text if text != key else str(value)


def _words_of(page: PageContext) -> Callable[[str, object], str]:
    return lambda prefix, value: _words(page, prefix, value)


async def _take_notice(page: PageContext, cvr: str) -> str | None:
    """The success of the action just done on this company, shown once."""
    if page.user is None:
        return None
    notice = page.user.data.get("support_notice")
    if not isinstance(notice, dict) or notice.get("cvr") != cvr:
        return None
    await page.portal.sessions.remember(page.user, support_notice=None)
    values = {"username": notice.get("username", "")}
    if notice.get("deliver_by"):
        values["deliver_by"] = page.texts.when(notice["deliver_by"])
    return page._(f"support.done.{notice.get('done')}", **values)


# --- actions: each a POST with the form's CSRF token, audited by identity -------------------


@router.get("/support/virksomheder/{cvr}/brugere/{user_id}/slet", response_class=HTMLResponse)
async def confirm_delete(page: StaffPage, cvr: CvrPath, user_id: UserIdPath) -> Response:
    """The confirmation before a login is deleted (works without script)."""
    try:
        logins = await page.services.identity.company_users(page.caller, cvr)
    except ServiceProblem:
        raise PageProblem(404, "support.refused.not-found") from None
    login = next((u for u in logins if u["id"] == user_id), None)
    if login is None:
        raise PageProblem(404, "support.refused.not-found")
    return page.render("support_delete.html", cvr=cvr, login=login, words=_words_of(page))


@router.post("/support/virksomheder/{cvr}/brugere/{user_id}/slet", response_class=HTMLResponse)
async def delete(page: StaffPage, form: Form, cvr: CvrPath, user_id: UserIdPath) -> Response:
    """S3: the company's only administrator left and nobody knows the login; once it is
    deleted, the company applies again for a new one."""
    return await _act(page, cvr, "deleted", page.services.identity.support_delete_user(page.caller, user_id))


@router.post("/support/virksomheder/{cvr}/brugere/{user_id}/laas-op", response_class=HTMLResponse)
async def unlock(page: StaffPage, form: Form, cvr: CvrPath, user_id: UserIdPath) -> Response:
    return await _act(page, cvr, "unlocked", page.services.identity.unlock_user(page.caller, user_id))


@router.post("/support/virksomheder/{cvr}/brugere/{user_id}/send-brev", response_class=HTMLResponse)
async def resend_letter(page: StaffPage, form: Form, cvr: CvrPath, user_id: UserIdPath) -> Response:
    """S3: the first administrator's letter never came, or was lost: a new one with a new code."""
    return await _act(page, cvr, "letter-sent", page.services.identity.resend_letter(page.caller, user_id))


async def _act(page: PageContext, cvr: str, done: str, action: Awaitable[Any]) -> Response:
    """Do one action; back to the company page with a notice, or the refusal in words there."""
    try:
        result = await action
    except ServiceProblem as problem:
        response = await _company_page(page, cvr, status=problem.status, problem=_refusal(page, problem))
        if problem.retry_after:
            response.headers["Retry-After"] = str(problem.retry_after)
        return response
    notice: dict[str, Any] = {"cvr": cvr, "done": done}
    if isinstance(result, dict):
        notice.update(username=result.get("username", ""), deliver_by=result.get("deliver_by"))
    assert page.user is not None  # StaffPage
    await page.portal.sessions.remember(page.user, support_notice=notice)
    return page.redirect(f"/support/virksomheder/{cvr}")


def _refusal(page: PageContext, problem: ServiceProblem) -> str:
    """What identity's refusal means, and what to do next."""
    if problem.status == 429:
        again = page.portal.clock.now() + timedelta(seconds=problem.retry_after or 0)
        return page._("support.refused.too-many-letters", time=page.texts.when(again))
    if problem.status == 404:
        return page._("support.refused.not-found")
    if problem.status == 403:
        return page._("support.refused.forbidden")
    text = page._(f"support.refused.{problem.kind}")
    return text if text != f"support.refused.{problem.kind}" else problem.detail
