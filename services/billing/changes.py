"""Changes customers make to their own data: master data (S10), invoice format (S10) and
subscription settings (S11). Each has a version; a change must name the version it was made
from (`If-Match` with the ETag), so two administrators never overwrite each other silently.
Every change is audited and announced.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.billing.access import Access, granted
from services.billing.audit import announce
from services.billing.catalogue import BY_CODE
from services.billing.models import Account, Customer, Subscription
from services.billing.telephony import SettingsError, effective_settings, merged_settings
from shared.clock import Clock
from shared.db import Database
from shared.events import InvoiceFormatChanged, MasterDataChanged, SubscriptionSettingsChanged
from shared.messaging import Outbox
from shared.problems import Forbidden, NotFound, Problem


class PreconditionRequired(Problem):
    status = 428
    type_suffix = "precondition-required"
    title = "If-Match is required"


class PreconditionFailed(Problem):
    status = 412
    type_suffix = "precondition-failed"
    title = "The data changed since you read it"


class InvalidSettings(Problem):
    status = 422
    type_suffix = "validation-error"
    title = "A field is not valid"


def etag(version: int) -> str:
    return f'"{version}"'


def check_if_match(if_match: str | None, version: int) -> None:
    """RFC 9110 strong comparison of `If-Match` with the current version's ETag."""
    if if_match is None or not if_match.strip():
        raise PreconditionRequired(
            "Send the ETag you read as If-Match, so a change made meanwhile by someone else is not overwritten."
        )
    tags = [t.strip() for t in if_match.split(",")]
    if "*" in tags or etag(version) in tags:
        return
    raise PreconditionFailed(
        f"Someone changed this since you read it (it is now at ETag {etag(version)}). "
        "Read it again, then make your change.",
        current_etag=etag(version),
    )


