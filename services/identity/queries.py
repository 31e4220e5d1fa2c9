"""Reads more than one of identity's use cases and routes make."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.models import UserGrant


async def grants_of(session: AsyncSession, user_id: str) -> list[UserGrant]:
    """The companies (and accounts) a login holds."""
    return list(await session.scalars(select(UserGrant).where(UserGrant.user_id == user_id)))
