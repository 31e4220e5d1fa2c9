"""A per-client rate limit for public endpoints, answered with 429 and Retry-After."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from fastapi import Request

from shared.problems import TooManyRequests


def client_address(request: Request, *, trust_forwarded_for: bool) -> str:
    """The caller's address; X-Forwarded-For only behind a proxy that sets it."""
    if trust_forwarded_for and (forwarded := request.headers.get("x-forwarded-for")):
        return forwarded.split(",")[0].strip()
    return request.client.host if request.client else "unknown"


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

    def dependency(self, what: str, *, trust_forwarded_for: bool) -> Callable[[Request], None]:
        """A FastAPI dependency that applies this limit to the calling address."""

        def rate_limited(request: Request) -> None:
            self.check(client_address(request, trust_forwarded_for=trust_forwarded_for), what)

        return rate_limited
