"""What every benchmark shares: percentiles, the machine and commit measured, free ports, the
two database backends run one after the other, the whole suite or one service's API started
for a run, and the CPU and memory of processes."""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from services.registry import SERVICES
from services.suite import Suite, SuiteConfig

ROOT = Path(__file__).resolve().parent.parent


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
        # The machine is shared: how busy it was when the run started (1, 5, 15 minutes).
        "load_average": [round(v, 2) for v in os.getloadavg()],
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
    SQLite file in the var dir unless `database_urls` names another (`service_databases`).
    The block runs in the var dir, where faust writes its `<app id>-data` dirs."""
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
    cwd = Path.cwd()
    try:
        os.chdir(var_dir)
        yield suite
        ok = True
    finally:
        os.chdir(cwd)
        suite.stop()
        if not ok:
            print(f"kept {var_dir} for its logs", file=sys.stderr)
        elif not keep_var:
            shutil.rmtree(var_dir, ignore_errors=True)


@contextmanager
def service_databases(backend: str, prefix: str) -> Iterator[tuple[Any, dict[str, str]]]:
    """Each service's database for `running_suite`: on SQLite none to name (the files go in
    the var dir); on PostgreSQL one database per service, `<prefix>_<service>`, on a throwaway
    server stopped afterwards. Yields the server (None on SQLite) and the URLs."""
    if backend != "postgres":
        yield None, {}
        return
    from tests.support.postgres import ThrowawayPostgres

    server = ThrowawayPostgres()
    server.start()
    try:
        log(f"postgres: throwaway server on port {server.port} ({server.bin_dir})")
        yield server, {name: server.create_database(f"{prefix}_{name}") for name in SERVICES}
    finally:
        server.stop()


# --- targets: the contract's "targets" entries, and how a reader sees them -------------------

COMPARISONS = ("<=", ">=")


def target(
    id: str,
    label: str,
    value: float,
    unit: str,
    limit: float,
    comparison: str,
    backend: str | None = None,
) -> dict[str, Any]:
    """One entry of a benchmark's "targets" (see notes in bench/README.md): `met` is derived
    from the value, never set by hand."""
    if comparison not in COMPARISONS:
        raise ValueError(f"comparison must be one of {COMPARISONS}, not {comparison!r}")
    return {
        "id": id,
        "label": label,
        "value": value,
        "unit": unit,
        "limit": limit,
        "comparison": comparison,
        "met": is_met(value, limit, comparison),
        "backend": backend,
    }


def is_met(value: Any, limit: Any, comparison: str) -> bool:
    if not isinstance(value, int | float) or math.isnan(value):
        return False
    return value <= limit if comparison == "<=" else value >= limit


def margin(value: Any, limit: Any, comparison: str) -> str:
    """By how much a target is met or missed, as a factor of the limit. A ceiling (<=):
    "met, 2.50× under" (the value could grow 2.5 times before reaching the limit) or "MISSED,
    3.10× over" (it is 3.1 times the limit). A floor (>=): "met, 1.20× above" or "MISSED, 30.00×
    short" (it must grow 30 times)."""
    if not isinstance(value, int | float) or not isinstance(limit, int | float) or math.isnan(value):
        return "no value"
    met = is_met(value, limit, comparison)
    if comparison == "<=":
        if value <= 0:
            return "met" if met else "MISSED"
        factor = limit / value if met else value / limit
        word = "under" if met else "over"
    else:
        if limit <= 0:
            return "met" if met else "MISSED"
        if value <= 0:
            return "MISSED, nothing measured"
        factor = value / limit if met else limit / value
        word = "above" if met else "short"
    return f"{'met' if met else 'MISSED'}, {factor:.2f}× {word}"


def format_value(value: Any, unit: str) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return "–"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 1:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".strip()


def targets_table(rows: Sequence[Mapping[str, Any]], *, title: str = "") -> str:
    """A plain-text table of targets; each row may carry "benchmark" beside the contract's keys."""
    header = ["benchmark", "backend", "target", "value", "limit", "verdict"]
    lines = [
        [
            str(row.get("benchmark", "")),
            str(row.get("backend") or "–"),
            str(row.get("label", row.get("id", "?"))),
            format_value(row.get("value"), str(row.get("unit", ""))),
            f"{row.get('comparison', '?')} {format_value(row.get('limit'), str(row.get('unit', '')))}",
            str(row.get("note") or margin(row.get("value"), row.get("limit"), str(row.get("comparison")))),
        ]
        for row in rows
    ]
    if not any(line[0] for line in lines):
        header, lines = header[1:], [line[1:] for line in lines]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]
    out = [title] if title else []
    out.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    out.append("  ".join("-" * w for w in widths))
    for line in lines:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)))
    judged = [row for row in rows if row.get("met") is not None]
    met = sum(1 for row in judged if row.get("met") is True)
    without = len(rows) - len(judged)
    out.append(
        f"{met} of {len(judged)} targets met" + (f"; {without} row(s) without a value" if without else "")
    )
    return "\n".join(out)


