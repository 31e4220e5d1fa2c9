"""Tokens and one-time codes (S7): refresh, access-token verification in billing, and the
latency of a login's one-time code, in one run.

    python -m bench.auth [--backend sqlite|postgres|both] [--parts refresh,verify,otp]

For each backend (a SQLite file; PostgreSQL on a throwaway server from tests/support/postgres.py):

1. **refresh** — identity's API alone (`python -m services.cli api identity`, uvicorn, real HTTP
   on a free port). `--refresh-concurrency` sessions are opened straight through identity's own
   use case (`Sessions.open`), then each client exchanges its refresh token for the next one
   (`POST /v1/token/refresh`: each refresh token works once) as soon as it is answered, for
   `--refresh-seconds`. Requests per second **per core** = requests ÷ the API process's CPU
   seconds (user + system, `/proc`). CPU, not wall time with the API pinned to a core: the
   machine is shared, and a neighbour on the pinned core would make a pinned rate measure the
   neighbour; the process's CPU time counts only its own work (target ≥ 500).
2. **verify** — billing's `TokenVerifier` as billing builds it (`services.billing.bootstrap`,
   its JWKS fetched once from an in-process transport serving identity's keys), in this process,
   `--verify-iterations` times on one access token: CPU per verification of the token alone
   (signature, claims) and with billing's revocation read (`Revocations.is_revoked`, one read of
   billing's database per request: S12) — the target (≤ 0.2 ms) is on the latter, what billing
   runs per request. Beside it, the server side: billing's API alone (JWKS from the identity API
   of step 1), CPU per request of `GET /v1/products` with the token (the cheapest route that
   verifies one) against `GET /healthz` (none): the difference is what verifying costs the
   server, with its HTTP handling.
3. **otp** — the whole suite (`services/suite.py`: broker, every worker and API, the mail and
   SMS sinks). `--otp-users` active logins are written into identity's database; then logins
   start on a fixed schedule (open loop) at `--otp-rate` a second for `--otp-seconds`: the
   password, then `POST /v1/login/{id}/send` by SMS and by email in turn, then the code read
   from the sink is verified. Latency = from sending the code request to the file's mtime in
   the sink (`<var>/sinks/sms/<number>/*.json`, `<var>/sinks/mail/<address>/*.eml`): p50, p95,
   p99 (targets: SMS p99 ≤ 300 ms, email p99 ≤ 500 ms). The identity API's per-address login
   limit stays on: each login's requests come from an address of its own in 127.0.0.0/8.

Results (JSON, the contract of `bench/all.py`) go to `bench/results/auth-latest.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.login import PASSWORD, make_logins
from bench.measuring import (
    ROOT,
    BenchError,
    database_beside,
    free_ports,
    git_state,
    log,
    machine_info,
    over_backends,
    p50_p99,
    per_second_counts,
    percentile,
    process_cpu_seconds,
    running_suite,
    start_api,
    stop_process,
    summary_ms,
    target,
    wait_until_up,
)
from services.identity.config import IdentitySettings
from services.identity.models import User
from services.notifier.sinks import mailbox_folder
from services.registry import SERVICES
from shared.db import migrate
from tests.support.flows import one_time_code

PARTS = ("refresh", "verify", "otp")
REFRESH_PER_CORE = 500.0  # requests a second per core (issue 14)
VERIFY_LIMIT_MS = 0.2
# The logins of these benchmarks: administrators of the company with every function.
ADMINISTRATORS: dict[str, Any] = {"role": "administrator", "functions": ("invoices", "user_admin")}
OTP_SMS_P99_MS = 300.0
OTP_EMAIL_P99_MS = 500.0
# --- set-up -------------------------------------------------------------------------------------


async def open_sessions(settings: IdentitySettings, users: Sequence[User]) -> list[tuple[str, str]]:
    """A session for each user through identity's own use case: (access token, refresh token)."""
    from services.identity.bootstrap import build

    parts = build(settings)
    pairs = []
    try:
        async with parts.db.transaction() as session:
            for user in users:
                mine = await session.get(User, user.id)
                assert mine is not None
                tokens = await parts.sessions.open(
                    session, mine, user_agent="bench", client_address="127.0.0.1"
                )
                pairs.append((tokens.access_token, tokens.refresh_token))
    finally:
        await parts.db.dispose()
    return pairs


