"""Who may see and do what in billing, taken from the caller's access token (S5.4–S5.6, S14)
and applied in the SQL itself, so a row outside the caller's grants is never read.

A grant is a company (CVR) with either all its accounts or a list of them. The token's grants
are the truth for its five minutes; `identity.users` tells billing at once when a user is
disabled, deleted or re-granted, or when one session ends (logout, a reused refresh token), and
`revocations.py` then refuses the older tokens, or the session's (S12).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import (
    ColumnElement,
    SQLColumnExpression,
    and_,
    false,
    func,
    or_,
    select,
)
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession

from shared.problems import Forbidden
from shared.tokens import AccessClaims

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
