"""Identity's HTTP routes for login with two factors, tokens and the caller's second factor (S7)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.identity.credentials import credential_changed
from services.identity.deps import (
    AuditDep,
    CallerDep,
    Claims,
    ClockDep,
    DbDep,
    LockoutDep,
    LoginDep,
    LoginRateLimit,
    OutboxDep,
    Parts,
    PasswordsDep,
    PathId,
    SealerDep,
    SessionsDep,
    SignerDep,
)
from services.identity.login import Login
from services.identity.models import User
from services.identity.passwords import PasswordHashingStopped
from services.identity.queries import grants_of
from services.identity.schemas import (
    ChallengeOut,
    LoginIn,
    MeOut,
    RefreshIn,
    SendIn,
    SentOut,
    TokensOut,
    TotpConfirmIn,
    TotpConfirmOut,
    TotpStartIn,
    TotpStartOut,
    UnlockIn,
    UnlockOut,
    VerifyIn,
)
from services.identity.sessions import ReauthenticationRequired
from services.identity.totp import (
    TotpNotStarted,
    accept_totp,
    confirm_enrolment,
    start_enrolment,
    use_recovery_code,
)
from shared.clock import as_utc
from shared.problems import PROBLEM, InvalidField, Unauthenticated
from shared.web import ClientAddress

router = APIRouter(tags=["login"])


@router.post(
    "/v1/login",
    response_model=ChallengeOut,
    summary="Log in, step 1: username and password (S7)",
    dependencies=[LoginRateLimit],
    responses={401: PROBLEM, 403: PROBLEM, 429: PROBLEM},
)
async def start(
    body: LoginIn,
    db: DbDep,
    lockout: LockoutDep,
    login: LoginDep,
    passwords: PasswordsDep,
    client: ClientAddress,
) -> ChallengeOut:
    device_token = body.device_token.get_secret_value() if body.device_token else None
    async with db.transaction() as session:  # the try is counted (and committed) before the check
        attempt = await lockout.reserve_try(session, body.username, device_token)
        password_hash = await login.password_hash(session, attempt)
    # One argon2 verification (and, for a right password whose hash has other parameters than
    # the configured ones, its new hash), outside any transaction.
    try:
        check = await passwords.check_off_loop(password_hash, body.password.get_secret_value())
    except PasswordHashingStopped:  # 503: the password was not checked, so the try counts nothing
        async with db.transaction() as session:
            await lockout.give_back_try(session, attempt)
        raise
    async with db.transaction() as session:
        user, challenge = await login.password_checked(
            session, attempt, check.right, client_address=client, checked_hash=password_hash, new_hash=check.new_hash
        )
    return ChallengeOut(
        challenge_id=challenge.id, methods=Login.methods(user), expires_at=as_utc(challenge.expires_at)
    )


@router.post(
    "/v1/login/unlock",
    status_code=202,
    response_model=UnlockOut,
    summary="Locked out by failed passwords: have an unlock code emailed to the login's address",
    dependencies=[LoginRateLimit],
    responses={429: PROBLEM},
)
async def unlock(body: UnlockIn, db: DbDep, lockout: LockoutDep) -> UnlockOut:
    async with db.transaction() as session:
        await lockout.request_unlock(session, body.username)
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
    dependencies=[LoginRateLimit],
    responses={401: PROBLEM, 429: PROBLEM},
)
async def send(challenge_id: PathId, body: SendIn, db: DbDep, login: LoginDep) -> SentOut:
    async with db.transaction() as session:
        challenge, masked = await login.send_code(session, challenge_id, body.method)
    assert challenge.code_expires_at is not None
    return SentOut(method=body.method, sent_to=masked, code_expires_at=as_utc(challenge.code_expires_at))


@router.post(
    "/v1/login/{challenge_id}/verify",
    response_model=TokensOut,
    summary="Log in, step 3: the one-time code gives the tokens",
    dependencies=[LoginRateLimit],
    responses={401: PROBLEM, 429: PROBLEM},
)
async def verify(
    challenge_id: PathId,
    body: VerifyIn,
    db: DbDep,
    login: LoginDep,
    client: ClientAddress,
    request: Request,
) -> TokensOut:
    async with db.transaction() as session:
        tokens, device_token = await login.complete(
            session,
            challenge_id,
            body.code.get_secret_value(),
            user_agent=request.headers.get("user-agent"),
            client_address=client,
        )
    return TokensOut(**tokens.__dict__, device_token=device_token)


@router.post(
    "/v1/token/refresh",
    response_model=TokensOut,
    summary="Exchange a refresh token for new tokens (each refresh token works once)",
    responses={401: PROBLEM},
)
async def refresh(body: RefreshIn, parts: Parts) -> TokensOut:
    # The parts as one dependency (not the database and the sessions as two): what FastAPI
    # resolves per request is a noticeable share of this route's small cost.
    async with parts.db.transaction() as session:
        tokens = await parts.sessions.refresh(session, body.refresh_token.get_secret_value())
    return TokensOut(**tokens.__dict__)


@router.post(
    "/v1/logout",
    status_code=204,
    summary="End the session of this access token",
    responses={401: PROBLEM},
)
async def logout(claims: Claims, db: DbDep, sessions: SessionsDep) -> Response:
    async with db.transaction() as session:
        await sessions.end_session(session, claims.sid, "logout")
    # No body at all: a 204 with one breaks the HTTP framing, and the server then drops
    # the client's kept-alive connection.
    return Response(status_code=204)


@router.get(
    "/v1/me", response_model=MeOut, summary="Who the access token belongs to", responses={401: PROBLEM}
)
async def me(claims: Claims, db: DbDep) -> MeOut:
    async with db.transaction() as session:
        user = await session.get(User, claims.sub)
        if user is None:
            raise Unauthenticated("The user of this access token no longer exists.")
        return MeOut.of(user, await grants_of(session, user.id))


@router.post(
    "/v1/me/totp",
    response_model=TotpStartOut,
    tags=["second factor"],
    summary="Start enrolling an authenticator app: its secret and otpauth URI",
    responses={401: PROBLEM, 403: PROBLEM},
)
async def totp_start(
    caller: CallerDep, sealer: SealerDep, clock: ClockDep, body: TotpStartIn | None = None
) -> TotpStartOut:
    """An access token alone does not replace the second factor: a token copied from a
    session left open must not let anyone put their own authenticator in the user's place."""
    current_code = body.current_code.get_secret_value() if body and body.current_code else None
    async with caller.transaction() as (session, user, live):
        now = clock.now()
        if caller.sessions.logged_in_recently(live):
            secret, uri = start_enrolment(user, sealer)
            return TotpStartOut(secret=secret, otpauth_uri=uri)
        if current_code is None:
            minutes = caller.sessions.reauthentication_minutes
            raise ReauthenticationRequired(
                f"Your login is more than {minutes} minutes old. Log in again and then set up the "
                "authenticator app, or send a code from your current authenticator app (or a recovery "
                "code) as current_code."
            )
        if accept_totp(user, current_code, sealer, now) or await use_recovery_code(
            session, user, current_code, sealer, now
        ):
            secret, uri = start_enrolment(user, sealer)
            return TotpStartOut(secret=secret, otpauth_uri=uri)
        # Guessing codes with a copied token gets one try: the session ends.
        await caller.sessions.end_session(session, caller.claims.sid, "reauthentication-failed")
        raise ReauthenticationRequired(
            "The code is not right, so this session has been ended for safety. Log in again, "
            "then set up the authenticator app."
        ).committing()


