"""What a login is made of, and the events that tell of it: a username nobody has, an
activation code (S2, S5), and the login's events. The password's hash (argon2id) is
`services.identity.passwords`."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.domain import generate_activation_code, hash_code, new_username
from services.identity.models import ActivationCode, ContactChange, User, UserGrant
from shared.events import CredentialChanged, Grant, OtpRequested, UserCreated, UserDetailsChanged
from shared.sealing import SealedSecret, Sealer


async def unique_username(session: AsyncSession, cvr: str) -> str:
    while True:
        candidate = new_username(cvr)
        if await session.scalar(select(User.id).where(User.username == candidate)) is None:
            return candidate


async def issue_activation_code(
    session: AsyncSession, user_id: str, *, now: datetime, ttl: timedelta, new_login: bool = False
) -> tuple[str, datetime]:
    """A new single-use code for the user, stored only as its hash; earlier codes stop working
    (a `new_login`, made in this transaction, has none to look for). The login's
    `activation_expires_at` becomes the new code's expiry.

    Returns the code (to seal for its letter or email, never to store) and when it expires."""
    if not new_login:
        for old in await session.scalars(
            select(ActivationCode).where(
                ActivationCode.user_id == user_id, ActivationCode.revoked_at.is_(None)
            )
        ):
            old.revoked_at = now
    code = generate_activation_code()
    expires_at = now + ttl
    session.add(
        ActivationCode(
            id=str(uuid.uuid4()),
            user_id=user_id,
            code_hash=hash_code(code),
            created_at=now,
            expires_at=expires_at,
            failed_attempts=0,
        )
    )
    user = await session.get(User, user_id)
    if user is not None:
        user.activation_expires_at = expires_at
    return code, expires_at


def user_created(
    user: User,
    grants: list[UserGrant],
    *,
    application_id: uuid.UUID | None = None,
    activation_expires_at: datetime | None = None,
) -> UserCreated:
    """The `UserCreated` event of a new login, as stored."""
    return UserCreated(
        user_id=uuid.UUID(user.id),
        tenant_cvr=user.customer_cvr,
        username=user.username,
        name=user.name,
        email=user.email,
        mobile=user.mobile,
        role=user.role,  # type: ignore[arg-type]
        grants=[Grant(cvr=g.cvr, accounts=g.accounts) for g in grants],
        functions=list(user.functions),  # type: ignore[arg-type]
        application_id=application_id,
        activation_expires_at=activation_expires_at,
        created_at=user.created_at,
        language=user.language or "da",  # type: ignore[arg-type]
    )


def user_details_changed(user: User, *, by_user_id: str, at: datetime) -> UserDetailsChanged:
    """The `UserDetailsChanged` event of a login whose name, email, mobile or language changed,
    as stored."""
    return UserDetailsChanged(
        user_id=uuid.UUID(user.id),
        tenant_cvr=user.customer_cvr,
        name=user.name,
        email=user.email,
        mobile=user.mobile,
        by_user_id=uuid.UUID(by_user_id),
        changed_at=at,
        language=user.language or "da",  # type: ignore[arg-type]
    )


def code_requested(
    user: User,
    sealer: Sealer,
    *,
    challenge_id: uuid.UUID,
    purpose: str,
    channel: str,
    recipient: str,
    code: str | SealedSecret,
    expires_at: datetime,
) -> OtpRequested:
    """The `OtpRequested` event that has the notifier send `code` to `recipient` by `channel`, in
    the user's language (S7). The code is sealed for this challenge only: the bus and the
    notifier's store never hold it in the clear, and a sealed code replayed under another
    challenge does not open. A code already sealed for the challenge (a password reset seals
    before it knows whether a login matched, to do the same work either way) is taken as is."""
    if isinstance(code, str):
        code = sealer.seal(code, context=OtpRequested.sealing_context(challenge_id))
    return OtpRequested(
        user_id=uuid.UUID(user.id),
        challenge_id=challenge_id,
        purpose=purpose,  # type: ignore[arg-type]  # the event validates it
        channel=channel,  # type: ignore[arg-type]
        recipient=recipient,
        code=code,
        expires_at=expires_at,
        language=user.language or "da",  # type: ignore[arg-type]
    )


def credential_changed(
    user: User,
    change: Literal[
        "password_set",
        "authenticator_added",
        "second_factor_reset",
        "contact_details_changed",
        "password_reset",
        "password_changed",
    ],
    at: datetime,
) -> CredentialChanged:
    """The `CredentialChanged` event that tells the user, by email and in their language, of a
    change to their login."""
    return CredentialChanged(
        user_id=uuid.UUID(user.id),
        name=user.name,
        email=user.email,
        change=change,
        changed_at=at,
        language=user.language or "da",  # type: ignore[arg-type]
    )


def contact_details_changed(user: User, *, old_email: str, old_mobile: str, at: datetime) -> CredentialChanged:
    """The notice of a changed email or mobile number, addressed to where the login's codes went
    before (issue 10): the old email always, and the old mobile number by SMS too when that is
    what changed, so whoever holds the old number hears that codes no longer come to it."""
    notice = credential_changed(user, "contact_details_changed", at)
    mobile_changed = old_mobile != user.mobile
    return notice.model_copy(
        update={
            "email": old_email,
            "old_mobile": old_mobile if mobile_changed else None,
            "new_mobile": user.mobile if mobile_changed else None,
        }
    )


# Why a change of email or mobile still waiting for its code ended without it: the user took
# the login back (`withdraw_contact_changes`).
ContactChangeWithdrawal = Literal["password-changed", "password-reset", "second-factor-reset"]


async def withdraw_contact_changes(
    session: AsyncSession, user_id: str, reason: ContactChangeWithdrawal, at: datetime
) -> None:
    """End every change of the user's email or mobile still waiting for its code. A new
    password or a reset second factor is the user taking the login back, perhaps from whoever
    copied a token of theirs: a change that one started, with its code at an address of their
    own, must not be confirmable afterwards from any session."""
    await session.execute(
        update(ContactChange)
        .where(ContactChange.user_id == user_id, ContactChange.ended_at.is_(None))
        .values(ended_at=at, end_reason=reason)
        .execution_options(synchronize_session=False)
    )