async def refreshes(
    base_url: str, refresh_tokens: Sequence[str], *, pid: int, seconds: float, warmup: int
) -> dict[str, Any]:
    """One client per session, each exchanging its newest refresh token for the next."""
    n = len(refresh_tokens)
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    tokens = list(refresh_tokens)
    latencies: list[float] = []
    ends: list[float] = []

    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as http:

        async def one(i: int) -> float:
            started = time.perf_counter()
            answer = await http.post("/v1/token/refresh", json={"refresh_token": tokens[i]})
            if answer.status_code != 200:
                raise BenchError(f"refresh answered {answer.status_code}: {answer.text[:300]}")
            tokens[i] = answer.json()["refresh_token"]
            return time.perf_counter() - started

        for _ in range(warmup):
            await asyncio.gather(*(one(i) for i in range(n)))
        stop_at = time.perf_counter() + seconds

        async def client(i: int) -> None:
            while time.perf_counter() < stop_at:
                latencies.append(await one(i))
                ends.append(time.perf_counter())

        cpu_before, client_before = process_cpu_seconds(pid), time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(n)))
        wall = time.perf_counter() - started
        cpu, client_cpu = process_cpu_seconds(pid) - cpu_before, time.process_time() - client_before
    done = len(latencies)
    return {
        "concurrency": n,
        "requests": done,
        "seconds": round(wall, 3),
        "per_second": round(done / wall, 2),
        "api_cpu_seconds": round(cpu, 3),
        "api_cpu_ms_per_request": round(cpu * 1000 / done, 3) if done else None,
        "per_second_per_core": round(done / cpu, 1) if cpu else None,
        "api_cores_busy": round(cpu / wall, 2),
        "client_cpu_ms_per_request": round(client_cpu * 1000 / done, 3) if done else None,
        "latency": summary_ms(latencies),
        "series": per_second_counts(ends, start=started, end=max(ends, default=started)),
    }


# --- 2. verify ----------------------------------------------------------------------------------


async def verify_in_process(
    billing_url: str, signing_spec: str, active: str, access_token: str, iterations: int
) -> dict[str, Any]:
    """billing's verifier, built as billing builds it, on one token: CPU and wall per call."""
    from services.billing.bootstrap import build
    from services.billing.config import BillingSettings
    from shared.tokens import TokenSigner, parse_signing_keys

    signer = TokenSigner(parse_signing_keys(signing_spec), active)
    jwks = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(200, json=signer.jwks())))
    parts = build(BillingSettings(database_url=billing_url), jwks_client=jwks)
    verifier = parts.verifier
    try:
        now = parts.clock.now()
        await verifier.verify(access_token, now=now)  # fetches the JWKS once

        async def timed(call: Callable[[], Any]) -> dict[str, float]:
            for _ in range(min(200, iterations)):
                await call()
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(iterations):
                await call()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            return {
                "iterations": iterations,
                "cpu_ms_per_call": round(cpu * 1000 / iterations, 4),
                "wall_ms_per_call": round(wall * 1000 / iterations, 4),
            }

        with_revocations = await timed(lambda: verifier.verify(access_token, now=now))
        bare = build(BillingSettings(database_url=billing_url), jwks_client=jwks).verifier
        bare._is_revoked = None  # the token alone: signature and claims
        await bare.verify(access_token, now=now)
        token_only = await timed(lambda: bare.verify(access_token, now=now))
        revocation_read = await timed(lambda: parts.revocations.is_revoked(_claims(signer, access_token)))
    finally:
        await parts.db.dispose()
        await jwks.aclose()
    return {
        "token_only": token_only,
        "with_revocation_read": with_revocations,
        "revocation_read": revocation_read,
    }


