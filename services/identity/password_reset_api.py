"""Identity's HTTP routes for a forgotten password (S7; docs/identity.md, "Forgotten password")."""

# Routes close over local dependencies, so annotations are evaluated eagerly (no __future__ import).

import asyncio
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from services.identity.credentials import hash_password
from services.identity.domain import password_problem
from services.identity.login_api import VerifyIn
from services.identity.password_reset import PasswordResets, Step, StepResult
from shared.clock import as_utc
from shared.db import Database
from shared.problems import MEDIA_TYPE, Conflict, InvalidField, NotFound, Problem, TooManyRequests
from shared.ratelimit import SlidingWindowLimiter, client_address

USERNAME_MAX_LENGTH = 64  # users.username
PROBLEM = {"content": {MEDIA_TYPE: {}}, "description": "problem+json"}


class InvalidResetCode(Problem):
    status = 400
    type_suffix = "invalid-reset-code"
    title = "The code is not correct"


class ResetRestartRequired(Problem):
    status = 410
    type_suffix = "reset-restart-required"
    title = "The password reset must be started again"


class ResetCompleted(Problem):
    status = 410
    type_suffix = "reset-completed"
    title = "The password was already changed with this reset"


class ResetStepOutOfOrder(Conflict):
    type_suffix = "reset-step-out-of-order"
    title = "This step of the password reset is not the next one"


class ResetNotPossible(Conflict):
    type_suffix = "reset-not-possible"
    title = "This login cannot reset its password this way"


class ResetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username_or_email: str = Field(
        min_length=1, max_length=320, description="The login's username, or the email address on the login"
    )

    @field_validator("username_or_email")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("give the username or the email address of the login")
        # Every username fits its column; a longer name is a typing mistake, said as such (the
        # rule is public, so the answer tells nothing about who exists).
        if "@" not in value and len(value.strip()) > USERNAME_MAX_LENGTH:
            raise ValueError(
                f"a username has at most {USERNAME_MAX_LENGTH} characters: check it, or give the email address"
            )
        return value.strip()


class ResetRequested(BaseModel):
    reset_id: str = Field(description="Names this reset in its next steps")
    code_expires_at: datetime = Field(description="When the emailed code stops working")
    detail: str


class EmailCodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: SecretStr = Field(description="The 6-digit code from the email")

    @field_validator("code")
    @classmethod
    def _six_digits(cls, value: SecretStr) -> SecretStr:
        compact = "".join(value.get_secret_value().split())
        if not (compact.isdigit() and len(compact) == 6):
            raise ValueError("the code in the email has 6 digits")
        return SecretStr(compact)


class EmailConfirmed(BaseModel):
    username: str = Field(description="The login being reset (an address may belong to several)")
    methods: list[Literal["sms", "totp", "recovery_code"]] = Field(
        description="The second factors this login can use; empty: ask the company's administrator"
    )
    sms_to: str | None = Field(description="The confirmed mobile an SMS code goes to, masked")


class SmsSent(BaseModel):
    sent_to: str
    code_expires_at: datetime


class CompleteIn(VerifyIn):
    """The second factor's code (SMS, authenticator app or a recovery code) and the new password."""

    password: SecretStr = Field(max_length=256)


class ResetDone(BaseModel):
    username: str
    detail: str


