"""Identity's HTTP routes for a user's own profile: language, password, email and mobile
number, and sessions (`services/identity/profile.py`)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import Response

from services.identity.deps import (
    Caller,
    CallerDep,
    LockoutDep,
    PasswordsDep,
    PathId,
    ProfileDep,
    SettingsDep,
)
from services.identity.domain import password_problem
from services.identity.models import LoginSession
from services.identity.passwords import PasswordHashingStopped
from services.identity.profile import OwnProfile, describe_device
from services.identity.queries import grants_of
from services.identity.schemas import (
    ConfirmIn,
    ContactChangeOut,
    EmailIn,
    LanguageIn,
    MeOut,
    MobileIn,
    PasswordChangedOut,
    PasswordIn,
    SessionOut,
    SessionsEndedOut,
)
from services.identity.sessions import ReauthenticationRequired
from shared.clock import as_utc
from shared.logs import mask_contact
from shared.problems import PROBLEM, InvalidField
from shared.web import ClientAddress

router = APIRouter(tags=["own profile"], responses={401: PROBLEM})


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


@router.patch(
    "/v1/me",
    response_model=MeOut,
    summary="Change your language: every message to you, and the portal, use it",
    responses={422: PROBLEM},
)
async def change_language(
    body: LanguageIn, caller: CallerDep, profile: ProfileDep, client: ClientAddress
) -> MeOut:
    async with caller.transaction() as (session, user, _):
        await profile.set_language(session, user, body.language, client)
        return MeOut.of(user, await grants_of(session, user.id))


@router.post(
    "/v1/me/password",
    response_model=PasswordChangedOut,
    summary="Change your password (the current one is required); your other sessions end",
    responses={409: PROBLEM, 422: PROBLEM, 429: PROBLEM},
)
async def change_password(
    body: PasswordIn,
    caller: CallerDep,
    lockout: LockoutDep,
    profile: ProfileDep,
    settings: SettingsDep,
    passwords: PasswordsDep,
    client: ClientAddress,
) -> PasswordChangedOut:
    current, new = body.current_password.get_secret_value(), body.new_password.get_secret_value()
    async with caller.transaction() as (session, user, _):
        username = user.username
    # The new password is checked first: a refusal of it spends no try of the current one.
    if problem := password_problem(new, username=username, min_length=settings.password_min_length):
        raise InvalidField("new_password", problem)
    if new == current:
        raise InvalidField("new_password", "must differ from your current password")
    # Counted before checked, as at login: a wrong current password is a failed login, so
    # an access token copied from a session left open cannot be used to guess it.
    async with caller.transaction() as (session, user, _):
        attempt = await lockout.reserve_try(session, user.username, None)
        checked_hash = user.password_hash
    # No rehash of the current password here: when it is right, the new password's hash (made
    # with the configured parameters) replaces it in the transaction that records the success.
    try:
        right = await passwords.verify_off_loop(checked_hash, current)
        new_hash = await passwords.hash_off_loop(new) if right else None
    except PasswordHashingStopped:  # 503: nothing was told or changed, so the try counts nothing
        async with caller.db.transaction() as session:
            await lockout.give_back_try(session, attempt)
        raise
    if new_hash is None:
        async with caller.transaction() as (session, user, _):
            await profile.refuse_wrong_password(session, user, attempt, client)
    async with caller.transaction() as (session, user, live):
        ended = await profile.set_password(session, user, live, checked_hash, new_hash, client)
    return PasswordChangedOut(sessions_ended=ended)


async def _start_change(
    caller: Caller, profile: OwnProfile, field: Literal["email", "mobile"], value: str
) -> ContactChangeOut:
    async with caller.transaction() as (session, user, live):
        if not caller.sessions.logged_in_recently(live):
            minutes = caller.sessions.reauthentication_minutes
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
async def change_email(body: EmailIn, caller: CallerDep, profile: ProfileDep) -> ContactChangeOut:
    return await _start_change(caller, profile, "email", body.email)


@router.post(
    "/v1/me/mobile",
    status_code=202,
    response_model=ContactChangeOut,
    summary="Change your mobile number: a code goes to the new number by SMS; confirm it to make the change",
    responses={403: PROBLEM, 422: PROBLEM, 429: PROBLEM},
)
async def change_mobile(body: MobileIn, caller: CallerDep, profile: ProfileDep) -> ContactChangeOut:
    return await _start_change(caller, profile, "mobile", body.mobile)


@router.post(
    "/v1/me/contact-changes/{change_id}/confirm",
    response_model=MeOut,
    summary="Confirm a change of email or mobile with the code sent to the new address",
    responses={400: PROBLEM, 404: PROBLEM, 409: PROBLEM, 410: PROBLEM, 422: PROBLEM},
)
async def confirm_change(
    change_id: PathId, body: ConfirmIn, caller: CallerDep, profile: ProfileDep, client: ClientAddress
) -> MeOut:
    async with caller.transaction() as (session, user, _):
        await profile.confirm_contact_change(session, user, change_id, body.code.get_secret_value(), client)
        return MeOut.of(user, await grants_of(session, user.id))


@router.get(
    "/v1/me/sessions",
    response_model=list[SessionOut],
    summary="Your live sessions: device, address, when they began and were last used",
)
async def sessions(caller: CallerDep, profile: ProfileDep) -> list[SessionOut]:
    async with caller.transaction() as (session, user, _):
        return [_session_out(s, caller.claims.sid) for s in await profile.live_sessions(session, user)]


@router.delete(
    "/v1/me/sessions/{session_id}",
    status_code=204,
    summary="End one of your sessions (ending this one logs you out)",
    responses={404: PROBLEM},
)
async def end_session(session_id: PathId, caller: CallerDep, profile: ProfileDep, client: ClientAddress) -> Response:
    async with caller.transaction() as (session, user, _):
        await profile.end_own_session(session, user, session_id, client)
    return Response(status_code=204)


@router.post(
    "/v1/me/sessions/end-others",
    response_model=SessionsEndedOut,
    summary="End all your sessions but this one",
)
async def end_others(caller: CallerDep, profile: ProfileDep, client: ClientAddress) -> SessionsEndedOut:
    async with caller.transaction() as (session, user, live):
        ended = await profile.end_other_sessions(session, user, live, client=client)
    return SessionsEndedOut(sessions_ended=ended)
