"""A customer's own pages after login: the overview (the dashboard)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from services.portal.web import CustomerPage

router = APIRouter()

FUNCTIONS_IN_ORDER = ("invoices", "orders", "master_data", "telephony", "user_admin")


@router.get("/oversigt", response_class=HTMLResponse)
async def overview(page: CustomerPage) -> HTMLResponse:
    assert page.user is not None
    functions = [f for f in FUNCTIONS_IN_ORDER if f in page.user.functions]
    return page.render("overview.html", functions=functions)
