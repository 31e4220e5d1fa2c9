"""Identity's HTTP API, first part: activation of a login with the code from the letter."""

from __future__ import annotations

import asyncio

from fastapi import Depends, FastAPI

from services.identity.admin import Administration
from services.identity.admin_api import admin_router
from services.identity.auth import bearer_claims
from services.identity.config import IdentitySettings
from services.identity.domain import password_problem
from services.identity.login import Login
from services.identity.login_api import login_router
from services.identity.models import messaging
from services.identity.schemas import ActivationIn, ActivationOut
from services.identity.service import ActivationOutcome, activate, hash_password
from services.identity.support import AuditTrail, Support
from services.identity.support_api import support_router
from shared.clock import Clock, SystemClock
from shared.db import Database
from shared.messaging import Outbox
from shared.problems import MEDIA_TYPE, InvalidField, Problem
from shared.ratelimit import SlidingWindowLimiter
from shared.web import create_app

PROBLEM = {"content": {MEDIA_TYPE: {}}, "description": "problem+json"}


class InvalidActivation(Problem):
    status = 400
    type_suffix = "invalid-activation-code"
    title = "Username or activation code is not correct"


class ActivationCodeExpired(Problem):
    status = 410
    type_suffix = "activation-code-expired"
    title = "The activation code has expired"


class AlreadyActivated(Problem):
    status = 409
    type_suffix = "already-activated"
    title = "The login is already activated"


def create_api(settings: IdentitySettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or IdentitySettings()
    db = Database(settings.db_url)
    clock = clock or SystemClock()
    outbox = Outbox(messaging, clock)
    app = create_app(
        title="Adgang identity",
        description="Logins, two-factor authentication and delegated administration (S3–S7, S12).",
        settings=settings,
        db=db,
    )

    login = Login(
        settings=settings, outbox=outbox, clock=clock, sealer=settings.sealer(), signer=settings.signer()
    )
    app.include_router(login_router(db=db, login=login))
    administration = Administration(
        outbox=outbox, clock=clock, sealer=login.sealer, code_ttl=settings.activation_code_ttl
    )
    audit = AuditTrail(outbox=outbox, clock=clock)
    current_claims = bearer_claims(db, login)
    app.include_router(
        admin_router(
            db=db,
            admin=administration,
            audit=audit,
            current_claims=current_claims,
            trust_forwarded_for=settings.trust_forwarded_for,
        )
    )
    app.include_router(
        support_router(
            db=db,
            support=Support(admin=administration, audit=audit),
            current_claims=current_claims,
            trust_forwarded_for=settings.trust_forwarded_for,
        )
    )

    rate_limited = SlidingWindowLimiter(settings.activation_rate_limit_per_minute).dependency(
        "activation attempts", trust_forwarded_for=settings.trust_forwarded_for
    )

    @app.post(
        "/v1/activation",
        dependencies=[Depends(rate_limited)],
        response_model=ActivationOut,
        tags=["activation"],
        summary="Activate a login with the code from the letter and choose a password",
        responses={400: PROBLEM, 409: PROBLEM, 410: PROBLEM, 422: PROBLEM, 429: PROBLEM},
    )
    async def activation(body: ActivationIn) -> ActivationOut:
        password = body.password.get_secret_value()
        if problem := password_problem(
            password, username=body.username, min_length=settings.password_min_length
        ):
            raise InvalidField("password", problem)
        # argon2 is deliberately slow: hash in a thread, before the write transaction opens,
        # and for every request, so a wrong code takes as long as a right one.
        password_hash = await asyncio.to_thread(hash_password, password)
        async with db.transaction() as session:
            result = await activate(
                session,
                outbox,
                clock,
                username=body.username,
                code=body.activation_code.get_secret_value(),
                password_hash=password_hash,
                max_failures=settings.activation_max_failures,
            )
        # Raised only after the transaction committed, so a wrong try is counted.
        match result.outcome:
            case ActivationOutcome.activated:
                assert result.user is not None
                return ActivationOut(user_id=result.user.id, username=result.user.username, status="active")
            case ActivationOutcome.wrong | ActivationOutcome.locked:
                # A blocked code answers exactly like a wrong one: a different answer would tell
                # a stranger that the username exists.
                raise InvalidActivation(
                    "The username or the activation code is not correct. Check both against the letter "
                    f"in the company's e-Boks. After {settings.activation_max_failures} wrong codes the "
                    "code is blocked for good; then contact support to have the login deleted, and "
                    "apply again."
                )
            case ActivationOutcome.expired:
                raise ActivationCodeExpired(
                    f"The activation code expired at {result.expired_at}. Contact support to have the "
                    "unused login deleted, then apply again to receive a new letter."
                )
            case ActivationOutcome.already_used:
                raise AlreadyActivated(
                    "This activation code has already been used: the login is active. Log in with the "
                    "username and the password chosen at activation."
                )
        raise AssertionError(result.outcome)

    return app
