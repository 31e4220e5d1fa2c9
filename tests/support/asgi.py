"""Serving an app to a test in-process, with its lifespan."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx


class AppTransport(httpx.ASGITransport):
    """httpx's ASGI transport that also runs the app's lifespan: started with the first request,
    ended when the client closes. The app's shutdown then closes its database connections, which
    would otherwise stay open until the process ends (a PostgreSQL server has only so many)."""

    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app=app, **kwargs)
        self._lifespan: AbstractAsyncContextManager[Any] | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._lifespan is None:
            self._lifespan = self.app.router.lifespan_context(self.app)
            await self._lifespan.__aenter__()
        return await super().handle_async_request(request)

    async def aclose(self) -> None:
        lifespan, self._lifespan = self._lifespan, None
        if lifespan is not None:
            await lifespan.__aexit__(None, None, None)
        await super().aclose()