@router.post(
    "/v1/me/totp/confirm",
    response_model=TotpConfirmOut,
    tags=["second factor"],
    summary="Confirm the authenticator app with a code from it; returns recovery codes once",
    responses={401: PROBLEM, 409: PROBLEM, 422: PROBLEM},
)
async def totp_confirm(
    body: TotpConfirmIn,
    caller: CallerDep,
    sealer: SealerDep,
    clock: ClockDep,
    outbox: OutboxDep,
    audit: AuditDep,
    client: ClientAddress,
) -> TotpConfirmOut:
    async with caller.transaction() as (session, user, _):
        if user.totp_pending_secret is None:
            raise TotpNotStarted("Start the enrolment first: POST /v1/me/totp gives the secret for the app.")
        replaced = user.totp_secret is not None
        codes = await confirm_enrolment(session, user, body.code, sealer, clock.now())
        if codes is None:
            raise InvalidField(
                "code",
                "this code does not fit the new authenticator; check the app's clock and try the next code",
            )
        await outbox.add(session, credential_changed(user, "authenticator_added", clock.now()))
        await audit.record(
            session,
            actor=user,
            action="second-factor.changed",
            target=user,
            client_address=client,
            details={
                "change": "authenticator-replaced" if replaced else "authenticator-set-up",
                "recovery_codes": "regenerated",
            },
        )
    return TotpConfirmOut(recovery_codes=codes)


@router.get("/.well-known/jwks.json", tags=["keys"], summary="The public keys that verify access tokens")
async def jwks(signer: SignerDep) -> dict[str, list[dict[str, str]]]:
    return signer.jwks()
