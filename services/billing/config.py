from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import Environment, ServiceSettings


class BillingSettings(ServiceSettings):
    service: ClassVar[str] = "billing"
    default_http_port: ClassVar[int] = 8003
    model_config = SettingsConfigDict(env_prefix="ADGANG_BILLING_", extra="ignore")

    seed_demo_data: bool | None = None  # unset: seed in development and test, never in production
    demo_extra_customers: int = Field(default=0, ge=0, le=100_000)

    @property
    def seeds_demo_data(self) -> bool:
        if self.seed_demo_data is not None:
            return self.seed_demo_data
        return self.environment is not Environment.production
