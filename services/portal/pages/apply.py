"""Applying for access (S1), and the application's receipt and status (S2).

1. `/ansoeg`: CVR, company name and the contact person (onboarding `POST /v1/applications`).
   Onboarding decides every rule; its refusals are shown in words next to the field, or as a
   sentence that says what to do next, and what was typed stays in the form.
2. `/ansoeg/{id}`: when the letter will be in the company's e-Boks, and how far the application
   has come (onboarding `GET /v1/applications/{id}`, public by the application's random id).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from services.portal.clients import ServiceProblem
from services.portal.deps import Form, Page
from services.portal.web import PageContext, PageProblem, field_errors, text_field

router = APIRouter()

# The form's fields: the names of onboarding's JSON fields, nested ones joined by a dot.
FIELDS = ("cvr", "company_name", "contact.name", "contact.email", "contact.mobile")


@router.get("/ansoeg", response_class=HTMLResponse)
async def apply_form(page: Page) -> Response:
    return _form(page, dict.fromkeys(FIELDS, ""))


def _form(
    page: PageContext,
    values: dict[str, str],
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    problem: str | None = None,
) -> HTMLResponse:
    return page.render("apply.html", status=status, values=values, errors=errors or {}, problem=problem)


@router.post("/ansoeg", response_class=HTMLResponse)
async def apply(page: Page, form: Form) -> Response:
    values = {name: text_field(form, name, max_length=320) for name in FIELDS}
    try:
        accepted = await page.services.onboarding.apply(page.anonymous_caller, application_of(page, values))
    except ServiceProblem as problem:
        if problem.status == 422 and problem.errors:
            return _form(page, values, status=422, errors=field_errors(page, problem, "apply"))
        if problem.kind == "admin-exists" and problem.body.get("takeover_available") is True:
            # The company's own administrator exists: a clear choice, to ask for a takeover or not.
            from services.portal.pages.takeover import offer_takeover  # it builds on this module

            return offer_takeover(page, values)
        return _form(page, values, status=problem.status, problem=_refusal(page, problem, values["cvr"]))
    return page.redirect(f"/ansoeg/{accepted['id']}")


def application_of(page: PageContext, values: dict[str, str]) -> dict[str, object]:
    """The form's values as onboarding's application."""
    return {
        "cvr": values["cvr"],
        "company_name": values["company_name"],
        "contact": {
            "name": values["contact.name"],
            "email": values["contact.email"],
            "mobile": values["contact.mobile"],
        },
        "language": page.language,  # the letter and emails are written in it
    }


def _refusal(page: PageContext, problem: ServiceProblem, cvr: str) -> str:
    """Onboarding's refusal as one sentence saying what to do next."""
    match problem.status, problem.kind:
        case 403, "not-a-customer":
            return page._("apply.not-a-customer", cvr=cvr)
        case 409, "admin-exists" if problem.body.get("recovery") == "ask-group-administrator":
            return page._(
                "apply.held-by-group",
                cvr=cvr,
                group_name=problem.body.get("group_name", ""),
                group_cvr=problem.body.get("group_cvr", ""),
            )
        case 409, "admin-exists":
            return page._("apply.admin-exists", cvr=cvr)
        case 409, "application-pending":
            return page._("apply.pending", cvr=cvr)
        case 429, _:
            return page._("apply.too-many", time=_again_at(page, problem.retry_after))
    return problem.detail or page._("apply.failed")


def _again_at(page: PageContext, retry_after: int | None) -> str:
    """When to try again, in Danish time: the time of day when it is soon, else the date too
    (the letters a CVR may have are counted over a day)."""
    seconds = retry_after or 60
    moment = page.portal.clock.now() + timedelta(seconds=seconds)
    return page.texts.time_of_day(moment) if seconds < 3600 else page.texts.when(moment)


@router.get("/ansoeg/{application_id}", response_class=HTMLResponse)
async def application_status(page: Page, application_id: uuid.UUID) -> Response:
    try:
        application = await page.services.onboarding.application(page.anonymous_caller, str(application_id))
    except ServiceProblem as problem:
        if problem.status in (404, 422):
            raise PageProblem(404, "apply-status.unknown") from None
        raise
    return page.render("apply_status.html", application=application)
