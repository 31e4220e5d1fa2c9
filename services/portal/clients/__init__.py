"""The portal's clients of the services' HTTP APIs: one method per call a page makes, one
module per service (`http` is what they share).

The portal owns no business data and decides no rule: every page calls the service that
owns the rule, with the user's access token, and shows its answer. A refusal arrives as
problem+json and is raised as `ServiceProblem`, which pages turn into words next to the
field or a sentence that says what to do next.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from services.portal.clients.billing import Billing
from services.portal.clients.http import Caller, ServiceClient, ServiceProblem, ServiceUnavailable
from services.portal.clients.identity import Identity
from services.portal.clients.notifier import Notifier
from services.portal.clients.onboarding import Onboarding, OnboardingSupport
from services.portal.config import PortalSettings

__all__ = [
    "Billing",
    "Caller",
    "Identity",
    "Notifier",
    "Onboarding",
    "OnboardingSupport",
    "ServiceClient",
    "ServiceProblem",
    "ServiceUnavailable",
    "Services",
]


@dataclass
class Services:
    """The clients a page may call, built once per process."""

    onboarding: Onboarding
    identity: Identity
    _clients: list[ServiceClient]
    # --- support console (S3, S13)
    onboarding_support: OnboardingSupport
    notifier: Notifier
    # --- billing's pages (S8–S11)
    billing: Billing

    @classmethod
    def connect(
        cls, settings: PortalSettings, transports: dict[str, httpx.AsyncBaseTransport] | None = None
    ) -> Services:
        transports = transports or {}

        def client(name: str, url: str) -> ServiceClient:
            return ServiceClient(
                name, url, timeout_s=settings.service_timeout_s, transport=transports.get(name)
            )

        onboarding = client("onboarding", settings.onboarding_url)
        identity = client("identity", settings.identity_url)
        notifier = client("notifier", settings.notifier_url)
        billing = client("billing", settings.billing_url)
        return cls(
            onboarding=Onboarding(onboarding),
            identity=Identity(identity),
            _clients=[onboarding, identity, notifier, billing],
            onboarding_support=OnboardingSupport(onboarding),
            notifier=Notifier(notifier),
            billing=Billing(billing),
        )

    async def close(self) -> None:
        for client in self._clients:
            await client.close()