_NUMBER = r"(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|null|NaN)"
_PAIR = re.compile(r"\[\s+" + _NUMBER + r",\s+" + _NUMBER + r"\s+\]")


def write_json(results: Mapping[str, Any], output: Path) -> None:
    """Write atomically (a reader never sees half a file)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".tmp")
    text = json.dumps(results, indent=2, ensure_ascii=False, default=str)
    # Pairs (the series' [t, value] points) on one line each: a quarter of the size, still diffable.
    text = _PAIR.sub(r"[\1, \2]", text)
    partial.write_text(text + "\n")
    partial.replace(output)


# --- processes: CPU and memory of a process and its descendants, from /proc -------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process visible now."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def process_trees(roots: Mapping[str, int]) -> dict[str, list[int]]:
    """Each named root with its live descendants (a process started by a service counts as the
    service's)."""
    parents = _parents()
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    trees: dict[str, list[int]] = {}
    for name, root in roots.items():
        if root not in parents:
            trees[name] = []
            continue
        found, todo = [], [root]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, ()))
        trees[name] = found
    return trees


def cpu_seconds(pid: int) -> float | None:
    """user + system time of one process so far; None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # after the command name: state is field 3, utime 14 and stime 15 (1-based)
    return (int(fields[11]) + int(fields[12])) / _TICKS


def process_cpu_seconds(pid: int) -> float:
    """`cpu_seconds` of a process that must still run (a benchmark's API under test)."""
    seconds = cpu_seconds(pid)
    if seconds is None:
        raise BenchError(f"process {pid} is gone")
    return seconds


def tree_cpu_seconds(pids: Sequence[int]) -> float:
    """user + system time of the processes and of their children already reaped (cutime,
    cstime): summed over a tree, a process that ended keeps counting through its parent."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        # after the command name: utime, stime, cutime, cstime are fields 14-17 (1-based)
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / _TICKS


def tree_rss_kb(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
                break
    return total


# --- series: per-second figures for the charts ----------------------------------------------


def per_second_counts(times_s: Sequence[float], *, start: float, end: float) -> list[list[float]]:
    """Events per second in [start, end), one point per whole second (t = seconds after start,
    at the end of each second)."""
    seconds = max(0, math.ceil(end - start))
    counts = [0] * seconds
    for t in times_s:
        index = math.floor(t - start)
        if 0 <= index < seconds:
            counts[index] += 1
    return [[float(i + 1), float(c)] for i, c in enumerate(counts)]


def per_second_percentile(
    finished: Sequence[tuple[float, float]], pct: float, *, start: float, end: float
) -> list[list[float]]:
    """The `pct` percentile of the values of what finished in each second: `finished` holds
    (finish time, value); seconds where nothing finished have no point."""
    seconds = max(0, math.ceil(end - start))
    buckets: list[list[float]] = [[] for _ in range(seconds)]
    for at, value in finished:
        index = math.floor(at - start)
        if 0 <= index < seconds:
            buckets[index].append(value)
    return [[float(i + 1), round(percentile(b, pct), 2)] for i, b in enumerate(buckets) if b]


# --- one service's API alone, for a benchmark of its requests ---------------------------------


def start_api(service: str, env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`adgang api <service>` (uvicorn, real HTTP) with `env` over this environment, on
    127.0.0.1, logging warnings only, its output in `log_path`; the code of this checkout."""
    prefix = f"ADGANG_{service.upper()}_"
    full = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        f"{prefix}HTTP_HOST": "127.0.0.1",
        f"{prefix}LOG_LEVEL": "WARNING",
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "api", service],
        cwd=ROOT,
        env=full,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if it has not ended within 20 s."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def wait_until_up(base_url: str, process: subprocess.Popen[bytes], deadline_s: float) -> None:
    """Until `base_url`/healthz answers 200; fails if the process ends first or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BenchError(f"{base_url} exited with {process.returncode} before answering")
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise BenchError(f"{base_url} did not answer /healthz within {deadline_s:.0f} s")


def database_beside(url: str, name: str) -> str:
    """A new database `name` on the throwaway PostgreSQL server of `url` (`over_backends`
    gives a run one database); its URL."""
    from tests.support.postgres import create_database_on

    parsed = make_url(url)
    assert parsed.port is not None
    create_database_on(parsed.port, name)
    return parsed.set(database=name).render_as_string(hide_password=False)
