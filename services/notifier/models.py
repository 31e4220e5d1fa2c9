from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import service_metadata
from shared.messaging import MessagingTables


class Base(DeclarativeBase):
    metadata = service_metadata()


messaging = MessagingTables.define(Base.metadata)


class Delivery(Base):
    """One message of one kind (`credentials_letter`, `otp_login`, `order_confirmation`, …) to
    deliver on one channel (`eboks`, `email`, `sms`); the source event is kept sealed as it came.

    An event about a company (an invoice, S8) is one delivery per person told: its
    `source_event_id` is then derived from the event's id and the person's user id."""

    __tablename__ = "deliveries"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    source_event_id: Mapped[str] = mapped_column(String(64), unique=True)
    source_event_type: Mapped[str] = mapped_column(String(200))
    source_payload: Mapped[str] = mapped_column(Text)
    application_id: Mapped[str | None] = mapped_column(String(36))
    channel: Mapped[str] = mapped_column(String(10))
    recipient: Mapped[str] = mapped_column(String(320), index=True)
    # Whom the message greets, when the source event does not say (it came from the directory).
    recipient_name: Mapped[str | None] = mapped_column(String(200))
    # The language the directory had for the recipient then; None: the source event says (or da).
    recipient_language: Mapped[str | None] = mapped_column(String(2))
    kind: Mapped[str] = mapped_column(String(50))
    message_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(String(1000))
    location: Mapped[str | None] = mapped_column(String(500))
    deliver_by: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A one-time code is useless after this: the delivery then fails instead of being attempted.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The source event's time (its ce_time) and correlation id: the delivery latency is measured
    # from the first, and the dispatcher's log lines and outcome events carry the second
    # (docs/operations.md). None for deliveries recorded before they were kept.
    source_event_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sla_breached_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Recipient(Base):
    """Projection of `identity.users`: whom the notifier emails about a company's invoices (S8)
    and orders (S9), and where. A deleted user stays as a row without name, email or grants, so
    that an order they placed is known to need no confirmation rather than retried."""

    __tablename__ = "recipients"

    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_cvr: Mapped[str] = mapped_column(String(8), index=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    functions: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20))  # active, disabled or deleted
    # The user's language in identity: order and invoice emails are written in it.
    language: Mapped[str] = mapped_column(String(2), default="da", server_default="da")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RecipientGrant(Base):
    """A company a recipient may act for, and which of its accounts (S5.4, S5.5): whose
    invoices they are told about (S8)."""

    __tablename__ = "recipient_grants"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("recipients.user_id", ondelete="CASCADE"), primary_key=True
    )
    cvr: Mapped[str] = mapped_column(String(8), primary_key=True, index=True)
    all_accounts: Mapped[bool]
    account_numbers: Mapped[list[str]] = mapped_column(JSON)

    def covers(self, account_number: str) -> bool:
        return self.all_accounts or account_number in self.account_numbers
