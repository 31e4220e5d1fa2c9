"""End-to-end benchmark of the apply flow (S1, S2) against the raw broker, in one run.

    python -m bench.e2e [--applications 200] [--concurrency 16] [--raw-messages 5000]

It starts the whole suite as processes (embedded broker, every worker and API) on free ports
in a temporary var dir, then measures on that one machine, in that one run:

1. the raw broker: aiokafka produce-to-consume rate of small CloudEvents-like records on a
   dedicated topic of the same broker (once before and once after the application run);
2. the apply flow: applications submitted over HTTP until each one's MeMo letter file is in
   the e-Boks spool directory: throughput, latency from submit to letter, latency of the 202;
3. the ratio of (2) to (1), which is what we compare between runs: the machine is shared and
   noisy, so absolute numbers drift while a ratio measured within one run holds better.

It also reads the services' databases afterwards to split the latency into stages, and
samples each process's CPU time. Results go to `bench/results/latest.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from stdnum.dk import cvr as stdnum_cvr

from bench.measuring import BenchError, free_ports, machine_info, summary_ms
from services.billing.bootstrap import build as build_billing
from services.billing.config import BillingSettings
from services.billing.demo import DEMO_COMPANIES, NOT_A_CUSTOMER_CVR, DemoCompany
from services.registry import SERVICES
from services.suite import Suite, SuiteConfig
from shared.clock import SystemClock

RESULTS_DIR = Path(__file__).resolve().parent / "results"
POLL_S = 0.02  # the only sleeps: short polling intervals, always under a deadline


# --- helpers ------------------------------------------------------------------------------


def bench_cvrs(count: int, start: int = 60_000_000) -> list[str]:
    """Valid (modulus 11) CVR numbers that are not demo customers nor the demo non-customer."""
    taken = {company.cvr for company in DEMO_COMPANIES} | {NOT_A_CUSTOMER_CVR}
    found: list[str] = []
    candidate = start
    while len(found) < count:
        text = str(candidate)
        if stdnum_cvr.is_valid(text) and text not in taken:
            found.append(text)
        candidate += 1
        if candidate > 99_999_999:
            raise BenchError("ran out of CVR numbers")
    return found


async def wait_until(predicate: Any, *, deadline_s: float, what: str) -> float:
    """Poll an (async or sync) predicate until true; returns the seconds it took."""
    started = time.monotonic()
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > deadline_s:
            raise BenchError(f"timed out after {deadline_s:g}s waiting for {what}")
        await asyncio.sleep(POLL_S * 5)


def sqlite_path(suite: Suite, service: str) -> Path:
    url = suite.database_url(service)
    prefix = "sqlite+aiosqlite:///"
    if not url.startswith(prefix):
        raise BenchError(f"{service} does not use SQLite ({url}); the benchmark reads SQLite only")
    return Path(url[len(prefix) :])


def read_rows(path: Path, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    """Read-only query of a service's SQLite database (WAL lets us read beside its writers)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return list(conn.execute(sql, tuple(params)))
    finally:
        conn.close()


def count_in(path: Path, table: str, column: str, values: Sequence[str]) -> int:
    marks = ",".join("?" * len(values))
    rows = read_rows(path, f"SELECT COUNT(*) FROM {table} WHERE {column} IN ({marks})", values)
    return int(rows[0][0])


