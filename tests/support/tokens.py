"""Access tokens as identity signs them, for services that verify them against identity's JWKS:
support staff's, a customer administrator's, a colleague's, and forged ones."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx

from shared.clock import FrozenClock
from shared.tokens import TokenSigner, generate_signing_key, parse_signing_keys

CUSTOMER_CVR = "35657193"


class IdentityKeys:
    """Identity's key ring, and the JWKS a service under test fetches (`jwks_client`)."""

    def __init__(self, clock: FrozenClock) -> None:
        self.signer = TokenSigner(parse_signing_keys(f"i1:{generate_signing_key()}"), "i1")
        self.clock = clock

    def bearer(
        self,
        *,
        role: str,
        tenant: str | None,
        grants: list[dict[str, Any]] | None = None,
        functions: list[str] | None = None,
        signer: TokenSigner | None = None,
        lifetime: timedelta = timedelta(minutes=5),
    ) -> dict[str, str]:
        token = (signer or self.signer).sign(
            subject=str(uuid.uuid4()),
            session_id=str(uuid.uuid4()),
            tenant=tenant,
            role=role,
            grants=grants or [],
            functions=functions or [],
            now=self.clock.now(),
            lifetime=lifetime,
        )
        return {"Authorization": f"Bearer {token}"}

    def staff(self) -> dict[str, str]:
        """A support login's token, as identity issues it: role `support`, no company."""
        return self.bearer(role="support", tenant=None)

    def administrator(self) -> dict[str, str]:
        return self.bearer(
            role="administrator",
            tenant=CUSTOMER_CVR,
            grants=[{"cvr": CUSTOMER_CVR, "accounts": "all"}],
            functions=["invoices", "user_admin"],
        )

    def colleague(self) -> dict[str, str]:
        return self.bearer(
            role="user", tenant=CUSTOMER_CVR, grants=[{"cvr": CUSTOMER_CVR, "accounts": ["10000011"]}]
        )

    def forged_staff(self) -> dict[str, str]:
        """A staff token signed by a key identity never had, under identity's key id."""
        forger = TokenSigner(parse_signing_keys(f"i1:{generate_signing_key()}"), "i1")
        return self.bearer(role="support", tenant=None, signer=forger)

    def jwks_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.MockTransport(lambda _: httpx.Response(200, json=self.signer.jwks()))
        )
