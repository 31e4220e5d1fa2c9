from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import service_metadata
from shared.messaging import MessagingTables
from shared.ratelimit import rate_limit_table


class Base(DeclarativeBase):
    metadata = service_metadata()


messaging = MessagingTables.define(Base.metadata)
# The per-address limits of the public routes, shared by every instance of the API.
rate_limit_hits = rate_limit_table(Base.metadata)

_IN_FLIGHT_SQL = text("status IN ('received', 'provisioning')")


class Application(Base):
    __tablename__ = "applications"
    __table_args__ = (
        # At most one application in flight per CVR, enforced by the database (S1).
        Index(
            "uq_applications_in_flight_cvr",
            "cvr",
            unique=True,
            sqlite_where=_IN_FLIGHT_SQL,
            postgresql_where=_IN_FLIGHT_SQL,
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    cvr: Mapped[str] = mapped_column(String(8), index=True)
    company_name: Mapped[str] = mapped_column(String(200))
    contact_name: Mapped[str] = mapped_column(String(200))
    contact_email: Mapped[str] = mapped_column(String(320))
    contact_mobile: Mapped[str] = mapped_column(String(20))
    language: Mapped[str] = mapped_column(String(2))
    status: Mapped[str] = mapped_column(String(20))
    # `application` (a first administrator) or `takeover` (of a company with an activated one)
    kind: Mapped[str] = mapped_column(String(20), default="application", server_default="application")
    status_detail: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deliver_by: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sla_breached_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Set when the login issued for this application is gone (withdrawn or deleted, S3):
    # its delivered letter then no longer means the company has an administrator.
    admin_removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class KnownCustomer(Base):
    """Projection of `billing.customers`: who may apply."""

    __tablename__ = "known_customers"

    cvr: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    parent_cvr: Mapped[str | None] = mapped_column(String(8))


class KnownAdministrator(Base):
    """Projection of `identity.users`: which CVRs already have an administrator login."""

    __tablename__ = "known_administrators"

    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    cvr: Mapped[str] = mapped_column(String(8), index=True)
    status: Mapped[str] = mapped_column(String(20))
    application_id: Mapped[str | None] = mapped_column(String(36))
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # A pending login's letter code expiry: past it, the login holds nothing (nobody can
    # activate it), so the companies below it in the group may apply.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
