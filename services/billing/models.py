"""Billing's own database: customers and their groups, accounts, the product catalogue,
subscriptions, orders, invoices with their lines, usage, and what billing knows of users'
sessions (revocations). Money is integer øre everywhere, never a float."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.db import service_metadata
from shared.messaging import MessagingTables

# SQLite only makes an INTEGER PRIMARY KEY an alias of its rowid (autoincrement).
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = service_metadata()


messaging = MessagingTables.define(Base.metadata)


class Customer(Base):
    """A company and its master data (stamdata, S10); `parent_cvr` places it in a group (S14)."""

    __tablename__ = "customers"

    cvr: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    parent_cvr: Mapped[str | None] = mapped_column(ForeignKey("customers.cvr"), index=True)
    street: Mapped[str] = mapped_column(String(200))
    postal_code: Mapped[str] = mapped_column(String(4))
    city: Mapped[str] = mapped_column(String(100))
    contact_name: Mapped[str] = mapped_column(String(200), default="")
    contact_email: Mapped[str] = mapped_column(String(320), default="")
    contact_phone: Mapped[str] = mapped_column(String(20), default="")
    # The language the company's invoices and documents are written in (S10).
    language: Mapped[str] = mapped_column(String(2), default="da", server_default="da")
    master_data_version: Mapped[int] = mapped_column(Integer, default=1)
    master_data_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    accounts: Mapped[list[Account]] = relationship(lazy="raise", order_by="Account.account_number")


class Account(Base):
    """An account (kontonummer): what invoices are addressed to, and how they are sent (S10)."""

    __tablename__ = "accounts"

    account_number: Mapped[str] = mapped_column(String(12), primary_key=True)
    cvr: Mapped[str] = mapped_column(ForeignKey("customers.cvr"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    invoice_format: Mapped[str] = mapped_column(String(20), default="paper")
    invoice_email: Mapped[str | None] = mapped_column(String(320))
    invoice_gln: Mapped[str | None] = mapped_column(String(13))
    peppol_scheme: Mapped[str | None] = mapped_column(String(4))
    peppol_id: Mapped[str | None] = mapped_column(String(50))
    invoice_format_version: Mapped[int] = mapped_column(Integer, default=1)
    invoice_format_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Product(Base):
    """The catalogue: what can be ordered, its kind (which settings it has) and its price."""

    __tablename__ = "products"

    code: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))  # mobile, broadband, telephony, personal_number, addon
    monthly_fee_ore: Mapped[int] = mapped_column(BigInteger)
    description: Mapped[str] = mapped_column(String(500))
    orderable: Mapped[bool] = mapped_column(Boolean, default=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


class UpgradePath(Base):
    """A subscription on `from_code` may be upgraded to `to_code` (S9), and only so."""

    __tablename__ = "upgrade_paths"

    from_code: Mapped[str] = mapped_column(ForeignKey("products.code"), primary_key=True)
    to_code: Mapped[str] = mapped_column(ForeignKey("products.code"), primary_key=True)


class Subscription(Base):
    """A product on an account: a phone number, a broadband line, a switchboard (S9, S11)."""

    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    cvr: Mapped[str] = mapped_column(ForeignKey("customers.cvr"), index=True)
    account_number: Mapped[str] = mapped_column(ForeignKey("accounts.account_number"), index=True)
    identifier: Mapped[str] = mapped_column(
        String(40), index=True
    )  # E.164 number or line id; "" until provisioned
    product_code: Mapped[str] = mapped_column(ForeignKey("products.code"))
    status: Mapped[str] = mapped_column(String(20))  # pending, active, cancelled
    settings: Mapped[str] = mapped_column(Text, default="{}")  # JSON, shaped by the product's kind
    settings_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Order(Base):
    """A new subscription or an upgrade (S9). `(user_id, idempotency_key)` makes a retried
    request find its first order instead of creating a second."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key", name="uq_orders_user_id_idempotency_key"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(36))
    idempotency_key: Mapped[str] = mapped_column(String(100))
    request_hash: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(10))  # new, upgrade
    cvr: Mapped[str] = mapped_column(ForeignKey("customers.cvr"), index=True)
    account_number: Mapped[str] = mapped_column(ForeignKey("accounts.account_number"))
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id"))
    product_code: Mapped[str] = mapped_column(ForeignKey("products.code"))
    from_product_code: Mapped[str | None] = mapped_column(String(40))
    options: Mapped[str] = mapped_column(Text, default="{}")
    status: Mapped[str] = mapped_column(String(20), index=True)  # received, completed
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Invoice(Base):
    """One account's invoice for one period (S8). Totals are stored, so a list never sums lines."""

    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("account_number", "period_start", name="uq_invoices_account_number_period_start"),
        # Keyset pages, newest first, for a whole company (or group) and for single accounts.
        Index("ix_invoices_cvr_issued", "cvr", "issued_on", "id"),
        Index("ix_invoices_account_issued", "account_number", "issued_on", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    cvr: Mapped[str] = mapped_column(ForeignKey("customers.cvr"))
    account_number: Mapped[str] = mapped_column(ForeignKey("accounts.account_number"))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    issued_on: Mapped[date] = mapped_column(Date)
    due_on: Mapped[date] = mapped_column(Date)
    amount_excl_vat_ore: Mapped[int] = mapped_column(BigInteger)
    vat_ore: Mapped[int] = mapped_column(BigInteger)
    amount_incl_vat_ore: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3), default="DKK")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # What the document says, as it was when the invoice was issued: master data and the
    # invoice format may change later, an issued invoice does not (S8, S10).
    buyer_name: Mapped[str] = mapped_column(String(200))
    buyer_street: Mapped[str] = mapped_column(String(200))
    buyer_postal_code: Mapped[str] = mapped_column(String(4))
    buyer_city: Mapped[str] = mapped_column(String(100))
    language: Mapped[str] = mapped_column(String(2))
    delivery_format: Mapped[str] = mapped_column(String(20))  # pdf_email, oioubl, peppol, paper
    delivery_email: Mapped[str | None] = mapped_column(String(320))
    delivery_gln: Mapped[str | None] = mapped_column(String(13))
    delivery_peppol_scheme: Mapped[str | None] = mapped_column(String(4))
    delivery_peppol_id: Mapped[str | None] = mapped_column(String(50))


