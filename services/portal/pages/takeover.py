"""Taking over a company's administration through its e-Boks (docs/identity.md, "Taking over a
company's administration").

1. `/ansoeg` answered "the company already has an administrator": the page offers a takeover,
   with what it means, and `POST /overtagelse/ansoeg` asks for it (onboarding, `takeover`).
2. `/overtagelse/annuller/{token}`: the link in an administrator's email or SMS shows what is
   being cancelled; the POST of its form cancels (identity; the link is the authority).
3. `/overtagelse`: a logged-in administrator's list of open takeovers of the companies they
   hold, each with a button that cancels it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import HTMLResponse, Response

from services.portal.clients import ServiceProblem
from services.portal.deps import Form, Page, needs_function
from services.portal.pages.apply import FIELDS, application_of
from services.portal.web import PageContext, PageProblem, text_field

router = APIRouter()

AdministratorPage = Annotated[PageContext, Depends(needs_function("user_admin"))]
Token = Annotated[str, Path(min_length=1, max_length=200)]


def offer_takeover(page: PageContext, values: dict[str, str], *, problem: str | None = None) -> HTMLResponse:
    """The company already has an administrator: ask whether to request a takeover, saying
    what it means. The form's values go along, so nothing is typed twice."""
    return page.render("takeover_offer.html", status=409, values=values, problem=problem)


@router.post("/overtagelse/ansoeg", response_class=HTMLResponse)
async def request_takeover(page: Page, form: Form) -> Response:
    values = {name: text_field(form, name, max_length=320) for name in FIELDS}
    try:
        accepted = await page.services.onboarding.request_takeover(page.anonymous_caller, application_of(page, values))
    except ServiceProblem as problem:
        if problem.status == 429:
            return offer_takeover(page, values, problem=page._("takeover.too-many"))
        return offer_takeover(page, values, problem=problem.detail or page._("takeover.failed"))
    return page.redirect(f"/ansoeg/{accepted['id']}")


# --- the cancel link ----------------------------------------------------------------------------


async def _by_link(page: PageContext, token: str) -> dict[str, Any]:
    try:
        return await page.services.identity.takeover_by_link(page.anonymous_caller, token)
    except ServiceProblem as problem:
        if problem.status in (404, 422):
            raise PageProblem(404, "takeover.unknown-link") from None
        if problem.kind == "cancel-link-revoked":
            raise PageProblem(403, "takeover.revoked-link") from None
        raise


@router.get("/overtagelse/annuller/{token}", response_class=HTMLResponse)
async def cancel_page(page: Page, token: Token) -> Response:
    """What the link would cancel, and a button that cancels it (a GET changes nothing: mail
    scanners open links)."""
    takeover = await _by_link(page, token)
    return page.render("takeover_cancel.html", takeover=takeover, token=token, done=False)


@router.post("/overtagelse/annuller/{token}", response_class=HTMLResponse)
async def cancel_by_link(page: Page, form: Form, token: Token) -> Response:
    try:
        takeover = await page.services.identity.cancel_takeover_by_link(page.anonymous_caller, token)
    except ServiceProblem as problem:
        if problem.status in (404, 422):
            raise PageProblem(404, "takeover.unknown-link") from None
        if problem.kind == "cancel-link-revoked":
            raise PageProblem(403, "takeover.revoked-link") from None
        if problem.kind in ("cancel-link-used", "takeover-ended"):
            takeover = await _by_link(page, token)
            return page.render("takeover_cancel.html", status=409, takeover=takeover, token=token, done=False)
        raise
    return page.render("takeover_cancel.html", takeover=takeover, token=token, done=True)


# --- a logged-in administrator --------------------------------------------------------------------


@router.get("/overtagelse", response_class=HTMLResponse)
async def open_takeovers(
    page: AdministratorPage, annulleret: Annotated[str, Query(max_length=10)] = ""
) -> Response:
    takeovers = await page.services.identity.open_takeovers(page.caller)
    return page.render("takeovers.html", takeovers=takeovers, cancelled=annulleret == "ja")


@router.post("/overtagelse/{takeover_id}/annuller", response_class=HTMLResponse)
async def cancel(page: AdministratorPage, form: Form, takeover_id: Annotated[str, Path(max_length=36)]) -> Response:
    try:
        await page.services.identity.cancel_takeover(page.caller, takeover_id)
    except ServiceProblem as problem:
        if problem.status == 404:
            raise PageProblem(404, "error.not-found") from None
        if problem.kind != "takeover-ended":
            raise
    return page.redirect("/overtagelse?annulleret=ja")
