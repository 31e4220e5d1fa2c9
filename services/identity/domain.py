"""Identity's rules: usernames, activation codes and the password policy. No I/O here."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import cache
from importlib import resources

# Crockford's base32: no I, L, O or U, so nothing is mistaken when typed from a letter.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_GROUPS = 5
CODE_GROUP_LENGTH = 4
CODE_BITS = CODE_GROUPS * CODE_GROUP_LENGTH * 5  # 100 bits
_TYPED_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1"})


def generate_activation_code() -> str:
    """A random code of 100 bits, printed as `XXXX-XXXX-XXXX-XXXX-XXXX` (S2)."""
    chars = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_GROUPS * CODE_GROUP_LENGTH))
    return "-".join(chars[i : i + CODE_GROUP_LENGTH] for i in range(0, len(chars), CODE_GROUP_LENGTH))


def normalise_activation_code(typed: str) -> str:
    """What a person typed, in the canonical form: case, spaces, dashes and look-alikes forgiven."""
    compact = "".join(typed.split()).replace("-", "").upper().translate(_TYPED_ALIASES)
    if len(compact) != CODE_GROUPS * CODE_GROUP_LENGTH or any(c not in CODE_ALPHABET for c in compact):
        raise ValueError(
            f"an activation code has {CODE_GROUPS * CODE_GROUP_LENGTH} letters and digits, "
            "printed in groups of four as in the letter (XXXX-XXXX-XXXX-XXXX-XXXX)"
        )
    return "-".join(compact[i : i + CODE_GROUP_LENGTH] for i in range(0, len(compact), CODE_GROUP_LENGTH))


def hash_code(code: str) -> str:
    """A 100-bit random code needs no slow hash: SHA-256 cannot be reversed by guessing."""
    return hashlib.sha256(normalise_activation_code(code).encode()).hexdigest()


def code_matches(code: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_code(code), stored_hash)


def new_username(cvr: str) -> str:
    """`<cvr>-<four letters>`: readable, tied to the company, and not guessable from the CVR alone."""
    suffix = "".join(secrets.choice("abcdefghjkmnpqrstvwxyz23456789") for _ in range(4))
    return f"{cvr}-{suffix}"


def normalise_username(value: str) -> str:
    return value.strip().lower()


@cache
def _common_passwords() -> frozenset[str]:
    text = resources.files("services.identity").joinpath("common_passwords.txt").read_text()
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip())


def password_problem(password: str, *, username: str, min_length: int) -> str | None:
    """Why this password is refused, or None if it is acceptable."""
    if len(password) < min_length:
        return f"must be at least {min_length} characters long"
    if len(password) > 256:
        return "must be at most 256 characters long"
    lowered = password.lower()
    if lowered in _common_passwords():
        return "is one of the most common passwords; choose another"
    if username and username.lower() in lowered:
        return "must not contain the username"
    if len(set(password)) < 4:
        return "must not repeat so few characters"
    return None
