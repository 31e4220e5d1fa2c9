"""Serving an app to a test in-process, with its lifespan."""

from __future__ import annotations

import asyncio
import weakref
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class _Running:
    """An app's lifespan while any of its transports is open: a server runs it once for all
    its clients, not once for each."""

    lifespan: AbstractAsyncContextManager[Any] | None = None
    transports: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


_RUNNING: weakref.WeakKeyDictionary[Any, _Running] = weakref.WeakKeyDictionary()


class AppTransport(httpx.ASGITransport):
    """httpx's ASGI transport that also runs the app's lifespan: started with the first request
    of the app's first open transport, ended when its last open transport closes. The app's
    shutdown then closes its database connections, which would otherwise stay open until the
    process ends (a PostgreSQL server has only so many), and identity's password threads. A
    transport closing while another of the same app still sends requests (clients of several
    addresses at once) leaves the app running."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app=app, **kwargs)
        self._running: _Running | None = None  # joined

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._running is None:
            running = _RUNNING.setdefault(self.app, _Running())
            async with running.lock:
                if running.transports == 0:
                    running.lifespan = self.app.router.lifespan_context(self.app)
                    await running.lifespan.__aenter__()
                running.transports += 1
                self._running = running
        return await super().handle_async_request(request)

    async def aclose(self) -> None:
        running, self._running = self._running, None
        if running is not None:
            async with running.lock:  # a transport joining meanwhile starts the app again after
                running.transports -= 1
                if running.transports == 0 and running.lifespan is not None:
                    lifespan, running.lifespan = running.lifespan, None
                    await lifespan.__aexit__(None, None, None)
        await super().aclose()
