"""End-to-end benchmark of the apply flow (S1, S2) against the raw broker, in one run, on
SQLite and on PostgreSQL (issue 14's targets 1 and 4).

    python -m bench.e2e [--backend sqlite|postgres|both] [--applications 300] [--rate 100]

For each backend it starts the whole suite as processes (embedded broker, every worker and API;
on PostgreSQL one database per service on a throwaway server from tests/support/postgres.py) on
free ports in a temporary var dir, then measures, on that one machine and in that one run:

1. the raw broker: aiokafka produce-to-consume rate of small CloudEvents-like records on a
   dedicated topic of the same broker, once before and once after the applications;
2. idle: `--idle` applications one at a time, each waited for to its letter (after one cold
   one, not counted): submit -> letter p50 and p99 of one application on an idle suite;
3. sustained: `--applications` applications with `--concurrency` requests in flight (closed
   loop) until each one's MeMo letter file is in the e-Boks spool: applications per second,
   its ratio to the raw broker's messages per second, and the CPU time of every process of the
   suite (and of the PostgreSQL server) during the run divided by the applications;
4. open loop: `--rate` applications per second for `--rate-seconds`, each request started on
   its schedule whatever the answers to earlier ones: submit -> letter p99 at that rate;
5. memory: VmRSS of every suite process (with its descendants) sampled during 3 and 4: the
   largest process and the largest sum of the suite.

Every application must reach `credentials_sent`, with exactly one letter per company. The
timestamps the services keep (outbox, inbox, application rows) split the latency into stages.
Results (the contract of bench/README.md: targets and per-second series for the charts) go to
`bench/results/e2e-latest.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import bindparam, text
from stdnum.dk import cvr as stdnum_cvr

from bench.measuring import (
    BenchError,
    git_state,
    log,
    machine_info,
    per_second_counts,
    per_second_percentile,
    percentile,
    process_trees,
    running_suite,
    service_databases,
    summary_ms,
    target,
    targets_table,
    tree_cpu_seconds,
    tree_rss_kb,
    write_json,
)
from services.billing.bootstrap import build as build_billing
from services.billing.config import BillingSettings
from services.billing.demo import DEMO_COMPANIES, NOT_A_CUSTOMER_CVR, DemoCompany
from services.suite import Suite
from shared.clock import SystemClock
from shared.db import Database

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
POLL_S = 0.02  # the only sleeps: short polling intervals, always under a deadline
BACKENDS = ("sqlite", "postgres")

# Issue 14's targets (1: applications, 4: memory).
CPU_MS_PER_APPLICATION = 10.0
SUSTAINED_PER_S = 300.0
RATIO_TO_RAW = 0.01
OPEN_LOOP_P99_MS = 1000.0
IDLE_P50_MS = 100.0
IDLE_P99_MS = 250.0
PROCESS_RSS_MB = 150.0
SUITE_RSS_MB = 1024.0


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


class Reader:
    """Read-only queries of the services' databases with the services' own database code, on
    either backend (WAL lets SQLite be read beside its writers)."""

    def __init__(self, suite: Suite) -> None:
        self._suite = suite
        self._dbs: dict[str, Database] = {}

    def _db(self, service: str) -> Database:
        if service not in self._dbs:
            self._dbs[service] = Database(self._suite.database_url(service))
        return self._dbs[service]

    async def rows(self, service: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        query = text(sql)
        for name, value in params.items():
            if isinstance(value, list | tuple):
                query = query.bindparams(bindparam(name, expanding=True))
        async with self._db(service).reading() as session:
            return [tuple(row) for row in (await session.execute(query, params)).all()]

    async def count_in(self, service: str, table: str, column: str, values: Sequence[str]) -> int:
        rows = await self.rows(
            service, f"SELECT count(*) FROM {table} WHERE {column} IN :values", values=list(values)
        )
        return int(rows[0][0])

    async def close(self) -> None:
        for db in self._dbs.values():
            await db.dispose()
        self._dbs.clear()


def parse_db_time(value: str | datetime | None) -> float | None:
    """SQLite keeps these as naive UTC text, PostgreSQL as timestamptz; a POSIX timestamp."""
    if value is None:
        return None
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


# --- processes (Linux /proc) -------------------------------------------------------------------


def process_table(suite: Suite) -> dict[str, int]:
    pids = {name: child.process.pid for name, child in suite.children.items() if child.process}
    if suite.broker and suite.broker.process:
        pids["broker"] = suite.broker.process.pid
    return pids


def postmaster_pid(server: Any) -> int | None:
    """The PostgreSQL server's main process (its backends are its children)."""
    base = getattr(server, "base_dir", None)
    if base is None:
        return None
    for pid_file in Path(base).rglob("postmaster.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(pid_file.read_text().split()[0])
    return None


@dataclass
class Sample:
    at: float  # wall clock
    rss_kb: dict[str, int]
    cpu_s: float  # all judged processes' CPU so far


class Sampler:
    """Every `interval_s`, VmRSS of each named process tree and the CPU time of all of them.
    `unjudged` trees (the PostgreSQL server, whose processes share their buffers: a sum of
    their VmRSS counts the same pages many times) are sampled and reported apart."""

    def __init__(self, roots: Mapping[str, int], *, interval_s: float, unjudged: Iterable[str] = ()) -> None:
        self.roots = dict(roots)
        self.interval_s = interval_s
        self.unjudged = set(unjudged)
        self.samples: list[Sample] = []
        self.tree_sizes: dict[str, int] = {}  # the most processes seen in each tree
        self._task: asyncio.Task[None] | None = None

    def cpu_by_tree(self) -> dict[str, float]:
        return {name: tree_cpu_seconds(pids) for name, pids in process_trees(self.roots).items()}

    def sample(self) -> Sample:
        trees = process_trees(self.roots)
        for name, pids in trees.items():
            self.tree_sizes[name] = max(self.tree_sizes.get(name, 0), len(pids))
        now = Sample(
            at=time.time(),
            rss_kb={name: tree_rss_kb(pids) for name, pids in trees.items()},
            cpu_s=sum(tree_cpu_seconds(pids) for pids in trees.values()),
        )
        self.samples.append(now)
        return now

    async def _run(self) -> None:
        while True:
            # /proc reads are quick (a few ms for the whole suite): no thread needed
            self.sample()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()

    def judged(self, sample: Sample) -> dict[str, int]:
        return {name: kb for name, kb in sample.rss_kb.items() if name not in self.unjudged}

    def memory(self) -> dict[str, Any]:
        if not self.samples:
            return {}
        names = sorted({name for s in self.samples for name in s.rss_kb})
        peak = {name: max(s.rss_kb.get(name, 0) for s in self.samples) for name in names}
        sums = [sum(self.judged(s).values()) for s in self.samples]
        judged = {name: kb for name, kb in peak.items() if name not in self.unjudged}
        largest = max(judged, key=lambda name: judged[name]) if judged else ""
        return {
            "samples": len(self.samples),
            "interval_s": self.interval_s,
            "max_rss_mb": {
                name: round(kb / 1024, 1) for name, kb in sorted(peak.items(), key=lambda kv: -kv[1])
            },
            "processes_per_tree": dict(sorted(self.tree_sizes.items())),
            "largest_process": largest,
            "largest_process_mb": round(judged.get(largest, 0) / 1024, 1),
            "suite_max_mb": round(max(sums) / 1024, 1),
            "not_judged": sorted(self.unjudged),
        }


def cpu_delta(before: Mapping[str, float], after: Mapping[str, float], wall_s: float) -> dict[str, Any]:
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


async def wait_customers_known(reader: Reader, cvrs: Sequence[str], deadline_s: float) -> float:
    async def known() -> bool:
        return await reader.count_in("onboarding", "known_customers", "cvr", cvrs) == len(cvrs) and (
            await reader.count_in("identity", "companies", "cvr", cvrs) == len(cvrs)
        )

    return await wait_until(
        known, deadline_s=deadline_s, what=f"{len(cvrs)} customers to reach onboarding and identity"
    )


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

    async def wait_all(self, deadline_s: float, *, while_arriving: bool = False) -> None:
        """Until every letter is there, for at most `deadline_s`; `while_arriving`: for as long
        as letters keep arriving, failing only after `deadline_s` without a new one (a slow but
        moving suite on a crowded machine is measured, a stuck one is not waited for)."""
        started = time.monotonic()
        seen = len(self.found)
        while self.pending:
            self.scan()
            if not self.pending:
                break
            if while_arriving and len(self.found) > seen:
                seen, started = len(self.found), time.monotonic()
            if time.monotonic() - started > deadline_s:
                missing = sorted(self.pending)
                what = "no new letter for" if while_arriving else "did not arrive within"
                raise BenchError(
                    f"{len(missing)} of {len(missing) + len(self.found)} letters missing, {what} "
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
    late_s: float = 0.0  # open loop: how long after its scheduled time it started


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


async def submit_one(client: httpx.AsyncClient, submission: Submission) -> None:
    body = application_body(submission.cvr, submission.index)
    submission.submitted_at = time.time()
    started = time.perf_counter()
    try:
        response = await client.post("/v1/applications", json=body)
    except httpx.HTTPError as exc:
        submission.error = f"{type(exc).__name__}: {exc}"
        return
    finally:
        submission.http_s = time.perf_counter() - started
    submission.status_code = response.status_code
    if response.status_code == 202:
        submission.application_id = response.json()["id"]
    else:
        submission.error = f"HTTP {response.status_code}: {response.text[:300]}"


async def submit_all(
    client: httpx.AsyncClient, cvrs: Sequence[str], concurrency: int, *, index_base: int = 0
) -> list[Submission]:
    """Closed loop: `concurrency` requests in flight, each sender sends its next one when the
    answer to its last one is in."""
    queue: asyncio.Queue[Submission] = asyncio.Queue()
    submissions = [Submission(cvr=cvr, index=index_base + i) for i, cvr in enumerate(cvrs)]
    for submission in submissions:
        queue.put_nowait(submission)

    async def sender() -> None:
        while True:
            try:
                submission = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await submit_one(client, submission)

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return submissions


async def submit_on_schedule(
    client: httpx.AsyncClient, cvrs: Sequence[str], rate: float, *, index_base: int
) -> list[Submission]:
    """Open loop: application i starts at i / rate seconds, whatever became of the earlier ones
    (a slow answer does not delay the next request, as with real applicants)."""
    submissions = [Submission(cvr=cvr, index=index_base + i) for i, cvr in enumerate(cvrs)]
    tasks: list[asyncio.Task[None]] = []
    start = time.monotonic() + 0.05
    for i, submission in enumerate(submissions):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        submission.late_s = max(0.0, time.monotonic() - due)
        tasks.append(asyncio.create_task(submit_one(client, submission)))
    await asyncio.gather(*tasks)
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


async def stage_breakdown(
    reader: Reader, submissions: Sequence[Submission], letters: dict[str, Letter]
) -> dict[str, Any]:
    """Where the time goes, per application, from the timestamps each service keeps."""
    ids = {s.application_id: s for s in submissions if s.application_id}

    async def by_application(service: str, topic: str) -> dict[str, tuple[str, float | None, float | None]]:
        rows = await reader.rows(
            service,
            "SELECT event_id, value, created_at, published_at FROM outbox WHERE topic = :topic",
            topic=topic,
        )
        out: dict[str, tuple[str, float | None, float | None]] = {}
        for event_id, value, created, published in rows:
            app_id = json.loads(value).get("application_id")
            if app_id in ids:
                out[app_id] = (event_id, parse_db_time(created), parse_db_time(published))
        return out

    async def inbox(service: str, consumer: str) -> dict[str, float | None]:
        rows = await reader.rows(
            service, "SELECT event_id, processed_at FROM inbox WHERE consumer = :consumer", consumer=consumer
        )
        return {event_id: parse_db_time(at) for event_id, at in rows}

    submitted = await by_application("onboarding", "onboarding.applications")
    identity_seen = await inbox("identity", "identity:onboarding.applications")
    issued = await by_application("identity", "identity.credentials")
    notifier_seen = await inbox("notifier", "notifier:identity.credentials")
    status_rows = await reader.rows("onboarding", "SELECT id, status, updated_at FROM applications")
    folded = {
        str(app_id): parse_db_time(updated)
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
    await watcher.wait_all(deadline_s, while_arriving=True)
    result = E2EResult(submissions=submissions, letters=watcher.found)
    result.first_submit = min(s.submitted_at for s in submissions)
    result.last_accepted = max(s.submitted_at + s.http_s for s in submissions)
    result.last_letter = max(letter.mtime for letter in watcher.found.values())
    result.duplicates = watcher.recount()
    return result


# --- the run ---------------------------------------------------------------------------------


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Options:
    backends: list[str]
    applications: int
    concurrency: int
    idle: int
    rate: float
    rate_seconds: float
    raw_messages: int
    raw_bytes: int
    letter_deadline_s: float
    open_deadline_s: float
    sample_s: float
    output: Path
    keep_var: bool

    @property
    def open_loop_applications(self) -> int:
        return max(1, round(self.rate * self.rate_seconds))


def latencies_s(run: E2EResult) -> list[float]:
    return [run.letters[s.cvr].mtime - s.submitted_at for s in run.submissions if s.cvr in run.letters]


async def open_loop(
    suite: Suite, cvrs: Sequence[str], opts: Options, *, index_base: int
) -> tuple[E2EResult, list[Submission], dict[str, float]]:
    """The open-loop phase: the client may hold as many requests open as the schedule needs.
    Returns what was accepted (with the letters that arrived), what was refused, and the
    seconds waited in vain for each letter that had not arrived by the deadline (a suite that
    cannot keep up with the rate would otherwise make the run as long as its backlog)."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=suite.url("onboarding"), timeout=30.0, limits=limits) as client:
        submissions = await submit_on_schedule(client, cvrs, opts.rate, index_base=index_base)
    accepted = [s for s in submissions if not s.error]
    refused = [s for s in submissions if s.error]
    watcher = LetterWatcher(suite.config.var_dir / "eboks", [s.cvr for s in accepted])
    result = E2EResult(submissions=accepted)
    waited_in_vain: dict[str, float] = {}
    if accepted:
        with contextlib.suppress(BenchError):
            await watcher.wait_all(opts.open_deadline_s)
        given_up = time.time()
        waited_in_vain = {s.cvr: given_up - s.submitted_at for s in accepted if s.cvr in watcher.pending}
        result.letters = watcher.found
        result.first_submit = min(s.submitted_at for s in submissions)
        result.last_accepted = max(s.submitted_at + s.http_s for s in accepted)
        result.last_letter = max((letter.mtime for letter in watcher.found.values()), default=given_up)
        result.duplicates = watcher.recount()
    return result, refused, waited_in_vain


async def measure(suite: Suite, opts: Options, postgres_pid: int | None) -> dict[str, Any]:
    bootstrap = suite.config.bootstrap
    raw_deadline = 60.0
    results: dict[str, Any] = {}
    reader = Reader(suite)
    try:
        log(f"raw broker run 1: {opts.raw_messages} records ...")
        raw_before = await raw_broker_rate(
            bootstrap,
            topic="bench.raw.before",
            messages=opts.raw_messages,
            size=opts.raw_bytes,
            partitions=3,
            deadline_s=raw_deadline,
        )
        log(f"raw broker: {raw_before['messages_per_s']:,.0f} msg/s")

        cvrs = bench_cvrs(1 + opts.idle + opts.applications + opts.open_loop_applications)
        idle_cvrs = cvrs[: 1 + opts.idle]
        run_cvrs = cvrs[1 + opts.idle : 1 + opts.idle + opts.applications]
        open_cvrs = cvrs[1 + opts.idle + opts.applications :]
        log(f"registering {len(cvrs)} customers in billing ...")
        registered_at = time.monotonic()
        await register_bench_customers(suite, cvrs)
        fanout_s = await wait_customers_known(reader, cvrs, deadline_s=240.0)
        results["customers"] = {
            "registered": len(cvrs),
            "known_to_onboarding_and_identity_s": round(time.monotonic() - registered_at, 2),
            "waited_s": round(fanout_s, 2),
        }

        onboarding = suite.url("onboarding")
        limits = httpx.Limits(max_connections=opts.concurrency, max_keepalive_connections=opts.concurrency)
        async with httpx.AsyncClient(base_url=onboarding, timeout=30.0, limits=limits) as client:
            # One at a time, each to its letter: warms every process up, and all but the first
            # (cold) one give the latency of an application on an idle suite.
            log(f"idle: {len(idle_cvrs)} applications, one at a time (the first one cold, not counted) ...")
            unloaded: list[E2EResult] = []
            for i, cvr in enumerate(idle_cvrs):
                unloaded.append(
                    await run_applications(suite, client, [cvr], concurrency=1, deadline_s=60.0, index_base=i)
                )
            idle = unloaded[1:]
            idle_latencies = [v for r in idle for v in latencies_s(r)]
            idle_summary = summary_ms(idle_latencies)
            log(
                f"idle: submit -> letter p50 {idle_summary['p50_ms']:.0f} ms, p99 {idle_summary['p99_ms']:.0f} ms"
            )

            roots = process_table(suite)
            if postgres_pid is not None:
                roots["postgres (server)"] = postgres_pid
            sampler = Sampler(
                roots,
                interval_s=opts.sample_s,
                unjudged=["postgres (server)"] if postgres_pid is not None else [],
            )
            sampler.start()
            phases_start = time.time()

            log(f"sustained: {len(run_cvrs)} applications, {opts.concurrency} in flight ...")
            cpu_before = sampler.cpu_by_tree()
            cpu_client_before = sum(os.times()[:2])
            wall_before = time.monotonic()
            run = await run_applications(
                suite,
                client,
                run_cvrs,
                concurrency=opts.concurrency,
                deadline_s=opts.letter_deadline_s,
                index_base=len(idle_cvrs),
            )
            wall_s = time.monotonic() - wall_before
            cpu = cpu_delta(cpu_before, sampler.cpu_by_tree(), wall_s)
            cpu["bench client (not counted)"] = round(sum(os.times()[:2]) - cpu_client_before, 2)
            n = len(run.submissions)
            sustained_s = run.last_letter - run.first_submit
            log(
                f"sustained: {n / sustained_s:.1f} applications/s, "
                f"{cpu['total_cpu_s'] * 1000 / n:.0f} ms CPU per application"
            )
            log("sustained: checking statuses ...")
            ids = [s.application_id for s in run.submissions if s.application_id]
            statuses = await wait_statuses(client, ids, opts.concurrency, deadline_s=120.0)

        log(f"raw broker run 2 (the suite idle again): {opts.raw_messages} records ...")
        raw_after = await raw_broker_rate(
            bootstrap,
            topic="bench.raw.after",
            messages=opts.raw_messages,
            size=opts.raw_bytes,
            partitions=3,
            deadline_s=raw_deadline,
        )

        log(f"open loop: {opts.rate:g} applications/s for {opts.rate_seconds:g} s ({len(open_cvrs)}) ...")
        paced, refused, late = await open_loop(
            suite, open_cvrs, opts, index_base=len(idle_cvrs) + len(run_cvrs)
        )
        await sampler.stop()
        phases_end = time.time()
        # A letter that did not arrive counts with the time waited for it, a refused
        # application with the deadline: the percentiles are then lower bounds.
        open_all = latencies_s(paced) + list(late.values()) + [opts.open_deadline_s] * len(refused)
        open_summary = summary_ms(open_all)
        log(
            f"open loop: submit -> letter p50 {open_summary['p50_ms']:.0f} ms, p99 {open_summary['p99_ms']:.0f} ms"
            + (f", {len(refused)} refused" if refused else "")
            + (
                f", {len(late)} letters not there {opts.open_deadline_s:g} s after the last request"
                if late
                else ""
            )
        )
        async with httpx.AsyncClient(base_url=onboarding, timeout=30.0, limits=limits) as client:
            log("open loop: checking statuses ...")
            open_ids = [s.application_id for s in paced.submissions if s.application_id and s.cvr not in late]
            open_statuses = await wait_statuses(client, open_ids, opts.concurrency, deadline_s=120.0)

        try:
            stages = await stage_breakdown(reader, run.submissions, run.letters)
            idle_letters = {cvr: letter for r in idle for cvr, letter in r.letters.items()}
            idle_stages = await stage_breakdown(
                reader, [s for r in idle for s in r.submissions], idle_letters
            )
        except Exception as exc:  # the breakdown is a help, not the measure
            stages = {"error": f"{type(exc).__name__}: {exc}"}
            idle_stages = {}
    finally:
        await reader.close()

    rate = n / sustained_s
    raw_mean = (raw_before["messages_per_s"] + raw_after["messages_per_s"]) / 2
    start_late = sorted(s.late_s for s in paced.submissions + refused)
    open_elapsed = paced.last_letter - paced.first_submit if paced.submissions else float("nan")
    results.update(
        {
            "raw_broker": {
                "before": raw_before,
                "after": raw_after,
                "mean_messages_per_s": round(raw_mean, 1),
            },
            "idle": {
                "applications": len(idle_latencies),
                "note": "one at a time on an idle suite, after one cold application (not counted)",
                "submit_to_letter": idle_summary,
                "http_202": summary_ms([s.http_s for r in idle for s in r.submissions]),
                "stages": idle_stages,
            },
            "sustained": {
                "applications": n,
                "concurrency": opts.concurrency,
                "elapsed_s": round(sustained_s, 3),
                "applications_per_s": round(rate, 2),
                "accepted_per_s": round(n / (run.last_accepted - run.first_submit), 1),
                "submit_to_letter": summary_ms(latencies_s(run)),
                "http_202": summary_ms([s.http_s for s in run.submissions]),
                "duplicate_letters": run.duplicates,
                "statuses": count_values(statuses.values()),
                "cpu": cpu,
                "cpu_ms_per_application": round(cpu["total_cpu_s"] * 1000 / n, 2),
                "stages": stages,
            },
            "open_loop": {
                "rate_per_s": opts.rate,
                "seconds": opts.rate_seconds,
                "applications": len(paced.submissions) + len(refused),
                "refused": len(refused),
                "refusals": sorted({s.error or "" for s in refused})[:3],
                "letters_not_arrived": len(late),
                "percentiles_are_lower_bounds": bool(refused or late),
                "start_late_ms": {
                    "p50": round(percentile(start_late, 50) * 1000, 1),
                    "p99": round(percentile(start_late, 99) * 1000, 1),
                },
                "elapsed_to_last_letter_s": round(open_elapsed, 2),
                "submit_to_letter": open_summary,
                "http_202": summary_ms([s.http_s for s in paced.submissions]),
                "duplicate_letters": paced.duplicates,
                "statuses": count_values(open_statuses.values()),
            },
            "ratio": {
                "applications_per_s_over_raw_messages_per_s": round(rate / raw_mean, 6),
                "raw_messages_per_application": round(raw_mean / rate, 1),
                "note": "the mean of the raw runs before and after the applications",
            },
            "memory": sampler.memory(),
        }
    )
    results["_series"] = series(run, paced, sampler, start=phases_start, end=phases_end)
    return results


def count_values(values: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def series(
    run: E2EResult, paced: E2EResult, sampler: Sampler, *, start: float, end: float
) -> dict[str, dict[str, Any]]:
    """Per second from the start of the sustained phase to the end of the open loop."""
    submissions = run.submissions + paced.submissions
    letters = {**run.letters, **paced.letters}
    finished = [
        (letters[s.cvr].mtime, (letters[s.cvr].mtime - s.submitted_at) * 1000)
        for s in submissions
        if s.cvr in letters
    ]
    return {
        "accepted": {
            "unit": "applications/s",
            "points": per_second_counts(
                [s.submitted_at + s.http_s for s in submissions], start=start, end=end
            ),
        },
        "letters": {
            "unit": "applications/s",
            "points": per_second_counts([at for at, _ in finished], start=start, end=end),
        },
        "letter latency p50": {
            "unit": "ms",
            "points": per_second_percentile(finished, 50, start=start, end=end),
        },
        "letter latency p99": {
            "unit": "ms",
            "points": per_second_percentile(finished, 99, start=start, end=end),
        },
        "suite RSS": {
            "unit": "MB",
            "points": [
                [round(s.at - start, 2), round(sum(sampler.judged(s).values()) / 1024, 1)]
                for s in sampler.samples
            ],
        },
    }


def targets_of(backend: str, r: Mapping[str, Any]) -> list[dict[str, Any]]:
    sustained, idle, paced, memory = r["sustained"], r["idle"], r["open_loop"], r["memory"]
    return [
        target(
            "apply.cpu_per_application",
            "CPU per application, all suite processes",
            sustained["cpu_ms_per_application"],
            "ms",
            CPU_MS_PER_APPLICATION,
            "<=",
            backend,
        ),
        target(
            "apply.sustained_rate",
            f"applications end to end, sustained ({sustained['concurrency']} in flight)",
            sustained["applications_per_s"],
            "app/s",
            SUSTAINED_PER_S,
            ">=",
            backend,
        ),
        target(
            "apply.ratio_to_raw_broker",
            "applications/s ÷ raw broker messages/s",
            r["ratio"]["applications_per_s_over_raw_messages_per_s"],
            "",
            RATIO_TO_RAW,
            ">=",
            backend,
        ),
        target(
            "apply.open_loop_p99",
            f"submit → letter p99 at {paced['rate_per_s']:g} applications/s"
            + (" (at least: some never came)" if paced["percentiles_are_lower_bounds"] else ""),
            paced["submit_to_letter"]["p99_ms"],
            "ms",
            OPEN_LOOP_P99_MS,
            "<=",
            backend,
        ),
        target(
            "apply.idle_p50",
            f"one application on an idle suite, p50 (n={idle['applications']})",
            idle["submit_to_letter"]["p50_ms"],
            "ms",
            IDLE_P50_MS,
            "<=",
            backend,
        ),
        target(
            "apply.idle_p99",
            f"one application on an idle suite, p99 (n={idle['applications']})",
            idle["submit_to_letter"]["p99_ms"],
            "ms",
            IDLE_P99_MS,
            "<=",
            backend,
        ),
        target(
            "memory.process_rss",
            f"largest process RSS under load ({memory['largest_process']})",
            memory["largest_process_mb"],
            "MB",
            PROCESS_RSS_MB,
            "<=",
            backend,
        ),
        target(
            "memory.suite_rss",
            "whole suite RSS under load (largest sum)",
            memory["suite_max_mb"],
            "MB",
            SUITE_RSS_MB,
            "<=",
            backend,
        ),
    ]


def print_backend(backend: str, r: Mapping[str, Any]) -> None:
    raw, sustained, idle, paced = r["raw_broker"], r["sustained"], r["idle"], r["open_loop"]
    lines = [
        "",
        f"apply flow on {backend}",
        "-" * 78,
        f"{'raw broker (aiokafka, acks=all), before / after':<46}"
        f"{raw['before']['messages_per_s']:>10,.0f} / {raw['after']['messages_per_s']:,.0f} msg/s",
        f"{'sustained (submit -> letter file)':<46}{sustained['applications_per_s']:>10,.1f} app/s"
        f"   ({sustained['applications']} in {sustained['elapsed_s']:.1f} s, {sustained['concurrency']} in flight)",
        f"{'open loop, scheduled / last letter after':<46}{paced['rate_per_s']:>10,.1f} app/s"
        f"   ({paced['applications']} in {paced['seconds']:g} s; last letter at {paced['elapsed_to_last_letter_s']} s)",
        "",
        f"{'latency (ms)':<46}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}",
    ]
    for label, s in (
        (f"idle, one at a time (n={idle['applications']}): letter", idle["submit_to_letter"]),
        ("sustained: submit -> letter", sustained["submit_to_letter"]),
        ("sustained: HTTP 202", sustained["http_202"]),
        (f"open loop at {paced['rate_per_s']:g}/s: letter", paced["submit_to_letter"]),
        (f"open loop at {paced['rate_per_s']:g}/s: HTTP 202", paced["http_202"]),
    ):
        lines.append(
            f"{label:<46}{s['p50_ms']:>8.0f}{s['p95_ms']:>8.0f}{s['p99_ms']:>8.0f}{s['max_ms']:>8.0f}"
        )
    stages, idle_stages = sustained.get("stages", {}), idle.get("stages", {})
    if "error" in stages:
        lines.append(f"stages: {stages['error']}")
    else:
        lines += [
            "",
            "stages, from the services' own timestamps (ms)",
            f"{'':<46}{'idle p50':>10}{'load p50':>10}{'load p95':>10}",
        ]
        for name, s in stages.items():
            idle_p50 = idle_stages.get(name, {}).get("p50_ms", float("nan"))
            lines.append(f"  {name:<44}{idle_p50:>10.0f}{s['p50_ms']:>10.0f}{s['p95_ms']:>10.0f}")
    cpu = sustained["cpu"]
    lines += [
        "",
        f"CPU during the sustained run ({cpu['wall_s']:.1f} s wall, {cpu['cores_busy']} cores busy):",
    ]
    lines += [f"  {name:<44}{secs:>8.2f} s" for name, secs in cpu["cpu_s"].items()]
    lines.append(f"  {'bench client (not counted)':<44}{cpu['bench client (not counted)']:>8.2f} s")
    memory = r["memory"]
    lines += ["", "largest RSS per process under load (MB):"]
    lines += [
        f"  {name:<44}{mb:>8.1f}"
        + ("   (not judged: shared buffers)" if name in memory["not_judged"] else "")
        for name, mb in memory["max_rss_mb"].items()
    ]
    lines.append(
        f"duplicate letters: {sustained['duplicate_letters'] + paced['duplicate_letters']}   statuses: "
        f"{sustained['statuses']} / {paced['statuses']}   open loop refused: {paced['refused']}, "
        f"letters not there in time: {paced['letters_not_arrived']}"
    )
    print("\n".join(lines), flush=True)


def run_backend(backend: str, opts: Options) -> dict[str, Any]:
    # One client address sends every application: the per-address limit would answer 429.
    extra_env = {"ADGANG_ONBOARDING_RATE_LIMIT_PER_MINUTE": "0"}
    with (
        service_databases(backend, "bench") as (server, database_urls),
        running_suite("adgang-bench-e2e-", extra_env, keep_var=opts.keep_var, database_urls=database_urls) as suite,
    ):
        log(f"{backend}: starting the suite in {suite.config.var_dir} ...")
        started = time.monotonic()
        suite.start(deadline_s=180.0)
        startup_s = time.monotonic() - started
        results = asyncio.run(measure(suite, opts, postmaster_pid(server)))
        results["suite_startup_s"] = round(startup_s, 1)
        results["seconds"] = round(time.monotonic() - started, 1)
        return results


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument("--applications", type=int, default=300, help="sustained phase (default 300)")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="sustained phase: requests in flight (16)"
    )
    parser.add_argument("--idle", type=int, default=30, help="idle applications, one at a time (default 30)")
    parser.add_argument("--rate", type=float, default=100.0, help="open loop: applications/s (default 100)")
    parser.add_argument("--rate-seconds", type=float, default=10.0, help="open loop: seconds (default 10)")
    parser.add_argument("--raw-messages", type=int, default=20000, help="records per raw broker run (20000)")
    parser.add_argument("--raw-bytes", type=int, default=500, help="approximate value size of a raw record")
    parser.add_argument(
        "--deadline",
        type=float,
        default=120.0,
        help="seconds without a new letter before a phase fails (120)",
    )
    parser.add_argument(
        "--open-deadline",
        type=float,
        default=30.0,
        help="open loop: seconds after the last request to wait for letters (default 30)",
    )
    parser.add_argument("--sample", type=float, default=0.5, help="seconds between memory samples (0.5)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "e2e-latest.json")
    parser.add_argument(
        "--keep-var", action="store_true", help="keep the temporary var dir (logs, databases)"
    )
    args = parser.parse_args(argv)
    if min(args.applications, args.concurrency, args.idle, args.raw_messages, args.raw_bytes) < 1:
        parser.error(
            "--applications, --concurrency, --idle, --raw-messages and --raw-bytes must be at least 1"
        )
    if min(args.rate, args.rate_seconds, args.deadline, args.open_deadline, args.sample) <= 0:
        parser.error("--rate, --rate-seconds, --deadline, --open-deadline and --sample must be positive")
    return Options(
        backends=list(BACKENDS) if args.backend == "both" else [args.backend],
        applications=args.applications,
        concurrency=args.concurrency,
        idle=args.idle,
        rate=args.rate,
        rate_seconds=args.rate_seconds,
        raw_messages=args.raw_messages,
        raw_bytes=args.raw_bytes,
        letter_deadline_s=args.deadline,
        open_deadline_s=args.open_deadline,
        sample_s=args.sample,
        output=args.output.resolve(),
        keep_var=args.keep_var,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    # Stopped from outside (`make bench` stopped, a timeout): unwind, so the suite and the
    # PostgreSQL server are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    state = git_state()
    results: dict[str, Any] = {
        "benchmark": "e2e",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "commit": state.get("commit", "unknown"),
        "git": state,
        "options": {
            "backends": opts.backends,
            "applications": opts.applications,
            "concurrency": opts.concurrency,
            "idle": opts.idle,
            "rate_per_s": opts.rate,
            "rate_seconds": opts.rate_seconds,
            "raw_messages": opts.raw_messages,
            "raw_bytes": opts.raw_bytes,
            "letter_deadline_s": opts.letter_deadline_s,
            "open_deadline_s": opts.open_deadline_s,
            "sample_s": opts.sample_s,
        },
        "backends": {},
        "targets": [],
        "series": {},
    }
    failed = False
    for backend in opts.backends:
        try:
            outcome = run_backend(backend, opts)
        except Exception as exc:
            failed = True
            log(f"{backend} FAILED: {exc}")
            if not isinstance(exc, BenchError):
                traceback.print_exc()
            results["backends"][backend] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        for name, line in outcome.pop("_series").items():
            results["series"][f"{name} ({backend})"] = line
        results["backends"][backend] = outcome
        results["targets"] += targets_of(backend, outcome)
        print_backend(backend, outcome)
    results["total_s"] = round(time.monotonic() - started, 1)
    write_json(results, opts.output)
    print()
    print(
        targets_table(results["targets"], title=f"apply flow targets {results['machine']['summary']}"),
        flush=True,
    )
    log(f"results written to {opts.output} (total {results['total_s']} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
