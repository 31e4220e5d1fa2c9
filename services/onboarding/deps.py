"""What onboarding's routes depend on, read from the parts the app was built with
(`app.state.parts`, `services.onboarding.bootstrap`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from services.onboarding.bootstrap import OnboardingParts
from services.onboarding.service import Applications
from shared.tokens import AccessClaims


def parts_of(request: Request) -> OnboardingParts:
    parts: OnboardingParts = request.app.state.parts
    return parts


async def applications(request: Request) -> Applications:
    # async: FastAPI runs a plain `def` dependency in a worker thread, a thread switch a request.
    return parts_of(request).applications


async def current_staff(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> AccessClaims:
    """A support login's verified token (S3, S13): 401 without one, 403 for a customer's."""
    return await parts_of(request).current_staff(request, authorization)


async def rate_limited(request: Request) -> None:
    """The public form's per-address limit: 429 with `Retry-After` past it."""
    await parts_of(request).rate_limited(request)


ApplicationsDep = Annotated[Applications, Depends(applications)]
CurrentStaff = Annotated[AccessClaims, Depends(current_staff)]
