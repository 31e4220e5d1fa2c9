"""Who is calling: the bearer access token, checked against identity's own keys and sessions."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Header

from services.identity.login import Login
from shared.db import Database
from shared.problems import Unauthenticated
from shared.tokens import AccessClaims, TokenError, bearer_token


def bearer_claims(db: Database, login: Login) -> Callable[..., Awaitable[AccessClaims]]:
    """A FastAPI dependency: the caller's claims, or 401 (also for a session that has ended)."""

    async def current_claims(authorization: Annotated[str | None, Header()] = None) -> AccessClaims:
        token = bearer_token(authorization)
        try:
            claims = login.signer.verify(token, now=login.clock.now())
        except TokenError as exc:
            raise Unauthenticated(f"The access token is not accepted: {exc}.") from exc
        async with db.transaction() as session:
            if not await login.session_is_live(session, claims.sid):
                raise Unauthenticated("The session of this access token has ended. Log in again.")
        return claims

    return current_claims
