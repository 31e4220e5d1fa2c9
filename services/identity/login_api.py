"""Identity's HTTP routes for login with two factors, tokens and the caller's profile (S7)."""

# Routes close over local dependencies, so annotations are evaluated eagerly (no __future__ import).

import asyncio
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.identity.auth import Unauthenticated, bearer_claims
from services.identity.credentials import credential_changed, verify_password
from services.identity.login import (
    InvalidCode,
    InvalidCredentials,
    InvalidRefreshToken,
    Login,
    ReauthenticationRequired,
    find_user,
)
from services.identity.models import User, UserGrant
from services.identity.support import AuditTrail
from services.identity.totp import (
    accept_totp,
    confirm_enrolment,
    normalise_recovery_code,
    start_enrolment,
    use_recovery_code,
)
from shared.clock import as_utc
from shared.db import Database
from shared.problems import MEDIA_TYPE, InvalidField, Problem
from shared.ratelimit import SlidingWindowLimiter, client_address
from shared.tokens import AccessClaims

PROBLEM = {"content": {MEDIA_TYPE: {}}, "description": "problem+json"}


class TotpNotStarted(Problem):
    status = 409
    type_suffix = "totp-not-started"
    title = "No authenticator enrolment is under way"


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: SecretStr = Field(max_length=256)
    device_token: SecretStr | None = Field(
        default=None,
        max_length=200,
        description="The device token from an earlier two-factor login on this browser or app: with it, "
        "a lock that others' failed passwords put on the username does not stop this login",
    )


class ChallengeOut(BaseModel):
    challenge_id: str
    methods: list[Literal["sms", "email", "totp"]]
    expires_at: datetime


class UnlockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)


class UnlockOut(BaseModel):
    detail: str


class SendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["sms", "email"] = "sms"


class SentOut(BaseModel):
    method: Literal["sms", "email"]
    sent_to: str
    code_expires_at: datetime


class VerifyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: SecretStr = Field(description="6 digits (SMS, email or authenticator app), or a recovery code")

    @field_validator("code")
    @classmethod
    def _code_shape(cls, value: SecretStr) -> SecretStr:
        compact = "".join(value.get_secret_value().split())
        if compact.isdigit() and len(compact) == 6:
            return SecretStr(compact)
        if normalise_recovery_code(compact) is not None:
            return SecretStr(compact)
        raise ValueError("a one-time code has 6 digits; a recovery code looks like XXXXX-XXXXX")


class TotpStartIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_code: SecretStr | None = Field(
        default=None,
        max_length=32,
        description="A code from the authenticator app you have now, or a recovery code; needed when "
        "your login is older than the re-authentication window",
    )


class TotpStartOut(BaseModel):
    secret: str
    otpauth_uri: str


class TotpConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(pattern=r"^\d{6}$", description="A code from the authenticator app")


class TotpConfirmOut(BaseModel):
    recovery_codes: list[str] = Field(description="Shown once: each works once if the phone is lost")


class TokensOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int
    device_token: str | None = Field(
        default=None,
        description="Given once, when this login came without a valid device token: keep it with the "
        "browser or app and send it with the next login's password",
    )


class RefreshIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: SecretStr = Field(max_length=200)


class GrantOut(BaseModel):
    cvr: str
    accounts: Literal["all"] | list[str]


class MeOut(BaseModel):
    user_id: str
    username: str
    name: str
    email: str
    mobile: str
    mobile_confirmed: bool
    role: str
    tenant_cvr: str | None = Field(description="None for support staff, who belong to no company")
    grants: list[GrantOut]
    functions: list[str]
    totp_enabled: bool = Field(
        description="Whether an authenticator app is set up as a second factor (SMS and email always are)"
    )
    language: Literal["da", "en"] = Field(
        description="The language of every message to you (codes, notices, order and invoice emails) and "
        "of the portal; change it with PATCH /v1/me"
    )


async def me_out(session: AsyncSession, user: User) -> MeOut:
    """The user as `GET /v1/me` shows them."""
    grants = list(await session.scalars(select(UserGrant).where(UserGrant.user_id == user.id)))
    return MeOut(
        user_id=user.id,
        username=user.username,
        name=user.name,
        email=user.email,
        mobile=user.mobile,
        mobile_confirmed=user.mobile_confirmed_at is not None,
        role=user.role,
        tenant_cvr=user.tenant_cvr,
        grants=[GrantOut(cvr=g.cvr, accounts=g.accounts) for g in grants],
        functions=list(user.functions),
        totp_enabled=user.totp_secret is not None,
        language=user.language,  # type: ignore[arg-type]
    )


