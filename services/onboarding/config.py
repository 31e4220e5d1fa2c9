from datetime import timedelta
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import VerifiesAccessTokens


class OnboardingSettings(VerifiesAccessTokens):
    service: ClassVar[str] = "onboarding"
    default_http_port: ClassVar[int] = 8001
    model_config = SettingsConfigDict(env_prefix="ADGANG_ONBOARDING_", extra="ignore")

    delivery_deadline: timedelta = timedelta(hours=2)
    rate_limit_per_minute: int = Field(default=20, ge=0)
    # Each application sends a letter to the company's e-Boks; anyone may apply for any CVR.
    applications_per_cvr: int = Field(default=3, ge=1)
    applications_per_cvr_window: timedelta = Field(default=timedelta(hours=24), gt=timedelta(0))
    deadline_check_interval_s: float = 30.0