class InvoiceLine(Base):
    """A subscription's fee or its usage of one category in the invoice's period."""

    __tablename__ = "invoice_lines"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    invoice_id: Mapped[str] = mapped_column(ForeignKey("invoices.id"), index=True)
    subscription_id: Mapped[str | None] = mapped_column(String(36))
    identifier: Mapped[str] = mapped_column(String(40))
    category: Mapped[str] = mapped_column(String(20))  # subscription, calls, sms, data
    description: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(BigInteger)
    unit: Mapped[str] = mapped_column(String(10))
    amount_ore: Mapped[int] = mapped_column(BigInteger)


class UsageRecord(Base):
    """Rated usage (forbrug) of one subscription, one category, one month (S8)."""

    __tablename__ = "usage_records"
    __table_args__ = (
        UniqueConstraint(
            "subscription_id", "period", "category", name="uq_usage_records_subscription_period"
        ),
        Index("ix_usage_records_account_period", "account_number", "period", "id"),
        Index("ix_usage_records_cvr_period", "cvr", "period", "id"),
        # A company's usage summed per month, category and unit (GET /v1/usage/summary) from
        # the index alone: a large company's six months are some 400,000 rows, and reading each
        # from the table took five times as long (migration 0005).
        Index(
            "ix_usage_records_cvr_period_sums", "cvr", "period", "category", "unit", "quantity", "amount_ore"
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subscription_id: Mapped[str] = mapped_column(String(36))
    identifier: Mapped[str] = mapped_column(String(40))
    cvr: Mapped[str] = mapped_column(String(8))
    account_number: Mapped[str] = mapped_column(String(12))
    period: Mapped[date] = mapped_column(Date)  # the first day of the month
    category: Mapped[str] = mapped_column(String(20))  # calls, sms, data
    quantity: Mapped[int] = mapped_column(BigInteger)
    unit: Mapped[str] = mapped_column(String(10))  # minutes, messages, MB
    amount_ore: Mapped[int] = mapped_column(BigInteger)


class UserAccess(Base):
    """What billing learned from `identity.users`: a disabled or deleted user's tokens are
    refused, and so are tokens issued before `revoked_before` (grants changed)."""

    __tablename__ = "user_access"

    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(10))  # active, disabled, deleted
    revoked_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EndedSession(Base):
    """A session identity ended on its own (`SessionEnded`: logout, a reused refresh token):
    its access tokens are refused. Kept until every one of them has expired, then purged."""

    __tablename__ = "ended_sessions"

    session_id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the tokens' `sid`
    user_id: Mapped[str] = mapped_column(String(36))
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class AuditEntry(Base):
    """Who changed what in billing, when and from where (S9–S11)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    actor_id: Mapped[str] = mapped_column(String(36), index=True)
    action: Mapped[str] = mapped_column(String(50))
    cvr: Mapped[str] = mapped_column(String(8), index=True)
    target: Mapped[str] = mapped_column(String(60))
    client_address: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[str] = mapped_column(Text, default="{}")
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
