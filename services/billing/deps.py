"""What billing's routes take from the parts `bootstrap.build` made (`app.state.parts`), as
`Annotated` dependencies: the database, the use cases, the render slots and the caller."""

from typing import Annotated

import anyio
from fastapi import Depends, Header, Request

from services.billing.access import Access
from services.billing.bootstrap import BillingParts
from services.billing.changes import Changes
from services.billing.ordering import Ordering
from shared.db import Database
from shared.problems import Unauthenticated
from shared.tokens import TokenError, bearer_token

# Every dependency is `async def`: FastAPI runs a plain `def` dependency in a worker thread, a
# thread hand-off per dependency per request that cost more than most routes' own work.


async def parts(request: Request) -> BillingParts:
    built: BillingParts = request.app.state.parts
    return built


PartsDep = Annotated[BillingParts, Depends(parts)]


async def _db(p: PartsDep) -> Database:
    return p.db


async def _ordering(p: PartsDep) -> Ordering:
    return p.ordering


async def _changes(p: PartsDep) -> Changes:
    return p.changes


async def _user_renders(p: PartsDep) -> anyio.CapacityLimiter:
    return p.user_renders


async def current_access(p: PartsDep, authorization: Annotated[str | None, Header()] = None) -> Access:
    """The caller's `Access` from their bearer token, or 401 (also for a revoked session)."""
    token = bearer_token(authorization)
    try:
        claims = await p.verifier.verify(token, now=p.clock.now())
    except TokenError as exc:
        raise Unauthenticated(f"The access token is not accepted: {exc}. Log in again.") from exc
    return Access.of(claims)


DbDep = Annotated[Database, Depends(_db)]
OrderingDep = Annotated[Ordering, Depends(_ordering)]
ChangesDep = Annotated[Changes, Depends(_changes)]
UserRendersDep = Annotated[anyio.CapacityLimiter, Depends(_user_renders)]
Caller = Annotated[Access, Depends(current_access)]
# Where the request came from, for the audit trail (the proxy's client, where it is trusted).
