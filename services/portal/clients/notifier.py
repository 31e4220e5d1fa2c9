"""The notifier's API as the support console calls it: the letters to a company."""

from __future__ import annotations

from typing import Any

from services.portal.clients.http import Caller, ServiceApi


class Notifier(ServiceApi):
    """The notifier's delivery records, for support staff."""

    # A letter's recipient is the company's CVR number (docs/notifications.md).
    LETTER = "credentials_letter"

    async def letters(self, caller: Caller, cvr: str, limit: int = 20) -> list[dict[str, Any]]:
        """The letters to a company's e-Boks, newest first."""
        return await self.client.json_list(
            "GET", "/v1/deliveries", caller, params={"recipient": cvr, "kind": self.LETTER, "limit": limit}
        )
