"""A per-client rate limit for public endpoints, answered with 429 and Retry-After."""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from shared.problems import TooManyRequests


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


# The caller's address as a route dependency (audit entries and per-address limits name it).
ClientAddress = Annotated[str, Depends(client_address)]


def limited_party(address: str) -> str:
    """Whom a per-address limit counts: an IPv4 address, but an IPv6 address's /64 network.
    A provider hands each customer a whole /64, so counting single IPv6 addresses would give
    one caller 2^64 budgets."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class SlidingWindowLimiter:
    """Per-client limit in a sliding minute; in memory, per API process."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._hits: dict[str, deque[float]] = {}

    def check(self, client: str, what: str = "requests") -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        hits = self._hits.setdefault(client, deque())
        while hits and now - hits[0] > 60:
            hits.popleft()
        if len(hits) >= self.per_minute:
            retry_after = max(1, int(60 - (now - hits[0])) + 1)
            raise TooManyRequests(
                f"Too many {what} from this address; try again in {retry_after} seconds.",
                retry_after=retry_after,
            )
        hits.append(now)
        if len(self._hits) > 10_000:  # keep memory bounded under a flood of addresses
            self._hits = {k: v for k, v in self._hits.items() if v and now - v[-1] <= 60}

    def dependency(self, what: str) -> Callable[[Request], None]:
        """A FastAPI dependency that applies this limit to the calling address (`client_address`)."""

        def rate_limited(request: Request) -> None:
            self.check(limited_party(client_address(request)), what)

        return rate_limited
