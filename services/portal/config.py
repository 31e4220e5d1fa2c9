"""The portal's settings (`ADGANG_PORTAL_`): where the services are, how long a browser
session lives, and the cookie's shape."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import Environment, ServiceSettings


class PortalSettings(ServiceSettings):
    service: ClassVar[str] = "portal"
    default_http_port: ClassVar[int] = 8000
    uses_sealing: ClassVar[bool] = True  # the users' tokens are sealed at rest
    model_config = SettingsConfigDict(env_prefix="ADGANG_PORTAL_", extra="ignore")

    # The portal's routes are pages, not an API to describe: no /docs unless asked for.
    api_docs_enabled: bool | None = False
    onboarding_url: str = "http://127.0.0.1:8001"
    identity_url: str = "http://127.0.0.1:8002"
    billing_url: str = "http://127.0.0.1:8003"
    notifier_url: str = "http://127.0.0.1:8004"
    # How long the portal waits for a service before it shows "try again".
    service_timeout_s: float = Field(default=15.0, gt=0)
    # A browser session ends after this long without a request, and in any case after
    # `session_max_age` (identity's refresh token lives 12 hours).
    session_idle_timeout: timedelta = Field(default=timedelta(minutes=30), gt=timedelta(0))
    session_max_age: timedelta = Field(default=timedelta(hours=12), gt=timedelta(0))
    # Sessions that ended are deleted this often.
    sessions_purge_interval_s: float = Field(default=300.0, gt=0)

    @property
    def secure_cookies(self) -> bool:
        """`Secure` and the `__Host-` prefix outside development: there the portal is served
        over HTTPS only. Development serves plain HTTP on 127.0.0.1."""
        return self.environment is not Environment.development

    @property
    def session_cookie(self) -> str:
        return "__Host-adgang-session" if self.secure_cookies else "adgang-session"

    @property
    def device_cookie(self) -> str:
        return "__Host-adgang-device" if self.secure_cookies else "adgang-device"

    @property
    def language_cookie(self) -> str:
        return "adgang-language"

    @property
    def session_max_age_s(self) -> int:
        return int(self.session_max_age.total_seconds())
