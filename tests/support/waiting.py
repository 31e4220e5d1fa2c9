"""Waiting for a condition with a deadline: the only way tests wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class ConditionTimeout(AssertionError):
    pass


def wait_until(check: Callable[[], T | None], *, deadline_s: float, what: str, poll_s: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after the deadline."""
    deadline = time.monotonic() + deadline_s
    last: T | None = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise ConditionTimeout(f"timed out after {deadline_s:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(poll_s)


async def wait_until_async(
    check: Callable[[], Awaitable[T | None]], *, deadline_s: float, what: str, poll_s: float = 0.1
) -> T:
    deadline = time.monotonic() + deadline_s
    last: T | None = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise ConditionTimeout(f"timed out after {deadline_s:.0f}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(poll_s)
