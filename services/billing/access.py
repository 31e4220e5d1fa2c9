"""Who may see and do what in billing, taken from the caller's access token (S5.4–S5.6, S14)
and applied in the SQL itself, so a row outside the caller's grants is never read.

A grant is a company (CVR) with either all its accounts or a list of them. The token's grants
are the truth for its five minutes; `identity.users` tells billing at once when a user is
disabled, deleted or re-granted, and `is_revoked` then refuses the older tokens (S12).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, TypeVar

from fastapi import Header
from sqlalchemy import ColumnElement, SQLColumnExpression, and_, false, func, or_, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession

from services.billing.models import UserAccess
from shared.clock import Clock, as_utc
from shared.db import Database
from shared.envelope import Envelope
from shared.events import UserDeleted, UserDisabled, UserEnabled, UserGrantsChanged
from shared.problems import Forbidden, Unauthenticated
from shared.tokens import AccessClaims, TokenError, TokenVerifier, bearer_token

T = TypeVar("T")

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


def bearer_access(verifier: TokenVerifier, clock: Clock) -> Callable[..., Awaitable[Access]]:
    """A FastAPI dependency: the caller's `Access`, or 401 (also for a revoked session)."""

    async def current_access(authorization: Annotated[str | None, Header()] = None) -> Access:
        token = bearer_token(authorization)
        try:
            claims = await verifier.verify(token, now=clock.now())
        except TokenError as exc:
            raise Unauthenticated(f"The access token is not accepted: {exc}. Log in again.") from exc
        return Access.of(claims)

    return current_access


# --- revocations from identity.users ---------------------------------------------------------


def revocation_check(db: Database) -> Callable[[AccessClaims], Awaitable[bool]]:
    """`TokenVerifier.is_revoked`: one primary-key read per request."""

    async def is_revoked(claims: AccessClaims) -> bool:
        async with db.reading() as session:
            row = await session.get(UserAccess, claims.sub)
        if row is None:
            return False
        if row.status != "active":
            return True
        # iat is whole seconds: a token from the second of the change is refused too (log in again).
        return row.revoked_before is not None and claims.iat <= as_utc(row.revoked_before).timestamp()

    return is_revoked


async def _record(
    session: AsyncSession,
    user_id: str,
    clock: Clock,
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
    row.updated_at = clock.now()


def revocation_handlers(clock: Clock) -> dict[str, Callable[[AsyncSession, Envelope], Awaitable[None]]]:
    """Handlers for `identity.users`: what ends a user's tokens in billing."""

    async def disabled(session: AsyncSession, envelope: Envelope) -> None:
        event = envelope.event
        assert isinstance(event, UserDisabled)
        await _record(session, str(event.user_id), clock, status="disabled", revoke_at=event.disabled_at)

    async def enabled(session: AsyncSession, envelope: Envelope) -> None:
        event = envelope.event
        assert isinstance(event, UserEnabled)
        # Tokens from before the disabling stay refused: they were ended then.
        await _record(session, str(event.user_id), clock, status="active")

    async def grants_changed(session: AsyncSession, envelope: Envelope) -> None:
        event = envelope.event
        assert isinstance(event, UserGrantsChanged)
        await _record(session, str(event.user_id), clock, status=None, revoke_at=event.changed_at)

    async def deleted(session: AsyncSession, envelope: Envelope) -> None:
        event = envelope.event
        assert isinstance(event, UserDeleted)
        await _record(session, str(event.user_id), clock, status="deleted", revoke_at=event.deleted_at)

    return {
        UserDisabled.TYPE: disabled,
        UserEnabled.TYPE: enabled,
        UserGrantsChanged.TYPE: grants_changed,
        UserDeleted.TYPE: deleted,
    }
