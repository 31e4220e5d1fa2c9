"""Access tokens (S7): signed by identity, verified by every service against its JWKS."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from shared.tokens import (
    AccessClaims,
    TokenError,
    TokenSigner,
    TokenVerifier,
    VerifiedTokens,
    generate_signing_key,
    parse_signing_keys,
)
from tests.support.asgi import AppTransport

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def signer(*kids: str, active: str | None = None) -> TokenSigner:
    ring = parse_signing_keys(",".join(f"{kid}:{generate_signing_key()}" for kid in kids))
    return TokenSigner(ring, active or kids[0])


def token(s: TokenSigner, *, at: datetime = NOW, session_id: str | None = None) -> str:
    return s.sign(
        subject=str(uuid.uuid4()),
        session_id=session_id or str(uuid.uuid4()),
        tenant="35657193",
        role="user",
        grants=[{"cvr": "37826111", "accounts": ["10000021", "10000022"]}],
        functions=["invoices"],
        now=at,
        lifetime=timedelta(minutes=5),
    )


class JwksServer:
    """Identity's JWKS endpoint, in process; counts how often it is asked."""

    def __init__(self, s: TokenSigner) -> None:
        self.signer = s
        self.requests = 0
        app = FastAPI()

        @app.get("/.well-known/jwks.json")
        async def jwks() -> dict:
            self.requests += 1
            return self.signer.jwks()

        self.client = httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://identity")


async def test_a_token_verifies_and_carries_the_grants_and_the_keys_are_fetched_once() -> None:
    s = signer("k1")
    server = JwksServer(s)
    verifier = TokenVerifier("http://identity/.well-known/jwks.json", client=server.client)
    for _ in range(3):
        claims = await verifier.verify(token(s), now=NOW + timedelta(minutes=1))
    assert claims.grants[0].accounts == ["10000021", "10000022"] and claims.functions == ["invoices"]
    assert server.requests == 1


class Monotonic:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_new_signing_key_is_picked_up_by_refetching_for_its_key_id() -> None:
    old = signer("k1")
    server = JwksServer(old)
    clock = Monotonic()
    verifier = TokenVerifier("http://identity/.well-known/jwks.json", client=server.client, monotonic=clock)
    await verifier.verify(token(old), now=NOW)
    rotated = TokenSigner({**old._keys, **parse_signing_keys(f"k2:{generate_signing_key()}")}, "k2")  # noqa: SLF001
    server.signer = rotated
    clock.now += 30  # the minimum interval between refetches (tests/security/test_jwks_refetch.py)
    await verifier.verify(token(rotated), now=NOW)  # k2 is unknown to the cache: refetched
    await verifier.verify(token(old), now=NOW)  # the old key still verifies its tokens
    assert server.requests == 2


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("expired", "expired"),
        ("foreign", "not valid"),
        ("garbage", "not a JWT"),
        ("unknown key", "unknown key"),
    ],
)
async def test_bad_tokens_are_refused(case: str, message: str) -> None:
    s = signer("k1")
    verifier = TokenVerifier("http://identity/.well-known/jwks.json", client=JwksServer(s).client)
    tokens = {
        "expired": token(s, at=NOW - timedelta(minutes=6)),
        "foreign": token(TokenSigner(parse_signing_keys(f"k1:{generate_signing_key()}"), "k1")),
        "garbage": "not.a.token",
        "unknown key": token(signer("k9")),
    }
    with pytest.raises(TokenError, match=message):
        await verifier.verify(tokens[case], now=NOW)


async def test_a_session_ended_elsewhere_is_refused_before_its_token_expires() -> None:
    s = signer("k1")
    ended = str(uuid.uuid4())

    async def is_revoked(claims: AccessClaims) -> bool:
        return claims.sid == ended

    verifier = TokenVerifier(
        "http://identity/.well-known/jwks.json", client=JwksServer(s).client, is_revoked=is_revoked
    )
    await verifier.verify(token(s), now=NOW)
    with pytest.raises(TokenError, match="ended"):
        await verifier.verify(token(s, session_id=ended), now=NOW)