def parse_db_time(value: str | None) -> float | None:
    """SQLite keeps these as naive UTC text; returns a POSIX timestamp."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


# --- CPU accounting (Linux /proc, best effort) ----------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    # after the command name: state is field 3, utime 14 and stime 15 (1-based)
    return (int(fields[11]) + int(fields[12])) / _TICKS


def process_table(suite: Suite) -> dict[str, int]:
    pids = {name: child.process.pid for name, child in suite.children.items() if child.process}
    if suite.broker and suite.broker.process:
        pids["broker"] = suite.broker.process.pid
    return pids


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    snap = {name: cpu_seconds(pid) for name, pid in pids.items()}
    snap_clean = {name: value for name, value in snap.items() if value is not None}
    times = os.times()
    snap_clean["bench (this process)"] = times.user + times.system
    return snap_clean


def cpu_delta(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, Any]:
    used = {name: after[name] - before[name] for name in after if name in before}
    total = sum(used.values())
    return {
        "wall_s": round(wall_s, 3),
        "cpu_s": {name: round(value, 2) for name, value in sorted(used.items(), key=lambda kv: -kv[1])},
        "total_cpu_s": round(total, 2),
        "cores_busy": round(total / wall_s, 2) if wall_s > 0 else None,
    }


# --- 1. the raw broker ----------------------------------------------------------------------


async def raw_broker_rate(
    bootstrap: str, *, topic: str, messages: int, size: int, partitions: int, deadline_s: float
) -> dict[str, Any]:
    """Produce `messages` records of ~`size` bytes and consume them all; time first send to last
    record consumed. Same producer settings as the services' outbox relay (acks=all, linger 2 ms)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()

    payload_pad = "x" * max(0, size - 120)
    headers_template = [
        ("ce_source", b"urn:adgang:bench"),
        ("ce_type", b"dk.adgang.bench.Ping.v1"),
        ("ce_specversion", b"1.0"),
        ("content-type", b"application/json"),
    ]

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,  # the embedded broker has none
        linger_ms=2,
        request_timeout_ms=15000,
    )
    consuming: asyncio.Task[None] | None = None
    await consumer.start()
    await producer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        for part in parts:  # resolve positions now, so that nothing of this is timed
            await consumer.position(part)

        received = 0
        last_consumed = 0.0

        async def consume() -> None:
            nonlocal received, last_consumed
            while received < messages:
                batches = await consumer.getmany(timeout_ms=100, max_records=1000)
                for records in batches.values():
                    received += len(records)
                if batches:
                    last_consumed = time.perf_counter()

        consuming = asyncio.create_task(consume())
        first_send = time.perf_counter()
        futures = []
        now_iso = datetime.now(UTC).isoformat()
        for i in range(messages):
            key = f"{60_000_000 + i % 997}".encode()
            value = json.dumps({"seq": i, "cvr": key.decode(), "at": now_iso, "pad": payload_pad}).encode()
            headers = [
                ("ce_id", f"bench-{topic}-{i}".encode()),
                *headers_template,
                ("ce_time", now_iso.encode()),
                ("ce_subject", key),
            ]
            futures.append(await producer.send(topic, key=key, value=value, headers=headers))
        await asyncio.wait_for(asyncio.gather(*futures), timeout=deadline_s)
        all_acked = time.perf_counter()
        try:
            await asyncio.wait_for(consuming, timeout=max(1.0, deadline_s - (all_acked - first_send)))
        except TimeoutError as exc:
            raise BenchError(
                f"raw broker: consumed {received} of {messages} records within {deadline_s:g}s"
            ) from exc
        elapsed = last_consumed - first_send
        record_bytes = len(value) + sum(len(k) + len(v) for k, v in headers) + len(key)
        return {
            "topic": topic,
            "messages": messages,
            "partitions": partitions,
            "record_bytes": record_bytes,
            "produce_acked_s": round(all_acked - first_send, 3),
            "produce_to_consume_s": round(elapsed, 3),
            "messages_per_s": round(messages / elapsed, 1),
        }
    finally:
        if consuming is not None and not consuming.done():
            consuming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consuming
        await producer.stop()
        await consumer.stop()


# --- 2. customers for the benchmark ---------------------------------------------------------