_CLAIMS: dict[str, Any] = {}


def _claims(signer: Any, token: str) -> Any:
    if token not in _CLAIMS:
        _CLAIMS[token] = signer.verify(token, now=datetime.now(UTC))
    return _CLAIMS[token]


async def server_side(
    base_url: str, access_token: str, *, pid: int, requests: int, concurrency: int
) -> dict[str, Any]:
    """billing's API CPU per request: `/healthz` (no token) and `GET /v1/products` (a token)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as http:
        for name, path, headers in (
            ("healthz", "/healthz", {}),
            ("products_with_token", "/v1/products", {"Authorization": f"Bearer {access_token}"}),
        ):
            left = iter(range(requests))

            async def client(path: str = path, headers: dict[str, str] = headers, left: Any = left) -> None:
                for _ in left:
                    answer = await http.get(path, headers=headers)
                    if answer.status_code != 200:
                        raise BenchError(f"billing {path} answered {answer.status_code}: {answer.text[:300]}")

            for _ in range(50):
                await http.get(path, headers=headers)
            cpu, wall = process_cpu_seconds(pid), time.perf_counter()
            await asyncio.gather(*(client() for _ in range(concurrency)))
            cpu, wall = process_cpu_seconds(pid) - cpu, time.perf_counter() - wall
            results[name] = {
                "requests": requests,
                "api_cpu_ms_per_request": round(cpu * 1000 / requests, 3),
                "per_second": round(requests / wall, 1),
            }
    results["token_cost_cpu_ms_per_request"] = round(
        results["products_with_token"]["api_cpu_ms_per_request"]
        - results["healthz"]["api_cpu_ms_per_request"],
        3,
    )
    return results


# --- refresh and verify, on one backend -------------------------------------------------------------


def run_tokens(backend: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    var_dir = Path(tempfile.mkdtemp(prefix="adgang-bench-auth-"))
    settings = IdentitySettings(database_url=url, var_dir=var_dir)
    migrate(SERVICES["identity"].migrations, url)
    users = asyncio.run(make_logins(url, args.refresh_concurrency, "not-a-hash", **ADMINISTRATORS))
    pairs = asyncio.run(open_sessions(settings, users))
    from shared.tokens import development_signing_keys

    spec, active = development_signing_keys(var_dir)
    result: dict[str, Any] = {}
    identity_port, billing_port = free_ports(2)
    identity = start_api(
        "identity",
        {
            "ADGANG_IDENTITY_VAR_DIR": str(var_dir),
            "ADGANG_IDENTITY_DATABASE_URL": url,
            "ADGANG_IDENTITY_HTTP_PORT": str(identity_port),
        },
        var_dir / "identity-api.log",
    )
    ok = False
    try:
        identity_url = f"http://127.0.0.1:{identity_port}"
        asyncio.run(wait_until_up(identity_url, identity, 60))
        if "refresh" in args.parts:
            log(f"{backend}: refresh, {len(pairs)} sessions in flight for {args.refresh_seconds:.0f} s")
            refresh = asyncio.run(
                refreshes(
                    identity_url,
                    [r for _, r in pairs],
                    pid=identity.pid,
                    seconds=args.refresh_seconds,
                    warmup=args.warmup,
                )
            )
            log(
                f"{backend}: refresh {refresh['per_second']}/s, {refresh['api_cpu_ms_per_request']} ms API CPU "
                f"per request = {refresh['per_second_per_core']}/s per core"
            )
            result["refresh"] = refresh
        if "verify" in args.parts:
            billing_db = (
                f"sqlite+aiosqlite:///{var_dir / 'billing.db'}" if backend == "sqlite" else args.billing_url
            )
            migrate(SERVICES["billing"].migrations, billing_db)
            access = pairs[0][0]
            log(f"{backend}: verification in process, {args.verify_iterations} calls each")
            verify = asyncio.run(verify_in_process(billing_db, spec, active, access, args.verify_iterations))
            log(
                f"{backend}: token alone {verify['token_only']['cpu_ms_per_call']} ms CPU, with billing's "
                f"revocation read {verify['with_revocation_read']['cpu_ms_per_call']} ms CPU"
            )
            billing = start_api(
                "billing",
                {
                    "ADGANG_BILLING_VAR_DIR": str(var_dir / "billing"),
                    "ADGANG_BILLING_DATABASE_URL": billing_db,
                    "ADGANG_BILLING_HTTP_PORT": str(billing_port),
                    "ADGANG_BILLING_IDENTITY_JWKS_URL": f"{identity_url}/.well-known/jwks.json",
                },
                var_dir / "billing-api.log",
            )
            try:
                billing_url = f"http://127.0.0.1:{billing_port}"
                asyncio.run(wait_until_up(billing_url, billing, 60))
                log(f"{backend}: billing's API, {args.server_requests} requests each")
                verify["server"] = asyncio.run(
                    server_side(
                        billing_url,
                        access,
                        pid=billing.pid,
                        requests=args.server_requests,
                        concurrency=args.refresh_concurrency,
                    )
                )
                log(f"{backend}: billing API {verify['server']}")
            finally:
                stop_process(billing)
            result["verify"] = verify
        ok = True
    finally:
        stop_process(identity)
        if ok:
            shutil.rmtree(var_dir, ignore_errors=True)
        else:
            log(f"kept {var_dir} for the APIs' logs")
    return result


# --- 3. one-time codes on the whole suite -----------------------------------------------------------


@dataclass
class OtpRun:
    sms: list[float] = field(default_factory=list)
    email: list[float] = field(default_factory=list)
    points: dict[str, list[list[float]]] = field(default_factory=lambda: {"sms": [], "email": []})
    send_http: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    late_starts: int = 0
    client_cpu_s: float = 0.0
    # challenge id -> wall-clock times: code asked, 202 answered, file in the sink (its mtime)
    times: dict[str, tuple[float, float, float]] = field(default_factory=dict)


class SinkWatch:
    """Tells each waiting login when a new file reaches its sink folder: one poller for all of
    them, every `interval` seconds, instead of one polling task per login.

    A folder is listed only when its own mtime changed since its last listing (a new entry
    changes it), or while that mtime is still recent: the file system's clock is coarse (a few
    milliseconds), so a file linked in the same tick as the last listing would leave the mtime
    as it was. A waiting folder whose mtime is old costs one `stat` a poll. What is measured
    does not depend on the poll: the latency is the file's own mtime."""

    RECENT_NS = 50_000_000  # list a folder again while its mtime is this recent

    def __init__(self, interval: float = 0.005) -> None:
        self._interval = interval
        # folder -> its waiters: (names already there, the future of the new file)
        self._waiting: dict[Path, list[tuple[set[str], asyncio.Future[Path]]]] = {}
        self._listed_mtime: dict[Path, int] = {}
        self._poller: asyncio.Task[None] | None = None
        self.listings = 0
        self.stats = 0

    def expect(self, folder: Path) -> asyncio.Future[Path]:
        """The next file that was not in `folder` now: a future, resolved by the poller."""
        try:
            seen = set(os.listdir(folder))
        except FileNotFoundError:
            seen = set()
        future: asyncio.Future[Path] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(folder, []).append((seen, future))
        self._listed_mtime.pop(folder, None)  # list it at the next poll
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        return future

    def forget(self, folder: Path, future: asyncio.Future[Path]) -> None:
        """A waiter that gave up (its deadline passed)."""
        waiters = [w for w in self._waiting.get(folder, []) if w[1] is not future]
        if waiters:
            self._waiting[folder] = waiters
        else:
            self._waiting.pop(folder, None)
            self._listed_mtime.pop(folder, None)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    async def _poll(self) -> None:
        while self._waiting:
            await asyncio.sleep(self._interval)
            now_ns = time.time_ns()
            for folder in list(self._waiting):
                self._check(folder, now_ns)

    def _check(self, folder: Path, now_ns: int) -> None:
        self.stats += 1
        try:
            mtime = os.stat(folder).st_mtime_ns
        except FileNotFoundError:
            return
        listed = self._listed_mtime.get(folder)
        if listed == mtime and now_ns - mtime > self.RECENT_NS:
            return
        self.listings += 1
        names = [n for n in os.listdir(folder) if n.endswith((".json", ".eml"))]
        self._listed_mtime[folder] = mtime
        left = []
        for seen, future in self._waiting[folder]:
            new = next((n for n in names if n not in seen), None)
            if new is not None and not future.done():
                future.set_result(folder / new)
            elif not future.done():
                left.append((seen, future))
        if left:
            self._waiting[folder] = left
        else:
            del self._waiting[folder]
            self._listed_mtime.pop(folder, None)


