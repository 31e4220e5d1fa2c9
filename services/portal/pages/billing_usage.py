"""Forbrug (S8, S14): usage per month and category for a period — a chart drawn on the server
as SVG, the same figures in a table, and every row as CSV.

Billing keeps usage per subscription, category and month and sums it per month and category
for the page (`GET /v1/usage/summary`: one query within the user's grants, however many
subscriptions a company has); the CSV export has every row (`GET /v1/usage?format=csv`).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from services.portal.clients import ServiceProblem
from services.portal.i18n import DANISH_TIME
from services.portal.pages.billing_invoices import (
    CATEGORY_ORDER,
    BillingFilter,
    InvoicesPage,
    Text,
    billing_filter,
    category_name,
    download_headers,
    kroner,
    month,
    month_value,
    quantity,
    visible_companies,
    whole_kroner,
)
from services.portal.web import PageContext, PageProblem

router = APIRouter()

# The default period: the last six months that have ended.
DEFAULT_MONTHS = 6
# The most months the chart shows side by side (a longer period shows the months with usage).
MAX_CHART_MONTHS = 36

Since = Annotated[str | None, Query(alias="from", max_length=100)]
Until = Annotated[str | None, Query(alias="to", max_length=100)]


def _previous_month(first_day: date) -> date:
    return (first_day - timedelta(days=1)).replace(day=1)


def _next_month(first_day: date) -> date:
    return (first_day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _usage_filter(
    page: PageContext, cvr: str | None, account: str | None, since: str | None, until: str | None
) -> BillingFilter:
    """The filter, with the last six closed months (Danish time) when no period was chosen."""
    if not (since or "").strip() and not (until or "").strip():
        this_month = page.portal.clock.now().astimezone(DANISH_TIME).date().replace(day=1)
        last = _previous_month(this_month)
        first = last
        for _ in range(DEFAULT_MONTHS - 1):
            first = _previous_month(first)
        since, until = month_value(first), month_value(last)
    return billing_filter(page, cvr=cvr, account=account, since=since, until=until)


@dataclass
class Summed:
    """Usage summed per month and category: `cells[(month, category)] = (quantity, unit, øre)`."""

    cells: dict[tuple[str, str], tuple[int, str, int]]


async def summed_usage(page: PageContext, wanted: BillingFilter) -> Summed:
    """Billing's sums per month, category and unit for the filter, keyed by month and category."""
    answer = await page.services.billing.usage_summary(page.caller, wanted.params)
    sums: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, "", 0])
    for row in answer["items"]:
        cell = sums[(row["period"][:7], row["category"])]
        cell[0] += row["quantity"]
        cell[1] = row["unit"]
        cell[2] += row["amount_ore"]
    return Summed(cells={key: (q, unit, ore) for key, (q, unit, ore) in sums.items()})


def _months(wanted: BillingFilter, summed: Summed) -> list[str]:
    """The chart's months, oldest first: every month of the chosen period, or, when the period
    is open or long, the months with usage."""
    with_usage = {m for m, _ in summed.cells}
    since, until = wanted.values["from"], wanted.values["to"]
    if since and until and since <= until:
        first = date.fromisoformat(since + "-01")
        last = date.fromisoformat(until + "-01")
        months: list[str] = []
        while first <= last and len(months) <= MAX_CHART_MONTHS:
            months.append(month_value(first))
            first = _next_month(first)
        if len(months) <= MAX_CHART_MONTHS:
            return months
    return sorted(with_usage)


def _categories(summed: Summed) -> list[str]:
    present = {category for _, category in summed.cells}
    known = [c for c in CATEGORY_ORDER if c in present]
    return known + sorted(present - set(known))


# The chart's drawing area, in SVG user units (the picture scales with the page).
WIDTH, HEIGHT = 640, 320
LEFT, RIGHT, TOP, BOTTOM = 96, 12, 16, 48
TICKS = 4


def _nice_step(largest_ore: int) -> int:
    """A round step for the axis (1, 2, 2½ or 5 times a power of ten kroner) so that `TICKS`
    steps reach at least `largest_ore`."""
    rough = max(largest_ore / TICKS, 100)
    power = 100
    while power * 10 <= rough:
        power *= 10
    for factor in (1, 2, 2.5, 5, 10):
        if power * factor >= rough:
            return int(power * factor)
    return power * 10


