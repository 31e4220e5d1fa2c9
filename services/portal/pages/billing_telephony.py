"""Telefoni og Personligt Nummer (S11): the subscriptions a user may set up, and each one's
settings.

- `/telefoni`: the subscriptions on the accounts the user may use (billing
  `GET /v1/subscriptions`, a page at a time), grouped by kind, each linking to its settings.
- `/telefoni/{id}`: the settings billing keeps (`GET|PATCH /v1/subscriptions/{id}/settings`).
  A mobile or fixed line has call forwarding, voicemail and caller id in one form; a
  Personligt Nummer has three forms: its member phones, how they ring, and the opening hours
  with what happens outside them.

Billing decides every rule (Danish numbers, limits, no overlapping opening hours, a number
that cannot ring or forward to itself); a page turns its field errors into words next to the
field. Each form sends the version it showed as `If-Match`; a change made meanwhile (412)
gives the page with the settings as they are now and the user's change filled in to redo.

The forms work without JS: the member list and each weekday always offer an empty row, and
"add a row" posts the form back with one more, saving nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from services.portal.clients import ServiceProblem
from services.portal.deps import Form, needs_function
from services.portal.web import PageContext, PageProblem, text_field
from shared.validation import normalise_danish_phone

router = APIRouter()
T = TypeVar("T")

TelephonyPage = Annotated[PageContext, Depends(needs_function("telephony"))]
SubscriptionId = Annotated[str, Path(max_length=36)]

# The kinds of subscription that have settings here, in the order the list shows them.
KINDS = ("mobile", "telephony", "personal_number")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Billing's limit of member phones of a Personligt Nummer; the form offers no more rows.
MAX_MEMBERS = 10
# Rows per weekday the form offers at most: billing keeps 21 intervals a week.
MAX_ROWS_PER_DAY = 3
PAGE_SIZE = 200

# The forms of a settings page, by the last part of their path, and the settings each changes.
PARTS: dict[str, tuple[str, ...]] = {
    "indstillinger": ("call_forwarding", "voicemail", "caller_id"),
    "medlemmer": ("members",),
    "ringning": ("ring_strategy", "ring_seconds_per_member"),
    "aabningstider": ("schedule", "outside_hours", "outside_hours_target"),
}
_KIND_PARTS = {"mobile": ("indstillinger",), "telephony": ("indstillinger",)}
_PN_PARTS = ("medlemmer", "ringning", "aabningstider")

# A settings error that names a whole object whose rule concerns one of its fields: the words
# go next to that field.
_FIELD_OF = {"call_forwarding": "call_forwarding.target", "caller_id": "caller_id.main_number"}
# Digits 0–9: `str.isdigit` also takes "²", which `int` refuses.
WHOLE_NUMBER = re.compile(r"[0-9]+")
_INDEXED = re.compile(r"^(members|schedule)\.(\d+)(\..+)?$")


async def _ask(call: Awaitable[T]) -> T:
    """Billing's answer; outside the function → 403, outside the grants → 404, in words."""
    try:
        return await call
    except ServiceProblem as problem:
        _refuse(problem)
        raise


def _refuse(problem: ServiceProblem) -> None:
    if problem.status == 403:
        raise PageProblem(403, "error.needs-telephony") from None
    if problem.status == 404:
        raise PageProblem(404, "telephony.not-found") from None


@router.get("/telefoni", response_class=HTMLResponse)
async def subscriptions(page: TelephonyPage, side: Annotated[str, Query(max_length=100)] = "") -> Response:
    """The subscriptions with settings, grouped by kind and in each by account and number; a
    page of billing's list at a time."""
    # Billing's cursor is the last id of the page before: it only narrows, whatever it says.
    listed = await _ask(
        page.services.billing.subscriptions(page.caller, cursor=side or None, limit=PAGE_SIZE)
    )
    by_account = sorted(listed["items"], key=lambda s: (s["account_number"], s["identifier"]))
    groups = {kind: [s for s in by_account if s["product"]["kind"] == kind] for kind in KINDS}
    return page.render(
        "telephony.html",
        groups=[(kind, items) for kind, items in groups.items() if items],
        next_cursor=listed.get("next_cursor"),
        first_page=not side,
    )


