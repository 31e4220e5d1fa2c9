"""Identity's HTTP routes for a user's own profile: language, password, email and mobile
number, and sessions (`services/identity/profile.py`)."""

# Routes close over local dependencies, so annotations are evaluated eagerly (no __future__ import).

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from services.identity.credentials import hash_password, verify_password
from services.identity.domain import password_problem
from services.identity.login import Login, ReauthenticationRequired
from services.identity.login_api import MeOut, me_out
from services.identity.models import LoginSession
from services.identity.profile import ContactChangeOutcome, OwnProfile, describe_device
from shared.clock import as_utc
from shared.db import Database
from shared.logs import mask_contact
from shared.problems import MEDIA_TYPE, Conflict, InvalidField, InvalidFields, NotFound, Problem
from shared.ratelimit import client_address
from shared.tokens import AccessClaims
from shared.validation import DanishMobile, EmailAddress

PROBLEM = {"content": {MEDIA_TYPE: {}}, "description": "problem+json"}


class WrongCurrentPassword(InvalidFields):
    """A 422 of its own type: the field is well formed, but not the login's password."""

    type_suffix = "wrong-current-password"
    title = "The current password is not correct"


class PasswordChangedMeanwhile(Conflict):
    type_suffix = "password-changed-meanwhile"
    title = "The password was changed meanwhile"


class InvalidConfirmationCode(Problem):
    status = 400
    type_suffix = "invalid-confirmation-code"
    title = "The confirmation code is not correct"


class ContactChangeRestartRequired(Problem):
    status = 410
    type_suffix = "contact-change-restart-required"
    title = "The change must be started again"


class ContactChangeDone(Conflict):
    type_suffix = "contact-change-done"
    title = "The change is already made"


class LanguageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    language: Literal["da", "en"] = Field(
        description="The language of every message to you and of the portal: da (Danish) or en (English)"
    )


class PasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: SecretStr = Field(max_length=256, description="Your password now")
    new_password: SecretStr = Field(
        max_length=256, description="At least 12 characters, not a common password, not containing the username"
    )


class PasswordChangedOut(BaseModel):
    sessions_ended: int = Field(description="How many of your other sessions ended (this one goes on)")


class EmailIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: EmailAddress = Field(max_length=320, description="The new email address; a code is sent to it")


class MobileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mobile: DanishMobile = Field(max_length=32, description="The new Danish mobile number; a code is sent to it")


class ContactChangeOut(BaseModel):
    change_id: str
    field: Literal["email", "mobile"]
    sent_to: str = Field(description="The new address, masked")
    expires_at: datetime = Field(description="The code stops working then")


class ConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: SecretStr = Field(min_length=6, max_length=6, description="The 6-digit code sent to the new address")


class SessionOut(BaseModel):
    id: str
    device: str = Field(description='The browser or app and its system, e.g. "Chrome on Windows"')
    user_agent: str | None = Field(description="As the browser or app sent it; None for older sessions")
    client_address: str | None
    started_at: datetime
    last_used_at: datetime = Field(description="The last login or token refresh of the session")
    current: bool = Field(description="Whether this is the session of the access token asking")


class SessionsEndedOut(BaseModel):
    sessions_ended: int


def _session_out(login: LoginSession, current_sid: str) -> SessionOut:
    return SessionOut(
        id=login.id,
        device=describe_device(login.user_agent),
        user_agent=login.user_agent,
        client_address=login.client_address,
        started_at=as_utc(login.created_at),
        last_used_at=as_utc(login.last_used_at or login.created_at),
        current=login.id == current_sid,
    )


