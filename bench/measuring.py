"""What every benchmark shares: percentiles, the machine and commit measured, free ports, the
two database backends run one after the other, and the whole suite started for a run."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from services.registry import SERVICES
from services.suite import Suite, SuiteConfig


class BenchError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports the kernel hands out for port 0; all sockets are held until all are chosen."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(values_s: Sequence[float], digits: int = 2) -> dict[str, float]:
    """Durations given in seconds, summarised in milliseconds."""
    ms = [v * 1000.0 for v in values_s]
    nan = float("nan")
    return {
        "n": len(ms),
        "min_ms": round(min(ms), digits) if ms else nan,
        "p50_ms": round(percentile(ms, 50), digits),
        "p95_ms": round(percentile(ms, 95), digits),
        "p99_ms": round(percentile(ms, 99), digits),
        "max_ms": round(max(ms), digits) if ms else nan,
        "mean_ms": round(sum(ms) / len(ms), digits) if ms else nan,
    }


def p50_p99(values_ms: Sequence[float]) -> dict[str, float]:
    """Server times already in milliseconds (the portal's `Server-Timing`)."""
    return {
        "n": len(values_ms),
        "p50_ms": round(percentile(values_ms, 50), 2),
        "p99_ms": round(percentile(values_ms, 99), 2),
    }


def machine_info() -> dict[str, Any]:
    cores = os.cpu_count()
    return {
        "cores": cores,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "summary": f"({cores} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version})",
    }


def git_state() -> dict[str, Any]:
    """The commit measured, and whether services/ or shared/ had uncommitted changes (the code
    is imported once, at the start of the run)."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "services", "shared"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError) as exc:
        return {"error": str(exc)}
    return {"commit": commit, "uncommitted_in_services_or_shared": [line for line in dirty if line]}


def over_backends(
    backends: Sequence[str],
    run: Callable[[str, str, Path | None], dict[str, Any]],
    *,
    prefix: str,
    keep_sqlite: bool = False,
    postgres_options: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], bool]:
    """`run(backend, url, sqlite_file)` on a fresh SQLite file and a throwaway PostgreSQL in
    turn. Returns each backend's result (or its error, or why it was skipped) and whether one
    failed."""
    results: dict[str, Any] = {}
    failed = False
    for backend in backends:
        try:
            if backend == "sqlite":
                tmp = Path(tempfile.mkdtemp(prefix=prefix))
                db_file = tmp / "billing.db"
                try:
                    results["sqlite"] = run("sqlite", f"sqlite+aiosqlite:///{db_file}", db_file)
                finally:
                    if keep_sqlite:
                        log(f"sqlite database kept: {db_file}")
                    else:
                        shutil.rmtree(tmp, ignore_errors=True)
                continue
            from tests.support.postgres import PostgresUnavailable, ThrowawayPostgres

            try:
                server = ThrowawayPostgres(**dict(postgres_options or {}))
                server.start()
            except PostgresUnavailable as exc:
                log(f"postgres skipped: {exc}")
                results["postgres"] = {"skipped": str(exc)}
                continue
            try:
                log(f"postgres: throwaway server on port {server.port} ({server.bin_dir})")
                results["postgres"] = run("postgres", server.create_database("billing_bench"), None)
            finally:
                server.stop()
        except Exception as exc:
            failed = True
            print(f"[bench] {backend} FAILED: {exc}", file=sys.stderr, flush=True)
            if not isinstance(exc, BenchError):
                traceback.print_exc()
            results[backend] = {"error": f"{type(exc).__name__}: {exc}"}
    return results, failed


@contextmanager
def running_suite(
    prefix: str,
    extra_env: Mapping[str, str],
    *,
    keep_var: bool = False,
    database_urls: Mapping[str, str] | None = None,
) -> Iterator[Suite]:
    """The whole suite on free ports in a temporary var dir, stopped afterwards; the var dir
    is kept for its logs when the run fails (or when asked). Each service's database is a
    SQLite file in the var dir unless `database_urls` names another (a PostgreSQL database)."""
    var_dir = Path(tempfile.mkdtemp(prefix=prefix))
    broker, smtp, sms, *ports = free_ports(3 + len(SERVICES))
    suite = Suite(
        SuiteConfig(
            var_dir=var_dir,
            broker_port=broker,
            smtp_port=smtp,
            sms_port=sms,
            ports=dict(zip(SERVICES, ports, strict=True)),
            database_urls=dict(database_urls or {}),
            extra_env=dict(extra_env),
        )
    )
    ok = False
    try:
        yield suite
        ok = True
    finally:
        suite.stop()
        if not ok:
            print(f"kept {var_dir} for its logs", file=sys.stderr)
        elif not keep_var:
            shutil.rmtree(var_dir, ignore_errors=True)
