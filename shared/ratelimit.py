"""Per-client rate limits for public endpoints, answered with 429 and Retry-After, whose state
is in the service's own database so that they hold across every instance of its API
(docs/operations.md, "Shared rate limits")."""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, cast

from fastapi import Depends, Request
from sqlalchemy import (
    BigInteger,
    Column,
    CursorResult,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from shared.clock import Clock, as_utc
from shared.db import Database, lock_for_transaction
from shared.metrics import RATE_LIMITED
from shared.problems import TooManyRequests

RATE_LIMIT_WINDOW = timedelta(seconds=60)
PURGE_INTERVAL = timedelta(seconds=60)  # how often each process deletes the rows that no longer count
PURGE_BATCH = 1000  # rows a purge deletes at most, so that it never holds the database long
PARTY_LENGTH = 64
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix


def client_address(request: Request) -> str:
    """The caller's address, as the server established it: `request.client`.

    One mechanism decides who the caller is, and it is the server's: `shared.web.server_config`
    runs uvicorn with proxy headers on only when the service's `trust_forwarded_for` is set,
    and believes `X-Forwarded-For` only from a peer listed in `trusted_proxies`; it takes the
    nearest address the proxies did not add themselves, so a client cannot choose its address
    by sending the header through the proxy either. Rate limits, audit records and the access
    log therefore all see the same address. Reading the header here as well would believe it
    from any peer, which is how a rotating `X-Forwarded-For` escaped the limits.
    """
    return request.client.host if request.client else "unknown"


async def _client_address(request: Request) -> str:
    """`client_address` as a dependency: `async`, or FastAPI would run it in a worker thread."""
    return client_address(request)


# The caller's address as a route dependency (audit entries and per-address limits name it).
ClientAddress = Annotated[str, Depends(_client_address)]


def limited_party(address: str) -> str:
    """Whom a per-address limit counts: an IPv4 address, but an IPv6 address's /64 network.
    A provider hands each customer a whole /64, so counting single IPv6 addresses would give
    one caller 2^64 budgets."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv6 address that carries an IPv4 one is that IPv4 party: mapped, 6to4 (whose
        # /48 would give one IPv4 address 65,536 budgets) and NAT64's well-known prefix
        # (whose /64 would put every IPv4 client in one budget).
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            return str(ip.sixtofour)
        if ip in _NAT64:
            return str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def stored_party(party: str) -> str:
    """The party as the table keeps it: as it is, or, when longer than the column (no address
    is; a server's odd client name could be), a digest of it."""
    if len(party) <= PARTY_LENGTH:
        return party
    return "sha256:" + hashlib.sha256(party.encode()).hexdigest()[: PARTY_LENGTH - 7]


def rate_limit_table(metadata: MetaData) -> Table:
    """The log of accepted requests of a service's limits, in its metadata (`models.py`): one row
    per accepted request, kept while it counts (60 seconds) and purged after."""
    return Table(
        "rate_limit_hits",
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("limit_name", String(40), nullable=False),
        Column("party", String(PARTY_LENGTH), nullable=False),
        Column("at", DateTime(timezone=True), nullable=False),
        Index("ix_rate_limit_hits_limit_party_at", "limit_name", "party", "at"),
        Index("ix_rate_limit_hits_at", "at"),
    )


class RateLimit:
    """A per-party limit of `per_minute` requests in any 60 seconds, shared by every instance of
    the service's API: its state is the service's own database (`rate_limit_hits`).

    The rule is exact, a sliding log: a request is accepted when fewer than `per_minute` accepted
    requests of the same party and limit are younger than 60 seconds, and then it is logged;
    a refused request is not logged (a caller that keeps trying gets in again as its oldest
    request ages out). `Retry-After` is the time until the oldest of the counted requests is
    60 seconds old, rounded up. The check and the log of a request run in one short transaction
    of their own, before the route's (a party already full is refused from a read without it),
    serialised per (limit, party): on PostgreSQL by a transaction-scoped advisory lock
    (`shared.db.lock_for_transaction`), on SQLite by its single writer. So N instances together accept exactly `per_minute` a minute, however the requests
    are spread over them and however many arrive at once.

    The table stays bounded: at most once a purge interval per process, or at once again after
    a purge that filled its batch, a request also deletes up to `PURGE_BATCH` rows older than
    the window, found through the index on `at` (never a scan of the table). Times come from
    the service's clock, so tests move them.
    """

    def __init__(
        self, name: str, per_minute: int, *, db: Database, table: Table, clock: Clock, what: str = "requests"
    ) -> None:
        self.name = name
        self.per_minute = per_minute
        self.what = what
        self._db = db
        self._table = table
        self._clock = clock
        self._next_purge: datetime | None = None

    async def check(self, party: str) -> None:
        """Count one request of `party`, or refuse it: 429 problem+json with `Retry-After`."""
        if self.per_minute <= 0:
            return
        key = stored_party(party)
        now = self._clock.now()
        # A party past its limit is refused from a read that takes no lock (a counted request
        # stays counted until it ages out, so a snapshot that is full is full now): a flood of
        # refusals neither queues on the writer nor on the party's lock.
        async with self._db.reading() as session:
            counted = await self._counted(session, key, now)
        full = len(counted) >= self.per_minute
        if not full:
            async with self._db.transaction() as session:
                await lock_for_transaction(session, f"rate-limit:{self.name}", key)
                counted = await self._counted(session, key, now)
                full = len(counted) >= self.per_minute
                if not full:
                    await session.execute(insert(self._table).values(limit_name=self.name, party=key, at=now))
        if self._next_purge is None or now >= self._next_purge:
            await self._purge(now)
        if full:
            # The oldest of the newest `per_minute` requests frees a place when it ages out.
            frees_at = as_utc(counted[-1]) + RATE_LIMIT_WINDOW
            retry_after = max(1, math.ceil((frees_at - now).total_seconds()))
            RATE_LIMITED.labels(limit=self.name).inc()
            raise TooManyRequests(
                f"Too many {self.what} from this address; try again in {retry_after} seconds.",
                retry_after=retry_after,
            )

    async def _counted(self, session: AsyncSession, key: str, now: datetime) -> list[datetime]:
        """The times of the party's newest requests that still count, at most `per_minute`."""
        hits = self._table.c
        return list(
            await session.scalars(
                select(hits.at)
                .where(hits.limit_name == self.name, hits.party == key, hits.at > now - RATE_LIMIT_WINDOW)
                .order_by(hits.at.desc())
                .limit(self.per_minute)
            )
        )

    async def _purge(self, now: datetime) -> None:
        """Delete up to `PURGE_BATCH` rows of every limit of this table that no longer count.
        Rows another instance is purging at the same moment are skipped (PostgreSQL), not waited for."""
        hits = self._table.c
        expired = (
            select(hits.id)
            .where(hits.at <= now - RATE_LIMIT_WINDOW)
            .order_by(hits.at)
            .limit(PURGE_BATCH)
            .with_for_update(skip_locked=True)
        )
        async with self._db.transaction() as session:
            result = await session.execute(delete(self._table).where(hits.id.in_(expired.scalar_subquery())))
        deleted = cast(CursorResult[Any], result).rowcount
        self._next_purge = now if deleted >= PURGE_BATCH else now + PURGE_INTERVAL

    def dependency(self) -> Callable[[Request], Awaitable[None]]:
        """A FastAPI dependency that applies this limit to the calling address: its
        `limited_party` (an IPv6 address's /64) as `client_address` gives it."""

        async def rate_limited(request: Request) -> None:
            await self.check(limited_party(client_address(request)))

        rate_limited.__name__ = f"rate_limited_{self.name}"
        return rate_limited
