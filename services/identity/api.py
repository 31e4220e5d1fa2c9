"""Identity's HTTP API: logins, two-factor authentication and delegated administration (S3–S7,
S12). The routes are in the `*_api.py` modules; their parts come from `bootstrap.build`."""

from __future__ import annotations

from fastapi import FastAPI

from services.identity import (
    activation_api,
    admin_api,
    audit_api,
    login_api,
    password_reset_api,
    profile_api,
    support_api,
    takeover_api,
)
from services.identity.bootstrap import build
from services.identity.config import IdentitySettings
from shared.clock import Clock
from shared.sealing import Sealer
from shared.tokens import TokenSigner
from shared.web import create_app


def create_api(
    settings: IdentitySettings | None = None,
    *,
    clock: Clock | None = None,
    sealer: Sealer | None = None,
    signer: TokenSigner | None = None,
) -> FastAPI:
    parts = build(settings, clock=clock, sealer=sealer, signer=signer)
    app = create_app(
        title="Adgang identity",
        description="Logins, two-factor authentication and delegated administration (S3–S7, S12).",
        settings=parts.settings,
        db=parts.db,
        # The password pool's threads end with the app, and their argon2 blocks with them.
        on_startup=[parts.passwords.start],
        on_shutdown=[parts.passwords.close],
    )
    app.state.parts = parts
    for routes in (
        login_api,
        admin_api,
        support_api,
        password_reset_api,
        profile_api,
        audit_api,
        takeover_api,
        activation_api,
    ):
        app.include_router(routes.router)
    return app
