"""Per-client rate limits for public endpoints, answered with 429 and Retry-After, whose state
is in the service's own database so that they hold across every instance of its API
(docs/operations.md, "Shared rate limits")."""

from __future__ import annotations

import hashlib
import ipaddress
import math
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, NoReturn, cast

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
    bindparam,
    delete,
    func,
    insert,
    select,
)

# FastAPI's Request is Starlette's (`fastapi.Request` is this very class): importing FastAPI
# itself here would load all of it (~7 MB) into every worker whose models hold a rate limit
# table. The route dependency `ClientAddress` is in `shared.web`, with the rest of the HTTP shape.
from starlette.requests import Request

from shared.clock import Clock, as_utc
from shared.db import Database, lock_for_transaction
from shared.metrics import RATE_LIMITED
from shared.problems import TooManyRequests

RATE_LIMIT_WINDOW = timedelta(seconds=60)
PURGE_INTERVAL = timedelta(seconds=60)  # how often each process deletes the rows that no longer count
PURGE_BATCH = 1000  # rows a purge deletes at most, so that it never holds the database long
PARTY_LENGTH = 64
FULL_PARTIES_KEPT = 10_000  # parties found full that a process remembers (purged with the rows)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix


_FOUND_FULL = object()


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
    60 seconds old, rounded up.

    A request is counted by one statement in a short transaction of its own, before the
    route's: an INSERT of its row that takes place only while fewer than `per_minute` rows
    count (`INSERT … SELECT … WHERE`), serialised per (limit, party): on PostgreSQL by a
    transaction-scoped advisory lock (`shared.db.lock_for_transaction`) taken first, on SQLite
    by its single writer. So N instances together accept exactly `per_minute` a minute, however
    the requests are spread over them and however many arrive at once. Only a refusal reads the
    counted rows, for its `Retry-After`.

    A party this process found full is remembered until its oldest counted request ages out
    (a counted request stays counted until then, so it stays full), and its next requests are
    first checked by a read that takes no lock (`Database.read_by_key`): a flood of refusals
    neither queues on the writer nor on the party's lock. The read decides, not the memory, so
    rows deleted by hand (`DELETE FROM rate_limit_hits`) forgive at once here too.

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
        # Parties found full, with when their oldest counted request frees a place.
        self._full_until: dict[str, datetime] = {}
        # The statements, built once (their cache keys are computed once too): the parameters
        # are the limit's name, the party, the time and the start of the window.
        hits = table.c
        counted = (
            hits.limit_name == bindparam("name"),
            hits.party == bindparam("party"),
            hits.at > bindparam("since"),
        )
        newest = select(hits.at).where(*counted).order_by(hits.at.desc()).limit(max(per_minute, 1))
        self._counted = newest
        room = select(func.count()).select_from(newest.subquery()).scalar_subquery() < max(per_minute, 1)
        self._log_if_room = insert(table).from_select(
            ["limit_name", "party", "at"],
            select(
                bindparam("name", type_=hits.limit_name.type),
                bindparam("party", type_=hits.party.type),
                bindparam("at", type_=hits.at.type),
            ).where(room),
        )

    async def check(self, party: str) -> None:
        """Count one request of `party`, or refuse it: 429 problem+json with `Retry-After`."""
        if self.per_minute <= 0:
            return
        key = stored_party(party)
        now = self._clock.now()
        params = {"name": self.name, "party": key, "at": now, "since": now - RATE_LIMIT_WINDOW}
        if self._known_full(key, now):
            await self._refuse_if_full(params)
        counted = await self._count(params)
        if counted is _FOUND_FULL:  # another request of this process found it full meanwhile
            await self._refuse_if_full(params)
            counted = await self._count(params, again=True)
        if self._next_purge is None or now >= self._next_purge:
            await self._purge(now)
        if isinstance(counted, datetime):
            self._refuse(key, counted, now)

    def _known_full(self, key: str, now: datetime) -> bool:
        until = self._full_until.get(key)
        if until is None:
            return False
        if until <= now:
            del self._full_until[key]
            return False
        return True

    async def _refuse_if_full(self, params: dict[str, Any]) -> None:
        """Refuse from a read that takes no lock if the party is full; else return."""
        counted = [row[0] for row in await self._db.read_by_key(self._counted, params)]
        if len(counted) >= self.per_minute:
            self._refuse(params["party"], counted[-1], params["at"])
        self._full_until.pop(params["party"], None)

    async def _count(self, params: dict[str, Any], *, again: bool = False) -> datetime | object | None:
        """Log the request if the party has room: None. Else the time of the oldest of its
        newest `per_minute` requests (nothing logged), or `_FOUND_FULL` when, while this request
        waited for the writer, another one of this process found the party full."""
        async with self._db.transaction() as session:
            if not again and self._known_full(params["party"], params["at"]):
                return _FOUND_FULL  # before any statement: the transaction holds no connection
            await lock_for_transaction(session, f"rate-limit:{self.name}", params["party"])
            # Only another instance's purge can take counted rows meanwhile (one whose clock is
            # ahead of this one's): then the INSERT runs again, and finds the room.
            for _ in range(3):
                result = await session.execute(self._log_if_room, params)
                if cast(CursorResult[Any], result).rowcount == 1:
                    return None
                counted = list(await session.scalars(self._counted, params))
                if len(counted) >= self.per_minute:
                    return counted[-1]
        raise RuntimeError(f"rate limit {self.name}: no room, yet only {len(counted)} requests count")

    def _refuse(self, key: str, oldest: datetime, now: datetime) -> NoReturn:
        """429: the oldest of the newest `per_minute` requests frees a place when it ages out."""
        frees_at = as_utc(oldest) + RATE_LIMIT_WINDOW
        if key in self._full_until or len(self._full_until) < FULL_PARTIES_KEPT:
            self._full_until[key] = frees_at
        retry_after = max(1, math.ceil((frees_at - now).total_seconds()))
        RATE_LIMITED.labels(limit=self.name).inc()
        raise TooManyRequests(
            f"Too many {self.what} from this address; try again in {retry_after} seconds.",
            retry_after=retry_after,
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
        self._full_until = {key: until for key, until in self._full_until.items() if until > now}

    def dependency(self) -> Callable[[Request], Awaitable[None]]:
        """A FastAPI dependency that applies this limit to the calling address: its
        `limited_party` (an IPv6 address's /64) as `client_address` gives it."""

        async def rate_limited(request: Request) -> None:
            await self.check(limited_party(client_address(request)))

        rate_limited.__name__ = f"rate_limited_{self.name}"
        return rate_limited
