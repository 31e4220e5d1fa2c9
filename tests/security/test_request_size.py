"""No request body larger than the limit is read (`max_request_body_bytes`, 1 MiB by default):
413 problem+json at once when Content-Length says so, and for a chunked body as soon as the
limit is passed — a 200 MB upload once took an API from 292 MB to 703 MB of memory."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.registry import SERVICES
from tests.support.api_process import api_process
from tests.support.asgi import AppTransport

PROBLEM = "application/problem+json"
LIMIT = 64 * 1024
CHUNK = 16 * 1024
# A POST route of each service that reads a JSON body (the notifier has none: any path will do,
# the limit applies before routing).
POSTS = {
    "onboarding": "/v1/applications",
    "identity": "/v1/login",
    "billing": "/v1/orders",
    "notifier": "/v1/deliveries",
    "portal": "/log-ind",
}


@pytest.fixture(params=list(SERVICES))
def api(request: pytest.FixtureRequest, migrated_database, tmp_path: Path) -> tuple[str, FastAPI]:
    """Each service's API in this process, with the limit at 64 KiB."""
    service = request.param
    parts = SERVICES[service]
    url = migrated_database(service)
    settings = parts.settings_type()(database_url=url, var_dir=tmp_path, max_request_body_bytes=LIMIT)
    module = __import__(f"services.{service}.api", fromlist=["create_api"])
    return service, module.create_api(settings)


def chunked_scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"api.test"),
            (b"content-type", b"application/json"),
            (b"transfer-encoding", b"chunked"),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("api.test", 80),
    }


async def test_a_chunked_body_over_the_limit_is_refused_after_reading_just_past_the_limit(
    api: tuple[str, FastAPI],
) -> None:
    service, app = api
    offered = 1000  # 16 MB, if anyone read it all
    calls = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"type": "http.request", "body": b"x" * CHUNK, "more_body": calls < offered}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(chunked_scope(POSTS[service]), receive, send)

    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    body = json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
    assert start["status"] == 413, body
    assert headers["content-type"] == PROBLEM
    assert body["type"].endswith("/request-too-large") and str(LIMIT) in body["detail"]
    # The read that passed the limit was the last one.
    assert calls == LIMIT // CHUNK + 1


async def test_bodies_over_and_under_the_limit_at_once_get_413_and_their_ordinary_answer(
    api: tuple[str, FastAPI],
) -> None:
    service, app = api
    produced: list[int] = []

    async def chunks(size: int) -> AsyncIterator[bytes]:
        index = len(produced)
        produced.append(0)
        for start in range(0, size, CHUNK):
            produced[index] += min(CHUNK, size - start)
            yield b" " * min(CHUNK, size - start)

    json_type = {"content-type": "application/json"}
    under = json.dumps({"padding": "x" * (LIMIT - 100)}).encode()  # JSON the route has to read
    path = POSTS[service]
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://api.test") as client:
        answers = await asyncio.gather(
            *[client.post(path, content=b"{" * (LIMIT + 1), headers=json_type) for _ in range(3)],
            *[client.post(path, content=chunks(64 * LIMIT), headers=json_type) for _ in range(3)],
            *[client.post(path, content=under, headers=json_type) for _ in range(3)],
        )
    over, fitting = answers[:6], answers[6:]
    assert [a.status_code for a in over] == [413] * 6
    assert all(a.headers["content-type"] == PROBLEM for a in over)
    # Each chunked upload was read up to the chunk that passed the limit, and no further.
    assert produced == [LIMIT + CHUNK] * 3
    # Under the limit, the body reached the route after the checks that read it first.
    assert all(a.status_code != 413 for a in fitting)
    if service in ("onboarding", "identity"):
        assert all(a.status_code == 422 and a.json()["errors"] for a in fitting), fitting[0].text
    if service == "portal":  # a form without its CSRF token: the portal's page that says so
        assert all(a.status_code == 403 and "text/html" in a.headers["content-type"] for a in fitting)


def test_a_real_server_answers_413_at_once_to_a_content_length_over_the_limit(
    onboarding_url: str, tmp_path: Path
) -> None:
    async def ask(port: int) -> tuple[bytes, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            # A gigabyte announced, not one byte of it sent: the answer must not wait for it.
            writer.write(
                b"POST /v1/applications HTTP/1.1\r\nHost: api.test\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1073741824\r\n\r\n"
            )
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
            length = int(
                next(line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:"))[15:]
            )
            return head, await reader.readexactly(length)
        finally:
            writer.close()

    with api_process("onboarding", tmp_path, database_url=onboarding_url) as api:
        head, body = asyncio.run(ask(api.port))
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert b"content-type: application/problem+json" in head.lower()
    assert json.loads(body)["type"].endswith("/request-too-large")


def peak_memory(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_real_server_does_not_keep_a_chunked_upload_over_the_limit(
    onboarding_url: str, tmp_path: Path
) -> None:
    total = 128 * 1024 * 1024

    async def upload() -> AsyncIterator[bytes]:
        piece = b"x" * (64 * 1024)
        for _ in range(total // len(piece)):
            yield piece

    async def send(url: str, content: AsyncIterator[bytes] | bytes) -> httpx.Response:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            return await client.post(
                "/v1/applications", content=content, headers={"content-type": "application/json"}
            )

    with api_process("onboarding", tmp_path, database_url=onboarding_url) as api:
        # First a small request, so that what the code path itself needs is in the peak already.
        assert asyncio.run(send(api.url, b"{}")).status_code == 422
        before = peak_memory(api.process.pid)
        response = asyncio.run(send(api.url, upload()))
        grown = peak_memory(api.process.pid) - before
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == PROBLEM
    # The limit is 1 MiB; a server that kept the body would have grown by more than all of it.
    assert grown < total // 4, f"the API grew by {grown / 2**20:.0f} MiB for a {total / 2**20:.0f} MiB upload"


async def test_a_browser_posting_too_much_to_the_portal_gets_a_page_in_words_with_the_portals_headers(
    portal_url: str, tmp_path: Path
) -> None:
    from services.portal.api import create_api
    from services.portal.config import PortalSettings
    from services.portal.web import CONTENT_SECURITY_POLICY

    app = create_api(PortalSettings(database_url=portal_url, var_dir=tmp_path, max_request_body_bytes=LIMIT))
    browser = {
        "accept": "text/html,application/xhtml+xml,*/*;q=0.8",
        "content-type": "application/x-www-form-urlencoded",
    }
    async with httpx.AsyncClient(transport=AppTransport(app=app), base_url="http://portal") as client:
        answers = await asyncio.gather(
            *[
                client.post("/ansoeg", content=b"company_name=" + b"x" * LIMIT, headers=browser)
                for _ in range(3)
            ]
        )
    for answer in answers:
        assert answer.status_code == 413 and answer.headers["content-type"].startswith("text/html")
        assert "Det, du sendte, er for stort" in answer.text and "too large" in answer.text
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
