"""What the notifier's routes depend on, read from the parts the app was built with
(`app.state.parts`, `bootstrap.build`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from services.notifier.bootstrap import NotifierParts
from services.notifier.config import NotifierSettings
from shared.db import Database
from shared.staff import staff_bearer
from shared.tokens import AccessClaims


def _parts(request: Request) -> NotifierParts:
    parts: NotifierParts = request.app.state.parts
    return parts


PartsDep = Annotated[NotifierParts, Depends(_parts)]


def _db(parts: PartsDep) -> Database:
    return parts.db


def _settings(parts: PartsDep) -> NotifierSettings:
    return parts.settings


async def _current_staff(
    request: Request, parts: PartsDep, authorization: Annotated[str | None, Header()] = None
) -> AccessClaims:
    return await staff_bearer(parts.verifier, parts.clock)(request, authorization)


DbDep = Annotated[Database, Depends(_db)]
SettingsDep = Annotated[NotifierSettings, Depends(_settings)]
# A support login's claims: 401 without a valid token, 403 for a customer's (`shared.staff`).
CurrentStaff = Annotated[AccessClaims, Depends(_current_staff)]
