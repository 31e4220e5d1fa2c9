from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import Environment, ServiceSettings


class NotifierSettings(ServiceSettings):
    service: ClassVar[str] = "notifier"
    uses_sealing: ClassVar[bool] = True
    default_http_port: ClassVar[int] = 8004
    model_config = SettingsConfigDict(env_prefix="ADGANG_NOTIFIER_", extra="ignore")

    eboks_transport: Literal["spool", "http"] = "spool"
    eboks_spool_dir: Path | None = None
    eboks_http_url: str | None = None
    eboks_client_cert: Path | None = None
    eboks_client_key: Path | None = None
    eboks_ca_bundle: Path | None = None
    eboks_http_timeout_s: float = 10.0

    operator_cvr: str = Field(default="29311005", pattern=r"^\d{8}$")
    operator_name: str = "Adgang Erhverv"
    portal_url: str | None = None

    delivery_max_attempts: int = Field(default=8, ge=1)
    delivery_retry_base_s: float = 2.0
    delivery_retry_max_s: float = 300.0
    delivery_lease_s: float | None = Field(default=None, gt=0)
    delivery_concurrency: int = Field(default=32, ge=1, le=128)
    dispatch_interval_s: float = 1.0
    sla_check_interval_s: float = 30.0

    @model_validator(mode="after")
    def _letters_name_the_real_portal_in_production(self) -> NotifierSettings:
        if self.environment is Environment.production and not self.portal_url:
            raise ValueError("portal_url (where letters send people to activate) must be set in production")
        return self

    @property
    def lease_seconds(self) -> float:
        """How long an attempt may hold a delivery: longer than the transport's worst case, so
        another worker never takes over a letter that is still being sent."""
        if self.delivery_lease_s is not None:
            return self.delivery_lease_s
        if self.eboks_transport == "http":
            return 4 * self.eboks_http_timeout_s + 8 * 3 + 30  # HttpTransport's attempts and backoff
        return 20.0

    @property
    def activation_url(self) -> str:
        """Where a letter sends its reader: the portal, or the local identity API in development."""
        return self.portal_url or "http://127.0.0.1:8002/docs#/activation"

    @property
    def spool_dir(self) -> Path:
        return self.eboks_spool_dir or self.var_dir / "eboks"