@dataclass
class Shown:
    """What a settings page shows: billing's settings, and for the form being redone the user's
    typed values instead, with the words for its errors."""

    subscription: dict[str, Any]
    settings: dict[str, Any]
    version: int
    part: str | None = None
    errors: dict[str, str] = field(default_factory=dict)
    members: list[dict[str, Any]] = field(default_factory=list)
    days: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    always_open: bool = True

    @classmethod
    def of(cls, subscription: dict[str, Any], read: dict[str, Any]) -> Shown:
        settings = read["settings"]
        shown = cls(subscription=subscription, settings=settings, version=read["version"])
        shown.members = [
            {"number": m["number"], "label": m.get("label", "")} for m in settings.get("members", [])
        ]
        schedule = settings.get("schedule", [])
        shown.always_open = not schedule
        shown.days = {
            day: sorted(
                ({"opens": h["opens"][:5], "closes": h["closes"][:5]} for h in schedule if day in h["days"]),
                key=lambda row: row["opens"],
            )
            for day in WEEKDAYS
        }
        shown.closed = {day for day, rows in shown.days.items() if schedule and not rows}
        return shown

    def offered(self) -> None:
        """An empty row to type into at the end of the members and of each day, if there is
        room and the last row is not empty already."""
        if len(self.members) < MAX_MEMBERS and (not self.members or any(self.members[-1].values())):
            self.members.append({"number": "", "label": ""})
        for rows in self.days.values():
            if len(rows) < MAX_ROWS_PER_DAY and (not rows or rows[-1]["opens"] or rows[-1]["closes"]):
                rows.append({"opens": "", "closes": ""})


async def _read(page: PageContext, subscription_id: str) -> Shown:
    subscription, read = await asyncio.gather(
        _ask(page.services.billing.subscription(page.caller, subscription_id)),
        _ask(page.services.billing.settings(page.caller, subscription_id)),
    )
    if read["product_kind"] not in KINDS:
        raise PageProblem(404, "telephony.no-settings")
    return Shown.of(subscription, read)


def _render(page: PageContext, shown: Shown, *, status: int = 200, **values: Any) -> HTMLResponse:
    shown.offered()
    kind = shown.subscription["product"]["kind"]
    return page.render(
        "telephony_subscription.html",
        status=status,
        shown=shown,
        s=shown.settings,
        parts=_KIND_PARTS.get(kind, _PN_PARTS),
        weekdays=WEEKDAYS,
        **{"done": None, "stale": None, **values},
    )


@router.get("/telefoni/{subscription_id}", response_class=HTMLResponse)
async def subscription_settings(
    page: TelephonyPage, subscription_id: SubscriptionId, gemt: Annotated[str, Query(max_length=40)] = ""
) -> Response:
    shown = await _read(page, subscription_id)
    done = page._(f"telephony.saved.{gemt}") if gemt in PARTS else None
    return _render(page, shown, done=done)


@router.post("/telefoni/{subscription_id}/{part}", response_class=HTMLResponse)
async def change_settings(
    page: TelephonyPage,
    subscription_id: SubscriptionId,
    part: Annotated[str, Path(max_length=20)],
    form: Form,
) -> Response:
    if part not in PARTS:
        raise PageProblem(404, "error.not-found")
    shown = await _read(page, subscription_id)
    kind = shown.subscription["product"]["kind"]
    if part not in _KIND_PARTS.get(kind, _PN_PARTS):
        raise PageProblem(404, "error.not-found")
    typed = _typed(part, form)
    typed.apply(shown)
    if form.get("add_row") is not None:
        # One more row to type into than the page has; nothing is sent, the typed values stay.
        shown.offered()
        typed.add_rows(shown)
        return _render(page, shown)
    if typed.errors:
        shown.errors = {name: page._(message) for name, message in typed.errors.items()}
        return _render(page, shown, status=422)
    version = _version(form)
    try:
        await page.services.billing.change_settings(
            page.caller, subscription_id, typed.patch, version=version
        )
    except ServiceProblem as problem:
        if problem.status in (412, 428):  # changed meanwhile, or a form without its version
            return await _stale(page, subscription_id, part, typed)
        if problem.status == 422:
            shown.errors = _errors(page, problem, typed)
            return _render(page, shown, status=422)
        _refuse(problem)
        raise
    return page.redirect(f"/telefoni/{subscription_id}?gemt={part}")


