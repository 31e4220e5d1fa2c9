"""Billing's HTTP request and response models and the parameters its routes share (S8–S11).

Each states in the OpenAPI document what billing enforces (patterns, lengths, enums), so a
client generated from the contract sends what the API accepts.
"""

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import Header, Path, Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue, TypeAdapter, field_validator

from services.billing.catalogue import PRODUCTS
from services.billing.documents import PRINTABLE_PATTERN, DocumentFormat, unprintable
from services.billing.domain import PEPPOL_SCHEMES
from services.billing.ordering import OPTION_FIELDS
from shared.validation import CvrNumber, DanishPhone, EmailAddress, Gln

# --- parameters -------------------------------------------------------------------------------

Id = Annotated[str, Path(max_length=36)]
AccountNumber = Annotated[str, Path(pattern=r"^[0-9]{6,12}$")]
CompanyCvr = Annotated[str, Path(pattern=r"^[0-9]{8}$")]


def _iso_date(value: Any) -> Any:
    """Dates are written YYYY-MM-DD; a bare number is not taken for a Unix time."""
    if isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("a date is written YYYY-MM-DD, e.g. 2026-01-31")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date)]
AccountFilter = Annotated[
    list[Annotated[str, Field(pattern=r"^[0-9]{6,12}$")]] | None,
    Query(max_length=200, description="Only these account numbers (repeatable)"),
]
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=8,
        max_length=100,
        pattern=r"^[\x21-\x7e]+$",
        description="Unique per order (e.g. a UUID): a retried request with the same key creates no second order",
    ),
]
IfMatch = Annotated[
    str | None, Header(alias="If-Match", max_length=200, description="The ETag you read (required)")
]


# --- models -----------------------------------------------------------------------------------


class Page(BaseModel):
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page")


class InvoiceOut(BaseModel):
    id: str
    number: str
    cvr: str
    company_name: str
    account_number: str
    period_start: date
    period_end: date
    issued_on: date
    due_on: date
    amount_excl_vat_ore: int
    vat_ore: int
    amount_incl_vat_ore: int
    currency: str
    language: Literal["da", "en"] = Field(description="The language of its documents")
    documents: list[DocumentFormat] = Field(
        description="The formats of GET /v1/invoices/{id}/document?format= this invoice has: pdf, and "
        "oioubl or peppol when it was issued to that e-invoice format"
    )


class InvoiceLineOut(BaseModel):
    subscription_id: str | None
    identifier: str
    category: str
    description: str
    quantity: int
    unit: str
    amount_ore: int


class InvoiceDetail(InvoiceOut):
    lines: list[InvoiceLineOut]


class InvoicePage(Page):
    items: list[InvoiceOut]


class UsageOut(BaseModel):
    id: int
    period: date = Field(description="The first day of the month")
    cvr: str
    account_number: str
    subscription_id: str
    identifier: str
    category: str
    quantity: int
    unit: str
    amount_ore: int


class UsagePage(Page):
    items: list[UsageOut]


class UsageSumOut(BaseModel):
    period: date = Field(description="The first day of the month")
    category: str
    unit: str
    quantity: int = Field(description="The sum of the month's rows of this category")
    amount_ore: int = Field(description="The sum of the month's rows of this category")


class UsageSummary(BaseModel):
    items: list[UsageSumOut] = Field(description="Oldest month first, then by category and unit")


class InvoiceAddressOut(BaseModel):
    """Where the account's invoices go: only the chosen format's fields are set."""

    email: str | None = None
    gln: str | None = None
    scheme: str | None = None
    endpoint_id: str | None = None


class AccountOut(BaseModel):
    account_number: str
    name: str
    cvr: str
    company_name: str
    invoice_format: Literal["pdf_email", "oioubl", "peppol", "paper"]
    invoice_address: InvoiceAddressOut | None = Field(
        description="Only with the `master_data` function (an invoice email names a person or a "
        "mailbox of the company); null otherwise"
    )


class AccountPage(Page):
    items: list[AccountOut]


class ProductOut(BaseModel):
    code: str
    name: str
    kind: str
    monthly_fee_ore: int
    description: str
    orderable: bool
    upgrades_to: list[str]


class SubscriptionOut(BaseModel):
    id: str
    cvr: str
    account_number: str
    identifier: str
    product: ProductOut
    status: str
    created_at: datetime
    activated_at: datetime | None


class SubscriptionPage(Page):
    items: list[SubscriptionOut]


