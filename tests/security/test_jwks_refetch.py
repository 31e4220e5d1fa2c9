"""Tokens with made-up key ids cannot make a service fetch identity's keys again and again
(S7): concurrent verifications share one fetch, an unknown key id refetches at most once per
minimum interval, and a genuinely new signing key is still accepted after it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest

from shared.tokens import TokenError, TokenSigner, TokenVerifier, generate_signing_key, parse_signing_keys

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
JWKS_URL = "http://identity.test/.well-known/jwks.json"
INTERVAL = 30.0


class Monotonic:
    """The verifier's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


class Identity:
    """Identity's JWKS endpoint behind an httpx MockTransport; counts the fetches."""

    def __init__(self, signer: TokenSigner) -> None:
        self.signer = signer
        self.fetches = 0

    async def _answer(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        await asyncio.sleep(0)  # let the other verifications arrive while this fetch is in flight
        return httpx.Response(200, json=self.signer.jwks())

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self._answer))


def ring(*kids: str, active: str) -> TokenSigner:
    return TokenSigner(
        parse_signing_keys(",".join(f"{kid}:{generate_signing_key()}" for kid in kids)), active
    )


def token(signer: TokenSigner) -> str:
    return signer.sign(
        subject=str(uuid.uuid4()),
        session_id=str(uuid.uuid4()),
        tenant="35657193",
        role="user",
        grants=[{"cvr": "35657193", "accounts": "all"}],
        functions=["invoices"],
        now=NOW,
        lifetime=timedelta(minutes=5),
    )


def forged(kid: str) -> str:
    """A token that names a key id identity never had, signed by some key of the forger's."""
    return jwt.encode(
        {"sub": "x", "sid": "x", "jti": "x", "iat": 0, "exp": 2**31},
        parse_signing_keys(f"f:{generate_signing_key()}")["f"],
        algorithm="EdDSA",
        headers={"kid": kid},
    )


async def refused(verifier: TokenVerifier, tokens: list[str]) -> list[bool]:
    async def one(value: str) -> bool:
        try:
            await verifier.verify(value, now=NOW)
        except TokenError:
            return True
        return False

    return list(await asyncio.gather(*(one(value) for value in tokens)))


@pytest.fixture
def clock() -> Monotonic:
    return Monotonic()


async def test_fifty_concurrent_tokens_with_unknown_key_ids_make_at_most_one_fetch(clock: Monotonic) -> None:
    identity = Identity(ring("k1", active="k1"))
    verifier = TokenVerifier(
        JWKS_URL, client=identity.client(), min_refetch_seconds=INTERVAL, monotonic=clock
    )
    assert all(await refused(verifier, [forged(uuid.uuid4().hex) for _ in range(50)]))
    assert identity.fetches == 1

    # Later, with the keys cached and the interval over: another flood, again one fetch.
    clock.now += INTERVAL
    assert all(await refused(verifier, [forged(uuid.uuid4().hex) for _ in range(50)]))
    assert identity.fetches == 2
    # Within the interval, unknown key ids are refused from the cache.
    clock.now += INTERVAL / 2
    assert all(await refused(verifier, [forged(uuid.uuid4().hex) for _ in range(50)]))
    assert identity.fetches == 2


async def test_a_rotated_signing_key_is_accepted_once_the_interval_has_passed(clock: Monotonic) -> None:
    old = ring("k1", active="k1")
    identity = Identity(old)
    verifier = TokenVerifier(
        JWKS_URL, client=identity.client(), min_refetch_seconds=INTERVAL, monotonic=clock
    )
    await verifier.verify(token(old), now=NOW)
    assert identity.fetches == 1

    # Identity rotates: k2 signs, k1 still verifies.
    rotated = TokenSigner({**old._keys, **parse_signing_keys(f"k2:{generate_signing_key()}")}, "k2")  # noqa: SLF001
    identity.signer = rotated
    clock.now += 1
    assert await refused(verifier, [token(rotated)]) == [True]  # the keys were fetched a second ago
    assert identity.fetches == 1

    clock.now += INTERVAL
    results = await refused(verifier, [token(rotated) for _ in range(20)] + [token(old)])
    assert results == [False] * 21
    assert identity.fetches == 2
