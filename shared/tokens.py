"""Access tokens: short-lived EdDSA (Ed25519) JWTs signed by identity, verified everywhere.

Identity signs with the active key of its key ring and publishes every key's public half at
`/.well-known/jwks.json`, so keys rotate without a flag day: a new key signs, the old one keeps
verifying until the tokens it signed have expired. Other services verify with
`TokenVerifier`, which fetches and caches the JWKS (the one synchronous call the architecture
allows) and refetches when it meets a key id it does not know — at most once per minimum
interval, so that tokens with made-up key ids cannot make it fetch again and again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict

from shared.problems import Unauthenticated

if TYPE_CHECKING:  # imported where keys are fetched: the APIs, not the workers that sign or read claims
    import httpx

ISSUER = "https://adgang.dk/identity"
AUDIENCE = "adgang"
ALGORITHM = "EdDSA"
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class TokenError(Exception):
    """A token that is missing, malformed, expired, signed by an unknown key or revoked."""


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, or a 401 problem saying how."""
    if not authorization or not authorization.lower().startswith("bearer ") or not authorization[7:].strip():
        raise Unauthenticated("Send the access token as 'Authorization: Bearer <token>'.")
    return authorization[7:].strip()


class GrantClaim(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    cvr: str
    accounts: Literal["all"] | list[str]


class AccessClaims(BaseModel):
    """What an access token says about its bearer (S5.4, S5.5, S5.6)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    sub: str
    sid: str
    tenant: str | None
    role: str
    grants: list[GrantClaim]
    functions: list[str]
    iat: int
    exp: int
    jti: str
    iss: str
    aud: str


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate_signing_key() -> str:
    """A new Ed25519 private key, base64url of its raw 32 bytes, for `kid:key` settings."""
    raw = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return _b64e(raw)


def parse_signing_keys(spec: str) -> dict[str, Ed25519PrivateKey]:
    """`kid1:base64url,kid2:base64url` (raw Ed25519 private keys) into a key ring."""
    ring: dict[str, Ed25519PrivateKey] = {}
    for position, part in enumerate(filter(None, (p.strip() for p in spec.split(","))), start=1):
        kid, sep, encoded = part.partition(":")
        if not sep:  # never echo the entry: it is probably the key itself
            raise TokenError(f"signing key entry {position} must be 'kid:base64key' (no key id found)")
        if not _KEY_ID.match(kid):
            raise TokenError(f"signing key entry {position}: key id must be 1-64 of A-Z a-z 0-9 _ . -")
        if kid in ring:
            raise TokenError(f"signing key id {kid!r} appears twice")
        try:
            raw = _b64d(encoded)
            ring[kid] = Ed25519PrivateKey.from_private_bytes(raw)
        except ValueError as exc:
            raise TokenError(f"signing key {kid!r} is not a base64url Ed25519 key of 32 bytes") from exc
    if not ring:
        raise TokenError("no signing keys configured")
    return ring


def public_jwk(kid: str, key: Ed25519PublicKey) -> dict[str, str]:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64e(raw), "kid": kid, "alg": ALGORITHM, "use": "sig"}


class TokenSigner:
    def __init__(self, keys: dict[str, Ed25519PrivateKey], active_kid: str) -> None:
        if active_kid not in keys:
            raise TokenError(f"active signing key {active_kid!r} is not in the key ring")
        self._keys = keys
        self._active = active_kid
        self._public_keys = {kid: key.public_key() for kid, key in keys.items()}
        self._verified = VerifiedTokens()

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [public_jwk(kid, key.public_key()) for kid, key in self._keys.items()]}

    def sign(
        self,
        *,
        subject: str,
        session_id: str,
        tenant: str | None,
        role: str,
        grants: list[dict[str, Any]],
        functions: list[str],
        now: datetime,
        lifetime: timedelta,
    ) -> str:
        issued = int(now.timestamp())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": subject,
            "sid": session_id,
            "tenant": tenant,
            "role": role,
            "grants": grants,
            "functions": functions,
            "iat": issued,
            "exp": issued + int(lifetime.total_seconds()),
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(
            claims, self._keys[self._active], algorithm=ALGORITHM, headers={"kid": self._active}
        )

    def verify(self, token: str, *, now: datetime) -> AccessClaims:
        return _verify(token, self._public_keys, now=now, verified=self._verified)


ISSUED_AT_LEEWAY_S = 0  # as the library's default: a token issued later than now is refused
VERIFIED_TOKENS_KEPT = 4096  # per verifier: the tokens whose signature and claims were checked


class VerifiedTokens:
    """Access tokens whose signature and claims were checked, each with the key that checked it,
    so that a token sent again (every request of a session sends the same one for its five
    minutes) is not parsed and verified again. A token counts as verified only while that same
    key object is among the keys in use (a key that leaves the key set, or keys fetched anew,
    verify it again); its times are checked against the clock on every use, as are revocations
    by whoever asks. Only tokens that passed are kept, at most `size`, the oldest dropped first."""

    def __init__(self, size: int = VERIFIED_TOKENS_KEPT) -> None:
        self._size = size
        self._entries: dict[str, tuple[str, Ed25519PublicKey, AccessClaims]] = {}

    def kid(self, token: str) -> str | None:
        entry = self._entries.get(token)
        return entry[0] if entry is not None else None

    def get(self, token: str, public_keys: dict[str, Ed25519PublicKey]) -> AccessClaims | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        kid, key, claims = entry
        return claims if public_keys.get(kid) is key else None

    def keep(self, token: str, kid: str, key: Ed25519PublicKey, claims: AccessClaims) -> None:
        if len(self._entries) >= self._size:
            del self._entries[next(iter(self._entries))]
        self._entries[token] = (kid, key, claims)

    def __len__(self) -> int:
        return len(self._entries)


def _header_of(token: str) -> dict[str, Any]:
    try:
        return jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenError("the token is not a JWT") from exc


def _check_times(exp: Any, iat: Any, now: datetime) -> None:
    # Times by our clock, not the library's, so tests control them (expiry, and a suite whose
    # clock a test moved ahead issues tokens "in the future" of the real one).
    if exp <= now.timestamp():
        raise TokenError("the token has expired")
    if not isinstance(iat, int | float) or iat > now.timestamp() + ISSUED_AT_LEEWAY_S:
        raise TokenError("the token is not valid: ImmatureSignatureError")


def _verify(
    token: str,
    public_keys: dict[str, Ed25519PublicKey],
    *,
    now: datetime,
    verified: VerifiedTokens | None = None,
    header: dict[str, Any] | None = None,
) -> AccessClaims:
    """The token's claims, checked; `header`: its header, when the caller has read it already."""
    if verified is not None and (known := verified.get(token, public_keys)) is not None:
        _check_times(known.exp, known.iat, now)
        return known
    if header is None:
        header = _header_of(token)
    if header.get("alg") != ALGORITHM:
        raise TokenError("the token is not signed with EdDSA")
    kid = str(header.get("kid"))
    key = public_keys.get(kid)
    if key is None:
        raise TokenError("the token is signed with an unknown key")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "sid", "jti"], "verify_exp": False, "verify_iat": False},
        )
    except jwt.PyJWTError as exc:
        raise TokenError(f"the token is not valid: {type(exc).__name__}") from exc
    _check_times(claims["exp"], claims["iat"], now)
    checked = AccessClaims.model_validate(claims)
    if verified is not None:
        verified.keep(token, kid, key, checked)
    return checked