async def register_bench_customers(suite: Suite, cvrs: Sequence[str]) -> None:
    """Insert customers through billing's own use case, into billing's database: billing's
    worker relays the outbox to `billing.customers`, and onboarding and identity learn them."""
    billing = build_billing(BillingSettings(database_url=suite.database_url("billing")), clock=SystemClock())
    try:
        async with billing.db.transaction() as session:
            for cvr in cvrs:
                await billing.registry.register(
                    session,
                    DemoCompany(
                        cvr,
                        f"Bench {cvr} ApS",
                        None,
                        "Benchvej 1",
                        "2100",
                        "København Ø",
                        ("Bench Kontakt", "bench@example.dk", "+4538123456"),
                        ((f"9{cvr}", "Mobil"),),
                    ),
                )
    finally:
        await billing.db.dispose()


async def wait_customers_known(suite: Suite, cvrs: Sequence[str], deadline_s: float) -> float:
    onboarding = sqlite_path(suite, "onboarding")
    identity = sqlite_path(suite, "identity")

    def known() -> bool:
        return count_in(onboarding, "known_customers", "cvr", cvrs) == len(cvrs) and count_in(
            identity, "companies", "cvr", cvrs
        ) == len(cvrs)

    return await wait_until(known, deadline_s=deadline_s, what=f"{len(cvrs)} customers to reach onboarding")


# --- 3. the apply flow --------------------------------------------------------------------


@dataclass
class Letter:
    path: Path
    mtime: float  # when the notifier wrote it (the measure)
    seen_at: float  # when this process noticed it (a check on the measure)
    files: int = 1


class LetterWatcher:
    """Polls the e-Boks spool directory `<spool>/<cvr>/*.xml` for the CVRs it is told of."""

    def __init__(self, spool: Path, cvrs: Iterable[str]) -> None:
        self.spool = spool
        self.pending = set(cvrs)
        self.found: dict[str, Letter] = {}

    def scan(self) -> None:
        try:
            entries = [entry.name for entry in os.scandir(self.spool) if entry.is_dir()]
        except FileNotFoundError:
            return
        now = time.time()
        for cvr in self.pending.intersection(entries):
            letters = [
                entry
                for entry in os.scandir(self.spool / cvr)
                if entry.name.endswith(".xml") and not entry.name.startswith(".")
            ]
            if letters:
                first = min(letters, key=lambda e: e.stat().st_mtime_ns)
                self.found[cvr] = Letter(Path(first.path), first.stat().st_mtime_ns / 1e9, now)
        self.pending.difference_update(self.found)

    async def wait_all(self, deadline_s: float) -> None:
        started = time.monotonic()
        while self.pending:
            self.scan()
            if not self.pending:
                break
            if time.monotonic() - started > deadline_s:
                missing = sorted(self.pending)
                raise BenchError(
                    f"{len(missing)} of {len(missing) + len(self.found)} letters did not arrive within "
                    f"{deadline_s:g}s (first missing CVRs: {', '.join(missing[:5])})"
                )
            await asyncio.sleep(POLL_S)

    def recount(self) -> int:
        """Letters per CVR after the run: more than one is a duplicate delivery."""
        duplicates = 0
        for cvr, letter in self.found.items():
            letter.files = sum(1 for p in (self.spool / cvr).glob("*.xml") if not p.name.startswith("."))
            duplicates += letter.files - 1
        return duplicates


@dataclass
class Submission:
    cvr: str
    index: int
    submitted_at: float = 0.0  # wall clock, to compare with file mtimes
    http_s: float = 0.0
    status_code: int = 0
    application_id: str | None = None
    error: str | None = None


def application_body(cvr: str, index: int) -> dict[str, Any]:
    return {
        "cvr": cvr,
        "company_name": f"Bench {cvr} ApS",
        "contact": {
            "name": f"Bench Admin {index}",
            "email": f"bench.admin{index}@example.com",
            "mobile": f"+45 26{index % 1_000_000:06d}",
        },
        "language": "da",
    }


