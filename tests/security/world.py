"""A company group with logins of any access, made straight in identity's database, and
access tokens for them: the security tests' ground, built in milliseconds per login."""

from __future__ import annotations

import uuid
from datetime import timedelta
from functools import cache
from typing import Literal

from sqlalchemy import select

from services.identity.config import IdentitySettings
from services.identity.models import Company, LoginSession, Tenant, User, UserGrant
from services.identity.passwords import PasswordHashing
from shared.clock import FrozenClock
from shared.db import Database
from tests.integration.test_activation import PASSWORD

PARENT, SUBSIDIARY, OTHER_TENANT = "35657193", "37826111", "22109340"
ACCOUNTS = {
    PARENT: ["10000011", "10000012"],
    SUBSIDIARY: ["10000021", "10000022"],
    OTHER_TENANT: ["10000051"],
}

Accounts = Literal["all"] | list[str]


@cache
def password_hash() -> str:
    return PasswordHashing().hash(PASSWORD)  # identity's default parameters


async def company_group(db: Database, clock: FrozenClock) -> None:
    """The parent with one subsidiary (a tenant), and a standalone company (another tenant)."""
    async with db.transaction() as session:
        for cvr, parent in ((PARENT, None), (SUBSIDIARY, PARENT), (OTHER_TENANT, None)):
            session.add(
                Company(cvr=cvr, name=f"Firma {cvr}", parent_cvr=parent, account_numbers=ACCOUNTS[cvr])
            )
        for cvr in (PARENT, OTHER_TENANT):
            session.add(Tenant(cvr=cvr, name=f"Firma {cvr}", created_at=clock.now()))


async def add_user(
    db: Database,
    clock: FrozenClock,
    *,
    grants: dict[str, Accounts],
    functions: list[str],
    role: str = "user",
    status: str = "active",
    tenant: str | None = PARENT,
    name: str | None = None,
) -> User:
    """A login with exactly this access; active ones have the password `PASSWORD`."""
    user_id = str(uuid.uuid4())
    user = User(
        id=user_id,
        tenant_cvr=tenant,
        username=f"{tenant or 'staff'}-{user_id[:8]}",
        name=name or f"Bruger {user_id[:4]}",
        email=f"u{user_id[:8]}@nordlys.example",
        mobile="+4520304050",
        role=role,
        status=status,
        functions=sorted(functions),
        password_hash=password_hash() if status != "pending" else None,
        created_at=clock.now(),
        activated_at=clock.now() if status != "pending" else None,
    )
    async with db.transaction() as session:
        session.add(user)
        await session.flush()
        for cvr, accounts in grants.items():
            grant = UserGrant.of(cvr, accounts)
            grant.user_id = user_id
            session.add(grant)
    return user


async def group_administrator(db: Database, clock: FrozenClock) -> User:
    """The group's administrator (role `administrator`): the whole group, user administration."""
    return await add_user(
        db,
        clock,
        grants={PARENT: "all", SUBSIDIARY: "all"},
        functions=["invoices", "user_admin"],
        role="administrator",
    )


async def bearer(db: Database, clock: FrozenClock, settings: IdentitySettings, user: User) -> dict[str, str]:
    """An access token for `user` with a live session, as a two-factor login would give."""
    session_id = str(uuid.uuid4())
    async with db.transaction() as session:
        session.add(
            LoginSession(
                id=session_id,
                user_id=user.id,
                created_at=clock.now(),
                expires_at=clock.now() + timedelta(hours=12),
            )
        )
        grants = [
            {"cvr": g.cvr, "accounts": g.accounts}
            for g in await session.scalars(select(UserGrant).where(UserGrant.user_id == user.id))
        ]
    token = settings.signer().sign(
        subject=user.id,
        session_id=session_id,
        tenant=user.tenant_cvr,
        role=user.role,
        grants=grants,
        functions=list(user.functions),
        now=clock.now(),
        lifetime=timedelta(minutes=5),
    )
    return {"Authorization": f"Bearer {token}"}
