"""Identity's HTTP API, first part: activation of a login with its activation code (S2, S7)."""

# Routes close over local dependencies, so annotations are evaluated eagerly (no __future__ import).

import asyncio
from typing import Annotated

from fastapi import Depends, FastAPI, Path
from fastapi.responses import JSONResponse

from services.identity.activation import (
    Activation,
    ActivationOutcome,
    ConfirmationOutcome,
    ContactDetails,
)
from services.identity.admin import Administration
from services.identity.admin_api import admin_router
from services.identity.auth import bearer_claims
from services.identity.config import IdentitySettings
from services.identity.credentials import hash_password
from services.identity.domain import password_problem
from services.identity.login import Login
from services.identity.login_api import login_router
from services.identity.models import messaging
from services.identity.password_reset import PasswordResets
from services.identity.password_reset_api import password_reset_router
from services.identity.profile import OwnProfile
from services.identity.profile_api import profile_router
from services.identity.schemas import ActivationConfirmIn, ActivationIn, ActivationOut, ActivationStarted
from services.identity.support import AuditTrail, Support
from services.identity.support_api import audit_router, support_router
from services.identity.takeover_api import takeover_router
from shared.clock import Clock, as_utc
from shared.db import Database
from shared.logs import mask_contact
from shared.messaging import Outbox
from shared.problems import MEDIA_TYPE, InvalidField, InvalidFields, NotFound, Problem, TooManyRequests
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


class InvalidConfirmationCode(Problem):
    status = 400
    type_suffix = "invalid-confirmation-code"
    title = "A confirmation code is not correct"


class ActivationRestartRequired(Problem):
    status = 410
    type_suffix = "activation-restart-required"
    title = "The activation must be started again"


class TakeoverNoticePeriod(Problem):
    status = 409
    type_suffix = "takeover-notice-period"
    title = "The takeover's notice period has not passed"


class ContactDetailsRequired(InvalidFields):
    """A 422 of its own type, so a client (the portal) can tell "this is the letter's login: ask
    for the person's own email and mobile" from a malformed field without reading words."""

    type_suffix = "contact-details-required"
    title = "The login from the company's letter needs your own email and mobile number"


class ContactDetailsNotAccepted(InvalidFields):
    type_suffix = "contact-details-not-accepted"
    title = "This login's contact details were set by its administrator"