async def submit_all(
    client: httpx.AsyncClient, cvrs: Sequence[str], concurrency: int, *, index_base: int = 0
) -> list[Submission]:
    queue: asyncio.Queue[Submission] = asyncio.Queue()
    submissions = [Submission(cvr=cvr, index=index_base + i) for i, cvr in enumerate(cvrs)]
    for submission in submissions:
        queue.put_nowait(submission)

    async def worker() -> None:
        while True:
            try:
                submission = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = application_body(submission.cvr, submission.index)
            submission.submitted_at = time.time()
            started = time.perf_counter()
            try:
                response = await client.post("/v1/applications", json=body)
            except httpx.HTTPError as exc:
                submission.error = f"{type(exc).__name__}: {exc}"
                continue
            finally:
                submission.http_s = time.perf_counter() - started
            submission.status_code = response.status_code
            if response.status_code == 202:
                submission.application_id = response.json()["id"]
            else:
                submission.error = f"HTTP {response.status_code}: {response.text[:300]}"

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return submissions


async def wait_statuses(
    client: httpx.AsyncClient, ids: Sequence[str], concurrency: int, deadline_s: float
) -> dict[str, str]:
    """Poll `GET /v1/applications/{id}` until every one says `credentials_sent`."""
    statuses: dict[str, str] = {}
    limit = asyncio.Semaphore(concurrency)

    async def fetch(application_id: str) -> None:
        async with limit:
            response = await client.get(f"/v1/applications/{application_id}")
            response.raise_for_status()
            statuses[application_id] = response.json()["status"]

    def all_sent() -> bool:
        return all(statuses.get(i) == "credentials_sent" for i in ids)

    async def check() -> bool:
        await asyncio.gather(*(fetch(i) for i in ids if statuses.get(i) != "credentials_sent"))
        return all_sent()

    try:
        await wait_until(check, deadline_s=deadline_s, what="applications to reach credentials_sent")
    except BenchError as exc:
        stuck = {i: s for i, s in statuses.items() if s != "credentials_sent"}
        raise BenchError(f"{exc}; not there: {len(stuck)}, e.g. {list(stuck.items())[:3]}") from exc
    return statuses


def stage_breakdown(
    suite: Suite, submissions: Sequence[Submission], letters: dict[str, Letter]
) -> dict[str, Any]:
    """Where the time goes, per application, from the timestamps each service keeps."""
    onboarding, identity, notifier = (sqlite_path(suite, s) for s in ("onboarding", "identity", "notifier"))
    ids = {s.application_id: s for s in submissions if s.application_id}

    def by_application(path: Path, topic: str) -> dict[str, tuple[str, float | None, float | None]]:
        rows = read_rows(
            path, "SELECT event_id, value, created_at, published_at FROM outbox WHERE topic = ?", [topic]
        )
        out: dict[str, tuple[str, float | None, float | None]] = {}
        for event_id, value, created, published in rows:
            app_id = json.loads(value).get("application_id")
            if app_id in ids:
                out[app_id] = (event_id, parse_db_time(created), parse_db_time(published))
        return out

    def inbox(path: Path, consumer: str) -> dict[str, float | None]:
        rows = read_rows(path, "SELECT event_id, processed_at FROM inbox WHERE consumer = ?", [consumer])
        return {event_id: parse_db_time(at) for event_id, at in rows}

    submitted = by_application(onboarding, "onboarding.applications")
    identity_seen = inbox(identity, "identity:onboarding.applications")
    issued = by_application(identity, "identity.credentials")
    notifier_seen = inbox(notifier, "notifier:identity.credentials")
    status_rows = read_rows(onboarding, "SELECT id, status, updated_at FROM applications")
    folded = {
        app_id: parse_db_time(updated)
        for app_id, status, updated in status_rows
        if status == "credentials_sent"
    }

    names = [
        "http: submit -> row in onboarding outbox",
        "onboarding relay: outbox -> published",
        "identity: published -> consumed",
        "identity: provision + relay -> published",
        "notifier: published -> consumed",
        "notifier: dispatch -> letter file",
        "onboarding: letter -> credentials_sent",
    ]
    stages: dict[str, list[float]] = {name: [] for name in names}
    for app_id, submission in ids.items():
        letter = letters.get(submission.cvr)
        try:
            sub_event, sub_created, sub_published = submitted[app_id]
            cred_event, _, cred_published = issued[app_id]
            points = [
                submission.submitted_at,
                sub_created,
                sub_published,
                identity_seen[sub_event],
                cred_published,
                notifier_seen[cred_event],
                letter.mtime if letter else None,
                folded.get(app_id),
            ]
        except KeyError:
            continue
        for name, (start, end) in zip(names, zip(points, points[1:], strict=False), strict=True):
            if start is not None and end is not None:
                stages[name].append(end - start)
    return {
        name: {
            k: v for k, v in summary_ms(values).items() if k in ("n", "p50_ms", "p95_ms", "max_ms", "mean_ms")
        }
        for name, values in stages.items()
    }