@dataclass(frozen=True)
class MasterDataChange:
    street: str | None = None
    postal_code: str | None = None
    city: str | None = None
    contact_name: str | None = None
    contact_email: str | None = None
    contact_phone: str | None = None
    language: str | None = None  # da or en: the language of the company's invoices

    def set_fields(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class InvoiceFormat:
    format: Literal["pdf_email", "oioubl", "peppol", "paper"]
    email: str | None = None
    gln: str | None = None
    peppol_scheme: str | None = None
    peppol_id: str | None = None

    def columns(self) -> dict[str, str | None]:
        """The account's columns that hold this format."""
        return {
            "invoice_format": self.format,
            "invoice_email": self.email,
            "invoice_gln": self.gln,
            "peppol_scheme": self.peppol_scheme,
            "peppol_id": self.peppol_id,
        }


def _apply(row: Customer | Account, columns: Mapping[str, Any]) -> dict[str, Any]:
    """Give `row` the values of `columns` that differ from what it holds; what those columns held
    before (empty when nothing changes)."""
    before = {name: getattr(row, name) for name, value in columns.items() if getattr(row, name) != value}
    for name in before:
        setattr(row, name, columns[name])
    return before


class Changes:
    """Each change is one transaction: the row is locked, the version the caller read is checked
    (`If-Match`), and a change that changes something gets a new version, its event and its
    audit entry; one that changes nothing gets none of them."""

    def __init__(self, *, db: Database, outbox: Outbox, clock: Clock) -> None:
        self.db = db
        self.outbox = outbox
        self.clock = clock

    # --- master data ----------------------------------------------------------------------

    async def _company(
        self, session: AsyncSession, access: Access, cvr: str, *, for_update: bool = False
    ) -> Customer:
        access.require("master_data")
        query = select(Customer).where(Customer.cvr == cvr, Customer.cvr.in_(sorted(access.companies)))
        customer = await session.scalar(query.with_for_update() if for_update else query)
        if customer is None:
            raise NotFound(f"There is no company {cvr} among the companies you may see.")
        return customer

    async def company(self, access: Access, cvr: str) -> Customer:
        async with self.db.reading() as session:
            return await self._company(session, access, cvr)

    async def change_master_data(
        self, access: Access, cvr: str, change: MasterDataChange, *, if_match: str | None, client: str | None
    ) -> Customer:
        async with self.db.transaction() as session:
            customer = await self._company(session, access, cvr, for_update=True)
            if cvr not in access.whole:
                raise Forbidden(
                    "Changing a company's master data needs access to all of its accounts; "
                    "your login covers only some of them."
                )
            check_if_match(if_match, customer.master_data_version)
            before = _apply(customer, change.set_fields())
            if not before:
                return customer  # nothing changes: no new version, event or audit entry
            now = self.clock.now()
            customer.master_data_version += 1
            customer.master_data_changed_at = now
            await announce(
                session,
                self.outbox,
                access,
                MasterDataChanged(
                    cvr=customer.cvr,
                    street=customer.street,
                    postal_code=customer.postal_code,
                    city=customer.city,
                    contact_name=customer.contact_name,
                    contact_email=customer.contact_email,
                    contact_phone=customer.contact_phone,
                    language=customer.language,  # type: ignore[arg-type]
                    version=customer.master_data_version,
                    changed_by=uuid.UUID(access.user_id),
                    changed_at=now,
                ),
                action="master_data.changed",
                target=cvr,
                at=now,
                client=client,
                details={"before": before, "after": {name: getattr(customer, name) for name in before}},
            )
            return customer

    # --- invoice format -------------------------------------------------------------------

    async def _account(
        self, session: AsyncSession, access: Access, account_number: str, *, for_update: bool = False
    ) -> Account:
        access.require("master_data")
        account = await granted(session, access, Account, account_number, for_update=for_update)
        if account is None:
            raise NotFound(f"There is no account {account_number} among the accounts you may use.")
        return account

    async def account(self, access: Access, account_number: str) -> Account:
        async with self.db.reading() as session:
            return await self._account(session, access, account_number)

    async def change_invoice_format(
        self,
        access: Access,
        account_number: str,
        wanted: InvoiceFormat,
        *,
        if_match: str | None,
        client: str | None,
    ) -> Account:
        async with self.db.transaction() as session:
            account = await self._account(session, access, account_number, for_update=True)
            check_if_match(if_match, account.invoice_format_version)
            before = format_of(account)
            if not _apply(account, wanted.columns()):
                return account  # nothing changes: no new version, event or audit entry
            now = self.clock.now()
            account.invoice_format_version += 1
            account.invoice_format_changed_at = now
            await announce(
                session,
                self.outbox,
                access,
                InvoiceFormatChanged(
                    cvr=account.cvr,
                    account_number=account.account_number,
                    format=wanted.format,
                    email=wanted.email,
                    gln=wanted.gln,
                    peppol_scheme=wanted.peppol_scheme,
                    peppol_id=wanted.peppol_id,
                    version=account.invoice_format_version,
                    changed_by=uuid.UUID(access.user_id),
                    changed_at=now,
                ),
                action="invoice_format.changed",
                target=account.account_number,
                at=now,
                client=client,
                details={"before": before, "after": format_of(account)},
            )
            return account

    # --- subscription settings (S11) ------------------------------------------------------

    async def _subscription(
        self, session: AsyncSession, access: Access, subscription_id: str, *, for_update: bool = False
    ) -> Subscription:
        access.require("telephony")
        subscription = await granted(session, access, Subscription, subscription_id, for_update=for_update)
        if subscription is None:
            raise NotFound("There is no subscription with this id among the accounts you may use.")
        return subscription

    async def subscription(self, access: Access, subscription_id: str) -> Subscription:
        async with self.db.reading() as session:
            return await self._subscription(session, access, subscription_id)

    async def change_settings(
        self,
        access: Access,
        subscription_id: str,
        patch: dict[str, Any],
        *,
        if_match: str | None,
        client: str | None,
    ) -> Subscription:
        async with self.db.transaction() as session:
            subscription = await self._subscription(session, access, subscription_id, for_update=True)
            kind = BY_CODE[subscription.product_code].kind
            check_if_match(if_match, subscription.settings_version)
            try:
                settings = merged_settings(
                    kind, json.loads(subscription.settings), patch, subscription.identifier
                )
            except SettingsError as exc:
                raise InvalidSettings(str(exc), errors=exc.errors) from None
            before = effective_settings(kind, json.loads(subscription.settings))
            if settings == before:
                return subscription  # nothing changes: no new version, event or audit entry
            subscription.settings = json.dumps(settings, sort_keys=True)
            subscription.settings_version += 1
            now = self.clock.now()
            await announce(
                session,
                self.outbox,
                access,
                SubscriptionSettingsChanged(
                    subscription_id=uuid.UUID(subscription.id),
                    cvr=subscription.cvr,
                    account_number=subscription.account_number,
                    identifier=subscription.identifier,
                    product_kind=kind,
                    settings=settings,
                    version=subscription.settings_version,
                    changed_by=uuid.UUID(access.user_id),
                    changed_at=now,
                ),
                action="subscription.settings_changed",
                target=subscription.id,
                at=now,
                client=client,
                details={"before": before, "after": settings},
            )
            return subscription


def format_of(account: Account) -> dict[str, Any]:
    body: dict[str, Any] = {"format": account.invoice_format}
    if account.invoice_format == "pdf_email":
        body["email"] = account.invoice_email
    elif account.invoice_format == "oioubl":
        body["gln"] = account.invoice_gln
    elif account.invoice_format == "peppol":
        body["scheme"] = account.peppol_scheme
        body["endpoint_id"] = account.peppol_id
    return body
