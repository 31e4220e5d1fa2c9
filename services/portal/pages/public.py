"""Pages for everyone: the front page and the language switch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.portal.config import PortalSettings
from services.portal.deps import Page
from services.portal.i18n import LANGUAGES
from services.portal.web import safe_next

router = APIRouter()

ONE_YEAR_S = 365 * 24 * 3600


@router.get("/", response_class=HTMLResponse)
async def front(page: Page) -> HTMLResponse:
    return page.render("front.html")


@router.get("/sprog")
async def switch_language(
    page: Page,
    til: Annotated[str, Query(max_length=5)] = "da",
    next: Annotated[str, Query(max_length=2000)] = "/",
) -> RedirectResponse:
    """The language switch on every page: a preference, remembered in a cookie."""
    response = page.redirect(safe_next(next, default="/"))
    if til in LANGUAGES:
        set_language_cookie(response, page.portal.settings, til)
    return response


def set_language_cookie(response: Response, settings: PortalSettings, language: str) -> None:
    """Remember the chosen language in the browser (before login, and for now after it too)."""
    response.set_cookie(
        settings.language_cookie,
        language,
        max_age=ONE_YEAR_S,
        httponly=True,
        secure=settings.secure_cookies,
        samesite="lax",
        path="/",
    )
