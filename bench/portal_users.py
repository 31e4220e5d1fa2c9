"""The portal's user list (Selvbetjeningsbrugere, S4/S12) for a company with 500 users.

Starts the whole suite (`services/suite.py`) on free ports in a temporary var dir: a company
applies, its administrator activates from the letter and logs in through the portal, and
creates 499 colleagues through identity's API. Then the administrator's browser session
asks for `/brugere` and for the portal's `/healthz` in turn, one request at a time, and the
portal's own `Server-Timing` (the time it spent on the answer, its calls to identity
included) gives the server time of each. What we keep is the ratio of the two within one run
(the machine is shared and noisy): `bench/README.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.measuring import machine_info, p50_p99, running_suite
from services.billing.demo import GROUP_PARENT_CVR
from services.suite import Suite
from tests.support.flows import (
    STRONG_PASSWORD,
    activate_letter,
    apply_once_known,
    one_time_code,
    wait_for_letters,
    wait_for_mail,
)

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SERVER_TIMING = re.compile(r"app;dur=([0-9.]+)")
ADMIN_EMAIL = "bench-admin@nordlys.example"
ADMIN_MOBILE = "+4520999999"


def csrf(http: httpx.Client, path: str) -> str:
    found = CSRF.search(http.get(path).text)
    if not found:
        raise RuntimeError(f"no form on {path}")
    return found.group(1)


def log_in_through_portal(suite: Suite, http: httpx.Client, username: str) -> None:
    """As a browser: password, a code by email from the mail sink, the code."""
    posted = http.post(
        "/log-ind",
        data={"username": username, "password": STRONG_PASSWORD, "csrf_token": csrf(http, "/log-ind")},
    )
    if posted.status_code != 303:
        raise RuntimeError(f"login refused: {posted.status_code}")
    seen = len(wait_for_mail(suite, ADMIN_EMAIL, 0))
    http.post("/log-ind/send", data={"method": "email", "csrf_token": csrf(http, "/log-ind/kode")})
    mails = wait_for_mail(suite, ADMIN_EMAIL, seen + 1)
    code = one_time_code(mails[-1].text)
    done = http.post("/log-ind/kode", data={"code": code, "csrf_token": csrf(http, "/log-ind/kode")})
    if done.status_code != 303:
        raise RuntimeError(f"second factor refused: {done.status_code}")


def identity_token(suite: Suite, username: str) -> str:
    with httpx.Client(base_url=suite.url("identity"), timeout=30) as http:
        challenge = http.post("/v1/login", json={"username": username, "password": STRONG_PASSWORD}).json()
        seen = len(wait_for_mail(suite, ADMIN_EMAIL, 0))
        http.post(f"/v1/login/{challenge['challenge_id']}/send", json={"method": "email"})
        code = one_time_code(wait_for_mail(suite, ADMIN_EMAIL, seen + 1)[-1].text)
        tokens = http.post(f"/v1/login/{challenge['challenge_id']}/verify", json={"code": code}).json()
    return str(tokens["access_token"])


async def create_colleagues(suite: Suite, token: str, count: int, concurrency: int) -> float:
    """`count` colleagues through `POST /v1/users`; returns the seconds it took."""
    gate = asyncio.Semaphore(concurrency)
    started = time.monotonic()
    async with httpx.AsyncClient(
        base_url=suite.url("identity"), timeout=60, headers={"Authorization": f"Bearer {token}"}
    ) as http:

        async def one(n: int) -> None:
            body = {
                "name": f"Kollega {n:03d}",
                "email": f"kollega{n:03d}@nordlys.example",
                "mobile": f"+4528{n:06d}",
                "grants": [{"cvr": GROUP_PARENT_CVR, "accounts": "all"}],
                "functions": ["invoices"],
            }
            async with gate:
                answer = await http.post("/v1/users", json=body)
            if answer.status_code != 201:
                raise RuntimeError(f"creating colleague {n}: {answer.status_code} {answer.text[:200]}")

        await asyncio.gather(*(one(n) for n in range(1, count + 1)))
    return time.monotonic() - started


def server_ms(answer: httpx.Response) -> float:
    found = SERVER_TIMING.search(answer.headers.get("server-timing", ""))
    if answer.status_code != 200 or not found:
        raise RuntimeError(f"{answer.request.url}: {answer.status_code} without Server-Timing")
    return float(found.group(1))


def measure(http: httpx.Client, identity: httpx.Client, requests: int, warmup: int) -> dict[str, Any]:
    """Each round: the page, the portal's /healthz, and identity's `GET /v1/users` that the page
    calls (as a client on this machine sees it), to tell the portal's part from identity's."""
    users: list[float] = []
    health: list[float] = []
    api: list[float] = []
    for n in range(warmup + requests):
        page = http.get("/brugere")
        alive = http.get("/healthz")
        started = time.perf_counter()
        listed_by_identity = identity.get("/v1/users")
        elapsed_ms = (time.perf_counter() - started) * 1000
        if listed_by_identity.status_code != 200:
            raise RuntimeError(f"identity's /v1/users: {listed_by_identity.status_code}")
        if n >= warmup:
            users.append(server_ms(page))
            health.append(server_ms(alive))
            api.append(elapsed_ms)
    listed = page.text.count("<tr") - 1  # the rows of the table of users, without its head

    result: dict[str, Any] = {
        "users_page": p50_p99(users),
        "healthz": p50_p99(health),
        "identity_users_api": p50_p99(api),
        "rows_on_page": listed,
    }
    result["ratio_p50"] = round(result["users_page"]["p50_ms"] / result["healthz"]["p50_ms"], 1)
    result["ratio_p99"] = round(result["users_page"]["p99_ms"] / result["healthz"]["p99_ms"], 1)
    return result


def run(opts: argparse.Namespace) -> dict[str, Any]:
    extra_env = {
        "ADGANG_IDENTITY_LOGIN_RATE_LIMIT_PER_MINUTE": "0",
        "ADGANG_BILLING_INVOICE_RUN_ENABLED": "false",
    }
    with running_suite("adgang-bench-portal-", extra_env, keep_var=opts.keep_var) as suite:
        suite.start(deadline_s=120)
        application = apply_once_known(suite, GROUP_PARENT_CVR, email=ADMIN_EMAIL, mobile=ADMIN_MOBILE)
        if application.status_code != 202:
            raise RuntimeError(f"application refused: {application.text}")
        letter = wait_for_letters(suite, GROUP_PARENT_CVR)[0]
        activated = activate_letter(suite, letter, mobile=ADMIN_MOBILE, email=ADMIN_EMAIL)
        if activated.status_code != 200:
            raise RuntimeError(f"activation refused: {activated.text}")
        token = identity_token(suite, letter.username)
        created_s = asyncio.run(create_colleagues(suite, token, opts.users - 1, opts.concurrency))
        token = identity_token(suite, letter.username)  # a fresh one: access tokens live 5 minutes
        with (
            httpx.Client(base_url=suite.url("portal"), timeout=60) as http,
            httpx.Client(
                base_url=suite.url("identity"), timeout=60, headers={"Authorization": f"Bearer {token}"}
            ) as identity,
        ):
            log_in_through_portal(suite, http, letter.username)
            result = measure(http, identity, opts.requests, opts.warmup)
        result.update(
            users=opts.users,
            created_per_s=round((opts.users - 1) / created_s, 1),
            machine=machine_info(),
            at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--users", type=int, default=500, help="users of the company, the administrator included"
    )
    parser.add_argument("--requests", type=int, default=200, help="measured requests of each page")
    parser.add_argument("--warmup", type=int, default=10, help="requests of each page before measuring")
    parser.add_argument("--concurrency", type=int, default=8, help="colleagues created at once (set-up)")
    parser.add_argument("--output", type=Path, default=Path("bench/results/portal-users-latest.json"))
    parser.add_argument("--keep-var", action="store_true")
    opts = parser.parse_args(argv)
    result = run(opts)
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"/brugere with {result['users']} users ({result['rows_on_page']} rows on the page): "
        f"p50 {result['users_page']['p50_ms']} ms, p99 {result['users_page']['p99_ms']} ms; "
        f"/healthz p50 {result['healthz']['p50_ms']} ms, p99 {result['healthz']['p99_ms']} ms; "
        f"ratio p50 {result['ratio_p50']}x, p99 {result['ratio_p99']}x; identity's /v1/users p50 "
        f"{result['identity_users_api']['p50_ms']} ms {result['machine']['summary']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
