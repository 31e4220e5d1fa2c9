"""Identity's rules: usernames, activation codes and the password policy. No I/O here."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Literal

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


def token_digest(token: str) -> str:
    """What is kept of a 256-bit token (a refresh token, a trusted device's): its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_username(cvr: str) -> str:
    """`<cvr>-<four letters>`: readable, tied to the company, and not guessable from the CVR alone."""
    suffix = "".join(secrets.choice("abcdefghjkmnpqrstvwxyz23456789") for _ in range(4))
    return f"{cvr}-{suffix}"


def normalise_username(value: str) -> str:
    return value.strip().lower()


USERNAME_MAX_LENGTH = 64  # users.username
# Every username, `new_username`'s and support's alike: no space or line break inside, and no
# `@` (a password reset takes a name with an `@` for an email address, services/identity/password_reset.py).
# What is a space, for Python's `re` and for ECMA-262 (a published JSON Schema pattern) alike:
# each `\s` leaves out some of the other's (ECMA-262 has U+FEFF, Python U+001C-U+001F and U+0085).
SPACE = r"\s\x1c-\x1f\x85\ufeff"
USERNAME = rf"[^{SPACE}@]{{1,{USERNAME_MAX_LENGTH}}}"


def username_problem(username: str) -> str | None:
    """Why `username` (normalised) cannot be a login's username, or None."""
    if len(username) > USERNAME_MAX_LENGTH:
        return f"at most {USERNAME_MAX_LENGTH} characters"
    if not re.fullmatch(USERNAME, username):
        return "not empty, and no space, line break or @ inside (a password reset names the login by it)"
    return None


# A customer's username as `new_username` makes them (`<cvr>-` and a short suffix).
_USERNAME_SHAPE = re.compile(r"\d{8}-[a-z0-9]{1,20}")


def tried_username_as_kept(typed: str) -> str:
    """What the audit trail keeps of a username nobody has: the name as typed (normalised) when
    it has a username's shape, so support sees which names are tried; otherwise only its length.
    Users type their password, or their email address, into the username field: such text must
    not stay readable in the trail, its events and its backups."""
    name = normalise_username(typed)
    if _USERNAME_SHAPE.fullmatch(name):
        return name
    return f"[not a username: {len(name)} characters]"


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


def lifecycle_status(status: str, activation_expires_at: datetime | None, now: datetime) -> str:
    """A login's status as people see it: a pending login whose activation code has expired is
    `expired` (nobody can activate it until a new code is sent; a first administrator's no
    longer blocks the company, which may apply again)."""
    if status == "pending" and activation_expires_at is not None and activation_expires_at <= now:
        return "expired"
    return status


# Who outranks whom among a company's logins. A role not listed here outranks everyone, so an
# unknown role is never managed by mistake.
ROLE_RANK = {"user": 0, "administrator": 1}


@dataclass(frozen=True)
class AccessScope:
    """A login's whole access: its role, its functions, and per company either all accounts
    or some of them (S5.4–S5.6, S14)."""

    role: str
    functions: frozenset[str]
    companies: Mapping[str, Literal["all"] | frozenset[str]]

    @classmethod
    def of(
        cls, role: str, functions: Iterable[str], grants: Iterable[tuple[str, Literal["all"] | list[str]]]
    ) -> AccessScope:
        companies: dict[str, Literal["all"] | frozenset[str]] = {}
        for cvr, accounts in grants:
            companies[cvr] = "all" if accounts == "all" else frozenset(accounts)
        return cls(role, frozenset(functions), companies)

    def covers(self, other: AccessScope) -> bool:
        """Whether `other` lies wholly within this access: an administrator may see and act
        on exactly such logins. "All accounts" of a company covers any account of it, also
        ones added later; a list covers only the same or fewer accounts, never "all"."""
        if ROLE_RANK.get(other.role, len(ROLE_RANK)) > ROLE_RANK.get(self.role, -1):
            return False
        if not other.functions <= self.functions:
            return False
        for cvr, accounts in other.companies.items():
            held = self.companies.get(cvr)
            if held is None:
                return False
            if held != "all" and (accounts == "all" or not accounts <= held):
                return False
        return True
