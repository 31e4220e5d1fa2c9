"""TOTP (RFC 6238) as a second factor, and one-time recovery codes (S7).

30-second steps, one step of drift either way, and a code is accepted once: the step of the
last accepted code is kept, and a code from that step or an earlier one is refused. The
secret is sealed at rest with the sealing key ring, so a copy of the database alone does not
give anyone a user's authenticator. Recovery codes are kept as keyed hashes from the same ring,
for the same reason.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import datetime

import pyotp
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.domain import CODE_ALPHABET
from services.identity.models import RecoveryCode, User
from shared.problems import Problem
from shared.sealing import SealedSecret, Sealer

ISSUER = "Adgang Selvbetjening"
RECOVERY_CODES = 10


def _context(user_id: str) -> str:
    return f"totp:{user_id}"


def seal_secret(sealer: Sealer, user_id: str, secret: str) -> str:
    return sealer.seal(secret, context=_context(user_id)).model_dump_json()


def unseal_secret(sealer: Sealer, user_id: str, sealed: str) -> str:
    return sealer.unseal(SealedSecret.model_validate_json(sealed), context=_context(user_id))


def start_enrolment(user: User, sealer: Sealer) -> tuple[str, str]:
    """A new secret, pending until a code from it is confirmed; returns (secret, otpauth URI)."""
    secret = pyotp.random_base32()
    user.totp_pending_secret = seal_secret(sealer, user.id, secret)
    uri = pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name=ISSUER)
    return secret, uri


def _timecode(secret: str, code: str, now: datetime) -> int | None:
    try:
        return int(pyotp.TOTP(secret).verify_and_get_timecode(code, for_time=now, valid_window=1))
    except (pyotp.exceptions.OTPVerificationError, ValueError):
        return None


async def confirm_enrolment(
    session: AsyncSession, user: User, code: str, sealer: Sealer, now: datetime
) -> list[str] | None:
    """Turn TOTP on when the code fits the pending secret; returns the new recovery codes."""
    if user.totp_pending_secret is None:
        return None
    secret = unseal_secret(sealer, user.id, user.totp_pending_secret)
    step = _timecode(secret, code, now)
    if step is None:
        return None
    user.totp_secret, user.totp_pending_secret = user.totp_pending_secret, None
    user.totp_enabled_at, user.totp_last_timecode = now, step
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = [new_recovery_code() for _ in range(RECOVERY_CODES)]
    session.add_all(
        RecoveryCode(
            id=str(uuid.uuid4()), user_id=user.id, code_hash=_digest(sealer, user.id, c), created_at=now
        )
        for c in codes
    )
    return codes


def accept_totp(user: User, code: str, sealer: Sealer, now: datetime) -> bool:
    """True for a fresh code of the user's authenticator; records its step against replay."""
    if user.totp_secret is None:
        return False
    step = _timecode(unseal_secret(sealer, user.id, user.totp_secret), code, now)
    if step is None or (user.totp_last_timecode is not None and step <= user.totp_last_timecode):
        return False
    user.totp_last_timecode = step
    return True


def new_recovery_code() -> str:
    """Ten characters of the activation-code alphabet, `XXXXX-XXXXX`: 50 bits."""
    chars = "".join(secrets.choice(CODE_ALPHABET) for _ in range(10))
    return f"{chars[:5]}-{chars[5:]}"


def normalise_recovery_code(typed: str) -> str | None:
    compact = "".join(typed.split()).replace("-", "").upper().translate(str.maketrans("OIL", "011"))
    if len(compact) != 10 or any(c not in CODE_ALPHABET for c in compact):
        return None
    return f"{compact[:5]}-{compact[5:]}"


def _digest(sealer: Sealer, user_id: str, code: str) -> str:
    return sealer.digest(code, context=f"recovery-code:{user_id}")


def _unkeyed_digest(user_id: str, code: str) -> str:
    """How recovery codes were hashed before they were keyed: such codes keep working until
    they are used or the authenticator is enrolled again."""
    return hashlib.sha256(f"{user_id}:{code}".encode()).hexdigest()


async def use_recovery_code(
    session: AsyncSession, user: User, typed: str, sealer: Sealer, now: datetime
) -> bool:
    code = normalise_recovery_code(typed)
    if code is None:
        return False
    unkeyed = _unkeyed_digest(user.id, code)
    unused = await session.scalars(
        select(RecoveryCode).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
    )
    for candidate in unused:
        if sealer.digest_matches(
            code, candidate.code_hash, context=f"recovery-code:{user.id}"
        ) or hmac.compare_digest(candidate.code_hash, unkeyed):
            candidate.used_at = now
            return True
    return False


class TotpNotStarted(Problem):
    status = 409
    type_suffix = "totp-not-started"
    title = "No authenticator enrolment is under way"
