from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from services.identity.domain import normalise_activation_code, normalise_username


class ActivationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    activation_code: SecretStr = Field(description="As printed in the letter; case and dashes are forgiven")
    password: SecretStr = Field(description="The new password: at least 12 characters, not a common one")

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        return normalise_username(value)

    @field_validator("activation_code")
    @classmethod
    def _code(cls, value: SecretStr) -> SecretStr:
        return SecretStr(normalise_activation_code(value.get_secret_value()))


class ActivationOut(BaseModel):
    user_id: str
    username: str
    status: str
