"""The password step of login (S7) against raw argon2id, with the same parameters, in one run.

    python -m bench.login [--backend sqlite|postgres|both] [--duration 15] [--concurrency 8]

For each backend (a SQLite file in a temporary directory; PostgreSQL on a throwaway server
from tests/support/postgres.py when its binaries are installed) it:

1. migrates identity's database and makes `--users` active logins straight in it, each with a
   password hash of identity's configured parameters (`IdentitySettings.password_hashing()`:
   the `ADGANG_IDENTITY_PASSWORD_HASH_*` settings of the environment, OWASP's minimum by
   default);
2. measures **raw argon2**: one thread per core, each verifying the right password against one
   such hash (argon2-cffi, as identity does) for `--raw-seconds`, in this process while
   identity is idle: verifications per second;
3. starts identity's API alone (`python -m services.cli api identity`, uvicorn, real HTTP on
   a free port; per-address login limit off) and, after `--warmup` logins, keeps
   `--concurrency` `POST /v1/login` requests with right passwords in flight for `--duration`
   seconds, each client on a login of its own (so no client waits for another's try on the
   same username): logins per second, latency, and the API process's CPU per login;
4. measures raw argon2 again, and divides: `ratio = logins/s ÷ mean raw verifications/s`
   (the target is ≥ 0.85: the API may spend at most 15 % beside argon2 on the password step).

The login under test is the whole step 1: the rate-limit check, the counted try (its own
transaction), one argon2 verification in a thread, and the transaction that forgets the try and
opens the challenge. Results go to `bench/results/login-latest.json`, with "targets" (the
contract of `bench/all.py`): per backend the ratio of rates (the target as issue 14 states it)
and the ratio of CPU (one raw verification's CPU ÷ the API's CPU per login), which a busy shared
machine moves much less: there the raw threads and the API are slowed alike only while both
use every core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from argon2 import PasswordHasher, extract_parameters

from bench.measuring import (
    ROOT,
    BenchError,
    free_ports,
    git_state,
    log,
    machine_info,
    over_backends,
    process_cpu_seconds,
    start_api,
    stop_process,
    summary_ms,
    wait_until_up,
)
from services.identity.config import IdentitySettings
from services.identity.models import Company, Tenant, User, UserGrant
from services.registry import SERVICES
from shared.db import Database, migrate

PASSWORD = "Bench-long-passphrase-2026"
CVR = "35657193"
TARGET_RATIO = 0.85


# --- raw argon2 ---------------------------------------------------------------------------------


def raw_verifications(password_hash: str, seconds: float, threads: int) -> dict[str, Any]:
    """`threads` threads verify the right password against `password_hash` for `seconds`
    (argon2-cffi releases the GIL while it hashes, so they run on separate cores)."""
    found = extract_parameters(password_hash)
    hasher = PasswordHasher(
        time_cost=found.time_cost, memory_cost=found.memory_cost, parallelism=found.parallelism, type=found.type
    )
    counts = [0] * threads
    started = time.perf_counter()
    deadline = started + seconds

    def work(index: int) -> None:
        while time.perf_counter() < deadline:
            if not hasher.verify(password_hash, PASSWORD):
                raise BenchError("the raw verification refused the right password")
            counts[index] += 1

    cpu_before = time.process_time()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    total = sum(counts)
    return {
        "threads": threads,
        "verifications": total,
        "seconds": round(wall, 3),
        "per_second": round(total / wall, 2),
        "cpu_ms_per_verification": round(cpu * 1000 / total, 2) if total else None,
    }


# --- identity and its logins ----------------------------------------------------------------------


async def make_logins(
    url: str,
    count: int,
    password_hash: str,
    *,
    prefix: str = "bench",
    role: str = "user",
    functions: Sequence[str] = ("invoices",),
) -> list[User]:
    """`count` active logins of one company, all with `password_hash`, each with a mobile
    number and an email of its own (the gateway and the mail sink are per recipient)."""
    db = Database(url)
    now = datetime.now(UTC)
    users = []
    try:
        async with db.transaction() as session:
            if await session.get(Company, CVR) is None:
                session.add(Company(cvr=CVR, name="Bench A/S", parent_cvr=None, account_numbers=["10000011"]))
            if await session.get(Tenant, CVR) is None:
                session.add(Tenant(cvr=CVR, name="Bench A/S", created_at=now))
            for i in range(count):
                user = User(
                    id=str(uuid.uuid4()),
                    tenant_cvr=CVR,
                    username=f"{CVR}-{prefix}{i:04d}"[:64],
                    name=f"Bruger {i}",
                    email=f"{prefix}{i}@bench.example",
                    mobile=f"+45211{i:05d}",  # valid Danish mobile numbers (the gateway checks)
                    role=role,
                    status="active",
                    functions=list(functions),
                    password_hash=password_hash,
                    created_at=now,
                    activated_at=now,
                )
                session.add(user)
                await session.flush()
                grant = UserGrant.of(CVR, "all")
                grant.user_id = user.id
                session.add(grant)
                users.append(user)
    finally:
        await db.dispose()
    return users


async def log_in(http: httpx.AsyncClient, username: str) -> float:
    started = time.perf_counter()
    answer = await http.post("/v1/login", json={"username": username, "password": PASSWORD})
    if answer.status_code != 200:
        raise BenchError(f"login of {username} answered {answer.status_code}: {answer.text[:300]}")
    return time.perf_counter() - started


async def logins(base_url: str, usernames: Sequence[str], *, pid: int, warmup: int, seconds: float) -> dict[str, Any]:
    """One client per username, each logging in again as soon as it is answered."""
    limits = httpx.Limits(max_connections=len(usernames), max_keepalive_connections=len(usernames))
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as http:
        for _ in range(warmup):
            await asyncio.gather(*(log_in(http, username) for username in usernames[:2]))
        latencies: list[float] = []
        points: list[list[float]] = []
        stop = time.perf_counter() + seconds
        t0 = time.perf_counter()

        async def client(username: str) -> None:
            while time.perf_counter() < stop:
                latencies.append(await log_in(http, username))
                points.append([round(time.perf_counter() - t0, 3), round(latencies[-1] * 1000, 2)])

        cpu_before, client_cpu_before = process_cpu_seconds(pid), time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(client(username) for username in usernames))
        wall = time.perf_counter() - started
        cpu, client_cpu = process_cpu_seconds(pid) - cpu_before, time.process_time() - client_cpu_before
    return {
        "concurrency": len(usernames),
        "logins": len(latencies),
        "seconds": round(wall, 3),
        "per_second": round(len(latencies) / wall, 2),
        "api_cpu_ms_per_login": round(cpu * 1000 / len(latencies), 2) if latencies else None,
        "api_cpu_cores_busy": round(cpu / wall, 2),
        # The benchmark's own HTTP client runs on the same cores (the raw runs have no client).
        "client_cpu_ms_per_login": round(client_cpu * 1000 / len(latencies), 2) if latencies else None,
        "latency": summary_ms(latencies),
        "points": points,
    }


def run_backend(backend: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    settings = IdentitySettings(database_url=url)  # the environment's hashing parameters
    hashing = settings.password_hashing()
    log(f"{backend}: migrating; hashing with {hashing!r}")
    migrate(SERVICES["identity"].migrations, url)
    password_hash = hashing.hash(PASSWORD)
    usernames = [user.username for user in asyncio.run(make_logins(url, args.concurrency, password_hash))]
    threads = args.raw_threads or os.cpu_count() or 1

    log(f"{backend}: raw argon2, {threads} threads, {args.raw_seconds:.0f} s")
    raw_before = raw_verifications(password_hash, args.raw_seconds, threads)
    log(f"{backend}: raw {raw_before['per_second']} verifications/s")

    var_dir = Path(tempfile.mkdtemp(prefix="adgang-bench-login-"))
    (port,) = free_ports(1)
    process = start_api(
        "identity",
        {
            "ADGANG_IDENTITY_VAR_DIR": str(var_dir),
            "ADGANG_IDENTITY_DATABASE_URL": url,
            "ADGANG_IDENTITY_HTTP_PORT": str(port),
            "ADGANG_IDENTITY_LOGIN_RATE_LIMIT_PER_MINUTE": "0",
        },
        var_dir / "identity-api.log",
    )
    ok = False
    try:
        base_url = f"http://127.0.0.1:{port}"
        asyncio.run(wait_until_up(base_url, process, 60))
        log(f"{backend}: {args.concurrency} logins in flight for {args.duration:.0f} s")
        login = asyncio.run(
            logins(base_url, usernames, pid=process.pid, warmup=args.warmup, seconds=args.duration)
        )
        log(f"{backend}: {login['per_second']} logins/s (p50 {login['latency']['p50_ms']} ms)")
        ok = True
    finally:
        stop_process(process)
        if ok:
            shutil.rmtree(var_dir, ignore_errors=True)
        else:
            log(f"kept {var_dir} for identity's log")

    raw_after = raw_verifications(password_hash, args.raw_seconds, threads)
    log(f"{backend}: raw again {raw_after['per_second']} verifications/s")
    raw_mean = (raw_before["per_second"] + raw_after["per_second"]) / 2
    ratio = login["per_second"] / raw_mean
    raw_cpu_ms = (raw_before["cpu_ms_per_verification"] + raw_after["cpu_ms_per_verification"]) / 2
    found = extract_parameters(password_hash)
    return {
        "parameters": {"memory_kib": found.memory_cost, "time_cost": found.time_cost, "parallelism": found.parallelism},
        "raw_before": raw_before,
        "raw_after": raw_after,
        "raw_per_second_mean": round(raw_mean, 2),
        "raw_cpu_ms_per_verification_mean": round(raw_cpu_ms, 2),
        "login": login,
        "ratio": round(ratio, 3),
        # CPU of one raw verification ÷ CPU of the API per login: the share of the API's work
        # on the password step that is argon2 (the client's CPU left out).
        "cpu_ratio": round(raw_cpu_ms / login["api_cpu_ms_per_login"], 3),
        "target_ratio": TARGET_RATIO,
        "met": ratio >= TARGET_RATIO,
    }


def targets_of(backend: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    if "ratio" not in result:
        return []
    return [
        {
            "id": f"login.password_step_ratio.{backend}",
            "label": f"login password step / raw argon2id verifications per second ({backend})",
            "value": result["ratio"],
            "unit": "ratio",
            "limit": TARGET_RATIO,
            "comparison": ">=",
            "met": result["ratio"] >= TARGET_RATIO,
            "backend": backend,
        },
        {
            "id": f"login.password_step_cpu_ratio.{backend}",
            "label": f"login password step: raw argon2id CPU / API CPU per login ({backend})",
            "value": result["cpu_ratio"],
            "unit": "ratio",
            "limit": TARGET_RATIO,
            "comparison": ">=",
            "met": result["cpu_ratio"] >= TARGET_RATIO,
            "backend": backend,
        },
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.login", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="sqlite")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of logins measured")
    parser.add_argument("--concurrency", type=int, default=8, help="logins in flight (one login each)")
    parser.add_argument("--warmup", type=int, default=3, help="rounds of two logins before measuring")
    parser.add_argument("--raw-seconds", type=float, default=8.0, help="seconds of each raw argon2 run")
    parser.add_argument("--raw-threads", type=int, default=0, help="raw argon2 threads (default: one per core)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "login-latest.json")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.raw_seconds <= 0 or args.concurrency < 1 or args.warmup < 0 or args.raw_threads < 0:
        parser.error("--duration and --raw-seconds must be positive, --concurrency at least 1, the rest not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    backends = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)
    results: dict[str, Any] = {
        "benchmark": "login",
        "started_at": datetime.now(UTC).isoformat(),
        "machine": machine_info(),
        "git": git_state(),
        "flags": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    per_backend, failed = over_backends(
        backends, lambda backend, url, _file: run_backend(backend, url, args), prefix="adgang-bench-login-db-"
    )
    results["backends"] = per_backend
    results["commit"] = results["git"].get("commit")
    results["targets"] = [t for backend, r in per_backend.items() for t in targets_of(backend, r)]
    results["series"] = {
        f"login latency ({backend})": {"unit": "ms", "points": r["login"].pop("points")}
        for backend, r in per_backend.items()
        if "login" in r
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n")
    print()
    print(f"password step of login vs raw argon2id {results['machine']['summary']}")
    print(
        f"{'backend':<10} {'params':<18} {'raw/s':>8} {'login/s':>8} {'ratio':>6}  {'p50/p99 ms':>14}  "
        "CPU ms: raw verification / API login / client login"
    )
    for backend, result in per_backend.items():
        if "ratio" not in result:
            print(f"{backend:<10} {result}")
            continue
        p = result["parameters"]
        login = result["login"]
        print(
            f"{backend:<10} m={p['memory_kib']},t={p['time_cost']},p={p['parallelism']:<3} "
            f"{result['raw_per_second_mean']:>8.1f} {login['per_second']:>8.1f} {result['ratio']:>6.3f}  "
            f"{login['latency']['p50_ms']:>6.0f}/{login['latency']['p99_ms']:<7.0f}  "
            f"{result['raw_cpu_ms_per_verification_mean']} / {login['api_cpu_ms_per_login']} / "
            f"{login['client_cpu_ms_per_login']}"
            f"{'' if result['met'] else '  (target ' + str(TARGET_RATIO) + ' not met)'}"
        )
    print(f"results: {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