@dataclass
class E2EResult:
    submissions: list[Submission] = field(default_factory=list)
    letters: dict[str, Letter] = field(default_factory=dict)
    first_submit: float = 0.0
    last_accepted: float = 0.0
    last_letter: float = 0.0
    duplicates: int = 0


async def run_applications(
    suite: Suite,
    client: httpx.AsyncClient,
    cvrs: Sequence[str],
    *,
    concurrency: int,
    deadline_s: float,
    index_base: int,
) -> E2EResult:
    watcher = LetterWatcher(suite.config.var_dir / "eboks", cvrs)
    submissions = await submit_all(client, cvrs, concurrency, index_base=index_base)
    failed = [s for s in submissions if s.error]
    if failed:
        kinds = sorted({s.error or "" for s in failed})[:3]
        raise BenchError(f"{len(failed)} of {len(submissions)} applications were not accepted: {kinds}")
    await watcher.wait_all(deadline_s)
    result = E2EResult(submissions=submissions, letters=watcher.found)
    result.first_submit = min(s.submitted_at for s in submissions)
    result.last_accepted = max(s.submitted_at + s.http_s for s in submissions)
    result.last_letter = max(letter.mtime for letter in watcher.found.values())
    result.duplicates = watcher.recount()
    return result


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Options:
    applications: int
    concurrency: int
    warmup: int
    raw_messages: int
    raw_bytes: int
    letter_deadline_s: float
    output: Path
    keep_var: bool


