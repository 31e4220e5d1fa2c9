"""Identity's HTTP routes for a forgotten password (S7; docs/identity.md, "Forgotten password")."""

from __future__ import annotations

from fastapi import APIRouter

from services.identity.deps import (
    DbDep,
    PasswordResetRateLimit,
    PasswordsDep,
    PathId,
    ResetsDep,
    SettingsDep,
)
from services.identity.domain import password_problem
from services.identity.schemas import (
    CompleteIn,
    EmailCodeIn,
    EmailConfirmed,
    ResetDone,
    ResetIn,
    ResetRequested,
    SmsSent,
)
from shared.clock import as_utc
from shared.problems import PROBLEM, InvalidField
from shared.web import ClientAddress

router = APIRouter(tags=["forgotten password"], dependencies=[PasswordResetRateLimit])


@router.post(
    "/v1/password-reset",
    status_code=202,
    response_model=ResetRequested,
    summary="Forgotten password, step 1: have a code emailed to the login",
    description=(
        "The same 202 whether or not a login has this username or email address. Each active "
        "customer login that has it gets a 6-digit code by email, within its limits."
    ),
    responses={422: PROBLEM, 429: PROBLEM},
)
async def request_reset(
    body: ResetIn, db: DbDep, resets: ResetsDep, settings: SettingsDep, client: ClientAddress
) -> ResetRequested:
    async with db.transaction() as session:
        reset = await resets.request(session, body.username_or_email, client_address=client)
    minutes = int(settings.password_reset_code_ttl.total_seconds() // 60)
    return ResetRequested(
        reset_id=reset.id,
        code_expires_at=as_utc(reset.created_at) + settings.password_reset_code_ttl,
        detail=(
            "If an active login has this username or email address, a code is on its way to the "
            f"login's email address. It works for {minutes} minutes. Nothing is sent to logins "
            "that are not active, nor to support staff."
        ),
    )


@router.post(
    "/v1/password-reset/{reset_id}/email-code",
    response_model=EmailConfirmed,
    summary="Forgotten password, step 2: the code from the email",
    responses={400: PROBLEM, 404: PROBLEM, 409: PROBLEM, 410: PROBLEM, 422: PROBLEM, 429: PROBLEM},
)
async def email_code(
    reset_id: PathId, body: EmailCodeIn, db: DbDep, resets: ResetsDep, client: ClientAddress
) -> EmailConfirmed:
    async with db.transaction() as session:
        accepted = await resets.confirm_email(
            session, reset_id, body.code.get_secret_value(), client_address=client
        )
    return EmailConfirmed(
        username=accepted.user.username,
        methods=list(accepted.methods),  # type: ignore[arg-type]
        sms_to=accepted.sms_to,
    )


@router.post(
    "/v1/password-reset/{reset_id}/send",
    status_code=202,
    response_model=SmsSent,
    summary="Forgotten password, step 3a: send a code by SMS to the login's confirmed mobile",
    responses={404: PROBLEM, 409: PROBLEM, 410: PROBLEM, 429: PROBLEM},
)
async def send_sms(reset_id: PathId, db: DbDep, resets: ResetsDep) -> SmsSent:
    async with db.transaction() as session:
        sent_to, expires_at = await resets.send_sms(session, reset_id)
    return SmsSent(sent_to=sent_to, code_expires_at=as_utc(expires_at))


@router.post(
    "/v1/password-reset/{reset_id}/complete",
    response_model=ResetDone,
    summary="Forgotten password, step 3: the second factor and the new password",
    description=(
        "`code`: the SMS code (step 3a), a code from the authenticator app, or a recovery code. "
        "The password follows the activation's policy. All the user's sessions end."
    ),
    responses={400: PROBLEM, 404: PROBLEM, 409: PROBLEM, 410: PROBLEM, 422: PROBLEM, 429: PROBLEM},
)
async def complete(
    reset_id: PathId,
    body: CompleteIn,
    db: DbDep,
    resets: ResetsDep,
    settings: SettingsDep,
    passwords: PasswordsDep,
    client: ClientAddress,
) -> ResetDone:
    async with db.transaction() as session:
        username = await resets.username_of(session, reset_id)
    password = body.password.get_secret_value()
    # The policy is checked before a code is, without spending a try (as at activation).
    if username is not None and (
        problem := password_problem(password, username=username, min_length=settings.password_min_length)
    ):
        raise InvalidField("password", problem)
    # argon2 is slow on purpose: hashed in a thread, before the write transaction opens.
    password_hash = await passwords.hash_off_loop(password)
    async with db.transaction() as session:
        user = await resets.complete(
            session,
            reset_id,
            code=body.code.get_secret_value(),
            password_hash=password_hash,
            client_address=client,
        )
    return ResetDone(
        username=user.username,
        detail="The password is changed and every session of the login has ended. Log in with the new "
        "password.",
    )
