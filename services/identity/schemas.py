from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from services.identity.domain import normalise_activation_code, normalise_username
from shared.validation import DanishMobile, EmailAddress


class ActivationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    activation_code: SecretStr = Field(description="As printed in the letter; case and dashes are forgiven")
    password: SecretStr = Field(description="The new password: at least 12 characters, not a common one")
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
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

    sms_code: SecretStr = Field(description="The 6 digits sent by SMS to the mobile number given")
    email_code: SecretStr = Field(description="The 6 digits sent to the email given")

    @field_validator("sms_code", "email_code")
    @classmethod
    def _six_digits(cls, value: SecretStr) -> SecretStr:
        compact = "".join(value.get_secret_value().split())
        if not (compact.isascii() and compact.isdigit() and len(compact) == 6):
            raise ValueError("a confirmation code has 6 digits")
        return SecretStr(compact)
