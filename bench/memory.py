"""Memory of the whole suite: RSS and PSS of every process, idle and under the apply flow's load.

    python -m bench.memory [--applications 400] [--concurrency 16] [--output PATH]

Issue 14's target: each process at most 150 MB RSS under load, the whole suite at most 1 GB.
It starts the whole suite (`services/suite.py`: the embedded broker, the sinks, every worker
and API) on free ports in a temporary var dir on SQLite, with the onboarding rate limit off,
then:

1. idle: once every process is ready and a few applications went through one at a time
   (every code path the run takes has been imported and warmed), RSS and PSS of each process;
2. load: `--applications` applications (`POST /v1/applications`, `--concurrency` in flight)
   until each one's letter is in the e-Boks spool, as `bench.e2e` submits them, while a
   thread reads `/proc/<pid>/smaps_rollup` of every process twice a second: the peak RSS and
   PSS of each process, and the peak of the suite's sum;
3. after: RSS and PSS of each process once the run is over.

RSS counts every page a process has in memory, the pages it shares with others (the Python
binary, shared libraries) in each process again; PSS divides a shared page among the
processes that map it, so the PSS of all processes adds up to what the suite really takes.
The targets are on RSS, as the issue states them; PSS is beside it. The broker (Tansu, not
Python) is counted in the suite's sum and shown apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.e2e import (
    Reader,
    bench_cvrs,
    process_table,
    register_bench_customers,
    run_applications,
    wait_customers_known,
)
from bench.measuring import BenchError, git_state, log, machine_info, running_suite
from services.suite import Suite

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PROCESS_LIMIT_MB = 150.0
SUITE_LIMIT_MB = 1024.0
SAMPLE_EVERY_S = 0.5
BROKER = "broker"


def memory_of(pid: int) -> dict[str, float] | None:
    """RSS, PSS and private dirty memory of a process in MB (None once it has gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    fields: dict[str, float] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss", "Private_Dirty"):
            fields[key.lower()] = int(rest.split()[0]) / 1024
    return fields if "rss" in fields else None


def snapshot(pids: Mapping[str, int]) -> dict[str, dict[str, float]]:
    found = {name: memory_of(pid) for name, pid in pids.items()}
    return {name: value for name, value in found.items() if value is not None}


def total(snap: Mapping[str, Mapping[str, float]], key: str, *, broker: bool = True) -> float:
    return sum(value[key] for name, value in snap.items() if broker or name != BROKER)


@dataclass
class Sampler:
    """Reads every process's memory every SAMPLE_EVERY_S seconds on a thread of its own."""

    pids: Mapping[str, int]
    started: float = field(default_factory=time.monotonic)
    peak: dict[str, dict[str, float]] = field(default_factory=dict)
    suite_peak: dict[str, float] = field(default_factory=lambda: {"rss": 0.0, "pss": 0.0})
    points: list[tuple[float, dict[str, dict[str, float]]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        snap = snapshot(self.pids)
        self.points.append((time.monotonic() - self.started, snap))
        for name, value in snap.items():
            mine = self.peak.setdefault(name, dict(value))
            for key, number in value.items():
                mine[key] = max(mine.get(key, 0.0), number)
        for key in ("rss", "pss"):
            self.suite_peak[key] = max(self.suite_peak[key], total(snap, key))

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            self.sample()

    def __enter__(self) -> Sampler:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.sample()


async def measure(suite: Suite, applications: int, concurrency: int, warmup: int) -> dict[str, Any]:
    pids = process_table(suite)
    cvrs = bench_cvrs(warmup + applications)
    warm, run = cvrs[:warmup], cvrs[warmup:]
    log(f"registering {len(cvrs)} customers in billing ...")
    await register_bench_customers(suite, cvrs)
    reader = Reader(suite)
    try:
        await wait_customers_known(reader, cvrs, deadline_s=90.0)
    finally:
        await reader.close()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=suite.url("onboarding"), timeout=30.0, limits=limits) as client:
        log(f"warm-up: {len(warm)} applications, one at a time ...")
        for i, cvr in enumerate(warm):
            await run_applications(suite, client, [cvr], concurrency=1, deadline_s=60.0, index_base=i)
        idle = snapshot(pids)
        log(
            f"load: {applications} applications, concurrency {concurrency}, memory sampled every {SAMPLE_EVERY_S}s ..."
        )
        with Sampler(pids) as sampler:
            result = await run_applications(
                suite, client, run, concurrency=concurrency, deadline_s=180.0, index_base=warmup
            )
    if result.duplicates:
        raise BenchError(f"{result.duplicates} duplicate letters")
    after = snapshot(pids)
    return {"pids": pids, "idle": idle, "sampler": sampler, "after": after}


def report(measured: Mapping[str, Any]) -> dict[str, Any]:
    idle: dict[str, dict[str, float]] = measured["idle"]
    after: dict[str, dict[str, float]] = measured["after"]
    sampler: Sampler = measured["sampler"]
    names = sorted(sampler.peak, key=lambda name: -sampler.peak[name]["rss"])
    processes = {
        name: {
            "idle": {k: round(v, 1) for k, v in idle.get(name, {}).items()},
            "peak": {k: round(v, 1) for k, v in sampler.peak[name].items()},
            "after": {k: round(v, 1) for k, v in after.get(name, {}).items()},
        }
        for name in names
    }
    python = [name for name in names if name != BROKER]
    largest = max(python, key=lambda name: sampler.peak[name]["rss"])
    suite_rss = sampler.suite_peak["rss"]
    sums = {
        phase: {
            "rss": round(total(snap, "rss"), 1),
            "pss": round(total(snap, "pss"), 1),
            "python_rss": round(total(snap, "rss", broker=False), 1),
            "python_pss": round(total(snap, "pss", broker=False), 1),
        }
        for phase, snap in (("idle", idle), ("after", after))
    }
    sums["peak"] = {k: round(v, 1) for k, v in sampler.suite_peak.items()}
    targets = [
        {
            "id": "memory.process_rss_peak",
            "label": f"largest process RSS under load ({largest})",
            "value": round(sampler.peak[largest]["rss"], 1),
            "unit": "MB",
            "limit": PROCESS_LIMIT_MB,
            "comparison": "<=",
            "met": sampler.peak[largest]["rss"] <= PROCESS_LIMIT_MB,
            "backend": "sqlite",
        },
        {
            "id": "memory.suite_rss_peak",
            "label": "whole suite RSS under load (broker included)",
            "value": round(suite_rss, 1),
            "unit": "MB",
            "limit": SUITE_LIMIT_MB,
            "comparison": "<=",
            "met": suite_rss <= SUITE_LIMIT_MB,
            "backend": "sqlite",
        },
    ]
    series = {
        "suite RSS": {
            "unit": "MB",
            "points": [[round(t, 2), round(total(s, "rss"), 1)] for t, s in sampler.points],
        },
        "suite PSS": {
            "unit": "MB",
            "points": [[round(t, 2), round(total(s, "pss"), 1)] for t, s in sampler.points],
        },
        f"{largest} RSS": {
            "unit": "MB",
            "points": [[round(t, 2), round(s[largest]["rss"], 1)] for t, s in sampler.points if largest in s],
        },
    }
    return {"processes": processes, "sums": sums, "targets": targets, "series": series}


def print_table(results: Mapping[str, Any]) -> None:
    print()
    print(
        f"{'process':<22} {'idle RSS':>9} {'idle PSS':>9} {'peak RSS':>9} {'peak PSS':>9} {'after RSS':>10}"
    )
    for name, row in results["processes"].items():
        print(
            f"{name:<22} {row['idle'].get('rss', 0):>9.1f} {row['idle'].get('pss', 0):>9.1f} "
            f"{row['peak']['rss']:>9.1f} {row['peak']['pss']:>9.1f} {row['after'].get('rss', 0):>10.1f}"
        )
    sums = results["sums"]
    print(
        f"{'sum (python only)':<22} {sums['idle']['python_rss']:>9.1f} {sums['idle']['python_pss']:>9.1f} "
        f"{'':>9} {'':>9} {sums['after']['python_rss']:>10.1f}"
    )
    print(
        f"{'sum (with broker)':<22} {sums['idle']['rss']:>9.1f} {sums['idle']['pss']:>9.1f} "
        f"{sums['peak']['rss']:>9.1f} {sums['peak']['pss']:>9.1f} {sums['after']['rss']:>10.1f}"
    )
    print()
    for target in results["targets"]:
        verdict = "met" if target["met"] else "NOT MET"
        print(
            f"  {target['label']}: {target['value']} {target['unit']} (limit {target['limit']:g}) {verdict}"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--applications", type=int, default=400, help="applications under load (default 400)")
    parser.add_argument("--concurrency", type=int, default=16, help="HTTP requests in flight (default 16)")
    parser.add_argument("--warmup", type=int, default=3, help="applications one at a time first (default 3)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "memory.json")
    parser.add_argument(
        "--keep-var", action="store_true", help="keep the temporary var dir (logs, databases)"
    )
    args = parser.parse_args(argv)
    if args.applications < 1 or args.concurrency < 1 or args.warmup < 1:
        parser.error("counts must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    output: Path = args.output.resolve()
    try:
        with running_suite(
            "adgang-bench-memory-", {"ADGANG_ONBOARDING_RATE_LIMIT_PER_MINUTE": "0"}, keep_var=args.keep_var
        ) as suite:
            log(f"starting the suite in {suite.config.var_dir} ...")
            suite.start(deadline_s=120.0)
            measured = asyncio.run(measure(suite, args.applications, args.concurrency, args.warmup))
    except Exception as exc:
        print(f"[bench] FAILED: {exc}", file=sys.stderr, flush=True)
        if not isinstance(exc, BenchError):
            traceback.print_exc()
        return 1
    state = git_state()
    results = {
        "benchmark": "memory",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "commit": state.get("commit", ""),
        "git": state,
        "options": {"applications": args.applications, "concurrency": args.concurrency, "warmup": args.warmup},
        **report(measured),
    }
    print_table(results)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    log(f"results written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