def login_router(*, db: Database, login: Login, audit: AuditTrail | None = None) -> APIRouter:
    settings = login.settings
    # Every login's success, failure and lock, and every change of a second factor, is in the
    # audit trail (docs/identity.md, Audit trail).
    audit = audit or AuditTrail(outbox=login.outbox, clock=login.clock)
    router = APIRouter(tags=["login"])
    rate_limited = SlidingWindowLimiter(settings.login_rate_limit_per_minute).dependency("login requests")

    current_claims = bearer_claims(db, login)

    @router.post(
        "/v1/login",
        response_model=ChallengeOut,
        summary="Log in, step 1: username and password (S7)",
        dependencies=[Depends(rate_limited)],
        responses={401: PROBLEM, 403: PROBLEM, 429: PROBLEM},
    )
    async def start(body: LoginIn, request: Request) -> ChallengeOut:
        device_token = body.device_token.get_secret_value() if body.device_token else None
        async with db.transaction() as session:  # the try is counted (and committed) before the check
            attempt = await login.reserve_try(session, body.username, device_token)
            user = await find_user(session, attempt.username)
            password_hash = (
                user.password_hash if user is not None and user.status in ("active", "disabled") else None
            )
        right = await asyncio.to_thread(verify_password, password_hash, body.password.get_secret_value())
        if right:
            async with db.transaction() as session:
                user = await find_user(session, attempt.username)
                assert user is not None
                challenge = await login.start(session, user, attempt)
        else:
            # The try was committed before the check (argon2 runs outside any transaction), so the
            # failure is kept in a transaction of its own: the same work for a known username and
            # an unknown one, which is kept without a user (support sees it, no company does).
            counter = "device" if attempt.device_id is not None else "username"
            kept = [("login.failed", {"step": "password"})]
            kept += [("login.locked", {"counter": counter})] if attempt.locks else []
            async with db.transaction() as session:
                for action, details in kept:
                    await audit.record(
                        session,
                        actor=user,
                        action=action,
                        target=user,
                        client_address=client_address(request),
                        details=details,
                        subject_username=None if user is not None else attempt.username,
                    )
            raise InvalidCredentials(
                "The username or the password is not correct. After "
                f"{settings.login_lock_after_failures} failed attempts the login is locked for "
                f"{int(settings.login_lock_duration.total_seconds() // 60)} minutes."
            )
        return ChallengeOut(
            challenge_id=challenge.id, methods=Login.methods(user), expires_at=as_utc(challenge.expires_at)
        )

    @router.post(
        "/v1/login/unlock",
        status_code=202,
        response_model=UnlockOut,
        summary="Locked out by failed passwords: have an unlock code emailed to the login's address",
        dependencies=[Depends(rate_limited)],
        responses={429: PROBLEM},
    )
    async def unlock(body: UnlockIn) -> UnlockOut:
        async with db.transaction() as session:
            await login.request_unlock(session, body.username)
        # The same answer whatever happened: it tells no one whether the username exists.
        return UnlockOut(
            detail="If this username belongs to an active login that failed passwords have locked, an "
            "unlock code is on its way to the login's email address. Log in with it as device_token."
        )

    @router.post(
        "/v1/login/{challenge_id}/send",
        status_code=202,
        response_model=SentOut,
        summary="Log in, step 2: send a one-time code by SMS (default) or email",
        dependencies=[Depends(rate_limited)],
        responses={401: PROBLEM, 429: PROBLEM},
    )
    async def send(challenge_id: Annotated[str, Path(max_length=36)], body: SendIn) -> SentOut:
        async with db.transaction() as session:
            challenge, masked = await login.send_code(session, challenge_id, body.method)
        assert challenge.code_expires_at is not None
        return SentOut(method=body.method, sent_to=masked, code_expires_at=as_utc(challenge.code_expires_at))

    @router.post(
        "/v1/login/{challenge_id}/verify",
        response_model=TokensOut,
        summary="Log in, step 3: the one-time code gives the tokens",
        dependencies=[Depends(rate_limited)],
        responses={401: PROBLEM, 429: PROBLEM},
    )
    async def verify(
        challenge_id: Annotated[str, Path(max_length=36)], body: VerifyIn, request: Request
    ) -> TokensOut:
        async with db.transaction() as session:
            challenge, user, right = await login.verify_code(
                session, challenge_id, body.code.get_secret_value()
            )
            if right:
                tokens = await login.open_session(
                    session,
                    user,
                    user_agent=request.headers.get("user-agent"),
                    client_address=client_address(request),
                )
                device_token = await login.trust_device(session, challenge, user)
            await audit.record(
                session,
                actor=user,
                action="login.succeeded" if right else "login.failed",
                target=user,
                client_address=client_address(request),
                details=None if right else {"step": "code", "wrong_codes": challenge.failed_attempts},
            )
        if not right:  # the wrong try is committed before it is refused
            raise InvalidCode(
                "The code is not correct or has expired. Check the latest message, or ask for a new code. "
                f"After {settings.otp_max_attempts} wrong codes you must log in again."
            )
        return TokensOut(**tokens.__dict__, device_token=device_token)

    @router.post(
        "/v1/token/refresh",
        response_model=TokensOut,
        summary="Exchange a refresh token for new tokens (each refresh token works once)",
        responses={401: PROBLEM},
    )
    async def refresh(body: RefreshIn) -> TokensOut:
        async with db.transaction() as session:
            result = await login.refresh(session, body.refresh_token.get_secret_value())
        if isinstance(result, str):
            details = {
                "unknown": "The refresh token is not known. Log in again.",
                "reused": "The refresh token was already used, so it may have been copied: the session has been "
                "ended for safety. Log in again.",
                "ended": "The session has ended. Log in again.",
            }
            raise InvalidRefreshToken(details[result])
        return TokensOut(**result.__dict__)

    @router.post(
        "/v1/logout",
        status_code=204,
        summary="End the session of this access token",
        responses={401: PROBLEM},
    )
    async def logout(claims: Annotated[AccessClaims, Depends(current_claims)]) -> Response:
        async with db.transaction() as session:
            await login.end_session(session, claims.sid, "logout")
        # No body at all: a 204 with one breaks the HTTP framing, and the server then drops
        # the client's kept-alive connection.
        return Response(status_code=204)

    @router.get(
        "/v1/me", response_model=MeOut, summary="Who the access token belongs to", responses={401: PROBLEM}
    )
    async def me(claims: Annotated[AccessClaims, Depends(current_claims)]) -> MeOut:
        async with db.transaction() as session:
            user = await session.get(User, claims.sub)
            if user is None:
                raise Unauthenticated("The user of this access token no longer exists.")
            return await me_out(session, user)

    @router.post(
        "/v1/me/totp",
        response_model=TotpStartOut,
        tags=["second factor"],
        summary="Start enrolling an authenticator app: its secret and otpauth URI",
        responses={401: PROBLEM, 403: PROBLEM},
    )
    async def totp_start(
        claims: Annotated[AccessClaims, Depends(current_claims)], body: TotpStartIn | None = None
    ) -> TotpStartOut:
        """An access token alone does not replace the second factor: a token copied from a
        session left open must not let anyone put their own authenticator in the user's place."""
        current_code = body.current_code.get_secret_value() if body and body.current_code else None
        async with db.transaction() as session:
            user, live = await login.caller(session, claims)
            now = login.clock.now()
            recent = login.logged_in_recently(live)
            code_right = (
                not recent
                and current_code is not None
                and (
                    accept_totp(user, current_code, login.sealer, now)
                    or await use_recovery_code(session, user, current_code, login.sealer, now)
                )
            )
            if recent or code_right:
                secret, uri = start_enrolment(user, login.sealer)
            elif current_code is not None:
                # Guessing codes with a copied token gets one try: the session ends.
                await login.end_session(session, claims.sid, "reauthentication-failed")
        if not (recent or code_right):
            if current_code is not None:
                raise ReauthenticationRequired(
                    "The code is not right, so this session has been ended for safety. Log in again, "
                    "then set up the authenticator app."
                )
            minutes = int(settings.reauthentication_window.total_seconds() // 60)
            raise ReauthenticationRequired(
                f"Your login is more than {minutes} minutes old. Log in again and then set up the "
                "authenticator app, or send a code from your current authenticator app (or a recovery "
                "code) as current_code."
            )
        return TotpStartOut(secret=secret, otpauth_uri=uri)

    @router.post(
        "/v1/me/totp/confirm",
        response_model=TotpConfirmOut,
        tags=["second factor"],
        summary="Confirm the authenticator app with a code from it; returns recovery codes once",
        responses={401: PROBLEM, 409: PROBLEM, 422: PROBLEM},
    )
    async def totp_confirm(
        claims: Annotated[AccessClaims, Depends(current_claims)], body: TotpConfirmIn, request: Request
    ) -> TotpConfirmOut:
        async with db.transaction() as session:
            user, _ = await login.caller(session, claims)
            pending = user.totp_pending_secret is not None
            replaced = user.totp_secret is not None
            codes = (
                await confirm_enrolment(session, user, body.code, login.sealer, login.clock.now())
                if pending
                else None
            )
            if codes is not None:
                await login.outbox.add(
                    session, credential_changed(user, "authenticator_added", login.clock.now())
                )
                await audit.record(
                    session,
                    actor=user,
                    action="second-factor.changed",
                    target=user,
                    client_address=client_address(request),
                    details={
                        "change": "authenticator-replaced" if replaced else "authenticator-set-up",
                        "recovery_codes": "regenerated",
                    },
                )
        if not pending:
            raise TotpNotStarted("Start the enrolment first: POST /v1/me/totp gives the secret for the app.")
        if codes is None:
            raise InvalidField(
                "code",
                "this code does not fit the new authenticator; check the app's clock and try the next code",
            )
        return TotpConfirmOut(recovery_codes=codes)

    @router.get("/.well-known/jwks.json", tags=["keys"], summary="The public keys that verify access tokens")
    async def jwks() -> dict[str, list[dict[str, str]]]:
        return login.signer.jwks()

    return router
