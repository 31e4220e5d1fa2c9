"""Tokens with made-up key ids must not make a service fetch identity's keys again and again
(S7) — also while identity cannot answer. A failed fetch counts as a fetch: until the interval
has passed, forged tokens are refused without asking identity, which is slow or down already."""

# ruff: noqa: F811 - the clock fixture is imported from test_jwks_refetch and used by name

from __future__ import annotations

import uuid

import httpx

from shared.tokens import TokenVerifier
from tests.security.test_jwks_refetch import (  # noqa: F401 - the clock fixture
    INTERVAL,
    JWKS_URL,
    Identity,
    Monotonic,
    clock,
    forged,
    refused,
    ring,
    token,
)

FORGED = 50


class FailingIdentity:
    """Identity's JWKS endpoint answering 503 (overloaded, restarting); counts the fetches."""

    def __init__(self) -> None:
        self.fetches = 0

    async def _answer(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        return httpx.Response(503)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self._answer))


async def test_forged_key_ids_one_after_another_make_one_fetch_while_identity_fails(clock: Monotonic) -> None:
    identity = FailingIdentity()
    verifier = TokenVerifier(
        JWKS_URL, client=identity.client(), min_refetch_seconds=INTERVAL, monotonic=clock
    )

    for _ in range(FORGED):
        assert await refused(verifier, [forged(uuid.uuid4().hex)]) == [True]

    assert identity.fetches == 1, f"{FORGED} forged tokens made {identity.fetches} fetches"


async def test_forged_key_ids_after_the_cache_expired_make_one_fetch_while_identity_fails(
    clock: Monotonic,
) -> None:
    signer = ring("k1", active="k1")
    identity = Identity(signer)
    verifier = TokenVerifier(
        JWKS_URL, client=identity.client(), cache_seconds=300, min_refetch_seconds=INTERVAL, monotonic=clock
    )
    assert await refused(verifier, [token(signer)]) == [False]
    failing = FailingIdentity()
    verifier._client = failing.client()  # noqa: SLF001 - identity starts failing from here
    clock.now += 300  # the cached keys are due for renewal

    for _ in range(FORGED):
        assert await refused(verifier, [forged(uuid.uuid4().hex)]) == [True]

    assert failing.fetches == 1, f"{FORGED} forged tokens made {failing.fetches} fetches"


async def test_while_identity_fails_the_keys_it_gave_last_go_on_verifying_tokens(clock: Monotonic) -> None:
    signer = ring("k1", active="k1")
    verifier = TokenVerifier(
        JWKS_URL,
        client=Identity(signer).client(),
        cache_seconds=300,
        min_refetch_seconds=INTERVAL,
        monotonic=clock,
    )
    assert await refused(verifier, [token(signer)]) == [False]
    failing = FailingIdentity()
    verifier._client = failing.client()  # noqa: SLF001 - identity starts failing from here
    clock.now += 301

    assert await refused(verifier, [token(signer) for _ in range(10)]) == [False] * 10
    assert failing.fetches == 1
