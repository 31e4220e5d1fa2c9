"""The audit trail as its readers see it (S13): support reads all of it, a company's
administrators read their company's within their grants (`GET /v1/audit`), and billing's
changes join it from `billing.audit`.

Who sees an entry:
- identity's own entries (logins, second factors, administration, support's actions) belong to
  the tenant of the user they concern. An administrator sees one when its target user — or,
  without a target, its acting user — is a login the administrator may see (`list_users`: of
  their company, with a whole access within their own), or support acted on the company.
  Entries of a username nobody has belong to no company: only support sees them.
- billing's entries belong to the company changed, and to the account where there is one. An
  administrator sees one when they hold the company; an account's entry only when they hold
  the account too (all accounts of the company, or that one).

Who acted is shown to an administrator only as far as they may see the login: an entry whose
actor is a login they may not see — support staff, or an administrator of broader access —
says the actor's role, but not the login's id nor the address it acted from (`as_seen_by`), and
asking for such a login's entries (`user_id`) finds none.

Pages are newest first, at most `limit` entries; each entry's `cursor` asks for the entries
after it (`before=`). The scope is part of every query, so no cursor reaches past it.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Select, and_, delete, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.domain import tried_username_as_kept
from services.identity.models import AuditEntry, User
from shared.clock import Clock, as_utc
from shared.db import Database, upsert_statement
from shared.envelope import Envelope
from shared.events import AuditRecorded, BillingAuditRecorded
from shared.messaging import Outbox
from shared.problems import InvalidField

if TYPE_CHECKING:
    from services.identity.admin import Administration


@dataclass
class AuditTrail:
    outbox: Outbox
    clock: Clock

    async def record(
        self,
        session: AsyncSession,
        *,
        actor: User | None,
        action: str,
        target: User | None = None,
        tenant_cvr: str | None = None,
        client_address: str | None = None,
        details: dict[str, Any] | None = None,
        subject_username: str | None = None,
    ) -> AuditEntry:
        """Keep an entry and publish it (`AuditRecorded`) in the caller's transaction: one row
        and one outbox row, no read. `actor` is None only for a login tried with a username
        nobody has (`subject_username`): such an entry has no company, so only support sees it.
        A `subject_username` without a username's shape is kept as its length only
        (`tried_username_as_kept`): it is often a password typed in the wrong field."""
        if subject_username is not None:
            subject_username = tried_username_as_kept(subject_username)
        entry = AuditEntry(
            id=str(uuid.uuid4()),
            at=self.clock.now(),
            actor_id=actor.id if actor else None,
            actor_role=actor.role if actor else None,
            action=action,
            target_user_id=target.id if target else None,
            tenant_cvr=tenant_cvr or (target.tenant_cvr if target else actor.tenant_cvr if actor else None),
            client_address=client_address,
            source="identity",
            subject_username=subject_username,
            details=details or None,
        )
        session.add(entry)
        await self.outbox.add(
            session,
            AuditRecorded(
                audit_id=uuid.UUID(entry.id),
                actor_id=uuid.UUID(actor.id) if actor else None,
                actor_role=actor.role if actor else None,  # type: ignore[arg-type]
                action=action,
                target_user_id=uuid.UUID(target.id) if target else None,
                tenant_cvr=entry.tenant_cvr,
                client_address=client_address,
                at=entry.at,
                subject_username=subject_username,
                details=details or {},
            ),
        )
        return entry



@dataclass(frozen=True)
class Cursor:
    at: datetime
    id: str

    @classmethod
    def of(cls, entry: AuditEntry) -> Cursor:
        return cls(as_utc(entry.at), entry.id)

    def encode(self) -> str:
        raw = f"{self.at.isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """The cursor of an entry as given out; anything else is a 422 naming `before`."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            at, entry_id = raw.split("|", 1)
            moment = as_utc(datetime.fromisoformat(at))
            uuid.UUID(entry_id)
        except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError):
            raise InvalidField(
                "before", "not a cursor this service gave out: use the `cursor` of the last entry of a page"
            ) from None
        return cls(moment, entry_id)


