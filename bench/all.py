"""`make bench`: every benchmark of issue 14's targets, one after the other, and one table.

    python -m bench.all [--backend sqlite|postgres|both] [--only e2e,login] [--strict]

Each benchmark module of `MODULES` runs as its own process (`python -m bench.<name> --output
bench/results/<name>-latest.json ...`); its "[bench]" progress lines are shown as they come,
with the time since the start, and everything it prints goes to `bench/results/<name>.log`.
Afterwards its results are read (defensively: a module that failed, wrote nothing this run or
states no targets is shown as such) and this prints one table of every target (value, limit,
met or not and by how much), writes `bench/results/summary.json` and `summary.md`, and a PNG
chart per benchmark that has per-second series (`bench/results/<name>.png`).

The exit status is 0 when every module ran (exit 0), whatever the targets; `--strict` also
fails on a missed target.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from bench.charts import write_chart
from bench.measuring import (
    COMPARISONS,
    format_value,
    git_state,
    is_met,
    log,
    machine_info,
    margin,
    targets_table,
    write_json,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
HEARTBEAT_S = 30.0  # a line when a module has said nothing for this long


@dataclass(frozen=True)
class Module:
    """A benchmark module run by `make bench`: `python -m bench.<name>`, with `--output` and,
    when it has the flag, `--backend`, plus `args` (shorter runs than its own defaults where
    the whole of `make bench` should stay within a few minutes)."""

    name: str
    what: str
    args: tuple[str, ...] = ()
    takes_backend: bool = True


# The one list: adding a benchmark to `make bench` is one line here (and its named target in
# the Makefile and README).
MODULES: tuple[Module, ...] = (
    Module(
        "e2e",
        "applications S1 → S2: CPU, throughput, latency; memory (targets 1, 4)",
        ("--idle", "20", "--applications", "200", "--rate-seconds", "5"),
    ),
    Module(
        "login",
        "login's password step against raw argon2 (target 2)",
        ("--duration", "8", "--raw-seconds", "4"),
    ),
    Module(
        "auth",
        "refresh, access-token verification in billing, one-time codes (targets 2, 3)",
        ("--otp-seconds", "15"),
    ),
)


def shown(path: Path) -> str:
    """A path as a reader at the repository's root would type it."""
    return os.path.relpath(path, ROOT)


# --- reading a module's results -----------------------------------------------------------------

REQUIRED = ("id", "label", "value", "unit", "limit", "comparison")


def target_rows(benchmark: str, results: Any) -> list[dict[str, Any]]:
    """The table's rows for one module's results: its targets, each checked against the contract
    (`met` is recomputed from value, limit and comparison), or one row saying why there are none."""
    if not isinstance(results, Mapping):
        return [placeholder(benchmark, "no results")]
    targets = results.get("targets")
    if not isinstance(targets, list) or not targets:
        return [placeholder(benchmark, "no targets")]
    rows: list[dict[str, Any]] = []
    for entry in targets:
        if not isinstance(entry, Mapping) or any(key not in entry for key in REQUIRED):
            rows.append(placeholder(benchmark, "malformed target", label=str(entry)[:60]))
            continue
        if entry["comparison"] not in COMPARISONS:
            rows.append(
                placeholder(
                    benchmark, f"unknown comparison {entry['comparison']!r}", label=str(entry["label"])
                )
            )
            continue
        row = {key: entry[key] for key in REQUIRED}
        row["benchmark"] = benchmark
        row["backend"] = entry.get("backend")
        row["met"] = is_met(entry["value"], entry["limit"], entry["comparison"])
        row["margin"] = margin(entry["value"], entry["limit"], entry["comparison"])
        if "met" in entry and entry["met"] != row["met"]:
            row["note"] = f"{row['margin']} (the module said met={entry['met']})"
        rows.append(row)
    return rows


def placeholder(benchmark: str, why: str, *, label: str = "") -> dict[str, Any]:
    return {
        "benchmark": benchmark,
        "id": None,
        "label": label or why,
        "value": None,
        "unit": "",
        "limit": None,
        "comparison": "",
        "backend": None,
        "met": None,
        "note": why,
    }


def read_results(path: Path, *, written_after: float) -> tuple[Any, str | None]:
    """A module's JSON if this run wrote it; else None and why."""
    try:
        if path.stat().st_mtime < written_after:
            return None, "no results written by this run"
        return json.loads(path.read_text()), None
    except FileNotFoundError:
        return None, "no results written"
    except (OSError, ValueError) as exc:
        return None, f"unreadable results: {exc}"


# --- running a module ---------------------------------------------------------------------------


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def follow(
    module: Module,
    lines: queue.Queue[str | None],
    log_file: IO[str],
    tail: list[str],
    *,
    started: float,
    began: float,
) -> None:
    """Show the module's "[bench]" lines as they come (a heartbeat when it is quiet), keep
    everything in its log and its last lines in `tail`."""
    last_said = time.monotonic()
    while True:
        try:
            line = lines.get(timeout=HEARTBEAT_S)
        except queue.Empty:
            print(
                f"[bench {time.monotonic() - started:6.0f}s] {module.name}: still running "
                f"({time.time() - began:.0f} s, quiet for {time.monotonic() - last_said:.0f} s)",
                flush=True,
            )
            continue
        if line is None:
            break
        log_file.write(line)
        log_file.flush()
        tail.append(line.rstrip("\n"))
        del tail[:-30]
        if line.startswith("[bench]"):
            last_said = time.monotonic()
            message = line[len("[bench]") :].strip()
            print(f"[bench {time.monotonic() - started:6.0f}s] {module.name}: {message}", flush=True)


