"""Support staff at the support endpoints of the services other than identity (S3, S13).

Identity marks a support login in its access tokens as identity's own support routes know it
(`services/identity/support.py`, `Support.staff`): the role `support`, and no company (the
claim `tenant` is null, and the token grants no company). A service that has no copy of
identity's logins decides from the verified token alone, nothing else the request says.

What this gives up: a support login that identity disables, deletes or logs out keeps its
access tokens here until they expire (at most `ADGANG_IDENTITY_ACCESS_TOKEN_TTL`, 5 minutes by
default). The routes that use it only read; every change support makes goes through identity,
which checks the login in its database on each request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from shared.clock import Clock
from shared.problems import Forbidden, Unauthenticated
from shared.ratelimit import client_address
from shared.tokens import AccessClaims, TokenError, TokenVerifier, bearer_token

if TYPE_CHECKING:
    from starlette.requests import Request

SUPPORT_ROLE = "support"

log = logging.getLogger(__name__)


class StaffOnly(Forbidden):
    type_suffix = "support-staff-only"
    title = "Only support staff may do this"


def is_support_staff(claims: AccessClaims) -> bool:
    """Whether a verified token is a support login's: role `support`, and no company."""
    return claims.role == SUPPORT_ROLE and claims.tenant is None and not claims.grants


def staff_bearer(verifier: TokenVerifier, clock: Clock) -> Callable[..., Awaitable[AccessClaims]]:
    """The check behind a service's `CurrentStaff` dependency (its `deps.py`, which declares the
    `Authorization` header): the claims of a support login's access token; 401 without a valid
    token, 403 for a customer's. Each answer to staff is logged with the staff login's id and
    the client address, so that what support looked at can be traced (S13).

    Not a FastAPI dependency itself, so that a worker that builds its service's parts (which
    hold this check) loads no FastAPI (~7 MB): `Request` is a name for type checkers only, and
    FastAPI refuses to register the function as a dependency rather than read the token from
    a query parameter."""

    async def current_staff(request: Request, authorization: str | None = None) -> AccessClaims:
        token = bearer_token(authorization)
        try:
            claims = await verifier.verify(token, now=clock.now())
        except TokenError as exc:
            raise Unauthenticated(f"The access token is not accepted: {exc}. Log in again.") from exc
        if not is_support_staff(claims):
            raise StaffOnly("Only support staff can use this. Customers' logins cannot.")
        log.info(
            "support staff %s: %s %s from %s",
            claims.sub,
            request.method,
            request.url.path,
            client_address(request),
        )
        return claims

    return current_staff