class LoginClients:
    """The HTTP side of the logins: one SSL context for all of them (loading the CA
    certificates costs milliseconds of CPU, and httpx makes one per transport even for plain
    http), a client per login bound to that login's source address."""

    def __init__(self, base_url: str) -> None:
        self._base_url = base_url
        self._ssl = httpx.create_ssl_context()

    def client(self, address: str) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=address, verify=self._ssl)
        return httpx.AsyncClient(base_url=self._base_url, timeout=30, transport=transport, trust_env=False)


async def one_login(
    clients: LoginClients,
    watch: SinkWatch,
    user: User,
    channel: str,
    address: str,
    sinks: Path,
    run: OtpRun,
    t0: float,
) -> None:
    folder = sinks / "sms" / user.mobile if channel == "sms" else sinks / "mail" / mailbox_folder(user.email)
    async with clients.client(address) as http:
        answer = await http.post("/v1/login", json={"username": user.username, "password": PASSWORD})
        if answer.status_code != 200:
            raise BenchError(f"login answered {answer.status_code}: {answer.text[:200]}")
        challenge = answer.json()["challenge_id"]
        arrived = watch.expect(folder)
        asked_wall = time.time()
        asked = time.perf_counter()
        sent = await http.post(f"/v1/login/{challenge}/send", json={"method": channel})
        run.send_http.append(time.perf_counter() - asked)
        answered_wall = time.time()
        if sent.status_code != 202:
            watch.forget(folder, arrived)
            raise BenchError(f"send answered {sent.status_code}: {sent.text[:200]}")
        try:
            found = await asyncio.wait_for(asyncio.shield(arrived), timeout=max(0.0, asked + 30 - time.perf_counter()))
        except TimeoutError:
            watch.forget(folder, arrived)
            raise BenchError(f"no {channel} reached the sink within 30 s") from None
        # The sink links a file complete (`write_once`): its mtime is when it was written.
        mtime = found.stat().st_mtime
        latency = max(0.0, mtime - asked_wall)
        run.times[challenge] = (asked_wall, answered_wall, mtime)
        getattr(run, channel).append(latency)
        run.points[channel].append([round(asked - t0, 3), round(latency * 1000, 2)])
        text = found.read_text(errors="replace")
        if channel == "email":
            message = email.message_from_string(text, policy=email.policy.default)
            body = message.get_body(("plain",))
            text = body.get_content() if body is not None else text
        else:
            text = json.loads(text).get("text", text)
        verified = await http.post(f"/v1/login/{challenge}/verify", json={"code": one_time_code(text)})
        if verified.status_code != 200:
            raise BenchError(f"verify answered {verified.status_code}: {verified.text[:200]}")


