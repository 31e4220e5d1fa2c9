"""In production the APIs do not describe themselves to strangers: `/docs`, `/redoc` and
`/openapi.json` answer 404 unless switched on, and `/metrics` is served only with a metrics
token, which it then requires. Development keeps all of them open, as the README promises."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from services.onboarding.api import create_api
from services.onboarding.config import OnboardingSettings
from tests.support.asgi import AppTransport

PROBLEM = "application/problem+json"
TOKEN = "a-long-metrics-token-for-the-scraper"
DOCUMENTATION = ["/docs", "/redoc", "/openapi.json"]


@pytest.fixture
def settings_for(database_factory, tmp_path: Path):  # type: ignore[no-untyped-def]
    url = database_factory("onboarding")

    def make(**values: object) -> OnboardingSettings:
        return OnboardingSettings(database_url=url, var_dir=tmp_path, **values)

    return make


async def ask(settings: OnboardingSettings, *requests: tuple[str, dict[str, str]]) -> list[httpx.Response]:
    """The requests (path, headers) at once against onboarding's API with these settings."""
    app = create_api(settings)
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://onboarding") as http:
        return list(await asyncio.gather(*(http.get(path, headers=headers) for path, headers in requests)))


async def test_development_serves_the_documentation_and_open_metrics(settings_for) -> None:
    answers = await ask(settings_for(), *[(path, {}) for path in [*DOCUMENTATION, "/metrics"]])
    assert [a.status_code for a in answers] == [200, 200, 200, 200]
    assert answers[2].json()["info"]["title"] == "Adgang onboarding"
    assert "http_requests_total" in answers[3].text


async def test_production_hides_the_documentation_and_the_metrics_by_default(settings_for) -> None:
    settings = settings_for(environment="production")
    answers = await ask(settings, *[(path, {}) for path in [*DOCUMENTATION, "/metrics", "/healthz"]])
    assert [a.status_code for a in answers] == [404, 404, 404, 404, 200]
    assert all(a.headers["content-type"] == PROBLEM for a in answers[:4])


async def test_production_serves_the_documentation_when_switched_on(settings_for) -> None:
    answers = await ask(
        settings_for(environment="production", api_docs_enabled=True), *[(path, {}) for path in DOCUMENTATION]
    )
    assert [a.status_code for a in answers] == [200, 200, 200]


@pytest.mark.parametrize("environment", ["production", "development"])
async def test_metrics_with_a_token_answer_only_the_right_bearer(settings_for, environment: str) -> None:
    settings = settings_for(environment=environment, metrics_token=TOKEN)
    answers = await ask(
        settings,
        ("/metrics", {}),
        ("/metrics", {"Authorization": "Bearer wrong-token"}),
        ("/metrics", {"Authorization": f"Bearer {TOKEN}x"}),
        ("/metrics", {"Authorization": f"Basic {TOKEN}"}),
        ("/metrics", {"Authorization": "Bearer "}),
        ("/metrics", {"Authorization": f"Bearer {TOKEN}"}),
        ("/metrics", {"Authorization": f"bearer {TOKEN}"}),
    )
    assert [a.status_code for a in answers] == [401, 401, 401, 401, 401, 200, 200]
    for refused in answers[:5]:
        assert refused.headers["content-type"] == PROBLEM
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in refused.json()["detail"] and TOKEN not in refused.text
    assert "http_requests_total" in answers[5].text


def test_an_empty_metrics_token_is_no_token(settings_for) -> None:
    settings = settings_for(environment="production", metrics_token="  ")
    assert settings.metrics_token is None and not settings.serves_metrics


async def test_a_stranger_cannot_make_the_metrics_grow_with_methods_of_their_own(settings_for) -> None:
    """The HTTP metrics' labels stay few whatever a client sends: a method the APIs do not know
    (HTTP allows any token; uvicorn's h11 parser passes each on) counts as `other`, so a
    stranger cannot add a series per request until the process and the scraper choke."""
    app = create_api(settings_for())
    invented = [f"X{n}" for n in range(40)]
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://onboarding") as http:
        answers = await asyncio.gather(*(http.request(method, "/v1/applications") for method in invented))
        assert all(a.status_code in (404, 405) for a in answers), {a.status_code for a in answers}
        text = (await http.get("/metrics")).text
    methods = set(re.findall(r'http_requests_total\{method="([^"]*)"', text))
    assert not methods & set(invented), sorted(methods)
    assert "other" in methods
