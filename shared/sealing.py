"""Sealing of secrets that travel on the bus (activation and one-time codes).

Authenticated encryption (AES-256-GCM). Each sealed value names the key it was sealed with,
so keys can rotate: the active key seals, every configured key may unseal. The associated data
binds a sealed value to its context (event type and subject), so a ciphertext copied into
another event does not open.

The same key ring also keys the digests under which short codes are stored (`Sealer.digest`):
a 6-digit code has a million values, so a plain hash of it in a stolen database would be
reversed in a moment, and a keyed one cannot be without the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel, ConfigDict

_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class SealingError(Exception):
    """A value could not be sealed or unsealed (unknown key, tampering, wrong context)."""


class SealedSecret(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kid: str
    alg: Literal["A256GCM"] = "A256GCM"
    nonce: str
    ciphertext: str

    def __repr__(self) -> str:  # ciphertext is harmless, but keep logs short
        return f"SealedSecret(kid={self.kid!r})"


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate_key() -> str:
    """A new random 256-bit key, base64url, for the `kid:key` configuration format."""
    return _b64e(AESGCM.generate_key(bit_length=256))


def parse_keyring(spec: str) -> dict[str, bytes]:
    """Parse `kid1:base64key,kid2:base64key` into a key ring."""
    ring: dict[str, bytes] = {}
    for position, part in enumerate(filter(None, (p.strip() for p in spec.split(","))), start=1):
        kid, sep, encoded = part.partition(":")
        if not sep:
            # Never echo the entry: without its colon it is most likely the key itself.
            raise SealingError(f"sealing key entry {position} must be 'kid:base64key' (no key id found)")
        if not _KEY_ID.match(kid):
            raise SealingError(f"sealing key entry {position}: key id must be 1-64 of A-Z a-z 0-9 _ . -")
        if kid in ring:
            raise SealingError(f"sealing key id {kid!r} appears twice")
        if not re.fullmatch(r"[A-Za-z0-9_-]+=*", encoded):
            raise SealingError(f"sealing key {kid!r} is not base64url")
        try:
            key = _b64d(encoded)
        except ValueError as exc:
            raise SealingError(f"sealing key {kid!r} is not base64") from exc
        if len(key) != 32:
            raise SealingError(f"sealing key {kid!r} must be 32 bytes, is {len(key)}")
        ring[kid] = key
    if not ring:
        raise SealingError("no sealing keys configured")
    return ring


class Sealer:
    def __init__(self, keys: dict[str, bytes], active_kid: str) -> None:
        if active_kid not in keys:
            raise SealingError(f"active sealing key {active_kid!r} is not in the key ring")
        self._keys = {kid: AESGCM(key) for kid, key in keys.items()}
        # A separate key for digests, derived from each sealing key: one key, one purpose.
        self._digest_keys = {kid: _derive(key, b"adgang digest v1") for kid, key in keys.items()}
        self._active = active_kid

    @property
    def active_kid(self) -> str:
        return self._active

    def seal(self, plaintext: str, *, context: str) -> SealedSecret:
        nonce = os.urandom(12)
        ct = self._keys[self._active].encrypt(nonce, plaintext.encode(), context.encode())
        return SealedSecret(kid=self._active, nonce=_b64e(nonce), ciphertext=_b64e(ct))

    def unseal(self, sealed: SealedSecret, *, context: str) -> str:
        aead = self._keys.get(sealed.kid)
        if aead is None:
            raise SealingError(f"sealed with unknown key {sealed.kid!r}")
        try:
            raw = aead.decrypt(_b64d(sealed.nonce), _b64d(sealed.ciphertext), context.encode())
        except (InvalidTag, ValueError) as exc:
            raise SealingError("sealed value failed authentication") from exc
        return raw.decode()

    def digest(self, secret: str, *, context: str) -> str:
        """A keyed one-way digest of a short secret, to store instead of it: HMAC-SHA256 under a
        key derived from the active sealing key, bound to `context`. Written `kid$hex`, so that
        digests made before a key rotation still match while that key is in the ring."""
        return f"{self._active}${self._mac(self._active, secret, context)}"

    def digest_matches(self, secret: str, stored: str, *, context: str) -> bool:
        kid, _, mac = stored.partition("$")
        if kid not in self._digest_keys:
            return False
        return hmac.compare_digest(self._mac(kid, secret, context), mac)

    def _mac(self, kid: str, secret: str, context: str) -> str:
        message = f"{context}\x00{secret}".encode()
        return hmac.new(self._digest_keys[kid], message, hashlib.sha256).hexdigest()


def _derive(key: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(key)
