from datetime import timedelta
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class IdentitySettings(ServiceSettings):
    service: ClassVar[str] = "identity"
    uses_sealing: ClassVar[bool] = True
    default_http_port: ClassVar[int] = 8002
    model_config = SettingsConfigDict(env_prefix="ADGANG_IDENTITY_", extra="ignore")

    activation_code_ttl: timedelta = timedelta(days=7)
    activation_max_failures: int = Field(default=5, ge=1, le=10)
    password_min_length: int = Field(default=12, ge=12)
    activation_rate_limit_per_minute: int = Field(default=30, ge=0)
    trust_forwarded_for: bool = False
