"""A customer's own pages after login: the overview (the dashboard)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from services.portal.deps import CustomerPage

router = APIRouter()

FUNCTIONS_IN_ORDER = ("invoices", "orders", "master_data", "telephony", "user_admin")


@router.get("/oversigt", response_class=HTMLResponse)
async def overview(page: CustomerPage) -> HTMLResponse:
    # Asked afresh, not taken from the login: an administrator may have changed the access
    # since, and a session identity ended answers 401 (then the login, and back here).
    me = await page.services.identity.me(page.caller)
    functions = [f for f in FUNCTIONS_IN_ORDER if f in me["functions"]]
    return page.render("overview.html", functions=functions, me=me)
