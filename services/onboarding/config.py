from datetime import timedelta
from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class OnboardingSettings(ServiceSettings):
    service: ClassVar[str] = "onboarding"
    default_http_port: ClassVar[int] = 8001
    model_config = SettingsConfigDict(env_prefix="ADGANG_ONBOARDING_", extra="ignore")

    delivery_deadline: timedelta = timedelta(hours=2)
    rate_limit_per_minute: int = 20
    trust_forwarded_for: bool = False
    deadline_check_interval_s: float = 30.0
