"""Stamdata og fakturaformat (S10): each company's master data and each account's invoice
format, with the rules shown and forms that billing checks.

Both carry a version as an ETag. A form is rendered with the ETag it was read at (a hidden
field) and its change is sent with it as `If-Match`, so a change made meanwhile — in another
tab, by another administrator — is never overwritten: billing answers 412 and the user sees
the "changed meanwhile" page, with what changed beside what they typed, and a form to make
their change again on the current version.

Billing decides who may change what: a company's master data needs a grant of the whole company
(all its accounts); a user with some of its accounts may read it and change those accounts'
invoice format. The overview says so instead of offering a form billing would refuse.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from services.portal.clients import ServiceProblem
from services.portal.deps import Form, needs_function
from services.portal.pages.billing_orders import granted_companies
from services.portal.web import PageContext, PageProblem, field_errors, text_field

router = APIRouter()

MasterDataPage = Annotated[PageContext, Depends(needs_function("master_data"))]

MASTER_DATA_FIELDS = (
    "street",
    "postal_code",
    "city",
    "contact_name",
    "contact_email",
    "contact_phone",
    "language",  # of the company's invoices, from the next invoice on
)
LANGUAGES = ("da", "en")
FORMATS = ("pdf_email", "oioubl", "peppol", "paper")
# What each format sends beside `format` (billing's `PUT /v1/accounts/{n}/invoice-format`).
FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "pdf_email": ("email",),
    "oioubl": ("gln",),
    "peppol": ("scheme", "endpoint_id"),
    "paper": (),
}
FORMAT_INPUTS = ("email", "gln", "scheme", "endpoint_id")
PEPPOL_SCHEMES = ("0088", "0184", "0198")
# Digits 0–9 only: `str.isdigit` also takes "²" or "١", which billing refuses (a 422 no page
# puts in words) or reads as another number.
CVR = re.compile(r"[0-9]{8}")
ACCOUNT = re.compile(r"[0-9]{6,12}")
# One entity tag as billing writes them (RFC 9110 §8.8.3); not `*` or a list, which would match
# any version and overwrite a change made meanwhile.
ENTITY_TAG = re.compile(r'(W/)?"[\x21\x23-\x7e]*"')


def _grant(page: PageContext, cvr: str) -> dict[str, Any]:
    """The user's grant of `cvr`; a company outside them is not found (as billing answers)."""
    for grant in granted_companies(page):
        if grant["cvr"] == cvr:
            return grant
    raise PageProblem(404, "error.not-found")


def _refused(problem: ServiceProblem, message_id: str) -> None:
    """Billing's 403 (not the whole company, or no master_data function any more) in words."""
    if problem.status == 403:
        raise PageProblem(403, message_id) from None


# --- the overview ------------------------------------------------------------------------------


