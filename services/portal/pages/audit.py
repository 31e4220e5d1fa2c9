"""The audit trail (Revisionsspor, S13): a company's administrators read who did what, when and
from where — logins, failed logins and locks, second factors, administration and billing's
changes — within their grants; support reads a company's on the support console with the same
filters (`services/portal/pages/support.py`).

The portal decides nothing: identity picks the entries the caller may see (`GET /v1/audit`).
Filters are a GET form, so a filtered page can be bookmarked and works without script; dates
are whole days in Danish time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from services.portal.clients import ServiceProblem
from services.portal.i18n import DANISH_TIME
from services.portal.pages.users import UserAdminPage
from services.portal.web import PageContext, PageProblem, field_errors

router = APIRouter()

# Entries on one page, newest first.
PAGE_SIZE = 25

# The action filter's choices: a prefix of the actions (docs/identity.md, Audit trail).
ACTION_GROUPS = (
    "login.",
    "login.failed",
    "login.locked",
    "second-factor.",
    "password.",
    "profile.",
    "user.",
    "takeover.",
    "support.",
    "order.",
    "subscription.",
    "master_data.",
    "invoice_format.",
)

# A filter's text is short; longer is not a filter of ours.
Text = Annotated[str | None, Query(max_length=100)]


@dataclass
class TrailFilter:
    """The filter form's values as typed, what identity is asked, and the form's errors."""

    values: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def link(self, path: str, **changes: str | None) -> str:
        """This page with the same filters and `changes` (None drops a parameter)."""
        query = {k: v for k, v in {**self.values, **changes}.items() if v}
        return f"{path}?{urlencode(query)}" if query else path


def trail_filter(
    page: PageContext,
    *,
    since: str | None,
    until: str | None,
    action: str | None,
    user_id: str | None,
    before: str | None,
) -> TrailFilter:
    """The form's values checked and turned into identity's parameters: `from` and `to` are
    whole days in Danish time, `to` included."""
    values = {
        "from": (since or "").strip(),
        "to": (until or "").strip(),
        "action": (action or "").strip(),
        "user_id": (user_id or "").strip(),
        "before": (before or "").strip(),
    }
    wanted = TrailFilter(values=values, params={"limit": str(PAGE_SIZE)})
    for name, day_after in (("from", False), ("to", True)):
        if not values[name]:
            continue
        try:
            day = date.fromisoformat(values[name])
        except ValueError:
            wanted.errors[name] = page._(f"audit.invalid.{name}")
            continue
        midnight = datetime.combine(day + timedelta(days=1 if day_after else 0), time(), tzinfo=DANISH_TIME)
        wanted.params[name] = midnight.isoformat()
    if values["action"] and values["action"] not in ACTION_GROUPS:
        wanted.errors["action"] = page._("audit.invalid.action")
    for name in ("action", "user_id", "before"):
        if values[name] and name not in wanted.errors:
            wanted.params[name] = values[name]
    return wanted


def _words(page: PageContext, key: str, fallback: str) -> str:
    text = page._(key)
    return text if text != key else fallback


def described(page: PageContext, entry: dict[str, Any], names: dict[str, str], me: str | None) -> dict[str, Any]:
    """An entry in words: the action, what exactly, who did it, and to what."""
    action = str(entry.get("action", ""))
    details = entry.get("details") or {}
    said = [
        _words(page, f"audit.detail.{key}.{value}", "")
        for key, value in sorted(details.items())
        if isinstance(value, str)
    ]
    actor_id = entry.get("actor_id")
    if actor_id is None and entry.get("actor_role") is None:
        actor = page._("audit.actor-unknown-username", username=entry.get("subject_username") or "")
    elif actor_id is not None and actor_id == me:
        actor = page._("audit.actor-you")
    elif actor_id in names:
        actor = names[actor_id]
    elif entry.get("actor_role") == "support":
        actor = page._("audit.actor-support")
    else:
        actor = page._("audit.actor-other")
    if entry.get("target_user_id"):
        target = names.get(entry["target_user_id"], page._("audit.target-other"))
    elif entry.get("account_number"):
        target = page._("audit.target-account", account=entry["account_number"], cvr=entry.get("tenant_cvr") or "")
    elif entry.get("source") == "billing":
        target = page._("audit.target-company", cvr=entry.get("tenant_cvr") or "")
    else:
        target = ""
    return {
        "at": entry.get("at"),
        "action": _words(page, f"audit.action.{action}", action),
        "code": action,
        "details": " ".join(text for text in said if text),
        "actor": actor,
        "target": target,
        "address": entry.get("client_address") or "",
        "cursor": entry.get("cursor"),
    }


@router.get("/revision", response_class=HTMLResponse)
async def trail(
    page: UserAdminPage,
    since: Annotated[str | None, Query(alias="from", max_length=100)] = None,
    until: Annotated[str | None, Query(alias="to", max_length=100)] = None,
    action: Text = None,
    user_id: Text = None,
    before: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    wanted = trail_filter(page, since=since, until=until, action=action, user_id=user_id, before=before)
    identity = page.services.identity
    users = await identity.users(page.caller)
    names = {u["id"]: u["name"] for u in users}
    rows: list[dict[str, Any]] = []
    status = 200
    if wanted.errors:
        status = 422
    else:
        try:
            rows = await identity.company_audit(page.caller, wanted.params)
        except ServiceProblem as problem:
            if problem.status == 403:
                raise PageProblem(403, "error.needs-user_admin") from None
            if problem.status != 422:
                raise
            wanted.errors = field_errors(page, problem, "audit")
            status = 422
    return page.render(
        "revision.html",
        status=status,
        wanted=wanted,
        entries=[described(page, e, names, page.user.user.get("user_id") if page.user else None) for e in rows],
        users=sorted(users, key=lambda u: u["name"]),
        groups=ACTION_GROUPS,
        older=wanted.link("/revision", before=rows[-1]["cursor"]) if len(rows) == PAGE_SIZE else None,
        newest=wanted.link("/revision", before=None) if wanted.values["before"] else None,
    )


async def support_trail(
    page: PageContext, cvr: str, wanted: TrailFilter, names: dict[str, str]
) -> tuple[list[dict[str, Any]], str | None]:
    """For the support console: a company's entries with the same filters, in words, and the
    link to the older ones."""
    if wanted.errors:
        return [], None
    try:
        rows = await page.services.identity.support_audit(page.caller, cvr, wanted.params)
    except ServiceProblem as problem:
        if problem.status != 422:
            raise
        wanted.errors = field_errors(page, problem, "audit")
        return [], None
    me = page.user.user.get("user_id") if page.user else None
    path = f"/support/virksomheder/{cvr}"
    older = wanted.link(path, before=rows[-1]["cursor"]) + "#audit-heading" if len(rows) == PAGE_SIZE else None
    return [described(page, e, names, me) for e in rows], older
