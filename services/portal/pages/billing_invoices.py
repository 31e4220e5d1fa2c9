"""Fakturaer (S8, S14): the invoices of the companies and accounts the user may see, one
invoice with its lines, and its documents (PDF, and the e-invoice XML where it was issued
as one).

The portal decides nothing: billing answers within the user's grants (`GET /v1/invoices`),
an invoice outside them is the same 404 as one that does not exist, and a document is passed
on as billing rendered it. Filters are a GET form with the API's own names (`cvr`, `account`,
`from`, `to`), so a filtered page can be bookmarked and works without script; periods are
months. The filter and the words for money, days and months are shared with Forbrug
(`services/portal/pages/billing_usage.py`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import httpx
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import HTMLResponse, Response

from services.portal.clients import ServiceProblem
from services.portal.deps import needs_function
from services.portal.i18n import _BABEL_LOCALES
from services.portal.web import PageContext, PageProblem, field_errors

router = APIRouter()

# Invoices on one page, newest first.
PAGE_SIZE = 25

InvoicesPage = Annotated[PageContext, Depends(needs_function("invoices"))]
# A filter's value is short; longer is not a filter of ours.
Text = Annotated[str | None, Query(max_length=100)]
InvoiceId = Annotated[str, Path(max_length=36)]

# Digits 0–9 (`\d` also takes "٢٠٢٦", which the pages cannot count months of).
MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")
# The last month whose next month a date can hold (a period is counted month by month).
LAST_MONTH = date.max.replace(day=1)
# The order a subscription's lines are shown in: its fee, then its usage.
CATEGORY_ORDER = ("subscription", "calls", "sms", "data")
E_INVOICE_FORMATS = ("oioubl", "peppol")


# --- money, days and months, the Danish or the English way ---------------------------------


def kroner(page: PageContext, ore: int) -> str:
    """An amount in øre as people write kroner: `1.234,50 kr.` in Danish, `DKK 1,234.50` in English."""
    amount = Decimal(ore).scaleb(-2)
    if page.language == "da":
        return format_currency(amount, "DKK", locale=_BABEL_LOCALES["da"])
    return format_currency(
        amount, "DKK", format="¤\u00a0#,##0.00", currency_digits=False, locale=_BABEL_LOCALES["en"]
    )


def whole_kroner(page: PageContext, ore: int) -> str:
    """Whole kroner, for a chart's axis."""
    pattern = "#,##0\u00a0¤" if page.language == "da" else "¤\u00a0#,##0"
    return format_currency(
        Decimal(ore // 100),
        "DKK",
        format=pattern,
        currency_digits=False,
        locale=_BABEL_LOCALES[page.language],
    )


def number(page: PageContext, value: int) -> str:
    return format_decimal(value, locale=_BABEL_LOCALES[page.language])


def day(page: PageContext, value: str | date, *, short: bool = False) -> str:
    """`1. november 2026` (or `1. nov. 2026` in a table), `1 November 2026` in English."""
    when = date.fromisoformat(value) if isinstance(value, str) else value
    month_part = "MMM" if short else "MMMM"
    pattern = f"d. {month_part} y" if page.language == "da" else f"d {month_part} y"
    return format_date(when, pattern, locale=_BABEL_LOCALES[page.language])


def month(page: PageContext, value: str | date, *, short: bool = False) -> str:
    """`oktober 2026` (or `okt. 2026` where space is short)."""
    when = date.fromisoformat(value) if isinstance(value, str) else value
    return format_date(when, "LLL y" if short else "LLLL y", locale=_BABEL_LOCALES[page.language])


def month_value(value: date) -> str:
    """A month as a month field holds it: `2026-10`."""
    return f"{value:%Y-%m}"


# --- the filter form, shared with Forbrug -----------------------------------------------------


@dataclass
class BillingFilter:
    """The filter form's values as typed, billing's parameters, and the form's errors."""

    values: dict[str, str]
    params: list[tuple[str, str]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def link(self, path: str, **changes: str | None) -> str:
        """`path` with the same filters and `changes` (None drops a parameter)."""
        query = {k: v for k, v in {**self.values, **changes}.items() if v}
        return f"{path}?{urlencode(query)}" if query else path

    def refused(self, page: PageContext, problem: ServiceProblem) -> None:
        """Billing's field errors next to the form's fields, in words of the catalogue. A
        repeated parameter's error names its position (`account.0`); the form has one field."""
        named = dataclasses.replace(
            problem,
            errors=[{**e, "field": re.sub(r"\.\d+$", "", e.get("field", ""))} for e in problem.errors],
        )
        self.errors = field_errors(page, named, "invoices")


def _month(text: str) -> date | None:
    """The month's first day, or None for what is not a month of the calendar (`0000-01`,
    `2026-13`, `9999-12`)."""
    found = MONTH.fullmatch(text)
    if found is None or not 1 <= int(found.group(2)) <= 12 or int(found.group(1)) < 1:
        return None
    first_day = date(int(found.group(1)), int(found.group(2)), 1)
    return first_day if first_day < LAST_MONTH else None


def billing_filter(
    page: PageContext,
    *,
    cvr: str | None,
    account: str | None,
    since: str | None,
    until: str | None,
) -> BillingFilter:
    """The form's values turned into billing's parameters. Months become the first day of the
    month: billing includes a period that starts between `from` and `to`. Whether a CVR or an
    account number is well formed, and whether `from` comes before `to`, billing decides."""
    values = {
        "cvr": (cvr or "").strip(),
        "account": (account or "").strip(),
        "from": (since or "").strip(),
        "to": (until or "").strip(),
    }
    wanted = BillingFilter(values=values)
    for name in ("cvr", "account"):
        if values[name]:
            wanted.params.append((name, values[name]))
    for name in ("from", "to"):
        if not values[name]:
            continue
        first_day = _month(values[name])
        if first_day is None:
            wanted.errors[name] = page._(f"invoices.invalid.{name}")
        else:
            wanted.params.append((name, first_day.isoformat()))
    return wanted


@dataclass(frozen=True)
class Company:
    cvr: str
    name: str
    accounts: tuple[str, ...]


async def visible_companies(page: PageContext, names: dict[str, str] | None = None) -> list[Company]:
    """The companies the user may see (their grants, S14), with names and accounts where known:
    identity lists them for a user administrator (`GET /v1/companies`); else the grants name the
    accounts of a limited grant, and `names` (from billing's rows) the companies."""
    user = page.user
    if user is None:
        return []
    known_names = dict(names or {})
    known_accounts: dict[str, list[str]] = {}
    if "user_admin" in user.functions:
        try:
            for company in await page.services.identity.companies(page.caller):
                known_names[company["cvr"]] = company["name"]
                known_accounts[company["cvr"]] = list(company["accounts"])
        except ServiceProblem:
            pass  # no longer an administrator: the grants still say which companies
    companies = []
    for grant in user.user.get("grants") or []:
        cvr = str(grant.get("cvr", ""))
        accounts = grant.get("accounts")
        listed = known_accounts.get(cvr, []) if accounts == "all" else list(accounts or [])
        companies.append(Company(cvr, known_names.get(cvr, ""), tuple(sorted(listed))))
    return sorted(companies, key=lambda c: (c.name or "\uffff", c.cvr))


# --- Fakturaer --------------------------------------------------------------------------------


@router.get("/fakturaer", response_class=HTMLResponse)
async def invoices(
    page: InvoicesPage,
    cvr: Text = None,
    account: Text = None,
    since: Annotated[str | None, Query(alias="from", max_length=100)] = None,
    until: Annotated[str | None, Query(alias="to", max_length=100)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    wanted = billing_filter(page, cvr=cvr, account=account, since=since, until=until)
    rows: list[dict[str, Any]] = []
    next_cursor = None
    if not wanted.errors:
        params = [*wanted.params, ("limit", str(PAGE_SIZE))]
        if cursor:
            params.append(("cursor", cursor))
        try:
            answer = await page.services.billing.invoices(page.caller, params)
        except ServiceProblem as problem:
            if problem.status == 403:
                raise PageProblem(403, "error.needs-invoices") from None
            if problem.status != 422:
                raise
            wanted.refused(page, problem)
        else:
            rows, next_cursor = answer["items"], answer.get("next_cursor")
    names = {row["cvr"]: row["company_name"] for row in rows}
    return page.render(
        "fakturaer.html",
        status=422 if wanted.errors else 200,
        wanted=wanted,
        companies=await visible_companies(page, names),
        invoices=[_listed(page, row) for row in rows],
        older=wanted.link("/fakturaer", cursor=next_cursor) if next_cursor else None,
        newest=wanted.link("/fakturaer") if cursor else None,
    )


def _listed(page: PageContext, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "number": row["number"],
        "company": row["company_name"],
        "cvr": row["cvr"],
        "account": row["account_number"],
        "period": month(page, row["period_start"]),
        "issued_on": day(page, row["issued_on"], short=True),
        "due_on": day(page, row["due_on"], short=True),
        "excl_vat": kroner(page, row["amount_excl_vat_ore"]),
        "incl_vat": kroner(page, row["amount_incl_vat_ore"]),
    }


@router.get("/fakturaer/{invoice_id}", response_class=HTMLResponse)
async def invoice(page: InvoicesPage, invoice_id: InvoiceId) -> Response:
    # An id outside the grants is billing's 404, answered as the portal's 404 page.
    found = await page.services.billing.invoice(page.caller, invoice_id)
    return page.render(
        "faktura.html",
        invoice={
            **_listed(page, found),
            "period_start": day(page, found["period_start"]),
            "period_end": day(page, found["period_end"]),
            "issued_on": day(page, found["issued_on"]),
            "due_on": day(page, found["due_on"]),
            "vat": kroner(page, found["vat_ore"]),
        },
        groups=_grouped(page, found["lines"]),
        e_invoice=_e_invoice_format(found),
    )


def _e_invoice_format(invoice: dict[str, Any]) -> str | None:
    """`oioubl` or `peppol` when the invoice was issued as that e-invoice: billing names the
    documents each invoice has, as issued, for every user who may see the invoice."""
    return next((d for d in invoice.get("documents") or [] if d in E_INVOICE_FORMATS), None)


def _grouped(page: PageContext, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lines by subscription (its number or line id), its fee first and then its usage by
    category, with each subscription's sum."""
    groups: dict[str, dict[str, Any]] = {}
    for line in lines:
        key = line.get("subscription_id") or line["identifier"]
        group = groups.setdefault(key, {"identifier": line["identifier"], "lines": [], "total_ore": 0})
        group["lines"].append(line)
        group["total_ore"] += line["amount_ore"]

    def order(line: dict[str, Any]) -> tuple[int, str]:
        category = line["category"]
        return (
            CATEGORY_ORDER.index(category) if category in CATEGORY_ORDER else len(CATEGORY_ORDER),
            category,
        )

    shown = []
    for group in sorted(groups.values(), key=lambda g: g["identifier"]):
        shown.append(
            {
                "identifier": group["identifier"] or page._("invoices.no-identifier"),
                "total": kroner(page, group["total_ore"]),
                "lines": [
                    {
                        "category": category_name(page, line["category"]),
                        "description": line["description"] if line["category"] == "subscription" else "",
                        "quantity": quantity(page, line["quantity"], line["unit"]),
                        "amount": kroner(page, line["amount_ore"]),
                    }
                    for line in sorted(group["lines"], key=order)
                ],
            }
        )
    return shown


def category_name(page: PageContext, category: str) -> str:
    key = f"invoices.category.{category}"
    text = page._(key)
    return text if text != key else category


def quantity(page: PageContext, value: int, unit: str) -> str:
    key = f"invoices.unit.{unit}"
    text = page._(key, quantity=number(page, value))
    return text if not text.startswith("invoices.unit.") else f"{number(page, value)} {unit}"


def download_headers(answer: httpx.Response, file_name: str) -> dict[str, str]:
    """A download passed on from billing is always an attachment, under billing's file name: a
    document or CSV never opens inline on the portal's own site, whatever billing answers."""
    disposition = answer.headers.get("content-disposition", "")
    if not disposition.lower().startswith("attachment"):
        disposition = f'attachment; filename="{file_name}"'
    return {"Content-Disposition": disposition}


@router.get("/fakturaer/{invoice_id}/{document_format}")
async def invoice_document(
    page: InvoicesPage, invoice_id: InvoiceId, document_format: Literal["pdf", "oioubl", "peppol"]
) -> Response:
    """The invoice's document as billing rendered it, with its type and file name, fetched
    with the user's token: within the grants, or the 404 page (an unknown format is one too)."""
    try:
        answer = await page.services.billing.invoice_document(page.caller, invoice_id, document_format)
    except ServiceProblem as problem:
        if problem.status == 409:  # no e-invoice address on this invoice
            raise PageProblem(409, "invoices.document-not-available") from None
        raise
    extension = "pdf" if document_format == "pdf" else "xml"
    return Response(
        answer.content,
        media_type=answer.headers.get("content-type", "application/octet-stream"),
        headers=download_headers(answer, f"{invoice_id}.{extension}"),
    )