@router.get("/stamdata", response_class=HTMLResponse)
async def overview(
    page: MasterDataPage,
    gemt: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    """Every company the user may see, its master data, whether they may change it, and the
    accounts whose invoice format they may set."""
    grants = granted_companies(page)
    # The companies' reads at once (a group administrator holds the parent and its
    # subsidiaries), and the accounts billing says the user may use, by account number.
    accounts, *answers = await asyncio.gather(
        page.services.billing.all_accounts(page.caller),
        *(page.services.billing.master_data(page.caller, g["cvr"]) for g in grants),
        return_exceptions=True,
    )
    if isinstance(accounts, BaseException):
        raise accounts
    listed: dict[str, list[dict[str, Any]]] = {}
    for account in accounts:
        listed.setdefault(account["cvr"], []).append(account)
    companies = []
    for grant, answer in zip(grants, answers, strict=True):
        if isinstance(answer, ServiceProblem) and answer.status == 404:
            continue  # a company billing has no customer for (yet)
        if isinstance(answer, BaseException):
            raise answer
        data, _ = answer
        companies.append({**data, "whole": grant["accounts"] == "all", "accounts": listed.get(grant["cvr"], [])})
    saved = {"stamdata": "masterdata.saved", "format": "masterdata.format-saved"}.get(gemt)
    return page.render("masterdata.html", companies=companies, saved=page._(saved) if saved else None)


@router.get("/stamdata/konto", response_class=HTMLResponse)
async def open_account(page: MasterDataPage, konto: Annotated[str, Query(max_length=20)] = "") -> Response:
    """The overview's "open an account" field: straight to one account's format, however many
    accounts the company has."""
    number = konto.strip().replace(" ", "")
    if not ACCOUNT.fullmatch(number):
        raise PageProblem(404, "masterdata.error.account-number")
    return page.redirect(f"/stamdata/konto/{number}")


# --- master data -------------------------------------------------------------------------------


def _typed_master_data(form: FormData) -> dict[str, str]:
    return {name: text_field(form, name, max_length=320) for name in MASTER_DATA_FIELDS}


def _master_data_change(typed: dict[str, str]) -> dict[str, str]:
    """Billing's PATCH body: every field as typed; the language only when one is chosen (a
    radio group sends nothing when none is ticked)."""
    return {name: value for name, value in typed.items() if name != "language" or value}


def _read_version(form: FormData) -> str:
    """The ETag the form was read at, for `If-Match`; anything else is sent as no ETag, which
    billing answers 428 and the page as changed meanwhile."""
    etag = text_field(form, "etag", max_length=200)
    return etag if ENTITY_TAG.fullmatch(etag) else ""


def _read_at(form: FormData, names: tuple[str, ...]) -> dict[str, str]:
    """The values the form was rendered with (hidden `was.<name>`), to show what changed since."""
    return {name: text_field(form, f"was.{name}", max_length=320) for name in names}


@router.get("/stamdata/{cvr}", response_class=HTMLResponse)
async def master_data_form(page: MasterDataPage, cvr: str) -> Response:
    if not CVR.fullmatch(cvr):
        raise PageProblem(404, "error.not-found")
    if _grant(page, cvr)["accounts"] != "all":
        raise PageProblem(403, "masterdata.refused.whole-company")
    data, etag = await page.services.billing.master_data(page.caller, cvr)
    values = {f: data[f] for f in MASTER_DATA_FIELDS}
    return page.render(
        "masterdata_edit.html", company=data, etag=etag, typed=values, was=values, errors={}, languages=LANGUAGES
    )


@router.post("/stamdata/{cvr}", response_class=HTMLResponse)
async def change_master_data(page: MasterDataPage, cvr: str, form: Form) -> Response:
    """Send the change with the ETag the form was read at; a stale one shows what changed."""
    if not CVR.fullmatch(cvr):
        raise PageProblem(404, "error.not-found")
    _grant(page, cvr)
    typed = _typed_master_data(form)
    etag = _read_version(form)
    try:
        await page.services.billing.change_master_data(page.caller, cvr, etag, _master_data_change(typed))
    except ServiceProblem as problem:
        _refused(problem, "masterdata.refused.whole-company")
        if problem.status in (412, 428):
            return await _master_data_changed(page, cvr, typed, _read_at(form, MASTER_DATA_FIELDS))
        if problem.status != 422:
            raise
        data, _ = await page.services.billing.master_data(page.caller, cvr)
        return page.render(
            "masterdata_edit.html",
            status=422,
            company=data,
            etag=etag,
            typed=typed,
            was=_read_at(form, MASTER_DATA_FIELDS),
            errors=field_errors(page, problem, "masterdata"),
            languages=LANGUAGES,
        )
    return page.redirect("/stamdata?gemt=stamdata")


async def _master_data_changed(page: PageContext, cvr: str, typed: dict[str, str], was: dict[str, str]) -> Response:
    """Someone changed the master data since the form was read: the current values beside the
    form's and the user's, and the user's values in a form on the current version."""
    current, etag = await page.services.billing.master_data(page.caller, cvr)
    rows = [
        {
            "name": name,
            "was": was[name],
            "now": current[name],
            "typed": typed[name],
            "changed": was[name] != current[name],
        }
        for name in MASTER_DATA_FIELDS
    ]
    return page.render(
        "masterdata_changed.html",
        status=409,
        company=current,
        rows=rows,
        etag=etag,
        typed=typed,
        was={f: current[f] for f in MASTER_DATA_FIELDS},
        errors={},
        languages=LANGUAGES,
    )


# --- invoice format ----------------------------------------------------------------------------


def _format_values(current: dict[str, Any]) -> dict[str, str]:
    return {"format": current.get("format") or "", **{n: current.get(n) or "" for n in FORMAT_INPUTS}}


def _typed_format(form: FormData) -> dict[str, str]:
    return {name: text_field(form, name, max_length=320) for name in ("format", *FORMAT_INPUTS)}


def _format_body(typed: dict[str, str]) -> dict[str, str]:
    """Billing's body for the chosen format: only the fields that format needs."""
    return {"format": typed["format"], **{n: typed[n] for n in FORMAT_FIELDS[typed["format"]]}}


def _format_errors(page: PageContext, problem: ServiceProblem) -> dict[str, str]:
    """Billing names a format's field after the format (`oioubl.gln`); the form's field is `gln`."""
    errors = {}
    for name, text in field_errors(page, problem, "masterdata").items():
        short = name.rsplit(".", 1)[-1]
        key = f"masterdata.invalid.{short}"
        errors[short] = page._(key) if page._(key) != key else text
    return errors


def _render_format(
    page: PageContext,
    current: dict[str, Any],
    etag: str,
    typed: dict[str, str],
    was: dict[str, str],
    *,
    errors: dict[str, str] | None = None,
    status: int = 200,
    template: str = "invoice_format.html",
    rows: list[dict[str, Any]] | None = None,
) -> HTMLResponse:
    return page.render(
        template,
        status=status,
        account=current,
        etag=etag,
        typed=typed,
        was=was,
        errors=errors or {},
        formats=FORMATS,
        schemes=PEPPOL_SCHEMES,
        rows=rows or [],
    )


@router.get("/stamdata/konto/{account_number}", response_class=HTMLResponse)
async def invoice_format_form(page: MasterDataPage, account_number: str) -> Response:
    if not ACCOUNT.fullmatch(account_number):
        raise PageProblem(404, "error.not-found")
    current, etag = await page.services.billing.invoice_format(page.caller, account_number)
    values = _format_values(current)
    return _render_format(page, current, etag, values, values)


@router.post("/stamdata/konto/{account_number}", response_class=HTMLResponse)
async def change_invoice_format(page: MasterDataPage, account_number: str, form: Form) -> Response:
    """Set the account's invoice format from the next invoice on, with the form's ETag."""
    if not ACCOUNT.fullmatch(account_number):
        raise PageProblem(404, "error.not-found")
    typed = _typed_format(form)
    etag = _read_version(form)
    was = {name: text_field(form, f"was.{name}", max_length=320) for name in ("format", *FORMAT_INPUTS)}
    if typed["format"] not in FORMATS:
        current, _ = await page.services.billing.invoice_format(page.caller, account_number)
        return _render_format(
            page, current, etag, typed, was, status=422, errors={"format": page._("masterdata.missing.format")}
        )
    try:
        await page.services.billing.set_invoice_format(page.caller, account_number, etag, _format_body(typed))
    except ServiceProblem as problem:
        _refused(problem, "error.needs-master_data")
        if problem.status in (412, 428):
            current, fresh = await page.services.billing.invoice_format(page.caller, account_number)
            now = _format_values(current)
            rows = [
                {"name": n, "was": was[n], "now": now[n], "typed": typed[n], "changed": was[n] != now[n]}
                for n in ("format", *FORMAT_INPUTS)
                if n == "format" or was[n] or now[n] or typed[n]
            ]
            return _render_format(
                page, current, fresh, typed, now, status=409, template="invoice_format_changed.html", rows=rows
            )
        if problem.status != 422:
            raise
        current, _ = await page.services.billing.invoice_format(page.caller, account_number)
        return _render_format(page, current, etag, typed, was, status=422, errors=_format_errors(page, problem))
    return page.redirect("/stamdata?gemt=format")
