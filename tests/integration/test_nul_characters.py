"""A NUL character anywhere in a request is a 422 naming where, on every service: PostgreSQL
cannot store one, and no field of this product has a use for it."""

# ruff: noqa: F811 - the identity API fixtures are imported from test_login and used by name

from __future__ import annotations

import httpx
import pytest

from tests.integration.test_login import client, database_url, settings  # noqa: F401 - fixtures


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "where"),
    [
        ("POST", "/v1/login", {"json": {"username": "\u0000", "password": "x" * 12}}, "body"),
        ("POST", "/v1/login", {"content": b'{"username": "a\x00b", "password": "y"}'}, "body"),
        (
            "POST",
            "/v1/activation",
            {"json": {"username": "a", "activation_code": "\u0000", "password": "p"}},
            "body",
        ),
        ("GET", "/v1/users?cvr=%00", {}, "query"),
    ],
)
async def test_nul_characters_are_refused_before_they_reach_the_database(
    client: httpx.AsyncClient, method: str, path: str, kwargs: dict, where: str
) -> None:
    response = await client.request(method, path, headers={"content-type": "application/json"}, **kwargs)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"] == [
        {"field": where, "message": "text must not contain NUL characters (\\u0000)"}
    ]


async def test_text_without_nul_characters_passes(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/login", json={"username": "nobody-here", "password": "x" * 12})
    assert response.status_code == 401  # the ordinary answer: it reached the login
