"""How identity hashes and checks passwords (S7): argon2id with the parameters of its settings,
never weaker than OWASP's minimum (docs/security.md, Password hashing).

A password is checked with exactly one argon2 verification whether or not the login exists
(equal timing): a login without a hash is checked against a dummy hash made with the same
parameters. A right password whose hash was made with other parameters (an older default, or
settings changed since) gets a new hash, to be stored where the success is recorded."""

from __future__ import annotations

from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP Password Storage Cheat Sheet, argon2id: "a minimum configuration of 19 MiB of memory,
# an iteration count of 2, and 1 degree of parallelism".
OWASP_MEMORY_KIB = 19 * 1024
OWASP_TIME_COST = 2
OWASP_PARALLELISM = 1


def too_weak(*, memory_kib: int, time_cost: int, parallelism: int) -> str | None:
    """Why these parameters are refused, or None: each must be at least OWASP's minimum."""
    below = [
        f"{name}={value} is below {floor}"
        for name, value, floor in (
            ("password_hash_memory_kib", memory_kib, OWASP_MEMORY_KIB),
            ("password_hash_time_cost", time_cost, OWASP_TIME_COST),
            ("password_hash_parallelism", parallelism, OWASP_PARALLELISM),
        )
        if value < floor
    ]
    if not below:
        return None
    return (
        "password hashing is weaker than OWASP's minimum for argon2id (memory 19456 KiB, "
        f"time cost 2, parallelism 1): {'; '.join(below)}"
    )


@dataclass(frozen=True)
class PasswordCheck:
    """The outcome of one password check: whether it was right, and, when it was right and the
    stored hash has other parameters than the configured ones, the password's new hash."""

    right: bool
    new_hash: str | None = None


class PasswordHashing:
    """argon2id with fixed parameters (`IdentitySettings.password_hashing()`)."""

    def __init__(
        self,
        *,
        memory_kib: int = OWASP_MEMORY_KIB,
        time_cost: int = OWASP_TIME_COST,
        parallelism: int = OWASP_PARALLELISM,
    ) -> None:
        if weak := too_weak(memory_kib=memory_kib, time_cost=time_cost, parallelism=parallelism):
            raise ValueError(weak)
        self.memory_kib, self.time_cost, self.parallelism = memory_kib, time_cost, parallelism
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        # Same parameters as every new hash: checking a login without a hash costs the same.
        self.dummy_hash = self._hasher.hash("an unguessable dummy password to spend the same time")

    def __repr__(self) -> str:
        return f"PasswordHashing(m={self.memory_kib} KiB, t={self.time_cost}, p={self.parallelism})"

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Always one argon2 verification, whether or not there is a hash (equal timing)."""
        try:
            return self._hasher.verify(password_hash or self.dummy_hash, password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)

    def check(self, password_hash: str | None, password: str) -> PasswordCheck:
        """`verify`, and for a right password whose hash has other parameters, its new hash
        (one more argon2 hash, once per login whose parameters changed). Runs in a thread."""
        if not self.verify(password_hash, password):
            return PasswordCheck(right=False)
        assert password_hash is not None
        return PasswordCheck(right=True, new_hash=self.hash(password) if self.needs_rehash(password_hash) else None)
