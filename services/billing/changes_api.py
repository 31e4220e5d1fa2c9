"""Master data (stamdata) of a company and the invoice format of an account (S10): read with
an ETag, changed with `If-Match`, so two administrators never overwrite each other silently."""

from typing import TypeVar

from fastapi import APIRouter, Response

from services.billing.changes import InvoiceFormat, MasterDataChange, etag, format_of
from services.billing.deps import Caller, ChangesDep
from services.billing.domain import peppol_endpoint
from services.billing.models import Account, Customer
from services.billing.schemas import (
    AccountNumber,
    CompanyCvr,
    IfMatch,
    InvoiceFormatIn,
    InvoiceFormatOut,
    MasterDataOut,
    MasterDataPatch,
    Oioubl,
    PdfByEmail,
    Peppol,
    SettingsOut,
)
from shared.clock import as_utc
from shared.problems import PROBLEM
from shared.web import ClientAddress

router = APIRouter(
    tags=["master data and invoice format"],
    responses={401: PROBLEM, 403: PROBLEM, 404: PROBLEM, 422: PROBLEM},
)
Versioned = TypeVar("Versioned", MasterDataOut, InvoiceFormatOut, SettingsOut)


def tagged(response: Response, out: Versioned) -> Versioned:
    """The representation, with its version as the strong ETag a change must send back."""
    response.headers["ETag"] = etag(out.version)
    return out


def master_data_out(c: Customer) -> MasterDataOut:
    return MasterDataOut(
        cvr=c.cvr,
        name=c.name,
        parent_cvr=c.parent_cvr,
        street=c.street,
        postal_code=c.postal_code,
        city=c.city,
        contact_name=c.contact_name,
        contact_email=c.contact_email,
        contact_phone=c.contact_phone,
        language=c.language,  # type: ignore[arg-type]
        version=c.master_data_version,
        changed_at=as_utc(c.master_data_changed_at) if c.master_data_changed_at else None,
    )


def invoice_format_out(a: Account) -> InvoiceFormatOut:
    return InvoiceFormatOut(
        account_number=a.account_number,
        cvr=a.cvr,
        **format_of(a),
        version=a.invoice_format_version,
        changed_at=as_utc(a.invoice_format_changed_at) if a.invoice_format_changed_at else None,
    )


def wanted_format(body: PdfByEmail | Oioubl | Peppol | object) -> InvoiceFormat:
    match body:
        case PdfByEmail():
            return InvoiceFormat("pdf_email", email=body.email)
        case Oioubl():
            return InvoiceFormat("oioubl", gln=body.gln)
        case Peppol():
            return InvoiceFormat(
                "peppol", peppol_scheme=body.scheme, peppol_id=peppol_endpoint(body.scheme, body.endpoint_id)
            )
        case _:
            return InvoiceFormat("paper")


@router.get(
    "/v1/companies/{cvr}/master-data", summary="A company's master data (stamdata, S10), with its ETag"
)
async def get_master_data(
    access: Caller, changes: ChangesDep, cvr: CompanyCvr, response: Response
) -> MasterDataOut:
    return tagged(response, master_data_out(await changes.company(access, cvr)))


@router.patch(
    "/v1/companies/{cvr}/master-data",
    summary="Change master data (S10); If-Match with the ETag you read is required",
    responses={412: PROBLEM, 428: PROBLEM},
)
async def patch_master_data(
    access: Caller,
    changes: ChangesDep,
    cvr: CompanyCvr,
    body: MasterDataPatch,
    client: ClientAddress,
    response: Response,
    if_match: IfMatch = None,
) -> MasterDataOut:
    change = MasterDataChange(**body.model_dump(exclude_none=True))
    customer = await changes.change_master_data(access, cvr, change, if_match=if_match, client=client)
    return tagged(response, master_data_out(customer))


@router.get(
    "/v1/accounts/{account_number}/invoice-format",
    summary="How the account's invoices are sent (S10), with its ETag",
)
async def get_invoice_format(
    access: Caller, changes: ChangesDep, account_number: AccountNumber, response: Response
) -> InvoiceFormatOut:
    return tagged(response, invoice_format_out(await changes.account(access, account_number)))


@router.put(
    "/v1/accounts/{account_number}/invoice-format",
    summary="Set the invoice format: PDF by email, OIOUBL to a GLN/EAN, Peppol, or paper (S10)",
    responses={412: PROBLEM, 428: PROBLEM},
)
async def put_invoice_format(
    access: Caller,
    changes: ChangesDep,
    account_number: AccountNumber,
    body: InvoiceFormatIn,
    client: ClientAddress,
    response: Response,
    if_match: IfMatch = None,
) -> InvoiceFormatOut:
    wanted = wanted_format(body)
    account = await changes.change_invoice_format(
        access, account_number, wanted, if_match=if_match, client=client
    )
    return tagged(response, invoice_format_out(account))