def profile_router(
    *,
    db: Database,
    login: Login,
    profile: OwnProfile,
    current_claims: Callable[..., Awaitable[AccessClaims]],
) -> APIRouter:
    settings = login.settings
    router = APIRouter(tags=["own profile"], responses={401: PROBLEM})
    Claims = Annotated[AccessClaims, Depends(current_claims)]

    @router.patch(
        "/v1/me",
        response_model=MeOut,
        summary="Change your language: every message to you, and the portal, use it",
        responses={422: PROBLEM},
    )
    async def change_language(claims: Claims, body: LanguageIn, request: Request) -> MeOut:
        async with db.transaction() as session:
            user, _ = await login.caller(session, claims)
            await profile.set_language(session, user, body.language, client_address(request))
            return await me_out(session, user)

    @router.post(
        "/v1/me/password",
        response_model=PasswordChangedOut,
        summary="Change your password (the current one is required); your other sessions end",
        responses={409: PROBLEM, 422: PROBLEM, 429: PROBLEM},
    )
    async def change_password(claims: Claims, body: PasswordIn, request: Request) -> PasswordChangedOut:
        current, new = body.current_password.get_secret_value(), body.new_password.get_secret_value()
        async with db.transaction() as session:
            user, _ = await login.caller(session, claims)
            username = user.username
        # The new password is checked first: a refusal of it spends no try of the current one.
        if problem := password_problem(new, username=username, min_length=settings.password_min_length):
            raise InvalidField("new_password", problem)
        if new == current:
            raise InvalidField("new_password", "must differ from your current password")
        # Counted before checked, as at login: a wrong current password is a failed login, so
        # an access token copied from a session left open cannot be used to guess it.
        async with db.transaction() as session:
            user, _ = await login.caller(session, claims)
            attempt = await login.reserve_try(session, user.username, None)
            checked_hash = user.password_hash
        right = await asyncio.to_thread(verify_password, checked_hash, current)
        if not right:
            # In the audit trail as a failed login, and its lock when this try locks the username.
            kept = [("login.failed", {"step": "current-password"})]
            kept += [("login.locked", {"counter": "username"})] if attempt.locks else []
            async with db.transaction() as session:
                user, _ = await login.caller(session, claims)
                for action, details in kept:
                    await profile.audit.record(
                        session,
                        actor=user,
                        action=action,
                        target=user,
                        client_address=client_address(request),
                        details=details,
                    )
            raise WrongCurrentPassword(
                "The current password is not correct. Failed tries count like failed logins: after "
                f"{settings.login_lock_after_failures} the login is locked for "
                f"{int(settings.login_lock_duration.total_seconds() // 60)} minutes.",
                errors=[{"field": "current_password", "message": "not your current password"}],
            )
        new_hash = await asyncio.to_thread(hash_password, new)
        async with db.transaction() as session:
            user, live = await login.caller(session, claims)
            if user.password_hash != checked_hash:
                raise PasswordChangedMeanwhile(
                    "Your password was changed by another request at the same moment. Log in with the "
                    "password you chose last, or change it again."
                )
            ended = await profile.set_password(session, user, live, new_hash, client_address(request))
        return PasswordChangedOut(sessions_ended=ended)

    async def start_change(claims: AccessClaims, field: Literal["email", "mobile"], value: str) -> ContactChangeOut:
        async with db.transaction() as session:
            user, live = await login.caller(session, claims)
            if not login.logged_in_recently(live):
                minutes = int(settings.reauthentication_window.total_seconds() // 60)
                raise ReauthenticationRequired(
                    f"To change where your login codes go, your login must be less than {minutes} minutes "
                    "old. Log in again with your password and a one-time code, then try again."
                )
            if getattr(user, field) == value:
                raise InvalidField(field, f"this is already your {field}")
            change = await profile.start_contact_change(session, user, field, value)
        return ContactChangeOut(
            change_id=change.id, field=field, sent_to=mask_contact(value), expires_at=as_utc(change.expires_at)
        )

    @router.post(
        "/v1/me/email",
        status_code=202,
        response_model=ContactChangeOut,
        summary="Change your email: a code goes to the new address; confirm it to make the change",
        responses={403: PROBLEM, 422: PROBLEM, 429: PROBLEM},
    )
    async def change_email(claims: Claims, body: EmailIn) -> ContactChangeOut:
        return await start_change(claims, "email", body.email)

    @router.post(
        "/v1/me/mobile",
        status_code=202,
        response_model=ContactChangeOut,
        summary="Change your mobile number: a code goes to the new number by SMS; confirm it to make the change",
        responses={403: PROBLEM, 422: PROBLEM, 429: PROBLEM},
    )
    async def change_mobile(claims: Claims, body: MobileIn) -> ContactChangeOut:
        return await start_change(claims, "mobile", body.mobile)

    @router.post(
        "/v1/me/contact-changes/{change_id}/confirm",
        response_model=MeOut,
        summary="Confirm a change of email or mobile with the code sent to the new address",
        responses={400: PROBLEM, 404: PROBLEM, 409: PROBLEM, 410: PROBLEM, 422: PROBLEM},
    )
    async def confirm_change(
        claims: Claims, change_id: Annotated[str, Path(max_length=36)], body: ConfirmIn, request: Request
    ) -> MeOut:
        async with db.transaction() as session:
            user, _ = await login.caller(session, claims)
            result = await profile.confirm_contact_change(
                session, user, change_id, body.code.get_secret_value(), client_address(request)
            )
            if result.outcome is ContactChangeOutcome.changed:
                return await me_out(session, user)
        # Refused only after the transaction committed, so a wrong code is counted.
        restart = "Start the change again: a new code is sent to the new address."
        match result.outcome:
            case ContactChangeOutcome.wrong:
                then = (
                    f"{result.attempts_left} more tries are allowed."
                    if result.attempts_left
                    else "That was the last try: the code no longer works. " + restart
                )
                raise InvalidConfirmationCode(
                    f"The code is not correct. Check the latest message to the new address. {then}",
                    errors=[{"field": "code", "message": "not the code that was sent"}],
                )
            case ContactChangeOutcome.unknown:
                raise NotFound(f"You have no change {change_id}. {restart}")
            case ContactChangeOutcome.replaced:
                raise ContactChangeRestartRequired(
                    "A newer change was started: use the code sent for that one. This code no longer works."
                )
            case ContactChangeOutcome.blocked:
                raise ContactChangeRestartRequired(
                    f"The code was entered wrongly {settings.otp_max_attempts} times and no longer works. {restart}"
                )
            case ContactChangeOutcome.expired:
                raise ContactChangeRestartRequired(f"The code has expired. {restart}")
            case ContactChangeOutcome.withdrawn:
                raise ContactChangeRestartRequired(
                    "Your password or second factor changed after this change began, so its code no "
                    f"longer works: a change you did not start is stopped. {restart}"
                )
            case ContactChangeOutcome.completed:
                raise ContactChangeDone("This change is already made: GET /v1/me shows it.")
        raise AssertionError(result.outcome)

    @router.get(
        "/v1/me/sessions",
        response_model=list[SessionOut],
        summary="Your live sessions: device, address, when they began and were last used",
    )
    async def sessions(claims: Claims) -> list[SessionOut]:
        async with db.transaction() as session:
            user, _ = await login.caller(session, claims)
            return [_session_out(s, claims.sid) for s in await profile.live_sessions(session, user)]

    @router.delete(
        "/v1/me/sessions/{session_id}",
        status_code=204,
        summary="End one of your sessions (ending this one logs you out)",
        responses={404: PROBLEM},
    )
    async def end_session(
        claims: Claims, session_id: Annotated[str, Path(max_length=36)], request: Request
    ) -> Response:
        async with db.transaction() as session:
            user, _ = await login.caller(session, claims)
            await profile.end_own_session(session, user, session_id, client_address(request))
        return Response(status_code=204)

    @router.post(
        "/v1/me/sessions/end-others",
        response_model=SessionsEndedOut,
        summary="End all your sessions but this one",
    )
    async def end_others(claims: Claims, request: Request) -> SessionsEndedOut:
        async with db.transaction() as session:
            user, live = await login.caller(session, claims)
            ended = await profile.end_other_sessions(session, user, live, client=client_address(request))
        return SessionsEndedOut(sessions_ended=ended)

    return router

