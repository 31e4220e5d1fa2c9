"""Onboarding's API as the pages call it: applications (S1), takeovers, and the support console's read of a company's applications."""

from __future__ import annotations

from typing import Any

from services.portal.clients.http import Caller, ServiceApi


class Onboarding(ServiceApi):
    """Onboarding's API: applications (S1) and takeovers."""

    async def apply(self, caller: Caller, application: dict[str, Any]) -> dict[str, Any]:
        """S1: `{id, status, deliver_by}`."""
        return await self.client.json_object("POST", "/v1/applications", caller, json=application)

    async def application(self, caller: Caller, application_id: str) -> dict[str, Any]:
        return await self.client.json_object("GET", f"/v1/applications/{application_id}", caller)

    # Takeover

    async def request_takeover(self, caller: Caller, application: dict[str, Any]) -> dict[str, Any]:
        """The application with `takeover: true`: `{id, status, deliver_by, kind}`."""
        return await self.client.json_object(
            "POST", "/v1/applications", caller, json={**application, "takeover": True}
        )


class OnboardingSupport(ServiceApi):
    """Onboarding's read for support staff: a company's applications."""

    async def applications(self, caller: Caller, cvr: str) -> list[dict[str, Any]]:
        """Newest first: `{id, status, status_detail, submitted_at, deliver_by, delivered_at, ...}`."""
        return await self.client.json_list("GET", "/v1/support/applications", caller, params={"cvr": cvr})