def password_reset_router(*, db: Database, resets: PasswordResets) -> APIRouter:
    settings = resets.settings
    router = APIRouter(tags=["forgotten password"])
    rate_limited = SlidingWindowLimiter(settings.password_reset_rate_limit_per_minute).dependency(
        "password reset requests"
    )
    minutes = int(settings.password_reset_code_ttl.total_seconds() // 60)
    restart = "Ask for a new code: POST /v1/password-reset (the portal's page Forgotten password)."

    def refuse(result: StepResult, reset_id: str) -> None:
        """Raise the problem for any result but ok (after the transaction committed)."""
        match result.step:
            case Step.ok:
                return
            case Step.unknown:
                raise NotFound(f"There is no password reset {reset_id}. {restart}")
            case Step.wrong:
                then = (
                    f"{result.attempts_left} more tries are allowed."
                    if result.attempts_left
                    else f"That was the last try: this reset no longer works. {restart}"
                )
                raise InvalidResetCode(
                    f"The code is not correct or has expired. Check the newest message. {then}",
                    errors=[{"field": "code", "message": "not the code that was sent"}],
                )
            case Step.expired:
                raise ResetRestartRequired(f"The code or the reset has expired. {restart}")
            case Step.ended:
                if result.end_reason == "completed":
                    raise ResetCompleted("The password was already changed with this reset: log in with it.")
                why = {
                    "replaced": "A newer reset of this login was asked for: use the code in the newest email.",
                    "blocked": f"The code was entered wrongly {settings.otp_max_attempts} times. {restart}",
                }
                raise ResetRestartRequired(why.get(result.end_reason or "", f"This reset has ended. {restart}"))
            case Step.out_of_order:
                if result.reset is not None and result.reset.email_confirmed_at is not None:
                    raise ResetStepOutOfOrder(
                        "The emailed code was already accepted: go on with the second factor and the new "
                        f"password (POST /v1/password-reset/{reset_id}/complete)."
                    )
                raise ResetStepOutOfOrder(
                    f"Type the code from the email first (POST /v1/password-reset/{reset_id}/email-code)."
                )
            case Step.not_possible:
                raise ResetNotPossible(
                    "This login cannot reset its password by itself now (it is not active, or has no "
                    "confirmed mobile number for an SMS code). Use the authenticator app or a recovery "
                    "code, or ask the company's administrator."
                )
            case Step.too_soon:
                raise TooManyRequests(
                    f"A code was just sent, or as many as allowed. Wait {result.retry_after} seconds.",
                    retry_after=result.retry_after,
                )
        raise AssertionError(result.step)

    @router.post(
        "/v1/password-reset",
        status_code=202,
        response_model=ResetRequested,
        summary="Forgotten password, step 1: have a code emailed to the login",
        description=(
            "The same 202 whether or not a login has this username or email address. Each active "
            "customer login that has it gets a 6-digit code by email, within its limits."
        ),
        dependencies=[Depends(rate_limited)],
        responses={422: PROBLEM, 429: PROBLEM},
    )
    async def request_reset(body: ResetIn, request: Request) -> ResetRequested:
        async with db.transaction() as session:
            reset = await resets.request(session, body.username_or_email, client_address=client_address(request))
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
        dependencies=[Depends(rate_limited)],
        responses={400: PROBLEM, 404: PROBLEM, 409: PROBLEM, 410: PROBLEM, 422: PROBLEM, 429: PROBLEM},
    )
    async def email_code(
        reset_id: Annotated[str, Path(max_length=36)], body: EmailCodeIn, request: Request
    ) -> EmailConfirmed:
        async with db.transaction() as session:
            result = await resets.confirm_email(
                session, reset_id, body.code.get_secret_value(), client_address=client_address(request)
            )
        refuse(result, reset_id)  # a wrong code is committed (counted) before it is refused
        assert result.user is not None
        return EmailConfirmed(
            username=result.user.username,
            methods=list(result.methods),  # type: ignore[arg-type]
            sms_to=result.sent_to,
        )

    @router.post(
        "/v1/password-reset/{reset_id}/send",
        status_code=202,
        response_model=SmsSent,
        summary="Forgotten password, step 3a: send a code by SMS to the login's confirmed mobile",
        dependencies=[Depends(rate_limited)],
        responses={404: PROBLEM, 409: PROBLEM, 410: PROBLEM, 429: PROBLEM},
    )
    async def send_sms(reset_id: Annotated[str, Path(max_length=36)]) -> SmsSent:
        async with db.transaction() as session:
            result = await resets.send_sms(session, reset_id)
        refuse(result, reset_id)
        assert result.reset is not None and result.reset.sms_code_expires_at is not None
        return SmsSent(sent_to=result.sent_to or "", code_expires_at=as_utc(result.reset.sms_code_expires_at))

    @router.post(
        "/v1/password-reset/{reset_id}/complete",
        response_model=ResetDone,
        summary="Forgotten password, step 3: the second factor and the new password",
        description=(
            "`code`: the SMS code (step 3a), a code from the authenticator app, or a recovery code. "
            "The password follows the activation's policy. All the user's sessions end."
        ),
        dependencies=[Depends(rate_limited)],
        responses={400: PROBLEM, 404: PROBLEM, 409: PROBLEM, 410: PROBLEM, 422: PROBLEM, 429: PROBLEM},
    )
    async def complete(
        reset_id: Annotated[str, Path(max_length=36)], body: CompleteIn, request: Request
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
        password_hash = await asyncio.to_thread(hash_password, password)
        async with db.transaction() as session:
            result = await resets.complete(
                session,
                reset_id,
                code=body.code.get_secret_value(),
                password_hash=password_hash,
                client_address=client_address(request),
            )
        refuse(result, reset_id)
        assert result.user is not None
        return ResetDone(
            username=result.user.username,
            detail="The password is changed and every session of the login has ended. Log in with the new "
            "password.",
        )

    return router
