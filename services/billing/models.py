from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.messaging import MessagingTables


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


messaging = MessagingTables.define(Base.metadata)


class Customer(Base):
    __tablename__ = "customers"

    cvr: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    parent_cvr: Mapped[str | None] = mapped_column(ForeignKey("customers.cvr"), index=True)
    address: Mapped[str] = mapped_column(String(300))
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    accounts: Mapped[list[Account]] = relationship(lazy="raise", order_by="Account.account_number")


class Account(Base):
    __tablename__ = "accounts"

    account_number: Mapped[str] = mapped_column(String(12), primary_key=True)
    cvr: Mapped[str] = mapped_column(ForeignKey("customers.cvr"), index=True)
    name: Mapped[str] = mapped_column(String(200))
