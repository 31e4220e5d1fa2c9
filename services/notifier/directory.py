"""The recipient directory: whom the notifier emails about a company's invoices (S8) and
orders (S9), projected from `identity.users`.

Identity owns the users; the notifier keeps only what it needs to address a message: name,
email and language, the companies and accounts a user may act for, their functions, and whether the login
is active, disabled or deleted. Each handler runs in the consumer's transaction after the inbox
has set aside a redelivered event, and replaying a user's events in order gives the same row.

A change to a user the directory never saw created (one created before the notifier followed
`identity.users`, say) is logged and skipped: without `UserCreated` there are no grants to keep.
"""

from __future__ import annotations

import logging
from datetime import datetime
from uuid import UUID

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier.models import Recipient, RecipientGrant
from shared.envelope import Envelope
from shared.events import (
    Grant,
    UserCreated,
    UserDeleted,
    UserDetailsChanged,
    UserDisabled,
    UserEnabled,
    UserGrantsChanged,
)

log = logging.getLogger(__name__)

ACTIVE = "active"
DISABLED = "disabled"
DELETED = "deleted"


class UnknownRecipient(LookupError):
    """The user is not in the directory (yet): the event that needs them is to be tried again."""


async def on_user_created(session: AsyncSession, envelope: Envelope[UserCreated]) -> None:
    """A new login (S4–S6): where to reach the user, and what they may see and do."""
    event = envelope.event
    user_id = str(event.user_id)
    recipient = await session.get(Recipient, user_id)
    new = recipient is None
    if recipient is None:
        recipient = Recipient(user_id=user_id)
        session.add(recipient)
    recipient.tenant_cvr = event.tenant_cvr
    recipient.name = event.name
    recipient.email = event.email
    recipient.language = event.language
    recipient.functions = list(event.functions)
    recipient.status = ACTIVE
    recipient.updated_at = event.created_at
    await session.flush()  # the grants refer to the row
    # A recipient new in this transaction has no grants to replace (they refer to its row).
    await _replace_grants(session, user_id, event.grants, had_none=new)


async def on_user_grants_changed(session: AsyncSession, envelope: Envelope[UserGrantsChanged]) -> None:
    """The companies, accounts or functions of a user changed: so do the invoices they hear of."""
    event = envelope.event
    recipient = await _known(session, event.user_id, envelope.type)
    if recipient is None or recipient.status == DELETED:
        return
    recipient.functions = list(event.functions)
    recipient.updated_at = event.changed_at
    await _replace_grants(session, recipient.user_id, event.grants)


async def on_user_details_changed(session: AsyncSession, envelope: Envelope[UserDetailsChanged]) -> None:
    """A new name, email or language: the next message greets and reaches the user there, in it."""
    event = envelope.event
    recipient = await _known(session, event.user_id, envelope.type)
    if recipient is None or recipient.status == DELETED:
        return
    recipient.name = event.name
    recipient.email = event.email
    recipient.language = event.language
    recipient.updated_at = event.changed_at


async def on_user_disabled(session: AsyncSession, envelope: Envelope[UserDisabled]) -> None:
    """A disabled login is told nothing until it is enabled again."""
    event = envelope.event
    await _set_status(session, event.user_id, DISABLED, event.disabled_at, envelope.type)


async def on_user_enabled(session: AsyncSession, envelope: Envelope[UserEnabled]) -> None:
    event = envelope.event
    await _set_status(session, event.user_id, ACTIVE, event.enabled_at, envelope.type)


async def on_user_deleted(session: AsyncSession, envelope: Envelope[UserDeleted]) -> None:
    """A login gone for good: its name, email and grants are forgotten; the row stays, marked
    deleted, so that an order the user placed earlier is known to need no confirmation."""
    event = envelope.event
    recipient = await _known(session, event.user_id, envelope.type)
    if recipient is None:
        return
    recipient.status = DELETED
    recipient.name = ""
    recipient.email = ""
    recipient.functions = []
    recipient.updated_at = event.deleted_at
    await _replace_grants(session, recipient.user_id, [])


async def find_orderer(session: AsyncSession, user_id: UUID) -> Recipient:
    """The person who placed an order (S9), whatever their status; `UnknownRecipient` if the
    directory has not heard of them yet."""
    recipient = await session.get(Recipient, str(user_id))
    if recipient is None:
        raise UnknownRecipient(f"user {user_id} is not in the recipient directory")
    return recipient


async def invoice_recipients(session: AsyncSession, *, cvr: str, account_number: str) -> list[Recipient]:
    """The active users with the `invoices` function whose grant for `cvr` covers the account
    (all its accounts, or a list that names it): those told of the account's invoices (S8)."""
    rows = await session.execute(
        select(Recipient, RecipientGrant)
        .join(RecipientGrant, RecipientGrant.user_id == Recipient.user_id)
        .where(RecipientGrant.cvr == cvr, Recipient.status == ACTIVE)
        .order_by(Recipient.user_id)
    )
    return [
        recipient
        for recipient, grant in rows.tuples()
        if "invoices" in recipient.functions and grant.covers(account_number)
    ]


async def _known(session: AsyncSession, user_id: UUID, event_type: str) -> Recipient | None:
    recipient = await session.get(Recipient, str(user_id))
    if recipient is None:
        log.info("user %s is not in the recipient directory; %s skipped", user_id, event_type)
    return recipient


async def _set_status(
    session: AsyncSession, user_id: UUID, status: str, at: datetime, event_type: str
) -> None:
    recipient = await _known(session, user_id, event_type)
    if recipient is None or recipient.status == DELETED:
        return
    recipient.status = status
    recipient.updated_at = at


async def _replace_grants(
    session: AsyncSession, user_id: str, grants: list[Grant], *, had_none: bool = False
) -> None:
    """The user's grants become `grants`; `had_none`: the user has none yet (nothing to delete)."""
    if not had_none:
        await session.execute(delete(RecipientGrant).where(RecipientGrant.user_id == user_id))
    for grant in grants:
        listed = grant.accounts if isinstance(grant.accounts, list) else None
        session.add(
            RecipientGrant(
                user_id=user_id,
                cvr=grant.cvr,
                all_accounts=listed is None,
                account_numbers=sorted(listed or []),
            )
        )
