"""Who may see and do what in billing, taken from the caller's access token (S5.4–S5.6, S14)
and applied in the SQL itself, so a row outside the caller's grants is never read.

A grant is a company (CVR) with either all its accounts or a list of them. The token's grants
are the truth for its five minutes; `identity.users` tells billing at once when a user is
disabled, deleted or re-granted, or when one session ends (logout, a reused refresh token), and
`is_revoked` then refuses the older tokens, or the session's (S12).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    DateTime,
    SQLColumnExpression,
    String,
    and_,
    cast,
    delete,
    false,
    func,
    literal,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession

from services.billing.models import EndedSession, UserAccess
from shared.clock import Clock, as_utc
from shared.db import Database
from shared.envelope import Envelope
from shared.events import SessionEnded, UserDeleted, UserDisabled, UserEnabled, UserGrantsChanged
from shared.problems import Forbidden
from shared.tokens import AccessClaims

T = TypeVar("T")
log = logging.getLogger(__name__)

FUNCTION_TITLES = {
    "invoices": "see invoices and usage",
    "orders": "order and upgrade subscriptions",
    "master_data": "change master data and invoice format",
    "telephony": "administer telephony and Personligt Nummer",
}


class MissingFunction(Forbidden):
    type_suffix = "missing-function"
    title = "Your login does not include this function"


@dataclass(frozen=True)
class Access:
    """The caller's grants: companies in full (`whole`) and companies in part (`limited`)."""

    user_id: str
    functions: frozenset[str]
    whole: frozenset[str]
    limited: dict[str, frozenset[str]]

    @classmethod
    def of(cls, claims: AccessClaims) -> Access:
        whole = frozenset(g.cvr for g in claims.grants if g.accounts == "all")
        limited: dict[str, frozenset[str]] = {}
        for grant in claims.grants:
            if grant.accounts != "all" and grant.cvr not in whole:
                limited[grant.cvr] = limited.get(grant.cvr, frozenset()) | frozenset(grant.accounts)
        return cls(claims.sub, frozenset(claims.functions), whole, limited)

    def require(self, *functions: str) -> None:
        """403 unless the login has one of `functions`; the caller's own token says so, so
        this leaks nothing."""
        if not any(f in self.functions for f in functions):
            wanted = " or ".join(f"'{f}' ({FUNCTION_TITLES.get(f, f)})" for f in functions)
            raise MissingFunction(
                f"This needs the function {wanted}. Ask an administrator of your company to add it to your login."
            )

    @property
    def companies(self) -> frozenset[str]:
        return self.whole | frozenset(self.limited)

    def may_use(self, cvr: str, account_number: str) -> bool:
        return cvr in self.whole or account_number in self.limited.get(cvr, frozenset())

    def rows(
        self, cvr_column: SQLColumnExpression[str], account_column: SQLColumnExpression[str]
    ) -> ColumnElement[bool]:
        """A WHERE clause that keeps exactly the rows of accounts the caller may use."""
        clauses: list[ColumnElement[bool]] = []
        if self.whole:
            clauses.append(cvr_column.in_(sorted(self.whole)))
        for cvr, accounts in sorted(self.limited.items()):
            # The account decides which rows; the company is checked on each of them. Written
            # so that no planner picks the company's index for it (SQLite without statistics
            # would walk all of a large company's rows to find a few accounts').
            clauses.append(and_(account_column.in_(sorted(accounts)), func.coalesce(cvr_column, "") == cvr))
        if not clauses:
            return false()
        return or_(*clauses) if len(clauses) > 1 else clauses[0]

    def narrowed(
        self,
        cvr_column: SQLColumnExpression[str],
        account_column: SQLColumnExpression[str],
        *,
        cvr: str | None,
        accounts: Iterable[str] = (),
    ) -> list[ColumnElement[bool]]:
        """The access clause plus the caller's own filters (which can only narrow it)."""
        where = [self.rows(cvr_column, account_column)]
        if cvr is not None:
            where.append(cvr_column == cvr)
        wanted = list(accounts)
        if wanted:
            where.append(account_column.in_(wanted))
        return where


async def granted(
    session: AsyncSession, access: Access, model: type[T], key: str, *, for_update: bool = False
) -> T | None:
    """The row of `model` (an account, subscription, order...) with primary key `key` if it lies
    within the caller's grants, else None. The grants are part of the SQL, so a row outside
    them is never read; `for_update` locks it for a change (PostgreSQL)."""
    mapper = sa_inspect(model)
    columns = mapper.columns
    query = select(model).where(
        mapper.primary_key[0] == key, access.rows(columns["cvr"], columns["account_number"])
    )
    if for_update:
        query = query.with_for_update()
    row: T | None = await session.scalar(query)
    return row