def development_signing_keys(var_dir: Path) -> tuple[str, str]:
    """A key ring made once per development `var/`, shared by the local processes."""
    path = var_dir / "dev-signing-keys.json"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps({"active": "dev1", "keys": f"dev1:{generate_signing_key()}"}))
        try:
            os.link(tmp, path)  # first writer wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    data = json.loads(path.read_text())
    return data["keys"], data["active"]


@dataclass
class _CachedKeys:
    keys: dict[str, Ed25519PublicKey]
    fetched_at: float


class TokenVerifier:
    """Verifies access tokens against identity's JWKS, fetched once and cached.

    The keys are fetched again when they are older than `cache_seconds`, and when a token names
    a key id they do not hold: identity may have begun signing with a new key. Anyone can send a
    token with a made-up key id, so such a refetch happens at most once per
    `min_refetch_seconds` after the last fetch; until then an unknown key id is refused from the
    cache (the negative cache is the whole key set: random key ids gain nothing). Concurrent
    verifications that need the keys share one fetch in flight. A rotated key is therefore
    accepted at the latest `min_refetch_seconds` after the last fetch — sooner when identity
    publishes the new key before signing with it, as the key ring allows. A fetch that fails
    counts as a fetch too, and while identity does not answer, the keys it gave last go on
    verifying tokens.

    `is_revoked(claims)` lets a service refuse tokens of sessions it learned were ended
    (disabled or deleted users, changed grants) before the token's 5 minutes are over.
    `monotonic` is the clock of the cache and the interval (tests move it).
    """

    def __init__(
        self,
        jwks_url: str,
        *,
        cache_seconds: float = 300.0,
        min_refetch_seconds: float = 30.0,
        client: httpx.AsyncClient | None = None,
        is_revoked: Callable[[AccessClaims], Awaitable[bool]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = jwks_url
        self._cache_seconds = cache_seconds
        self._min_refetch_seconds = min_refetch_seconds
        self._client = client
        self._cached: _CachedKeys | None = None
        self._is_revoked = is_revoked
        self._monotonic = monotonic
        self._in_flight: asyncio.Task[dict[str, Ed25519PublicKey]] | None = None
        self._last_fetch_started: float | None = None
        self._verified = VerifiedTokens()

    async def _fetch(self) -> dict[str, Ed25519PublicKey]:
        import httpx  # every API has imported it already (its clients, its tests' transports)

        client = self._client or httpx.AsyncClient(timeout=5.0)
        try:
            response = await client.get(self._url)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise TokenError(f"the signing keys could not be fetched: {type(exc).__name__}") from exc
        finally:
            if self._client is None:
                await client.aclose()
        keys: dict[str, Ed25519PublicKey] = {}
        for jwk in document.get("keys", []):
            if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and jwk.get("kid"):
                keys[jwk["kid"]] = Ed25519PublicKey.from_public_bytes(_b64d(jwk["x"]))
        self._cached = _CachedKeys(keys, self._monotonic())
        return keys

    async def _shared_fetch(self) -> dict[str, Ed25519PublicKey]:
        """The fetch in flight, or a new one; every caller waiting for the keys shares it."""
        if self._in_flight is None:
            self._last_fetch_started = self._monotonic()
            self._in_flight = asyncio.create_task(self._fetch())
            self._in_flight.add_done_callback(self._fetch_done)
        # shield: a caller that gives up (a closed connection) does not cancel the others' fetch
        return await asyncio.shield(self._in_flight)

    def _fetch_done(self, task: asyncio.Task[dict[str, Ed25519PublicKey]]) -> None:
        self._in_flight = None
        if not task.cancelled():
            task.exception()  # retrieved here too, in case every waiter gave up

    async def _keys(self, kid: str | None) -> dict[str, Ed25519PublicKey]:
        now = self._monotonic()
        cached = self._cached
        if (
            cached is not None
            and now - cached.fetched_at < self._cache_seconds
            and (kid is None or kid in cached.keys)
        ):
            return cached.keys
        last = self._last_fetch_started
        if self._in_flight is None and last is not None and now - last < self._min_refetch_seconds:
            # Fetched (or tried) a moment ago: the key id is unknown to identity too, or identity
            # is not answering. Either way, asking again at once would only cost it more.
            if cached is None:
                raise TokenError("the signing keys could not be fetched; try again in a moment")
            return cached.keys
        try:
            return await self._shared_fetch()
        except TokenError:
            if cached is None:
                raise
            return cached.keys  # identity is not answering: go on with the keys it gave last

    async def verify(self, token: str, *, now: datetime) -> AccessClaims:
        kid = self._verified.kid(token)
        header = None
        if kid is None:  # not verified before: its header names the key to fetch
            header = _header_of(token)
            kid = None if header.get("kid") is None else str(header["kid"])
        claims = _verify(token, await self._keys(kid), now=now, verified=self._verified, header=header)
        if self._is_revoked is not None and await self._is_revoked(claims):
            raise TokenError("the session of this token has ended")
        return claims