def run_module(
    module: Module, *, backend: str, results_dir: Path, started: float, position: str
) -> dict[str, Any]:
    output = results_dir / f"{module.name}-latest.json"
    log_path = results_dir / f"{module.name}.log"
    command = [sys.executable, "-m", f"bench.{module.name}", "--output", str(output)]
    if module.takes_backend:
        command += ["--backend", backend]
    command += list(module.args)
    log(f"{position} {module.name}: {module.what}")
    log(f"{position} {' '.join(command[1:])}  (output in {shown(log_path)})")
    began = time.time()
    tail: list[str] = []
    results_dir.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        assert process.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
        try:
            follow(module, lines, log_file, tail, started=started, began=began)
        except BaseException:
            # Stopped (Ctrl-C, SIGTERM): the module stops its suite on SIGTERM; wait for it.
            process.terminate()
            process.wait(timeout=120)
            raise
        exit_code = process.wait()
    seconds = time.time() - began
    results, problem = read_results(output, written_after=began)
    if exit_code != 0:
        print("\n".join(f"    | {line}" for line in tail), flush=True)
        log(f"{module.name} exited with {exit_code} after {seconds:.0f} s")
    chart = None
    if isinstance(results, Mapping) and isinstance(results.get("series"), Mapping):
        chart = write_chart(
            results["series"],
            results_dir / f"{module.name}.png",
            title=f"{module.name}: {module.what}",
        )
    rows = target_rows(module.name, results)
    if exit_code != 0 and results is None:
        rows = [placeholder(module.name, f"failed (exit {exit_code}); {problem}")]
    return {
        "name": module.name,
        "command": command[1:],
        "exit_code": exit_code,
        "seconds": round(seconds, 1),
        "results": shown(output),
        "problem": problem,
        "chart": shown(chart) if chart else None,
        "rows": rows,
    }


# --- the summary ---------------------------------------------------------------------------------


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "| benchmark | backend | target | value | limit | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        unit = str(row.get("unit", ""))
        verdict = row.get("note") or row.get("margin") or ""
        if row.get("met") is False:
            verdict = f"**{verdict}**"
        lines.append(
            f"| {row.get('benchmark', '')} | {row.get('backend') or '–'} | {row.get('label', '')} | "
            f"{format_value(row.get('value'), unit)} | {row.get('comparison', '')} "
            f"{format_value(row.get('limit'), unit)} | {verdict} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.all", description=__doc__.split("\n\n")[0])
    names = [m.name for m in MODULES]
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--only", default="", help=f"comma-separated modules, of: {', '.join(names)}")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(names)}")
    args.modules = [m for m in MODULES if not chosen or m.name in chosen]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results_dir: Path = args.results_dir.resolve()
    started = time.monotonic()
    at = datetime.now(UTC).isoformat(timespec="seconds")
    machine = machine_info()
    log(f"{len(args.modules)} benchmark(s), backend {args.backend}, on {machine['summary']}")
    modules = []
    for index, module in enumerate(args.modules, start=1):
        modules.append(
            run_module(
                module,
                backend=args.backend,
                results_dir=results_dir,
                started=started,
                position=f"({index}/{len(args.modules)})",
            )
        )
    rows = [row for module in modules for row in module.pop("rows")]
    seconds = round(time.monotonic() - started, 1)
    state = git_state()
    summary = {
        "benchmark": "all",
        "at": at,
        "machine": machine,
        "commit": state.get("commit", "unknown"),
        "git": state,
        "backend": args.backend,
        "seconds": seconds,
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "modules": modules,
        "targets": rows,
        "met": sum(1 for row in rows if row["met"] is True),
        "missed": sum(1 for row in rows if row["met"] is False),
        "without_value": sum(1 for row in rows if row["met"] is None),
    }
    write_json(summary, results_dir / "summary.json")
    (results_dir / "summary.md").write_text(
        f"`make bench` of {at}, {seconds:.0f} s, commit {summary['commit'][:10]}, "
        f"{machine['summary']}\n\n{markdown_table(rows)}\n"
    )
    print()
    print(targets_table(rows, title=f"Adgang benchmarks {machine['summary']}, {seconds:.0f} s"))
    for module in modules:
        state_text = "ok" if module["exit_code"] == 0 else f"exit {module['exit_code']}"
        chart = f", chart {module['chart']}" if module["chart"] else ""
        print(f"  {module['name']}: {state_text}, {module['seconds']:.0f} s, {module['results']}{chart}")
    print(f"  summary: {shown(results_dir / 'summary.json')}", flush=True)
    failed = any(module["exit_code"] != 0 for module in modules)
    return 1 if failed or (args.strict and summary["missed"]) else 0


if __name__ == "__main__":
    sys.exit(main())
