"""Where each service's parts are: settings, HTTP API, worker and migrations."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.settings import ServiceSettings

SERVICES_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ServiceParts:
    name: str
    settings_class: str
    has_api: bool = True
    has_worker: bool = True
    uses_broker: bool = True

    def _attr(self, dotted: str) -> Any:
        module, _, attr = dotted.rpartition(".")
        return getattr(importlib.import_module(module), attr)

    def settings(self) -> ServiceSettings:
        settings: ServiceSettings = self._attr(f"services.{self.name}.config.{self.settings_class}")()
        return settings

    def settings_type(self) -> type[ServiceSettings]:
        settings_type: type[ServiceSettings] = self._attr(
            f"services.{self.name}.config.{self.settings_class}"
        )
        return settings_type

    @property
    def env_prefix(self) -> str:
        return str(self.settings_type().model_config.get("env_prefix", ""))

    def create_api(self) -> Any:
        return self._attr(f"services.{self.name}.api.create_api")(self.settings())

    def create_worker(self) -> Any:
        return self._attr(f"services.{self.name}.worker.create_worker")(self.settings())

    @property
    def migrations(self) -> Path:
        return SERVICES_DIR / self.name / "migrations"


# Start order: billing announces customers, identity and onboarding learn them, notifier delivers;
# the portal, which calls the others' APIs and consumes no topic, comes last.
SERVICES: dict[str, ServiceParts] = {
    "billing": ServiceParts("billing", "BillingSettings"),
    "identity": ServiceParts("identity", "IdentitySettings"),
    "onboarding": ServiceParts("onboarding", "OnboardingSettings"),
    "notifier": ServiceParts("notifier", "NotifierSettings"),
    "portal": ServiceParts("portal", "PortalSettings", has_worker=False, uses_broker=False),
}