async def measure(suite: Suite, opts: Options) -> dict[str, Any]:
    bootstrap = suite.config.bootstrap
    raw_deadline = 60.0
    results: dict[str, Any] = {}

    print(f"[bench] raw broker run 1: {opts.raw_messages} records ...", flush=True)
    raw_before = await raw_broker_rate(
        bootstrap,
        topic="bench.raw.before",
        messages=opts.raw_messages,
        size=opts.raw_bytes,
        partitions=3,
        deadline_s=raw_deadline,
    )

    cvrs = bench_cvrs(opts.warmup + opts.applications)
    warm_cvrs, run_cvrs = cvrs[: opts.warmup], cvrs[opts.warmup :]
    print(f"[bench] registering {len(cvrs)} customers in billing ...", flush=True)
    registered_at = time.monotonic()
    await register_bench_customers(suite, cvrs)
    fanout_s = await wait_customers_known(suite, cvrs, deadline_s=90.0)
    results["customers"] = {
        "registered": len(cvrs),
        "known_to_onboarding_and_identity_s": round(time.monotonic() - registered_at, 2),
        "waited_s": round(fanout_s, 2),
    }

    onboarding = suite.url("onboarding")
    limits = httpx.Limits(max_connections=opts.concurrency, max_keepalive_connections=opts.concurrency)
    async with httpx.AsyncClient(base_url=onboarding, timeout=30.0, limits=limits) as client:
        unloaded: list[E2EResult] = []
        if warm_cvrs:
            # One at a time, each to its letter: warms every process up, and all but the
            # first (cold) one give the latency of an application on an idle suite.
            print(f"[bench] warm-up: {len(warm_cvrs)} applications, one at a time ...", flush=True)
            for i, cvr in enumerate(warm_cvrs):
                unloaded.append(
                    await run_applications(suite, client, [cvr], concurrency=1, deadline_s=60.0, index_base=i)
                )

        print(
            f"[bench] apply flow: {opts.applications} applications, concurrency {opts.concurrency} ...",
            flush=True,
        )
        pids = process_table(suite)
        cpu_before = cpu_snapshot(pids)
        wall_before = time.monotonic()
        run = await run_applications(
            suite,
            client,
            run_cvrs,
            concurrency=opts.concurrency,
            deadline_s=opts.letter_deadline_s,
            index_base=opts.warmup,
        )
        cpu = cpu_delta(cpu_before, cpu_snapshot(pids), time.monotonic() - wall_before)

        print("[bench] checking statuses ...", flush=True)
        ids = [s.application_id for s in run.submissions if s.application_id]
        statuses = await wait_statuses(client, ids, opts.concurrency, deadline_s=60.0)

    print(f"[bench] raw broker run 2: {opts.raw_messages} records ...", flush=True)
    raw_after = await raw_broker_rate(
        bootstrap,
        topic="bench.raw.after",
        messages=opts.raw_messages,
        size=opts.raw_bytes,
        partitions=3,
        deadline_s=raw_deadline,
    )

    n = len(run.submissions)
    e2e_s = run.last_letter - run.first_submit
    accept_s = run.last_accepted - run.first_submit
    latencies = [run.letters[s.cvr].mtime - s.submitted_at for s in run.submissions]
    seen_latencies = [run.letters[s.cvr].seen_at - s.submitted_at for s in run.submissions]
    e2e_rate = n / e2e_s
    raw_rates = [raw_before["messages_per_s"], raw_after["messages_per_s"]]
    raw_mean = sum(raw_rates) / len(raw_rates)

    idle = unloaded[1:]
    idle_submissions = [s for r in idle for s in r.submissions]
    idle_letters = {cvr: letter for r in idle for cvr, letter in r.letters.items()}
    idle_latencies = [idle_letters[s.cvr].mtime - s.submitted_at for s in idle_submissions]
    try:
        stages = stage_breakdown(suite, run.submissions, run.letters)
        idle_stages = stage_breakdown(suite, idle_submissions, idle_letters) if idle_submissions else {}
    except Exception as exc:  # the breakdown is a help, not the measure
        stages = {"error": f"{type(exc).__name__}: {exc}"}
        idle_stages = {}

    results.update(
        {
            "raw_broker": {
                "before": raw_before,
                "after": raw_after,
                "mean_messages_per_s": round(raw_mean, 1),
            },
            "e2e": {
                "applications": n,
                "concurrency": opts.concurrency,
                "warmup_applications": len(warm_cvrs),
                "elapsed_s": round(e2e_s, 3),
                "applications_per_s": round(e2e_rate, 2),
                "submit_phase_s": round(accept_s, 3),
                "accepted_per_s": round(n / accept_s, 1),
                "submit_to_letter": summary_ms(latencies),
                "submit_to_letter_seen_by_poller": summary_ms(seen_latencies),
                "http_202": summary_ms([s.http_s for s in run.submissions]),
                "duplicate_letters": run.duplicates,
                "statuses": {
                    status: sum(1 for v in statuses.values() if v == status)
                    for status in set(statuses.values())
                },
                "cpu_during_run": cpu,
                "stages": stages,
            },
            "unloaded": {
                "applications": len(idle_submissions),
                "note": "warm-up applications after the first, submitted one at a time on an idle suite",
                "submit_to_letter": summary_ms(idle_latencies),
                "http_202": summary_ms([s.http_s for s in idle_submissions]),
                "stages": idle_stages,
            },
            "ratio": {
                "e2e_applications_per_s_over_raw_messages_per_s": round(e2e_rate / raw_mean, 6),
                "raw_messages_per_e2e_application": round(raw_mean / e2e_rate, 1),
                "note": "ratio uses the mean of the raw runs before and after the apply flow",
            },
        }
    )
    return results


