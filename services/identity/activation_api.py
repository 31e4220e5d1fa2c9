"""Identity's HTTP routes for activating a login with its activation code (S2, S7)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.identity.activation import ContactDetails
from services.identity.deps import (
    ActivationDep,
    ActivationRateLimit,
    DbDep,
    PasswordsDep,
    PathId,
    SettingsDep,
)
from services.identity.domain import password_problem
from services.identity.models import User
from services.identity.schemas import ActivationConfirmIn, ActivationIn, ActivationOut, ActivationStarted
from shared.clock import as_utc
from shared.logs import mask_contact
from shared.problems import PROBLEM, InvalidField

router = APIRouter(tags=["activation"], dependencies=[ActivationRateLimit])


@router.post(
    "/v1/activation",
    response_model=None,
    summary="Activate a login with its activation code and choose a password",
    description=(
        "A colleague's login (code by email) and a support login are active at once (200). The "
        "login from the company's e-Boks letter (S2) also needs your own `email` and `mobile` "
        "(and `name`, to correct it): a code is sent to each (202), and the login is active "
        "when both are confirmed with `POST /v1/activation/{activation_id}/confirm`."
    ),
    responses={
        200: {"model": ActivationOut, "description": "The login is active"},
        202: {"model": ActivationStarted, "description": "Codes sent to the mobile number and email"},
        400: PROBLEM,
        409: PROBLEM,
        410: PROBLEM,
        422: PROBLEM,
        429: PROBLEM,
    },
)
async def start_activation(
    body: ActivationIn,
    db: DbDep,
    activation: ActivationDep,
    settings: SettingsDep,
    passwords: PasswordsDep,
) -> JSONResponse:
    password = body.password.get_secret_value()
    if problem := password_problem(password, username=body.username, min_length=settings.password_min_length):
        raise InvalidField("password", problem)
    # argon2 is deliberately slow: hash in a thread, before the write transaction opens,
    # and for every request, so a wrong code takes as long as a right one.
    password_hash = await passwords.hash_off_loop(password)
    async with db.transaction() as session:
        started = await activation.start(
            session,
            username=body.username,
            code=body.activation_code.get_secret_value(),
            password_hash=password_hash,
            details=ContactDetails(name=body.name, email=body.email, mobile=body.mobile),
        )
    if isinstance(started, User):
        out = ActivationOut(user_id=started.id, username=started.username, status="active")
        return JSONResponse(out.model_dump(mode="json"))
    sent = ActivationStarted(
        activation_id=started.id,
        sms_sent_to=mask_contact(started.mobile),
        email_sent_to=mask_contact(started.email),
        expires_at=as_utc(started.expires_at),
    )
    return JSONResponse(sent.model_dump(mode="json"), status_code=202)


@router.post(
    "/v1/activation/{activation_id}/confirm",
    response_model=ActivationOut,
    summary="Confirm the mobile number and email with the codes sent to them: the login is active",
    responses={400: PROBLEM, 404: PROBLEM, 409: PROBLEM, 410: PROBLEM, 422: PROBLEM, 429: PROBLEM},
)
async def confirm_activation(
    activation_id: PathId, body: ActivationConfirmIn, db: DbDep, activation: ActivationDep
) -> ActivationOut:
    async with db.transaction() as session:
        user = await activation.confirm(
            session,
            activation_id,
            sms_code=body.sms_code.get_secret_value(),
            email_code=body.email_code.get_secret_value(),
        )
    return ActivationOut(user_id=user.id, username=user.username, status="active")