# --- revocations from identity.users ---------------------------------------------------------


ENDED = "ended"  # the status of the token's own session, once identity has ended it


def revocation_query(user_id: str, session_id: str) -> CompoundSelect[str, datetime | None]:
    """(status, revoked_before) of the user, if billing heard of them, and ("ended", None) if
    the session has ended: one statement, two primary-key lookups."""
    user = select(UserAccess.status, UserAccess.revoked_before).where(UserAccess.user_id == user_id)
    session_ended = select(literal(ENDED, String(10)), cast(null(), DateTime(timezone=True))).where(
        EndedSession.session_id == session_id
    )
    return union_all(user, session_ended)


class Revocations:
    """What ends a user's tokens in billing: the handlers of `identity.users` record disabled,
    deleted and re-granted users and ended sessions; `is_revoked` is the token verifier's
    check against them, and `purge_ended_sessions` forgets the sessions whose tokens expired."""

    def __init__(self, *, db: Database, clock: Clock, ended_sessions_kept: timedelta) -> None:
        self.db = db
        self.clock = clock
        self.ended_sessions_kept = ended_sessions_kept

    async def is_revoked(self, claims: AccessClaims) -> bool:
        """`TokenVerifier.is_revoked`: one read per request (`revocation_query`) for the user's
        row (disabled, deleted, re-granted) and the token's session (ended on its own)."""
        async with self.db.reading() as session:
            rows = (await session.execute(revocation_query(claims.sub, claims.sid))).all()
        for status, revoked_before in rows:
            if status != "active":  # disabled, deleted, or this session ended
                return True
            # iat is whole seconds: a token from the second of the change is refused too (log in again).
            if revoked_before is not None and claims.iat <= as_utc(revoked_before).timestamp():
                return True
        return False

    async def purge_ended_sessions(self) -> int:
        """Forget the sessions that ended more than `ended_sessions_kept` ago: every access
        token of them has expired by then (identity's live 5 minutes), so their rows refuse
        nothing any more."""
        async with self.db.transaction() as session:
            result = await session.execute(
                delete(EndedSession).where(
                    EndedSession.ended_at < self.clock.now() - self.ended_sessions_kept
                )
            )
        purged: int = result.rowcount  # type: ignore[attr-defined]  # a DELETE's result is a CursorResult
        if purged:
            log.info("purged %d ended sessions whose tokens have expired", purged)
        return purged

    async def on_user_disabled(self, session: AsyncSession, envelope: Envelope[UserDisabled]) -> None:
        event = envelope.event
        await self._record(session, str(event.user_id), status="disabled", revoke_at=event.disabled_at)

    async def on_user_enabled(self, session: AsyncSession, envelope: Envelope[UserEnabled]) -> None:
        # Tokens from before the disabling stay refused: they were ended then.
        await self._record(session, str(envelope.event.user_id), status="active")

    async def on_user_grants_changed(
        self, session: AsyncSession, envelope: Envelope[UserGrantsChanged]
    ) -> None:
        event = envelope.event
        await self._record(session, str(event.user_id), status=None, revoke_at=event.changed_at)

    async def on_user_deleted(self, session: AsyncSession, envelope: Envelope[UserDeleted]) -> None:
        event = envelope.event
        await self._record(session, str(event.user_id), status="deleted", revoke_at=event.deleted_at)

    async def on_session_ended(self, session: AsyncSession, envelope: Envelope[SessionEnded]) -> None:
        event = envelope.event
        if await session.get(EndedSession, str(event.session_id)) is None:
            session.add(
                EndedSession(
                    session_id=str(event.session_id), user_id=str(event.user_id), ended_at=event.ended_at
                )
            )

    async def _record(
        self,
        session: AsyncSession,
        user_id: str,
        *,
        status: str | None,
        revoke_at: datetime | None = None,
    ) -> None:
        row = await session.get(UserAccess, user_id, with_for_update=True)
        if row is None:
            row = UserAccess(user_id=user_id, status="active", revoked_before=None)
            session.add(row)
        if row.status == "deleted":  # a deleted login never comes back
            status = None
        if status is not None:
            row.status = status
        if revoke_at is not None and (row.revoked_before is None or as_utc(row.revoked_before) < revoke_at):
            row.revoked_before = revoke_at
        row.updated_at = self.clock.now()