def print_table(results: dict[str, Any]) -> None:
    raw = results["raw_broker"]
    e2e = results["e2e"]
    ratio = results["ratio"]
    lines = [
        "",
        "Adgang end-to-end benchmark  " + results["machine"]["summary"],
        "-" * 78,
        f"{'raw broker (aiokafka, acks=all), before':<46}{raw['before']['messages_per_s']:>12,.0f} msg/s"
        f"   ({raw['before']['messages']} x {raw['before']['record_bytes']} B in {raw['before']['produce_to_consume_s']:.2f}s)",
        f"{'raw broker, after':<46}{raw['after']['messages_per_s']:>12,.0f} msg/s",
        f"{'raw broker, mean':<46}{raw['mean_messages_per_s']:>12,.0f} msg/s",
        "",
        f"{'applications (submit -> letter file)':<46}{e2e['applications_per_s']:>12,.2f} app/s"
        f"   ({e2e['applications']} in {e2e['elapsed_s']:.2f}s, concurrency {e2e['concurrency']})",
        f"{'accepted (HTTP 202) during the run':<46}{e2e['accepted_per_s']:>12,.1f} app/s",
    ]
    idle = results["unloaded"]
    header = f"{'latency (ms)':<46}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}"
    lines += ["", header]
    rows = [
        ("submit -> letter file (mtime)", e2e["submit_to_letter"]),
        ("submit -> letter seen by poller", e2e["submit_to_letter_seen_by_poller"]),
        ("HTTP 202", e2e["http_202"]),
    ]
    if idle["applications"]:
        rows += [
            (f"idle suite, one at a time (n={idle['applications']}): letter", idle["submit_to_letter"]),
            ("idle suite, one at a time: HTTP 202", idle["http_202"]),
        ]
    for label, s in rows:
        lines.append(
            f"{label:<46}{s['p50_ms']:>8.0f}{s['p95_ms']:>8.0f}{s['p99_ms']:>8.0f}{s['max_ms']:>8.0f}"
        )
    stages = e2e.get("stages", {})
    idle_stages = idle.get("stages", {})
    if "error" not in stages:
        lines += [
            "",
            "stages, from the services' own timestamps (ms)",
            f"{'':<46}{'idle p50':>10}{'load p50':>10}{'load p95':>10}",
        ]
        for name, s in stages.items():
            idle_p50 = idle_stages.get(name, {}).get("p50_ms", float("nan"))
            lines.append(f"  {name:<44}{idle_p50:>10.0f}{s['p50_ms']:>10.0f}{s['p95_ms']:>10.0f}")
    else:
        lines.append(f"stages: {stages['error']}")
    cpu = e2e["cpu_during_run"]
    lines += [
        "",
        f"CPU during the apply run ({cpu['wall_s']:.1f}s wall, {cpu['cores_busy']} cores busy on average):",
    ]
    lines += [f"  {name:<44}{secs:>8.2f}s" for name, secs in cpu["cpu_s"].items()]
    lines += [
        "",
        f"{'RATIO e2e app/s / raw msg/s':<46}{ratio['e2e_applications_per_s_over_raw_messages_per_s']:>12.6f}",
        f"{'raw messages per application-time':<46}{ratio['raw_messages_per_e2e_application']:>12,.1f}",
        f"duplicate letters: {e2e['duplicate_letters']}   statuses: {e2e['statuses']}",
        "-" * 78,
    ]
    print("\n".join(lines), flush=True)


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n\n")[0])
    parser.add_argument("--applications", type=int, default=200, help="applications to submit (default 200)")
    parser.add_argument("--concurrency", type=int, default=16, help="HTTP requests in flight (default 16)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=5,
        help="applications submitted one at a time before the measured run (default 5)",
    )
    parser.add_argument(
        "--raw-messages", type=int, default=20000, help="records per raw broker run (default 20000)"
    )
    parser.add_argument("--raw-bytes", type=int, default=500, help="approximate value size of a raw record")
    parser.add_argument(
        "--deadline", type=float, default=120.0, help="seconds for all letters to arrive (default 120)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json")
    parser.add_argument(
        "--keep-var", action="store_true", help="keep the temporary var dir (logs, databases)"
    )
    args = parser.parse_args(argv)
    if args.applications < 1 or args.concurrency < 1 or args.raw_messages < 1 or args.warmup < 0:
        parser.error("counts must be positive")
    return Options(
        applications=args.applications,
        concurrency=args.concurrency,
        warmup=args.warmup,
        raw_messages=args.raw_messages,
        raw_bytes=args.raw_bytes,
        letter_deadline_s=args.deadline,
        output=args.output.resolve(),
        keep_var=args.keep_var,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    var_dir = Path(tempfile.mkdtemp(prefix="adgang-bench-"))
    broker_port, *service_ports = free_ports(1 + len(SERVICES))
    config = SuiteConfig(
        var_dir=var_dir,
        broker_port=broker_port,
        ports=dict(zip(SERVICES, service_ports, strict=True)),
        extra_env={"ADGANG_ONBOARDING_RATE_LIMIT_PER_MINUTE": "0"},
    )
    suite = Suite(config)
    cwd = Path.cwd()
    started = time.monotonic()
    ok = False
    try:
        print(f"[bench] starting the suite in {var_dir} (broker on port {broker_port}) ...", flush=True)
        # faust writes `<app id>-data` dirs into the working directory: keep them in var_dir
        # rather than beside the sources (and apart from any other suite running there).
        os.chdir(var_dir)
        suite.start(deadline_s=90.0)
        startup_s = time.monotonic() - started
        results = asyncio.run(measure(suite, opts))
        results = {
            "benchmark": "adgang e2e apply flow vs raw broker",
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "options": {
                "applications": opts.applications,
                "concurrency": opts.concurrency,
                "warmup": opts.warmup,
                "raw_messages": opts.raw_messages,
                "raw_bytes": opts.raw_bytes,
                "letter_deadline_s": opts.letter_deadline_s,
            },
            "suite_startup_s": round(startup_s, 2),
            **results,
        }
        results["total_s"] = round(time.monotonic() - started, 1)
        print_table(results)
        opts.output.parent.mkdir(parents=True, exist_ok=True)
        partial = opts.output.with_name(opts.output.name + ".tmp")
        partial.write_text(json.dumps(results, indent=2) + "\n")
        partial.replace(opts.output)
        print(f"[bench] results written to {opts.output}  (total {results['total_s']}s)", flush=True)
        ok = True
        return 0
    except Exception as exc:
        print(f"[bench] FAILED: {exc}", file=sys.stderr, flush=True)
        if not isinstance(exc, BenchError):
            traceback.print_exc()
        print(f"[bench] logs and databases kept in {var_dir}", file=sys.stderr, flush=True)
        return 1
    finally:
        os.chdir(cwd)
        try:
            suite.stop()
        except Exception as exc:
            print(f"[bench] stopping the suite failed: {exc!r}", file=sys.stderr, flush=True)
        if ok and not opts.keep_var:
            shutil.rmtree(var_dir, ignore_errors=True)
        elif ok:
            print(f"[bench] var dir kept: {var_dir}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