def test_signing_keys_refuse_bad_entries_without_echoing_them() -> None:
    key = generate_signing_key()
    with pytest.raises(TokenError) as caught:
        parse_signing_keys(key)
    assert key not in str(caught.value)
    with pytest.raises(TokenError, match="twice"):
        parse_signing_keys(f"a:{key},a:{key}")
    with pytest.raises(TokenError, match="Ed25519"):
        parse_signing_keys("a:AAAA")


def test_the_issue_time_is_checked_by_our_clock_not_the_real_one() -> None:
    """A suite whose clock a test moved ahead issues tokens later than the real time; by its own
    clock they are valid, and a token issued later than the verifier's now is refused."""
    keys = signer("k1")
    ahead = datetime.now(UTC) + timedelta(hours=72)
    issued_ahead = token(keys, at=ahead)
    assert keys.verify(issued_ahead, now=ahead + timedelta(seconds=1)).role == "user"
    with pytest.raises(TokenError, match="ImmatureSignatureError"):
        keys.verify(issued_ahead, now=ahead - timedelta(minutes=1))


async def test_a_token_verified_once_still_expires_and_is_still_revoked() -> None:
    """Verified tokens are kept (`VerifiedTokens`), but what changes with time is checked on
    every use: the expiry by the clock, the revocation by the service."""
    s = signer("k1")
    revoked: set[str] = set()

    async def is_revoked(claims: AccessClaims) -> bool:
        return claims.sid in revoked

    verifier = TokenVerifier(
        "http://identity/.well-known/jwks.json", client=JwksServer(s).client, is_revoked=is_revoked
    )
    session_id = str(uuid.uuid4())
    kept = token(s, session_id=session_id)
    await verifier.verify(kept, now=NOW + timedelta(minutes=1))
    await verifier.verify(kept, now=NOW + timedelta(minutes=2))
    with pytest.raises(TokenError, match="expired"):
        await verifier.verify(kept, now=NOW + timedelta(minutes=5))
    with pytest.raises(TokenError, match="ImmatureSignature"):
        await verifier.verify(kept, now=NOW - timedelta(minutes=1))
    revoked.add(session_id)
    with pytest.raises(TokenError, match="ended"):
        await verifier.verify(kept, now=NOW + timedelta(minutes=1))


async def test_a_kept_token_whose_key_left_the_key_set_is_refused() -> None:
    """A token counts as verified only by the key object that verified it: once identity no
    longer publishes that key (and the keys were fetched again), its tokens are refused."""
    old = signer("k1")
    server = JwksServer(old)
    clock = Monotonic()
    verifier = TokenVerifier(
        "http://identity/.well-known/jwks.json", client=server.client, monotonic=clock, cache_seconds=60
    )
    kept = token(old)
    await verifier.verify(kept, now=NOW)
    server.signer = signer("k2")  # k1 is gone
    clock.now += 61  # the cached keys are too old: fetched again
    await verifier.verify(token(server.signer), now=NOW)
    assert server.requests == 2
    with pytest.raises(TokenError, match="unknown key"):
        await verifier.verify(kept, now=NOW)


async def test_a_changed_signature_is_not_taken_for_a_kept_token() -> None:
    s = signer("k1")
    verifier = TokenVerifier("http://identity/.well-known/jwks.json", client=JwksServer(s).client)
    kept = token(s)
    await verifier.verify(kept, now=NOW)
    header, payload, signature = kept.split(".")
    other = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BA")
    with pytest.raises(TokenError, match="not valid"):
        await verifier.verify(f"{header}.{payload}.{other}", now=NOW)


def test_verified_tokens_are_bounded_and_drop_the_oldest_first() -> None:
    s = signer("k1")
    keys = {"k1": s._keys["k1"].public_key()}  # noqa: SLF001
    verified = VerifiedTokens(size=3)
    tokens = [token(s) for _ in range(4)]
    for t in tokens:
        claims = s.verify(t, now=NOW)
        verified.keep(t, "k1", keys["k1"], claims)
    assert len(verified) == 3
    assert verified.get(tokens[0], keys) is None
    assert all(verified.get(t, keys) is not None for t in tokens[1:])
    assert verified.get(tokens[1], {"k1": signer("k1")._keys["k1"].public_key()}) is None  # noqa: SLF001