async def otp_load(identity_url: str, users: Sequence[User], sinks: Path, args: argparse.Namespace) -> OtpRun:
    run = OtpRun()
    free: asyncio.Queue[User] = asyncio.Queue()
    for user in users:
        free.put_nowait(user)
    addresses = itertools.cycle(f"127.0.{i // 250}.{i % 250 + 2}" for i in range(1000))
    channels = itertools.cycle(("sms", "email"))
    tasks: set[asyncio.Task[None]] = set()
    total = int(args.otp_rate * args.otp_seconds)
    clients = LoginClients(identity_url)
    watch = SinkWatch()
    cpu_before = time.process_time()
    t0 = time.perf_counter()

    async def login(channel: str, address: str) -> None:
        user = await free.get()
        try:
            await one_login(clients, watch, user, channel, address, sinks, run, t0)
        except httpx.HTTPError as exc:
            path = exc.request.url.path if exc._request is not None else "?"
            run.errors.append(f"{type(exc).__name__} on {path}: {exc}")
        except Exception as exc:
            run.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            free.put_nowait(user)

    for i in range(total):
        due = t0 + i / args.otp_rate
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -0.05:
            run.late_starts += 1
        if free.empty():
            run.late_starts += 1
        task = asyncio.create_task(login(next(channels), next(addresses)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if i and i % int(args.otp_rate * 5) == 0:
            log(
                f"otp: {i} logins started, SMS p99 {percentile(run.sms, 99) * 1000:.0f} ms, "
                f"email p99 {percentile(run.email, 99) * 1000:.0f} ms so far"
            )
    await asyncio.gather(*tasks)
    await watch.close()
    run.client_cpu_s = time.process_time() - cpu_before
    return run


STAGES = (
    ("answered", "code asked -> 202 answered (identity's API)"),
    ("published", "outbox row written -> acknowledged by the broker (identity's relay)"),
    ("recorded", "outbox row written -> delivery recorded (the notifier's consumer)"),
    ("sent", "delivery recorded -> file in the sink (the notifier's dispatcher)"),
    ("settled", "file in the sink -> delivery marked delivered"),
)


async def otp_stages(identity_url: str, notifier_url: str, run: OtpRun) -> dict[str, Any]:
    """Where a code's time went, per channel: the identity outbox row of each measured login
    (`created_at` in the send request's transaction, `published_at` once the broker
    acknowledged its relay batch) joined to the notifier's delivery of it (`created_at` in the
    consumer's transaction, `delivered_at` after the sink answered) and to the client's own
    times. `published_at` is stamped after the whole batch's acknowledgement, so the consumer
    may record an event before its row is marked."""
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import create_async_engine

    from services.identity.models import messaging as identity_messaging
    from services.notifier.models import Delivery
    from shared.clock import as_utc

    outbox = identity_messaging.outbox
    rows: dict[str, tuple[str, datetime, datetime | None]] = {}
    engine = create_async_engine(identity_url)
    try:
        async with engine.connect() as connection:
            query = select(outbox.c.event_id, outbox.c.value, outbox.c.created_at, outbox.c.published_at)
            for event_id, value, created, published in await connection.execute(
                query.where(outbox.c.headers.contains("OtpRequested"))
            ):
                rows[event_id] = (json.loads(value)["challenge_id"], created, published)
    finally:
        await engine.dispose()
    engine = create_async_engine(notifier_url)
    try:
        async with engine.connect() as connection:
            deliveries = (
                await connection.execute(
                    select(
                        Delivery.source_event_id, Delivery.channel, Delivery.created_at, Delivery.delivered_at
                    ).where(Delivery.source_event_id.in_(list(rows)))
                )
            ).all()
    finally:
        await engine.dispose()
    found: dict[str, dict[str, list[float]]] = {}
    for event_id, channel, recorded, delivered in deliveries:
        challenge, created, published = rows[event_id]
        if challenge not in run.times or published is None or delivered is None:
            continue
        asked, answered, in_sink = run.times[challenge]
        written = as_utc(created).timestamp()
        stages = found.setdefault(channel, {name: [] for name, _ in STAGES})
        stages["answered"].append(answered - asked)
        stages["published"].append(as_utc(published).timestamp() - written)
        stages["recorded"].append(as_utc(recorded).timestamp() - written)
        stages["sent"].append(in_sink - as_utc(recorded).timestamp())
        stages["settled"].append(as_utc(delivered).timestamp() - in_sink)
    return {
        "stages": dict(STAGES),
        **{
            channel: {name: p50_p99([v * 1000 for v in values]) for name, values in stages.items()}
            for channel, stages in found.items()
        },
    }


def run_otp(backend: str, args: argparse.Namespace, database_urls: dict[str, str]) -> dict[str, Any]:
    extra_env = {"ADGANG_BILLING_INVOICE_RUN_ENABLED": "false"}
    with running_suite("adgang-bench-auth-otp-", extra_env, database_urls=database_urls) as suite:
        log(f"otp: starting the suite ({backend}) in {suite.config.var_dir}")
        suite.start(deadline_s=180)
        hashing = IdentitySettings().password_hashing()
        users = asyncio.run(
            make_logins(
                suite.database_url("identity"), args.otp_users, hashing.hash(PASSWORD), prefix="otp", **ADMINISTRATORS
            )
        )
        sinks = suite.config.var_dir / "sinks"
        identity_url = suite.url("identity")
        warm = OtpRun()

        async def warm_up() -> None:
            clients, watch = LoginClients(identity_url), SinkWatch()
            for i, channel in enumerate(("sms", "email", "sms", "email")):
                await one_login(clients, watch, users[i], channel, "127.0.0.1", sinks, warm, time.perf_counter())
            await watch.close()

        asyncio.run(warm_up())
        log(
            f"otp: warm-up done (SMS {warm.sms}, email {warm.email}); {args.otp_rate}/s for {args.otp_seconds:.0f} s"
        )
        pids = {name: c.process.pid for name, c in suite.children.items() if c.process}
        cpu_before = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
        started = time.perf_counter()
        run = asyncio.run(otp_load(identity_url, users[4:], sinks, args))
        wall = time.perf_counter() - started
        cpu = {name: round(process_cpu_seconds(pid) - cpu_before[name], 2) for name, pid in pids.items()}
        stages = asyncio.run(otp_stages(suite.database_url("identity"), suite.database_url("notifier"), run))
    if run.errors:
        log(f"otp: {len(run.errors)} logins failed, first: {run.errors[0]}")
    logins = len(run.sms) + len(run.email)
    return {
        "rate": args.otp_rate,
        "seconds": round(wall, 2),
        "logins": logins,
        "errors": len(run.errors),
        "first_errors": run.errors[:5],
        "late_starts": run.late_starts,
        "sms": summary_ms(run.sms),
        "email": summary_ms(run.email),
        "send_request": summary_ms(run.send_http),
        "stages_ms": stages,
        "cpu_seconds": cpu,
        # this process, the logins' client: what it takes from the machine the suite runs on
        "client_cpu_seconds": round(run.client_cpu_s, 2),
        "client_cpu_ms_per_login": round(run.client_cpu_s * 1000 / logins, 2) if logins else None,
        "points": run.points,
    }


def run_backend(backend: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if {"refresh", "verify"} & set(args.parts):
        result.update(run_tokens(backend, url, args))
    if "otp" in args.parts:
        urls: dict[str, str] = {}
        if backend == "postgres":
            urls = {name: database_beside(url, f"otp_{name}") for name in SERVICES}
        result["otp"] = run_otp(backend, args, urls)
        otp = result["otp"]
        log(
            f"{backend}: OTP SMS p50/p95/p99 {otp['sms']['p50_ms']}/{otp['sms']['p95_ms']}/{otp['sms']['p99_ms']} ms, "
            f"email {otp['email']['p50_ms']}/{otp['email']['p95_ms']}/{otp['email']['p99_ms']} ms"
        )
    return result


def targets_of(backend: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    if (refresh := result.get("refresh")) and refresh.get("per_second_per_core"):
        found.append(
            target(
                f"auth.refresh_per_core.{backend}",
                f"refresh requests/s per core of identity's API ({backend})",
                refresh["per_second_per_core"],
                "req/s/core",
                REFRESH_PER_CORE,
                ">=",
                backend,
            )
        )
    if verify := result.get("verify"):
        found.append(
            target(
                f"auth.verify_token.{backend}",
                f"access-token verification in billing, signature and claims ({backend})",
                verify["token_only"]["cpu_ms_per_call"],
                "ms",
                VERIFY_LIMIT_MS,
                "<=",
                backend,
            )
        )
        found.append(
            target(
                f"auth.verify_with_revocations.{backend}",
                f"access-token verification in billing with its revocation read ({backend})",
                verify["with_revocation_read"]["cpu_ms_per_call"],
                "ms",
                VERIFY_LIMIT_MS,
                "<=",
                backend,
            )
        )
    if (otp := result.get("otp")) and otp["sms"]["n"] and otp["email"]["n"]:
        found.append(
            target(
                f"auth.otp_sms_p99.{backend}",
                f"one-time code request -> SMS gateway sink, p99 at {otp['rate']:g} logins/s ({backend})",
                otp["sms"]["p99_ms"],
                "ms",
                OTP_SMS_P99_MS,
                "<=",
                backend,
            )
        )
        found.append(
            target(
                f"auth.otp_email_p99.{backend}",
                f"one-time code request -> mail sink, p99 at {otp['rate']:g} logins/s ({backend})",
                otp["email"]["p99_ms"],
                "ms",
                OTP_EMAIL_P99_MS,
                "<=",
                backend,
            )
        )
    return found


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.auth", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--refresh-seconds", type=float, default=10.0)
    parser.add_argument("--refresh-concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=5, help="rounds of refreshes before measuring")
    parser.add_argument("--verify-iterations", type=int, default=3000)
    parser.add_argument("--server-requests", type=int, default=2000, help="billing API requests per route")
    parser.add_argument("--otp-rate", type=float, default=20.0, help="logins a second (open loop)")
    parser.add_argument("--otp-seconds", type=float, default=30.0)
    parser.add_argument("--otp-users", type=int, default=200, help="logins written into identity's database")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "auth-latest.json")
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not args.parts or set(args.parts) - set(PARTS):
        parser.error(f"--parts takes a comma-separated choice of {', '.join(PARTS)}")
    if min(args.refresh_seconds, args.otp_seconds, args.otp_rate) <= 0 or args.refresh_concurrency < 1:
        parser.error("durations, the rate and the concurrency must be positive")
    if args.verify_iterations < 1 or args.server_requests < 1 or args.otp_users < 8 or args.warmup < 0:
        parser.error("--verify-iterations and --server-requests at least 1, --otp-users at least 8")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    backends = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)
    state = git_state()
    results: dict[str, Any] = {
        "benchmark": "auth",
        "started_at": datetime.now(UTC).isoformat(),
        "machine": machine_info(),
        "commit": state.get("commit"),
        "git": state,
        "flags": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }

    def run(backend: str, url: str, _file: Path | None) -> dict[str, Any]:
        if backend == "postgres":  # billing's database for the verification, on the same server
            args.billing_url = database_beside(url, "bench_billing")
        return run_backend(backend, url, args)

    per_backend, failed = over_backends(backends, run, prefix="adgang-bench-auth-db-")
    results["backends"] = per_backend
    results["targets"] = [t for backend, r in per_backend.items() for t in targets_of(backend, r)]
    series: dict[str, Any] = {}
    for backend, r in per_backend.items():
        if (refresh := r.get("refresh")) and refresh.get("series"):
            series[f"refresh requests/s ({backend})"] = {"unit": "req/s", "points": refresh.pop("series")}
        if otp := r.get("otp"):
            for channel, points in otp.pop("points").items():
                series[f"OTP {channel} latency ({backend})"] = {"unit": "ms", "points": points}
    results["series"] = series
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n")
    print()
    print(f"tokens and one-time codes {results['machine']['summary']}")
    print(f"{'target':<86} {'value':>10} {'limit':>12}  met")
    for t in results["targets"]:
        print(
            f"{t['label']:<86} {t['value']:>10.3f} {t['comparison']:>3} {t['limit']:<8g} "
            f"{'yes' if t['met'] else 'NO'} ({t['unit']})"
        )
    print(f"results: {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