def chart(page: PageContext, months: list[str], categories: list[str], summed: Summed) -> dict[str, Any]:
    """Bars per month, stacked by category (amounts in kroner), as coordinates for the template."""
    totals = {m: sum(summed.cells.get((m, c), (0, "", 0))[2] for c in categories) for m in months}
    step = _nice_step(max(totals.values(), default=0))
    top = step * TICKS
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_width / max(len(months), 1)
    bar_width = slot * 0.6

    def y(ore: float) -> float:
        return round(TOP + plot_height - plot_height * ore / top, 2)

    bars = []
    for index, m in enumerate(months):
        x = round(LEFT + slot * index + (slot - bar_width) / 2, 2)
        stacked = 0
        segments = []
        for c in categories:
            amount = summed.cells.get((m, c), (0, "", 0))[2]
            if amount <= 0:
                continue
            segments.append(
                {
                    "category": c,
                    "y": y(stacked + amount),
                    "height": round(y(stacked) - y(stacked + amount), 2),
                    "title": page._(
                        "usage.chart-segment",
                        month=month(page, m + "-01"),
                        category=category_name(page, c),
                        amount=kroner(page, amount),
                    ),
                }
            )
            stacked += amount
        bars.append(
            {
                "x": x,
                "width": round(bar_width, 2),
                "label_x": round(LEFT + slot * index + slot / 2, 2),
                "label": month(page, m + "-01", short=True),
                "segments": segments,
            }
        )
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "baseline": y(0),
        "label_y": HEIGHT - BOTTOM + 20,
        "ticks": [{"y": y(step * i), "label": whole_kroner(page, step * i)} for i in range(TICKS + 1)],
        "bars": bars,
    }


def _table(
    page: PageContext, months: list[str], categories: list[str], summed: Summed
) -> list[dict[str, Any]]:
    """Per month, newest first: each category's quantity and amount, and the month's sum."""
    table = []
    for m in reversed(months):
        cells = [(c, summed.cells[(m, c)]) for c in categories if (m, c) in summed.cells]
        table.append(
            {
                "month": month(page, m + "-01"),
                "rows": [
                    {
                        "category": category_name(page, c),
                        "quantity": quantity(page, q, unit),
                        "amount": kroner(page, ore),
                    }
                    for c, (q, unit, ore) in cells
                ],
                "total": kroner(page, sum(ore for _, (_, _, ore) in cells)),
            }
        )
    return table


@router.get("/forbrug", response_class=HTMLResponse)
async def usage(
    page: InvoicesPage, cvr: Text = None, account: Text = None, since: Since = None, until: Until = None
) -> Response:
    wanted = _usage_filter(page, cvr, account, since, until)
    summed = Summed(cells={})
    if not wanted.errors:
        try:
            summed = await summed_usage(page, wanted)
        except ServiceProblem as problem:
            if problem.status == 403:
                raise PageProblem(403, "error.needs-invoices") from None
            if problem.status != 422:
                raise
            wanted.refused(page, problem)
    months = _months(wanted, summed) if not wanted.errors else []
    categories = _categories(summed)
    period_total = sum(ore for _, _, ore in summed.cells.values())
    return page.render(
        "forbrug.html",
        status=422 if wanted.errors else 200,
        wanted=wanted,
        companies=await visible_companies(page),
        chart=chart(page, months, categories, summed) if summed.cells else None,
        categories=[(c, category_name(page, c)) for c in categories],
        table=_table(page, months, categories, summed),
        period_total=kroner(page, period_total),
        csv=wanted.link("/forbrug.csv"),
    )


@router.get("/forbrug.csv")
async def usage_csv(
    page: InvoicesPage, cvr: Text = None, account: Text = None, since: Since = None, until: Until = None
) -> Response:
    """Billing's CSV of every row for the same filters, passed on as it arrives. A filter
    billing refuses sends the browser to the page, which says why next to the field."""
    wanted = _usage_filter(page, cvr, account, since, until)
    if wanted.errors:
        return page.redirect(wanted.link("/forbrug"))
    downloads = contextlib.AsyncExitStack()
    try:
        answer = await downloads.enter_async_context(
            page.services.billing.usage_csv(page.caller, wanted.params)
        )
    except ServiceProblem as problem:
        if problem.status == 403:
            raise PageProblem(403, "error.needs-invoices") from None
        if problem.status != 422:
            raise
        return page.redirect(wanted.link("/forbrug"))

    async def passed_on() -> AsyncIterator[bytes]:
        async with downloads:  # billing's answer is closed when the browser has it, or left
            async for chunk in answer.aiter_bytes():
                yield chunk

    return StreamingResponse(
        passed_on(),
        media_type=answer.headers.get("content-type", "text/csv"),
        headers=download_headers(answer, "usage.csv"),
    )
