"""The request and response models of identity's routes for a login's own use: activation,
login, tokens, the second factor, the own profile and a forgotten password
(`admin_schemas.py`: administrators' and support's)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from services.identity.domain import (
    SPACE,
    USERNAME,
    USERNAME_MAX_LENGTH,
    normalise_activation_code,
    normalise_username,
)
from services.identity.models import User, UserGrant
from services.identity.totp import normalise_recovery_code
from shared.validation import DanishMobile, EmailAddress

# What the contract states about the codes and names the validators check, so that a client
# generated from it sends what the API accepts (email, mobile and CVR fields are documented by
# their shared types, `shared/validation.py`). The API forgives more than it states (case, spaces
# and dashes in codes), and checks what no pattern can say (a password's policy).
SIX_DIGITS = r"^[0-9]{6}$"
_CODE_CHARACTER = "[0-9A-HJKMNP-TV-Z]"  # domain.CODE_ALPHABET
ACTIVATION_CODE = rf"^{_CODE_CHARACTER}{{4}}(-{_CODE_CHARACTER}{{4}}){{4}}$"
ONE_TIME_CODE = rf"^([0-9]{{6}}|{_CODE_CHARACTER}{{5}}-{_CODE_CHARACTER}{{5}})$"  # or a recovery code


class ActivationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    activation_code: SecretStr = Field(
        description="As printed in the letter; case and dashes are forgiven",
        json_schema_extra={"pattern": ACTIVATION_CODE},
    )
    password: SecretStr = Field(
        description="The new password: at least 12 characters, not a common one, not containing the "
        "username, and more than three different characters",
        json_schema_extra={"minLength": 12, "maxLength": 256},
    )
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        json_schema_extra={"pattern": r"\S"},
        description="Only for the login from the company's letter: your name, if the application gave "
        "another; left out, the application's name is kept",
    )
    email: EmailAddress | None = Field(
        default=None,
        max_length=320,
        description="Required for the login from the company's letter: your own email; a code is sent "
        "there to confirm it. Other logins keep the email their administrator gave.",
    )
    mobile: DanishMobile | None = Field(
        default=None,
        max_length=32,
        description="Required for the login from the company's letter: your own Danish mobile number; "
        "a code is sent there by SMS to confirm it (S7). Other logins keep theirs.",
    )

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        return normalise_username(value)

    @field_validator("activation_code")
    @classmethod
    def _code(cls, value: SecretStr) -> SecretStr:
        return SecretStr(normalise_activation_code(value.get_secret_value()))

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = " ".join(value.split())
        if not value:
            raise ValueError("a name is required when given")
        return value


class ActivationOut(BaseModel):
    user_id: str
    username: str
    status: str


class ActivationStarted(BaseModel):
    """The login from the company's letter: the codes are on their way; confirm them."""

    activation_id: str
    sms_sent_to: str = Field(description="The mobile number the SMS code went to, masked")
    email_sent_to: str = Field(description="The email the email code went to, masked")
    expires_at: datetime = Field(description="When the two codes stop working")


class ActivationConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sms_code: SecretStr = Field(
        description="The 6 digits sent by SMS to the mobile number given",
        json_schema_extra={"pattern": SIX_DIGITS},
    )
    email_code: SecretStr = Field(
        description="The 6 digits sent to the email given", json_schema_extra={"pattern": SIX_DIGITS}
    )

    @field_validator("sms_code", "email_code")
    @classmethod
    def _six_digits(cls, value: SecretStr) -> SecretStr:
        compact = "".join(value.get_secret_value().split())
        if not (compact.isascii() and compact.isdigit() and len(compact) == 6):
            raise ValueError("a confirmation code has 6 digits")
        return SecretStr(compact)


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
    code: SecretStr = Field(
        description="6 digits (SMS, email or authenticator app), or a recovery code",
        json_schema_extra={"pattern": ONE_TIME_CODE},
    )

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
    code: str = Field(pattern=r"^[0-9]{6}$", description="A code from the authenticator app")


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

    @classmethod
    def of(cls, user: User, grants: list[UserGrant]) -> MeOut:
        """The user as `GET /v1/me` shows them."""
        return cls(
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


class LanguageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    language: Literal["da", "en"] = Field(
        description="The language of every message to you and of the portal: da (Danish) or en (English)"
    )


class PasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: SecretStr = Field(max_length=256, description="Your password now")
    new_password: SecretStr = Field(
        max_length=256,
        description="At least 12 characters, not a common password, not containing the username",
    )


class PasswordChangedOut(BaseModel):
    sessions_ended: int = Field(description="How many of your other sessions ended (this one goes on)")


class EmailIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: EmailAddress = Field(max_length=320, description="The new email address; a code is sent to it")


class MobileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mobile: DanishMobile = Field(
        max_length=32, description="The new Danish mobile number; a code is sent to it"
    )


class ContactChangeOut(BaseModel):
    change_id: str
    field: Literal["email", "mobile"]
    sent_to: str = Field(description="The new address, masked")
    expires_at: datetime = Field(description="The code stops working then")


class ConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: SecretStr = Field(
        min_length=6,
        max_length=6,
        description="The 6-digit code sent to the new address",
        json_schema_extra={"pattern": SIX_DIGITS},
    )


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


# A username (domain.USERNAME), or an email address; neither has a space or a line break inside.
# Spaces typed around it are forgiven (they are stripped), so the published pattern allows them there too.
USERNAME_OR_EMAIL = rf"{USERNAME}|[^{SPACE}@]+@[^{SPACE}@]+"
_AROUND = re.compile(rf"^[{SPACE}]+|[{SPACE}]+$")


class ResetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username_or_email: str = Field(
        min_length=1,
        max_length=320,
        description="The login's username, or the email address on the login",
        # Not blank; a username has at most USERNAME_MAX_LENGTH characters.
        json_schema_extra={"pattern": rf"^[{SPACE}]*(?:{USERNAME_OR_EMAIL})[{SPACE}]*$"},
    )

    @field_validator("username_or_email")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = _AROUND.sub("", value)  # the spaces the published pattern forgives around it
        if not value:
            raise ValueError("give the username or the email address of the login")
        # Every username fits its column; a longer name is a typing mistake, said as such (the
        # rule is public, so the answer tells nothing about who exists).
        if "@" not in value and len(value) > USERNAME_MAX_LENGTH:
            raise ValueError(
                f"a username has at most {USERNAME_MAX_LENGTH} characters: check it, or give the email address"
            )
        if not re.fullmatch(USERNAME_OR_EMAIL, value):
            raise ValueError(
                "a username or an email address has no spaces or line breaks inside it; check what was typed"
            )
        return value


class ResetRequested(BaseModel):
    reset_id: str = Field(description="Names this reset in its next steps")
    code_expires_at: datetime = Field(description="When the emailed code stops working")
    detail: str


class EmailCodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: SecretStr = Field(
        description="The 6-digit code from the email", json_schema_extra={"pattern": SIX_DIGITS}
    )

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
