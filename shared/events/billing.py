"""Billing's events: customers, orders, invoices, master data, subscriptions and its audit trail."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from shared.events.base import Cvr, Event, Language, Topic

BILLING_CUSTOMERS = Topic(
    "billing.customers", 3, "cvr", "Customers, their group structure and accounts", compacted=True
)
BILLING_ORDERS = Topic("billing.orders", 3, "cvr", "Orders and upgrades of subscriptions")
BILLING_INVOICES = Topic("billing.invoices", 3, "cvr", "Invoices issued")
BILLING_MASTERDATA = Topic("billing.masterdata", 3, "cvr", "Master data and invoice format changes")
BILLING_SUBSCRIPTIONS = Topic(
    "billing.subscriptions", 3, "cvr", "Settings of subscriptions: telephony and Personligt Nummer"
)
BILLING_AUDIT = Topic("billing.audit", 3, "cvr", "Audit trail of billing changes: orders, upgrades, settings")


# --- billing.customers ----------------------------------------------------------------------


class _BillingCustomers(Event):
    TOPIC = BILLING_CUSTOMERS
    KEY_FIELD = "cvr"


class AccountRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    account_number: str = Field(pattern=r"^[0-9]{6,12}$")
    name: str


class CustomerRegistered(_BillingCustomers):
    """A company is a customer; `parent_cvr` places it in its group (S8, S14)."""

    cvr: Cvr
    name: str
    parent_cvr: Cvr | None = None
    accounts: list[AccountRef]
    registered_at: datetime


# --- billing.orders -------------------------------------------------------------------------


class _BillingOrders(Event):
    TOPIC = BILLING_ORDERS
    KEY_FIELD = "cvr"


Ore = Annotated[int, Field(description="An amount in øre (1/100 DKK); money is never a float")]


class SubscriptionOrdered(_BillingOrders):
    """A user ordered a new subscription on one of their accounts (S9); it is pending until
    provisioned (`OrderCompleted`). The notifier emails the orderer a confirmation."""

    order_id: UUID
    cvr: Cvr
    account_number: str
    subscription_id: UUID
    product_code: str
    product_name: str
    monthly_fee_ore: Ore
    options: dict[str, str | int | bool | None] = Field(default_factory=dict)
    ordered_by: UUID = Field(description="The user id of the person who ordered")
    ordered_at: datetime


class SubscriptionUpgraded(_BillingOrders):
    """A subscription moved to another product along an allowed upgrade path (S9)."""

    order_id: UUID
    cvr: Cvr
    account_number: str
    subscription_id: UUID
    identifier: str
    from_product_code: str
    to_product_code: str
    to_product_name: str
    monthly_fee_ore: Ore
    ordered_by: UUID
    upgraded_at: datetime


class OrderCompleted(_BillingOrders):
    """An ordered subscription is provisioned and active, with its number or line id."""

    order_id: UUID
    cvr: Cvr
    account_number: str
    subscription_id: UUID
    identifier: str
    completed_at: datetime


# --- billing.invoices -----------------------------------------------------------------------


class _BillingInvoices(Event):
    TOPIC = BILLING_INVOICES
    KEY_FIELD = "cvr"


class InvoiceDelivery(BaseModel):
    """How the account chose to receive its invoices when this one was issued (S10): a format
    changed later applies from the next invoice."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["pdf_email", "oioubl", "peppol", "paper"]
    email: str | None = Field(default=None, description="pdf_email: where the PDF goes")
    gln: str | None = Field(default=None, description="oioubl: the buyer's GLN/EAN location number")
    peppol_scheme: str | None = Field(default=None, description="peppol: the endpoint scheme (0088, 0184, 0198)")
    peppol_id: str | None = Field(default=None, description="peppol: the endpoint id in that scheme")


class InvoiceIssued(_BillingInvoices):
    """An account's invoice for a period is issued; users with the `invoices` function for the
    account are told by email (S8), and the notifier delivers the document as `delivery` says
    (absent on invoices issued before documents were delivered: only the email then)."""

    invoice_id: UUID
    invoice_number: str
    cvr: Cvr
    company_name: str
    account_number: str
    period_start: date
    period_end: date
    issued_on: date
    due_on: date
    amount_excl_vat_ore: Ore
    vat_ore: Ore
    amount_incl_vat_ore: Ore
    currency: Literal["DKK"] = "DKK"
    delivery: InvoiceDelivery | None = None
    # The language the company's documents are written in (the customer's, S10).
    language: Language = "da"


# --- billing.masterdata ---------------------------------------------------------------------


class _BillingMasterData(Event):
    TOPIC = BILLING_MASTERDATA
    KEY_FIELD = "cvr"


class MasterDataChanged(_BillingMasterData):
    """A company's master data (stamdata) changed (S10); `version` is the new ETag version."""

    cvr: Cvr
    street: str
    postal_code: str
    city: str
    contact_name: str
    contact_email: str
    contact_phone: str
    # The language of the company's invoices and documents (from the next invoice on).
    language: Language = "da"
    version: int
    changed_by: UUID
    changed_at: datetime


class InvoiceFormatChanged(_BillingMasterData):
    """How an account's invoices are sent changed (S10): PDF by email, OIOUBL to a GLN/EAN
    number, Peppol, or paper."""

    cvr: Cvr
    account_number: str
    format: Literal["pdf_email", "oioubl", "peppol", "paper"]
    email: str | None = None
    gln: str | None = None
    peppol_scheme: str | None = None
    peppol_id: str | None = None
    version: int
    changed_by: UUID
    changed_at: datetime


# --- billing.subscriptions ------------------------------------------------------------------


class _BillingSubscriptions(Event):
    TOPIC = BILLING_SUBSCRIPTIONS
    KEY_FIELD = "cvr"


class SubscriptionSettingsChanged(_BillingSubscriptions):
    """Telephony or Personligt Nummer settings of a subscription changed (S11)."""

    subscription_id: UUID
    cvr: Cvr
    account_number: str
    identifier: str
    product_kind: str
    settings: dict[str, Any]
    version: int
    changed_by: UUID
    changed_at: datetime


# --- billing.audit --------------------------------------------------------------------------


class _BillingAudit(Event):
    TOPIC = BILLING_AUDIT
    KEY_FIELD = "cvr"


class BillingAuditRecorded(_BillingAudit):
    """Who changed what in billing, for which company and account, when and from where
    (S9–S11): an order, an upgrade, master data, an invoice format, a subscription's settings.
    Published in the transaction of the change; identity keeps them in its audit trail so a
    company's administrators read one trail (`GET /v1/audit`)."""

    TYPE_NAME = "AuditRecorded"

    audit_id: UUID
    actor_id: UUID
    action: str
    cvr: Cvr
    account_number: str | None = None
    target: str = Field(description="What was changed: an order, a subscription, an account or a company")
    details: dict[str, Any] = Field(default_factory=dict)
    client_address: str | None = None
    at: datetime
