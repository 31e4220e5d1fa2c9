"""What identity's routes take: the parts `bootstrap.build` made (`app.state.parts`), the
caller's verified claims, the calling address and the rate limits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Request
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.activation import Activation
from services.identity.admin import Administration
from services.identity.audit import AuditTrail
from services.identity.bootstrap import IdentityParts
from services.identity.config import IdentitySettings
from services.identity.lockout import Lockout
from services.identity.login import Login
from services.identity.models import LoginSession, User
from services.identity.password_reset import PasswordResets
from services.identity.passwords import PasswordHashing
from services.identity.profile import OwnProfile
from services.identity.sessions import Sessions
from services.identity.support import Support
from shared.clock import Clock
from shared.db import Database
from shared.messaging import Outbox
from shared.problems import Unauthenticated
from shared.ratelimit import RateLimit, client_address, limited_party
from shared.sealing import Sealer
from shared.tokens import AccessClaims, TokenError, TokenSigner, bearer_token

# Every dependency is `async def`: FastAPI runs a plain `def` dependency in a worker thread, a
# thread hand-off per dependency per request that cost more than most routes' own work.


async def _parts(request: Request) -> IdentityParts:
    parts: IdentityParts = request.app.state.parts
    return parts


Parts = Annotated[IdentityParts, Depends(_parts)]


def _part(name: str) -> Any:
    async def part(parts: Parts) -> Any:
        return getattr(parts, name)

    part.__name__ = f"identity_{name}"
    return Depends(part)


DbDep = Annotated[Database, _part("db")]
SettingsDep = Annotated[IdentitySettings, _part("settings")]
ClockDep = Annotated[Clock, _part("clock")]
SealerDep = Annotated[Sealer, _part("sealer")]
SignerDep = Annotated[TokenSigner, _part("signer")]
PasswordsDep = Annotated[PasswordHashing, _part("passwords")]
OutboxDep = Annotated[Outbox, _part("outbox")]
AuditDep = Annotated[AuditTrail, _part("audit")]
SessionsDep = Annotated[Sessions, _part("sessions")]
LockoutDep = Annotated[Lockout, _part("lockout")]
LoginDep = Annotated[Login, _part("login")]
ActivationDep = Annotated[Activation, _part("activation")]
AdministrationDep = Annotated[Administration, _part("administration")]
SupportDep = Annotated[Support, _part("support")]
ProfileDep = Annotated[OwnProfile, _part("profile")]
ResetsDep = Annotated[PasswordResets, _part("resets")]
# The id of a challenge, a reset, a change, a user, a session or a takeover in a route's path.
PathId = Annotated[str, Path(max_length=36)]


async def current_claims(parts: Parts, authorization: Annotated[str | None, Header()] = None) -> AccessClaims:
    """The caller's claims, from a bearer token identity signed, of a session still live; else
    401 (also for a session that has ended)."""
    token = bearer_token(authorization)
    try:
        claims = parts.signer.verify(token, now=parts.clock.now())
    except TokenError as exc:
        raise Unauthenticated(f"The access token is not accepted: {exc}.") from exc
    async with parts.db.transaction() as session:
        if not await parts.sessions.is_live(session, claims.sid):
            raise Unauthenticated("The session of this access token has ended. Log in again.")
    return claims


Claims = Annotated[AccessClaims, Depends(current_claims)]


@dataclass(frozen=True)
class Caller:
    """For a route where the caller acts on their own login: in each transaction, their user
    and their session, both locked and the session live (`Sessions.caller`)."""

    claims: AccessClaims
    db: Database
    sessions: Sessions

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[tuple[AsyncSession, User, LoginSession]]:
        async with self.db.transaction() as session:
            user, live = await self.sessions.caller(session, self.claims)
            yield session, user, live


async def _caller(claims: Claims, parts: Parts) -> Caller:
    return Caller(claims, parts.db, parts.sessions)


CallerDep = Annotated[Caller, Depends(_caller)]


@dataclass(frozen=True)
class StaffCaller:
    """For a support route: in each transaction, the calling staff member (`Support.staff`)."""

    claims: AccessClaims
    db: Database
    support: Support

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[tuple[AsyncSession, User]]:
        async with self.db.transaction() as session:
            yield session, await self.support.staff(session, self.claims)


async def _staff_caller(claims: Claims, parts: Parts) -> StaffCaller:
    return StaffCaller(claims, parts.db, parts.support)


StaffDep = Annotated[StaffCaller, Depends(_staff_caller)]


def _rate_limited(limit: str) -> Callable[[Request], Awaitable[None]]:
    async def rate_limited(request: Request) -> None:
        limiter: RateLimit = getattr((await _parts(request)).limits, limit)
        await limiter.check(limited_party(client_address(request)))

    rate_limited.__name__ = f"identity_rate_limited_{limit}"
    return rate_limited


# For a route's `dependencies=[...]`: each counts the calling address against its own limit
# (in identity's database: every instance of the API counts against the same budget).
LoginRateLimit = Depends(_rate_limited("login"))
ActivationRateLimit = Depends(_rate_limited("activation"))
PasswordResetRateLimit = Depends(_rate_limited("password_reset"))
CancelLinkRateLimit = Depends(_rate_limited("cancel_link"))