async def _stale(page: PageContext, subscription_id: str, part: str, typed: Typed) -> HTMLResponse:
    """Someone changed the settings meanwhile: the settings as they are now, what differs from
    the user's change, and the user's change filled in again with the current version."""
    current = await _read(page, subscription_id)
    now = {key: current.settings.get(key) for key in PARTS[part]}
    yours = {key: typed.patch.get(key) for key in PARTS[part]}
    differences = [
        (key, _describe(page, key, now[key]), _describe(page, key, yours[key]))
        for key in PARTS[part]
        if _comparable(now[key]) != _comparable(yours[key])
    ]
    typed.apply(current)
    return _render(page, current, status=409, stale={"part": part, "differences": differences})


def _comparable(value: Any) -> Any:
    """A value as billing stores it, for telling what differs: numbers as billing normalises
    them, times without seconds, opening hours as (day, opens, closes) whatever entries hold
    several days."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if v is not None}
    if isinstance(value, list) and all(isinstance(h, dict) and "days" in h for h in value):
        return sorted(
            (day, _comparable(h.get("opens")), _comparable(h.get("closes")))
            for h in value
            for day in h["days"]
        )
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    if isinstance(value, str) and re.fullmatch(r"\d\d:\d\d(:\d\d)?", value):
        return value[:5]
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return normalise_danish_phone(value)
    return value


def _describe(page: PageContext, key: str, value: Any) -> str:
    """A setting in words, for the table of what changed meanwhile."""
    if value is None or value == "" or value == []:
        return page._("telephony.value.none")
    if key == "members":
        return ", ".join(
            f"{m.get('number', '')} ({m['label']})" if m.get("label") else str(m.get("number", ""))
            for m in value
        )
    if key == "schedule":
        by_day = {
            day: sorted(
                f"{h.get('opens', '')[:5]}–{h.get('closes', '')[:5]}"
                for h in value
                if day in h.get("days", [])
            )
            for day in WEEKDAYS
        }
        return "; ".join(
            f"{page._('telephony.day.' + day)} {', '.join(rows)}" for day, rows in by_day.items() if rows
        )
    if isinstance(value, dict):
        return ", ".join(
            f"{page._(f'telephony.{key}.{name}')}: {_describe(page, f'{key}.{name}', v)}"
            for name, v in value.items()
        )
    if isinstance(value, bool):
        return page._("telephony.value.yes" if value else "telephony.value.no")
    text = page._(f"telephony.{key}.{value}")
    return text if text != f"telephony.{key}.{value}" else str(value)


def _version(form: FormData) -> int:
    """The version the form showed; anything else is 0, which billing answers as changed
    meanwhile (412)."""
    value = text_field(form, "version", max_length=20)
    return int(value) if WHOLE_NUMBER.fullmatch(value) else 0


def _errors(page: PageContext, problem: ServiceProblem, typed: Typed) -> dict[str, str]:
    """Billing's field errors in words (`telephony.invalid.<field>`, else billing's message, as
    `field_errors` does). An entry of a list is put on the row the user typed it in: billing
    counts only the rows it was sent, and the catalogue has one text for every entry
    (`schedule.2.opens` → `telephony.invalid.schedule.item.opens`)."""
    errors: dict[str, str] = {}
    for name, message in problem.field_errors().items():
        found = _INDEXED.match(name)
        generic = f"{found.group(1)}.item{found.group(3) or ''}" if found else name
        key = f"telephony.invalid.{generic}"
        text = page._(key)
        text = text if text != key else message
        rows = typed.rows.get(found.group(1), []) if found else []
        if found and int(found.group(2)) < len(rows):
            rows[int(found.group(2))].setdefault("errors", {})[(found.group(3) or ".").lstrip(".")] = text
        else:
            errors[_FIELD_OF.get(name, name)] = text
    return errors


@dataclass
class Typed:
    """One form as typed: the merge patch for billing, the rows each list entry came from
    (to put billing's errors next to the right row), and errors found before asking."""

    part: str
    patch: dict[str, Any] = field(default_factory=dict)
    # List name → the typed row (a dict the page shows) of each entry sent, in order.
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    members: list[dict[str, Any]] = field(default_factory=list)
    days: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    always_open: bool = True

    def apply(self, shown: Shown) -> None:
        """Show the typed values in place of billing's, for this form only."""
        shown.part = self.part
        settings = dict(shown.settings)
        settings.update({k: v for k, v in self.patch.items() if k not in ("members", "schedule")})
        shown.settings = settings
        # The same row dicts: billing's errors are put on them after this.
        if self.part == "medlemmer":
            shown.members = self.members
        if self.part == "aabningstider":
            shown.days = self.days
            shown.closed = set(self.closed)
            shown.always_open = self.always_open

    def add_rows(self, shown: Shown) -> None:
        if self.part == "medlemmer" and len(shown.members) < MAX_MEMBERS:
            shown.members.append({"number": "", "label": ""})
        if self.part == "aabningstider":
            for day in WEEKDAYS:
                if day not in shown.closed and len(shown.days[day]) < MAX_ROWS_PER_DAY:
                    shown.days[day].append({"opens": "", "closes": ""})


def _typed(part: str, form: FormData) -> Typed:
    typed = Typed(part=part)
    if part == "indstillinger":
        typed.patch = {
            "call_forwarding": {
                "mode": text_field(form, "call_forwarding.mode", max_length=40) or "off",
                "target": text_field(form, "call_forwarding.target", max_length=40) or None,
                "no_answer_seconds": _number(
                    text_field(form, "call_forwarding.no_answer_seconds", max_length=10)
                ),
            },
            "voicemail": {
                "enabled": form.get("voicemail.enabled") == "true",
                "notify_by_sms": form.get("voicemail.notify_by_sms") == "true",
            },
            "caller_id": {
                "presentation": text_field(form, "caller_id.presentation", max_length=40) or "own_number",
                "main_number": text_field(form, "caller_id.main_number", max_length=40) or None,
            },
        }
    elif part == "ringning":
        typed.patch = {
            "ring_strategy": text_field(form, "ring_strategy", max_length=40) or "simultaneous",
            "ring_seconds_per_member": _number(text_field(form, "ring_seconds_per_member", max_length=10)),
        }
    elif part == "medlemmer":
        _typed_members(typed, form)
    elif part == "aabningstider":
        _typed_hours(typed, form)
    return typed


def _number(value: str) -> int | str | None:
    """A whole number as billing expects it; anything else is sent as typed, for billing to name."""
    if not value:
        return None
    return int(value) if WHOLE_NUMBER.fullmatch(value) else value


def _indexed_rows(form: FormData, prefix: str) -> list[int]:
    pattern = re.compile(rf"^{prefix}\.(\d+)\.")
    return sorted(
        {int(m.group(1)) for key in form for m in [pattern.match(key)] if m and int(m.group(1)) < 100}
    )


def _typed_members(typed: Typed, form: FormData) -> None:
    removed = {value for value in form.getlist("remove") if isinstance(value, str)}
    members: list[dict[str, str]] = []
    typed.rows["members"] = []
    for row in _indexed_rows(form, "members"):
        number = text_field(form, f"members.{row}.number", max_length=40)
        label = text_field(form, f"members.{row}.label", max_length=100)
        if str(row) in removed or not (number or label):
            continue
        shown_row: dict[str, Any] = {"number": number, "label": label}
        typed.members.append(shown_row)
        typed.rows["members"].append(shown_row)
        entry: dict[str, str] = {"label": label}
        if number:
            entry["number"] = number
        members.append(entry)
    typed.patch = {"members": members}


def _typed_hours(typed: Typed, form: FormData) -> None:
    typed.always_open = form.get("hours") != "scheduled"
    typed.closed = {value for value in form.getlist("closed") if isinstance(value, str) and value in WEEKDAYS}
    typed.days = {day: [] for day in WEEKDAYS}
    schedule: list[dict[str, Any]] = []
    typed.rows["schedule"] = []
    for row in _indexed_rows(form, "schedule"):
        day = text_field(form, f"schedule.{row}.days", max_length=10)
        if day not in WEEKDAYS:
            continue
        opens = text_field(form, f"schedule.{row}.opens", max_length=20)
        closes = text_field(form, f"schedule.{row}.closes", max_length=20)
        if day in typed.closed or not (opens or closes):
            continue
        shown_row: dict[str, Any] = {"opens": opens, "closes": closes}
        typed.days[day].append(shown_row)
        typed.rows["schedule"].append(shown_row)
        entry: dict[str, Any] = {"days": [day]}
        if opens:
            entry["opens"] = opens
        if closes:
            entry["closes"] = closes
        schedule.append(entry)
    if typed.always_open:
        schedule, typed.rows["schedule"] = [], []
    elif not schedule:
        # Billing reads no intervals as "always open": closed every day cannot be meant.
        typed.errors["schedule"] = "telephony.invalid.schedule-empty"
    outside = text_field(form, "outside_hours", max_length=40) or "voicemail"
    typed.patch = {
        "schedule": schedule,
        "outside_hours": outside,
        "outside_hours_target": text_field(form, "outside_hours_target", max_length=40) or None,
    }
