"""An API keeps an idle connection open longer than its clients reuse one.

With uvicorn's default (5 s) and httpx's (5 s) both ends gave up an idle connection at the same
moment: the portal's or the notifier's next request on it could meet the server's close and fail
with "Server disconnected without sending a response" (an invoice read in a soak run did)."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI

from services.onboarding.config import OnboardingSettings
from shared.web import server_config


def test_an_api_keeps_idle_connections_longer_than_its_clients_reuse_them(tmp_path: Path) -> None:
    config = server_config(OnboardingSettings(var_dir=tmp_path), FastAPI())
    client_reuse_s = httpx.Limits().keepalive_expiry  # what every client of the suite uses
    assert client_reuse_s is not None
    # And longer than a proxy in front commonly keeps one to its upstream (60 s).
    assert config.timeout_keep_alive > max(client_reuse_s, 60)
