"""The metrics token rule (docs/security.md) holds when many requests arrive at once, on an API
served by uvicorn as `adgang api` serves it and on a worker's metrics server: in production
`/metrics` is served only when a metrics token is set, then only to the requests bearing it.
Every request bearing it is served; every other one, however close to it, is refused (401
problem+json that does not repeat the token). A blank token is no token: nobody is served,
not even a request bearing an empty or blank bearer."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from services.onboarding.config import OnboardingSettings
from shared.observability import WorkerMetricsServer
from tests.support.api_process import api_process
from tests.support.ports import free_ports

TOKEN = "a-long-metrics-token-for-the-scraper"
ROUNDS = 10  # each kind of request this many times, all at once
RIGHT: list[dict[str, str]] = [{"Authorization": f"Bearer {TOKEN}"}, {"Authorization": f"bearer {TOKEN}"}]
WRONG: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": f"Bearer {TOKEN.upper()}"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": "Bearer"},
]
# Requests an empty token would match if it counted (h11 sends no header value ending in a space).
BLANK: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer"},
    {"Authorization": "bearer"},
    {"Authorization": "Bearer x"},
]


@pytest.fixture
def database_url(onboarding_url: str) -> str:
    return onboarding_url


Burst = list[tuple[dict[str, str], httpx.Response]]


async def burst(url: str, kinds: list[dict[str, str]]) -> Burst:
    """Every kind of request ROUNDS times, shuffled, each on a connection of its own, all at once."""
    requests = [headers for headers in kinds for _ in range(ROUNDS)]
    random.Random(13).shuffle(requests)
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        answers = await asyncio.gather(*(http.get(url, headers=headers) for headers in requests))
    return list(zip(requests, answers, strict=True))


def assert_only_the_token_is_served(answers: Burst) -> None:
    right = [answer for headers, answer in answers if headers in RIGHT]
    wrong = [answer for headers, answer in answers if headers not in RIGHT]
    assert len(right) == len(RIGHT) * ROUNDS and len(wrong) == len(WRONG) * ROUNDS
    mistakes = [
        (headers.get("Authorization"), answer.status_code)
        for headers, answer in answers
        if answer.status_code != (200 if headers in RIGHT else 401)
    ]
    assert not mistakes, mistakes
    for answer in right:
        assert answer.headers["content-type"].startswith("text/plain")
        assert "process_open_fds" in answer.text and "adgang_consumer_lag_messages" in answer.text
    for answer in wrong:
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in answer.json()["detail"]
        assert TOKEN not in answer.text and "process_open_fds" not in answer.text


def assert_nobody_is_served(answers: Burst) -> None:
    assert len(answers) == len(BLANK) * ROUNDS
    mistakes = [
        (headers.get("Authorization"), answer.status_code)
        for headers, answer in answers
        if answer.status_code != 404
    ]
    assert not mistakes, mistakes
    assert not [answer for _, answer in answers if "process_open_fds" in answer.text]


def worker_settings(database_url: str, tmp_path: Path, token: str) -> OnboardingSettings:
    return OnboardingSettings(
        environment="production",
        metrics_token=SecretStr(token),
        database_url=database_url,
        var_dir=tmp_path,
        worker_metrics_port=free_ports(1)[0],
    )


async def on_worker(settings: OnboardingSettings, fire: Callable[[str], Awaitable[Burst]]) -> Burst:
    server = WorkerMetricsServer(settings)
    await server.start()
    try:
        return await fire(f"http://127.0.0.1:{settings.worker_metrics_port}/metrics")
    finally:
        await server.stop()


def test_an_apis_metrics_serve_every_request_with_the_token_and_refuse_every_other_at_once(
    database_url: str, tmp_path: Path
) -> None:
    with api_process(
        "onboarding", tmp_path, database_url=database_url, environment="production", metrics_token=TOKEN
    ) as api:
        answers = asyncio.run(burst(f"{api.url}/metrics", RIGHT + WRONG))
    assert_only_the_token_is_served(answers)


async def test_a_workers_metrics_serve_every_request_with_the_token_and_refuse_every_other_at_once(
    database_url: str, tmp_path: Path
) -> None:
    answers = await on_worker(
        worker_settings(database_url, tmp_path, TOKEN), lambda url: burst(url, RIGHT + WRONG)
    )
    assert_only_the_token_is_served(answers)


def test_with_a_blank_token_an_apis_metrics_serve_nobody_at_once(database_url: str, tmp_path: Path) -> None:
    with api_process(
        "onboarding", tmp_path, database_url=database_url, environment="production", metrics_token="  "
    ) as api:
        answers = asyncio.run(burst(f"{api.url}/metrics", BLANK))
    assert_nobody_is_served(answers)


async def test_with_a_blank_token_a_workers_metrics_serve_nobody_at_once(
    database_url: str, tmp_path: Path
) -> None:
    settings = worker_settings(database_url, tmp_path, "  ")
    assert settings.metrics_token is None
    answers = await on_worker(settings, lambda url: burst(url, BLANK))
    assert_nobody_is_served(answers)