def create_api(settings: IdentitySettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or IdentitySettings()
    db = Database(settings.db_url)
    clock = clock or settings.clock()
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
    audit = AuditTrail(outbox=outbox, clock=clock)
    app.include_router(login_router(db=db, login=login, audit=audit))
    administration = Administration(
        outbox=outbox,
        clock=clock,
        sealer=login.sealer,
        code_ttl=settings.activation_code_ttl,
        reauthentication_window=settings.reauthentication_window,
    )
    current_claims = bearer_claims(db, login)
    app.include_router(
        admin_router(
            db=db,
            admin=administration,
            audit=audit,
            current_claims=current_claims,
        )
    )
    app.include_router(
        support_router(
            db=db,
            support=Support(
                admin=administration,
                audit=audit,
                letters_per_day=settings.letters_per_login_per_day,
                letter_deadline=settings.resent_letter_deadline,
            ),
            current_claims=current_claims,
        )
    )
    app.include_router(
        password_reset_router(db=db, resets=PasswordResets(settings=settings, login=login, audit=audit))
    )

    app.include_router(
        profile_router(
            db=db,
            login=login,
            profile=OwnProfile(
                outbox=outbox,
                clock=clock,
                sealer=login.sealer,
                audit=audit,
                contact_change_ttl=settings.contact_change_ttl,
                changes_per_day=settings.contact_changes_per_day,
                max_attempts=settings.otp_max_attempts,
                resend_cooldown=settings.otp_resend_cooldown,
            ),
            current_claims=current_claims,
        )
    )

    app.include_router(audit_router(db=db, admin=administration, current_claims=current_claims))

    app.include_router(
        takeover_router(
            db=db,
            admin=administration,
            sealer=login.sealer,
            current_claims=current_claims,
            rate_limit_per_minute=settings.cancel_link_rate_limit_per_minute,
        )
    )

    rate_limited = SlidingWindowLimiter(settings.activation_rate_limit_per_minute).dependency(
        "activation attempts"
    )
    activation = Activation(
        outbox=outbox,
        clock=clock,
        sealer=login.sealer,
        max_failures=settings.activation_max_failures,
        confirmation_ttl=settings.activation_confirmation_ttl,
        confirmation_max_attempts=settings.otp_max_attempts,
        restart_cooldown=settings.otp_resend_cooldown,
    )

    @app.post(
        "/v1/activation",
        dependencies=[Depends(rate_limited)],
        response_model=None,
        tags=["activation"],
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
    async def start_activation(body: ActivationIn) -> JSONResponse:
        password = body.password.get_secret_value()
        if problem := password_problem(
            password, username=body.username, min_length=settings.password_min_length
        ):
            raise InvalidField("password", problem)
        # argon2 is deliberately slow: hash in a thread, before the write transaction opens,
        # and for every request, so a wrong code takes as long as a right one.
        password_hash = await asyncio.to_thread(hash_password, password)
        async with db.transaction() as session:
            result = await activation.start(
                session,
                username=body.username,
                code=body.activation_code.get_secret_value(),
                password_hash=password_hash,
                details=ContactDetails(name=body.name, email=body.email, mobile=body.mobile),
            )
        # Raised only after the transaction committed, so a wrong try is counted.
        match result.outcome:
            case ActivationOutcome.activated:
                assert result.user is not None
                out = ActivationOut(user_id=result.user.id, username=result.user.username, status="active")
                return JSONResponse(out.model_dump(mode="json"))
            case ActivationOutcome.confirmation_sent:
                assert result.pending is not None
                started = ActivationStarted(
                    activation_id=result.pending.id,
                    sms_sent_to=mask_contact(result.pending.mobile),
                    email_sent_to=mask_contact(result.pending.email),
                    expires_at=as_utc(result.pending.expires_at),
                )
                return JSONResponse(started.model_dump(mode="json"), status_code=202)
            case ActivationOutcome.wrong | ActivationOutcome.locked:
                # A blocked code answers exactly like a wrong one: a different answer would tell
                # a stranger that the username exists.
                raise InvalidActivation(
                    "The username or the activation code is not correct. Check both against the letter "
                    f"in the company's e-Boks. After {settings.activation_max_failures} wrong codes the "
                    "code is blocked for good; then apply again for a new letter (a new application "
                    "replaces a login that was never activated), or contact support."
                )
            case ActivationOutcome.expired:
                raise ActivationCodeExpired(
                    f"The activation code expired at {result.expired_at}: apply again to receive a new "
                    "letter; the new application replaces the unused login."
                )
            case ActivationOutcome.already_used:
                raise AlreadyActivated(
                    "This activation code has already been used: the login is active. Log in with the "
                    "username and the password chosen at activation."
                )
            case ActivationOutcome.details_required:
                raise ContactDetailsRequired(
                    "This login comes from the letter in the company's e-Boks. Give your own email and "
                    "Danish mobile number: a code is sent to each to confirm them, and two-factor login "
                    "uses them (S7). The contact details of the application are not used.",
                    errors=[
                        {
                            "field": f,
                            "message": f"required for the login from the company's letter: your own {f}",
                        }
                        for f in result.fields
                    ],
                )
            case ActivationOutcome.details_not_accepted:
                raise ContactDetailsNotAccepted(
                    "This login's name, email and mobile number were given by the administrator who "
                    "created it; activate with the username, the activation code and a password only, and "
                    "ask that administrator to correct the details if they are wrong.",
                    errors=[
                        {"field": f, "message": "set by the login's administrator; leave it out"}
                        for f in result.fields
                    ],
                )
            case ActivationOutcome.notice_period:
                assert result.usable_from is not None
                raise TakeoverNoticePeriod(
                    "This login takes over the company's administration. Its administrators have been "
                    "told and may cancel it until the notice period has passed: the code can be used "
                    f"from {result.usable_from.isoformat()} (the letter says when, in Danish time). "
                    "Nothing was used up; come back then.",
                    usable_from=result.usable_from.isoformat(),
                )
            case ActivationOutcome.too_soon:
                raise TooManyRequests(
                    "Codes were just sent for this login. Use them, or wait "
                    f"{result.retry_after} seconds before starting the activation again.",
                    retry_after=result.retry_after,
                )
        raise AssertionError(result.outcome)

    @app.post(
        "/v1/activation/{activation_id}/confirm",
        dependencies=[Depends(rate_limited)],
        response_model=ActivationOut,
        tags=["activation"],
        summary="Confirm the mobile number and email with the codes sent to them: the login is active",
        responses={400: PROBLEM, 404: PROBLEM, 409: PROBLEM, 410: PROBLEM, 422: PROBLEM, 429: PROBLEM},
    )
    async def confirm_activation(
        activation_id: Annotated[str, Path(max_length=36)], body: ActivationConfirmIn
    ) -> ActivationOut:
        async with db.transaction() as session:
            result = await activation.confirm(
                session,
                activation_id,
                sms_code=body.sms_code.get_secret_value(),
                email_code=body.email_code.get_secret_value(),
            )
        restart = (
            "Start again: POST /v1/activation with the username and activation code from the letter, "
            "a password and your own email and mobile number."
        )
        # Raised only after the transaction committed, so a wrong pair is counted.
        match result.outcome:
            case ConfirmationOutcome.activated:
                assert result.user is not None
                return ActivationOut(user_id=result.user.id, username=result.user.username, status="active")
            case ConfirmationOutcome.wrong:
                which = " and ".join(
                    {"sms_code": "the SMS code", "email_code": "the email code"}[f]
                    for f in result.wrong_fields
                )
                then = (
                    f"{result.attempts_left} more tries are allowed."
                    if result.attempts_left
                    else "That was the last try: the codes no longer work. " + restart
                )
                raise InvalidConfirmationCode(
                    f"{which[0].upper()}{which[1:]} is not correct. Check the latest SMS and email. {then}",
                    errors=[
                        {"field": f, "message": "not the code that was sent"} for f in result.wrong_fields
                    ],
                )
            case ConfirmationOutcome.unknown:
                raise NotFound(f"There is no activation {activation_id}. {restart}")
            case ConfirmationOutcome.replaced:
                raise ActivationRestartRequired(
                    "A newer activation of this login was started: use the codes sent for that one "
                    "(the newest SMS and email). These codes no longer work."
                )
            case ConfirmationOutcome.blocked:
                raise ActivationRestartRequired(
                    f"The codes were entered wrongly {settings.otp_max_attempts} times and no longer "
                    f"work. {restart}"
                )
            case ConfirmationOutcome.expired:
                raise ActivationRestartRequired(f"The codes expired at {result.expired_at}. {restart}")
            case ConfirmationOutcome.withdrawn:
                raise ActivationRestartRequired(
                    "This login has been withdrawn or its activation code replaced, so this activation "
                    "can no longer be completed: the company applied again (a newer letter is on its way "
                    "to the company's e-Boks), support deleted the login, or a new code was sent. Use "
                    "the username and activation code of the newest letter."
                )
            case ConfirmationOutcome.code_expired:
                raise ActivationCodeExpired(
                    f"The activation code from the letter expired at {result.expired_at}: apply again to "
                    "receive a new letter; the new application replaces the unused login."
                )
            case ConfirmationOutcome.already_active:
                raise AlreadyActivated(
                    "This login is already active. Log in with the username and the password chosen at "
                    "activation."
                )
        raise AssertionError(result.outcome)

    return app