def _option_schemas() -> list[JsonValue]:
    """Which options an order of each kind of product takes, as `checked_options` checks them:
    one alternative per kind, chosen by the product code."""
    phone = {**TypeAdapter(DanishPhone).json_schema(), "description": OPTION_FIELDS["mobile"]["port_number"]}
    options: dict[str, tuple[dict[str, Any], list[str]]] = {
        "mobile": ({"port_number": phone, "sim": {"enum": ["esim", "physical"]}}, []),
        "telephony": ({"port_number": phone}, []),
        "personal_number": ({"port_number": phone}, []),
        "broadband": (
            # 5 to 200 characters once trimmed: it starts and ends with a visible character.
            {"installation_address": {"type": "string", "pattern": r"^\S.{3,198}\S$"}},
            ["installation_address"],
        ),
        "addon": (
            {"attach_to": {"type": "string", "description": OPTION_FIELDS["addon"]["attach_to"]}},
            ["attach_to"],
        ),
    }
    alternatives: list[JsonValue] = []
    for kind, (given, required) in options.items():
        # An option that may be left out may also be sent as null: `checked_options` takes
        # null as left out.
        properties = {
            name: schema if name in required else {"anyOf": [schema, {"type": "null"}]}
            for name, schema in given.items()
        }
        codes: list[JsonValue] = [p.code for p in PRODUCTS if p.kind == kind and p.orderable]
        if not codes:
            continue
        options_schema: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        if required:
            options_schema["required"] = required
        alternatives.append(
            {
                "properties": {"product_code": {"enum": codes}, "options": options_schema},
                "required": ["options"] if required else [],
            }
        )
    return alternatives


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": _option_schemas()})
    account_number: str = Field(pattern=r"^[0-9]{6,12}$", description="One of the accounts you may use")
    product_code: str = Field(
        max_length=40,
        description="A product of GET /v1/products",
        json_schema_extra={"enum": [p.code for p in PRODUCTS if p.orderable]},
    )
    options: dict[str, str | None] = Field(
        default_factory=dict, max_length=5, description="Product options, e.g. port_number, sim"
    )


class UpgradeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    product_code: str = Field(max_length=40, description="One of the subscription's `upgrades_to`")


class OrderOut(BaseModel):
    id: str
    kind: Literal["new", "upgrade"]
    status: Literal["received", "completed"]
    cvr: str
    account_number: str
    subscription_id: str
    product_code: str
    from_product_code: str | None
    options: dict[str, Any]
    created_at: datetime
    completed_at: datetime | None


class OrderPage(Page):
    items: list[OrderOut]


class MasterDataOut(BaseModel):
    cvr: str
    name: str
    parent_cvr: str | None
    street: str
    postal_code: str
    city: str
    contact_name: str
    contact_email: str
    contact_phone: str
    language: Literal["da", "en"] = Field(description="The language of the company's invoices")
    version: int
    changed_at: datetime | None


class MasterDataPatch(BaseModel):
    """Change any of these; absent fields stay as they are."""

    model_config = ConfigDict(extra="forbid")
    # Printed on every invoice: only the characters `_printable_on_invoices` lets through.
    street: str | None = Field(
        default=None, min_length=2, max_length=200, json_schema_extra={"pattern": PRINTABLE_PATTERN}
    )
    postal_code: str | None = Field(default=None, pattern=r"^[0-9]{4}$", description="Danish postal code")
    city: str | None = Field(
        default=None, min_length=2, max_length=100, json_schema_extra={"pattern": PRINTABLE_PATTERN}
    )
    contact_name: str | None = Field(default=None, min_length=1, max_length=200)
    contact_email: EmailAddress | None = Field(default=None, max_length=320)
    contact_phone: DanishPhone | None = Field(default=None, max_length=20)
    language: Literal["da", "en"] | None = Field(
        default=None, description="The language of the company's invoices, from the next invoice on"
    )

    @field_validator("street", "city")
    @classmethod
    def _printable_on_invoices(cls, value: str | None) -> str | None:
        # Street and city are printed on every invoice and sent in its e-invoice (S10): a
        # control character would make the e-invoice impossible to render, a format character
        # (U+202E) would show the reader other text than was stored, and a character outside
        # the invoice font would print as a gap.
        character = unprintable(value) if value is not None else None
        if character is not None:
            raise ValueError(
                f"the character {character!r} (U+{ord(character):04X}) cannot be printed on the "
                "company's invoices; use letters, digits and punctuation of Latin script"
            )
        return value


class PdfByEmail(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["pdf_email"]
    email: EmailAddress = Field(max_length=320, description="Where the PDF invoices go")


class Oioubl(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["oioubl"]
    gln: Gln = Field(max_length=20, description="GLN/EAN location number, 13 digits (NemHandel)")


class Peppol(BaseModel):
    # The endpoint id each scheme takes, as `domain.peppol_endpoint` checks it.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"properties": {"scheme": {"const": "0088"}, "endpoint_id": TypeAdapter(Gln).json_schema()}},
                {
                    "properties": {
                        "scheme": {"const": "0184"},
                        "endpoint_id": TypeAdapter(CvrNumber).json_schema(),
                    }
                },
                {"properties": {"scheme": {"const": "0198"}, "endpoint_id": {"pattern": r"^(?:DK)?[0-9]{8}$"}}},
            ]
        },
    )
    format: Literal["peppol"]
    scheme: Literal["0088", "0184", "0198"] = Field(
        description="Peppol endpoint scheme: " + str(PEPPOL_SCHEMES)
    )
    endpoint_id: str = Field(min_length=1, max_length=50, description="The endpoint id in that scheme")


class Paper(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["paper"]


InvoiceFormatIn = Annotated[PdfByEmail | Oioubl | Peppol | Paper, Field(discriminator="format")]


class InvoiceFormatOut(BaseModel):
    account_number: str
    cvr: str
    format: str
    email: str | None = None
    gln: str | None = None
    scheme: str | None = None
    endpoint_id: str | None = None
    version: int
    changed_at: datetime | None


class SettingsOut(BaseModel):
    subscription_id: str
    identifier: str
    product_kind: str
    settings: dict[str, Any]
    version: int
