"""Revocations from `identity.users` (S12): a token's grants are the truth for its five minutes,
unless identity says meanwhile that the user was disabled, deleted or re-granted, or that the
token's session ended (logout, a reused refresh token). Billing records what it hears, and its
token verifier refuses the older tokens, or the session's, with one read per request.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import (
    CompoundSelect,
    DateTime,
    String,
    bindparam,
    cast,
    delete,
    literal,
    null,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from services.billing.models import EndedSession, UserAccess
from shared.clock import Clock, as_utc
from shared.db import Database
from shared.envelope import Envelope
from shared.events import SessionEnded, UserDeleted, UserDisabled, UserEnabled, UserGrantsChanged
from shared.tokens import AccessClaims

log = logging.getLogger(__name__)

ENDED = "ended"  # the status of the token's own session, once identity has ended it


def revocation_query(user_id: str, session_id: str) -> CompoundSelect[str, datetime | None]:
    """(status, revoked_before) of the user, if billing heard of them, and ("ended", None) if
    the session has ended: one statement, two primary-key lookups."""
    user = select(UserAccess.status, UserAccess.revoked_before).where(UserAccess.user_id == user_id)
    session_ended = select(literal(ENDED, String(10)), cast(null(), DateTime(timezone=True))).where(
        EndedSession.session_id == session_id
    )
    return union_all(user, session_ended)


# `revocation_query` with its two keys as parameters, built once: what every request runs.
REVOCATIONS = revocation_query(bindparam("user_id"), bindparam("session_id"))  # type: ignore[arg-type]


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
        row (disabled, deleted, re-granted) and the token's session (ended on its own), by key
        (`Database.read_by_key`: on SQLite in microseconds, without a thread hand-off; on
        PostgreSQL one trip on read-only connections of its own, prepared once per connection)."""
        rows = await self.db.read_by_key(REVOCATIONS, {"user_id": claims.sub, "session_id": claims.sid})
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