@dataclass(frozen=True)
class AuditFilter:
    """What a reader asks for: a period (`since` inclusive, `until` exclusive), actions
    starting with `action`, entries whose actor or target is `user_id`, a company (`cvr`),
    and the page: `limit` entries older than `before`."""

    limit: int
    since: datetime | None = None
    until: datetime | None = None
    action: str | None = None
    user_id: str | None = None
    cvr: str | None = None
    before: Cursor | None = None

    @classmethod
    def checked(
        cls,
        *,
        limit: int,
        since: datetime | None = None,
        until: datetime | None = None,
        action: str | None = None,
        user_id: str | None = None,
        cvr: str | None = None,
        before: str | None = None,
    ) -> AuditFilter:
        """The filter from a request's parameters; a time without a zone is UTC."""
        since = _utc("from", since)
        until = _utc("to", until)
        if since is not None and until is not None and since >= until:
            raise InvalidField("to", "must be later than `from`: the period runs from `from` up to `to`")
        return cls(
            limit=limit,
            since=since,
            until=until,
            action=action or None,
            user_id=user_id or None,
            cvr=cvr or None,
            before=Cursor.decode(before) if before else None,
        )

    def apply(self, query: Select[AuditEntry]) -> Select[AuditEntry]:
        if self.since is not None:
            query = query.where(AuditEntry.at >= self.since)
        if self.until is not None:
            query = query.where(AuditEntry.at < self.until)
        if self.action:
            # A prefix (`login.`, `order.placed`): LIKE's own wildcards in it are taken literally.
            escaped = self.action.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(AuditEntry.action.like(f"{escaped}%", escape="\\"))
        if self.user_id:
            query = query.where(or_(AuditEntry.actor_id == self.user_id, AuditEntry.target_user_id == self.user_id))
        if self.cvr:
            query = query.where(AuditEntry.tenant_cvr == self.cvr)
        if self.before is not None:
            query = query.where(
                or_(
                    AuditEntry.at < self.before.at,
                    and_(AuditEntry.at == self.before.at, AuditEntry.id < self.before.id),
                )
            )
        return query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(self.limit)


def _utc(field: str, moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00+14:00 is before the first moment a time can hold in UTC (and
        # 9999-12-31T23:59-14:00 after the last): no entry is that old or that new.
        raise InvalidField(field, "must be a time between the years 1 and 9999 in UTC") from None


async def all_entries(session: AsyncSession, wanted: AuditFilter) -> list[AuditEntry]:
    """Support's read: every entry (S13)."""
    return list(await session.scalars(wanted.apply(select(AuditEntry))))


async def company_entries(
    session: AsyncSession, admin: Administration, caller: User, wanted: AuditFilter
) -> list[AuditEntry]:
    """An administrator's read: their company's entries within their grants, each as they may
    see it (module docstring)."""
    visible = [user.id for user, _ in await admin.list_users(session, caller)]
    if wanted.user_id is not None and wanted.user_id not in visible:
        return []  # a login they may not see: its entries would name it as the actor
    held = (await admin.scope(session, caller)).companies
    identity_entries = and_(
        AuditEntry.source == "identity",
        AuditEntry.tenant_cvr == caller.tenant_cvr,
        or_(
            AuditEntry.target_user_id.in_(visible),
            and_(
                AuditEntry.target_user_id.is_(None),
                or_(AuditEntry.actor_id.in_(visible), AuditEntry.actor_role == "support"),
            ),
        ),
    )
    per_company: list[ColumnElement[bool]] = [
        and_(
            AuditEntry.tenant_cvr == cvr,
            true()
            if accounts == "all"
            else or_(AuditEntry.account_number.is_(None), AuditEntry.account_number.in_(sorted(accounts))),
        )
        for cvr, accounts in held.items()
    ]
    billing_entries = and_(AuditEntry.source == "billing", or_(false(), *per_company))
    query = select(AuditEntry).where(or_(identity_entries, billing_entries))
    return [as_seen_by(entry, set(visible)) for entry in await session.scalars(wanted.apply(query))]


def as_seen_by(entry: AuditEntry, visible: set[str]) -> AuditEntry:
    """The entry as an administrator who may see the logins `visible` reads it: the actor's id
    and address only when the actor is one of them. Support staff's ids and addresses, and those
    of administrators of broader access, stay with support. A copy, never added to a session."""
    if entry.actor_id is None or entry.actor_id in visible:
        return entry
    shown = AuditEntry(**{column.key: getattr(entry, column.key) for column in AuditEntry.__table__.columns})
    shown.actor_id, shown.client_address = None, None
    return shown


async def keep_billing_entry(session: AsyncSession, envelope: Envelope[BillingAuditRecorded]) -> None:
    """`billing.audit` → the audit trail. Keyed by the entry's `audit_id`, so an event that
    arrives twice (a relay's retry, a replay of the topic) is kept once."""
    actor = str(envelope.event.actor_id)
    role = await session.scalar(select(User.role).where(User.id == actor))
    await session.execute(
        upsert_statement(session, AuditEntry)
        .values(
            id=str(envelope.event.audit_id),
            at=envelope.event.at,
            actor_id=actor,
            actor_role=role,
            action=envelope.event.action,
            target_user_id=None,
            tenant_cvr=envelope.event.cvr,
            client_address=envelope.event.client_address,
            source="billing",
            account_number=envelope.event.account_number,
            target=envelope.event.target[:60],
            details=envelope.event.details,
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )


async def forget_unknown_usernames(db: Database, clock: Clock, retention: timedelta) -> int:
    """Delete the entries of failed logins with usernames nobody has (no actor, no company)
    older than `retention`: anyone can add them, one per try, from every address they have.
    Entries of a company, and everything support did, are kept."""
    async with db.transaction() as session:
        result = await session.execute(
            delete(AuditEntry).where(
                AuditEntry.actor_id.is_(None),
                AuditEntry.tenant_cvr.is_(None),
                AuditEntry.source == "identity",
                AuditEntry.at < clock.now() - retention,
            )
        )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
