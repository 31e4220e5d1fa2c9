"""Soak: the whole suite at a steady rate for ten minutes; memory, file descriptors and
latencies must stay flat, and nothing may be lost.

    python -m bench.soak [--minutes 10] [--rate 4] [--backend sqlite|postgres]

It starts the whole suite (`services/suite.py`: the embedded broker, every worker and API) on
free ports in a temporary var dir, SQLite by default (`--backend postgres`: a throwaway
PostgreSQL server from `tests/support/postgres.py`, one database per service). Set-up, not
measured: billing's worker registers enough generated customers
(`ADGANG_BILLING_DEMO_EXTRA_CUSTOMERS`), and a pool of administrators (the two demo companies
that have invoices, and generated ones) apply, activate from their letters, log in with a code
by email and enrol an authenticator app (TOTP).

Then, for a warm-up and `--minutes`, requests start on a fixed schedule (open loop: a slow
answer does not delay the next request) at `--rate` requests per second, split by `--mix`:

- application: `POST /v1/applications` for a customer that has none (S1);
- login: password, then the administrator's TOTP code (S7); each code works once, so an
  administrator logs in at most once per 30-second step and the pool is sized for the rate;
- invoice_list / invoice_one: billing's `GET /v1/invoices` and `GET /v1/invoices/{id}` with the
  access token of the latest login of a demo company's administrator (S8).

Beside the mix, billing's `/healthz` (no database, no token) twice a second is the reference:
its p99 ratio shows how much the shared machine alone moved the latencies, and the limit is on
each operation's p99 ratio divided by the reference's (when the machine was slower at the end).

Every few seconds it reads VmRSS from `/proc/<pid>/status` and counts `/proc/<pid>/fd` of every
suite process. What it compares is measured within one run (the machine is shared and noisy):
the first minute after the warm-up against the last minute: RSS and open fds per process
(growth in %), p50/p99 per operation (ratio). Afterwards every application must reach
`credentials_sent` with exactly one letter per company. It exits non-zero when a limit is
exceeded or anything was lost; `bench/README.md` has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pyotp
from sqlalchemy import bindparam, text

from bench.e2e import LetterWatcher, application_body, process_table, wait_statuses, wait_until
from bench.measuring import (
    BenchError,
    cpu_seconds,
    git_state,
    log,
    machine_info,
    percentile,
    running_suite,
    service_databases,
)
from services.billing.demo import GROUP_PARENT_CVR, STANDALONE_CVR, generated_companies
from services.suite import Suite
from shared.db import Database
from tests.support.flows import STRONG_PASSWORD, activated_administrator, log_in_with_code

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
TOTP_STEP_S = 30
# Administrators set up at once: tests/support/flows.py gives identity 10 s an answer, and each
# activation hashes a password (argon2) on a machine that other work may keep busy.
SET_UP_CONCURRENCY = 3
INVOICE_READERS = (GROUP_PARENT_CVR, STANDALONE_CVR)  # the demo companies with invoices
OPERATIONS = ("application", "login", "invoice")
# What is timed, per request kind (a login is two requests, an invoice read one of two).
MEASURES = (
    "application",
    "application_letter",
    "login",
    "login_password",
    "login_totp",
    "invoice_list",
    "invoice_one",
    "healthz (reference)",
)
POOL_BURST = 12
# The embedded development broker (Tansu) keeps every record in memory, so its RSS grows with
# the records the run sends: reported, not judged (production runs Apache Kafka, on disk).
UNJUDGED = "broker"
REFERENCE = "healthz (reference)"  # not a soak operation: the machine's noise, beside them
PERCENTILES = (50, 90, 99)  # of each operation's latency, per minute compared


# --- options ----------------------------------------------------------------------------------


@dataclass
class Options:
    minutes: float
    rate: float
    mix: dict[str, float]
    warmup_s: float
    sample_s: float
    reference_rate: float
    backend: str
    admins: int
    max_in_flight: int
    rss_limit_pct: float
    fd_limit_pct: float
    p99_ratio_limit: float
    letter_deadline_s: float
    output: Path
    keep_var: bool

    def rate_of(self, operation: str) -> float:
        return self.rate * self.mix[operation] / sum(self.mix.values())

    @property
    def duration_s(self) -> float:
        return self.warmup_s + self.minutes * 60


def parse_mix(value: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in value.split(","):
        name, _, weight = part.partition(":")
        name = name.strip()
        if name not in OPERATIONS:
            raise argparse.ArgumentTypeError(f"unknown operation {name!r}: one of {', '.join(OPERATIONS)}")
        try:
            mix[name] = float(weight)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"weight of {name!r} is not a number: {weight!r}") from exc
        if mix[name] < 0:
            raise argparse.ArgumentTypeError(f"weight of {name!r} is negative")
    for name in OPERATIONS:
        mix.setdefault(name, 0.0)
    if not sum(mix.values()):
        raise argparse.ArgumentTypeError("the mix has no operation with a weight above 0")
    return mix


# --- administrators -----------------------------------------------------------------------------


@dataclass
class Admin:
    cvr: str
    username: str
    secret: str
    last_step: int  # the TOTP step of the last code identity accepted: only later ones work
    token: str
    busy: bool = False
    last_used: float = 0.0
    logins: int = 0
    invoice_ids: list[str] = field(default_factory=list)


def admin_contact(n: int) -> tuple[str, str]:
    return f"soak-admin{n}@example.com", f"+4528{n:06d}"


def set_up_admin(suite: Suite, cvr: str, n: int) -> Admin:
    """As a person: apply, activate from the letter (codes by SMS and email), log in with a
    code by email, enrol an authenticator app."""
    email, mobile = admin_contact(n)
    letter = activated_administrator(suite, cvr, email=email, mobile=mobile)
    tokens = log_in_with_code(suite, letter.username, method="email", recipient=email, timeout_s=60)
    if tokens.status_code != 200:
        raise BenchError(f"login code of {letter.username}: {tokens.status_code} {tokens.text[:200]}")
    with httpx.Client(base_url=suite.url("identity"), timeout=60) as http:
        bearer = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
        started = http.post("/v1/me/totp", headers=bearer)
        if started.status_code != 200:
            raise BenchError(
                f"TOTP enrolment of {letter.username}: {started.status_code} {started.text[:200]}"
            )
        secret = started.json()["secret"]
        now = time.time()
        confirmed = http.post(
            "/v1/me/totp/confirm", headers=bearer, json={"code": pyotp.TOTP(secret).at(now)}
        )
        if confirmed.status_code != 200:
            raise BenchError(
                f"TOTP confirmation of {letter.username}: {confirmed.status_code} {confirmed.text[:200]}"
            )
    return Admin(
        cvr=cvr,
        username=letter.username,
        secret=secret,
        last_step=int(now // TOTP_STEP_S),
        token=tokens.json()["access_token"],
    )


def set_up_admins(suite: Suite, cvrs: Sequence[str]) -> list[Admin]:
    with ThreadPoolExecutor(max_workers=SET_UP_CONCURRENCY) as pool:
        return list(pool.map(lambda pair: set_up_admin(suite, pair[1], pair[0]), enumerate(cvrs)))


async def count_known(suite: Suite, service: str, table: str, cvrs: Sequence[str]) -> int:
    """Customers a service has learned, read with the service's own database code (either backend)."""
    db = Database(suite.database_url(service))
    try:
        async with db.reading() as session:
            query = text(f"SELECT count(*) FROM {table} WHERE cvr IN :cvrs").bindparams(
                bindparam("cvrs", expanding=True)
            )
            return int(await session.scalar(query, {"cvrs": list(cvrs)}) or 0)
    finally:
        await db.dispose()


async def wait_customers_known(suite: Suite, cvrs: Sequence[str], deadline_s: float) -> float:
    async def known() -> bool:
        return await count_known(suite, "onboarding", "known_customers", cvrs) == len(cvrs) and (
            await count_known(suite, "identity", "companies", cvrs) == len(cvrs)
        )

    return await wait_until(
        known, deadline_s=deadline_s, what=f"{len(cvrs)} customers to reach onboarding and identity"
    )


# --- the load ---------------------------------------------------------------------------------


@dataclass
class Timing:
    measure: str
    at_s: float  # when the request started, seconds after the load started
    seconds: float


@dataclass
class Submitted:
    cvr: str
    application_id: str
    submitted_at: float  # wall clock, to compare with the letter file's mtime
    at_s: float


@dataclass
class Sample:
    at_s: float
    process: str
    rss_kb: int
    fds: int
    cpu_s: float | None


def rss_and_fds(pid: int) -> tuple[int, int] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]), fds
    return None


class Load:
    def __init__(self, suite: Suite, opts: Options, admins: list[Admin], cvrs: list[str]) -> None:
        self.suite = suite
        self.opts = opts
        self.admins = admins
        self.readers = [a for a in admins if a.cvr in INVOICE_READERS]
        self.cvrs = iter(cvrs)
        self.timings: list[Timing] = []
        self.submitted: list[Submitted] = []
        self.samples: list[Sample] = []
        self.errors: Counter[str] = Counter()
        self.error_examples: dict[str, list[str]] = {}
        self.late_starts: list[float] = []  # seconds a request started after its time
        self.skipped: Counter[str] = Counter()
        self.started = 0.0
        self.invoice_reads = 0
        self.gate = asyncio.Semaphore(opts.max_in_flight)
        self.in_flight: set[asyncio.Task[None]] = set()

    def now_s(self) -> float:
        return time.monotonic() - self.started

    def error(self, operation: str, message: str) -> None:
        self.errors[operation] += 1
        examples = self.error_examples.setdefault(operation, [])
        if len(examples) < 5:
            examples.append(message[:300])

    # -- operations --

    async def application(self, http: httpx.AsyncClient) -> None:
        cvr = next(self.cvrs, None)
        if cvr is None:
            self.skipped["application (no customer left)"] += 1
            return
        at_s = self.now_s()
        wall = time.time()
        started = time.perf_counter()
        answer = await http.post("/v1/applications", json=application_body(cvr, len(self.submitted) + 1000))
        elapsed = time.perf_counter() - started
        if answer.status_code != 202:
            self.error("application", f"{cvr}: HTTP {answer.status_code} {answer.text}")
            return
        self.timings.append(Timing("application", at_s, elapsed))
        self.submitted.append(Submitted(cvr, answer.json()["id"], wall, at_s))

    async def login(self, http: httpx.AsyncClient) -> None:
        step = int(time.time() // TOTP_STEP_S)
        ready = [a for a in self.admins if not a.busy and a.last_step < step]
        if not ready:
            self.skipped["login (no administrator with an unused TOTP step)"] += 1
            return
        admin = min(ready, key=lambda a: a.last_used)
        admin.busy = True
        try:
            at_s = self.now_s()
            started = time.perf_counter()
            challenge = await http.post(
                "/v1/login", json={"username": admin.username, "password": STRONG_PASSWORD}
            )
            password_s = time.perf_counter() - started
            if challenge.status_code != 200 or "totp" not in challenge.json().get("methods", []):
                self.error("login", f"password step: HTTP {challenge.status_code} {challenge.text}")
                return
            now = time.time()
            code, code_step = pyotp.TOTP(admin.secret).at(now), int(now // TOTP_STEP_S)
            second = time.perf_counter()
            tokens = await http.post(
                f"/v1/login/{challenge.json()['challenge_id']}/verify", json={"code": code}
            )
            done = time.perf_counter()
            if tokens.status_code != 200:
                self.error("login", f"TOTP step: HTTP {tokens.status_code} {tokens.text}")
                return
            admin.last_step = code_step
            admin.token = tokens.json()["access_token"]
            admin.logins += 1
            self.timings += [
                Timing("login_password", at_s, password_s),
                Timing("login_totp", at_s, done - second),
                Timing("login", at_s, done - started),
            ]
        finally:
            admin.busy = False
            admin.last_used = time.monotonic()

    async def invoice(self, http: httpx.AsyncClient) -> None:
        n = self.invoice_reads
        self.invoice_reads += 1
        reader = self.readers[n % len(self.readers)]
        one = (n // len(self.readers)) % 2 == 1 and reader.invoice_ids
        path = (
            f"/v1/invoices/{reader.invoice_ids[(n // 4) % len(reader.invoice_ids)]}"
            if one
            else "/v1/invoices"
        )
        measure = "invoice_one" if one else "invoice_list"
        at_s = self.now_s()
        started = time.perf_counter()
        answer = await http.get(path, headers={"Authorization": f"Bearer {reader.token}"})
        elapsed = time.perf_counter() - started
        if answer.status_code != 200:
            self.error("invoice", f"{measure}: HTTP {answer.status_code} {answer.text}")
            return
        if not one:
            items = answer.json()["items"]
            if not items:
                self.error("invoice", f"{measure}: no invoices for {reader.cvr}")
                return
            reader.invoice_ids = [item["id"] for item in items]
        self.timings.append(Timing(measure, at_s, elapsed))

    async def reference(self, http: httpx.AsyncClient) -> None:
        """billing's `/healthz` (no database, no token): how much the machine alone moved the
        latencies between the first and the last minute."""
        at_s = self.now_s()
        started = time.perf_counter()
        answer = await http.get("/healthz")
        elapsed = time.perf_counter() - started
        if answer.status_code != 200:
            self.error("reference", f"/healthz: HTTP {answer.status_code} {answer.text}")
            return
        self.timings.append(Timing(REFERENCE, at_s, elapsed))

    async def fill_pools(
        self, onboarding: httpx.AsyncClient, identity: httpx.AsyncClient, billing: httpx.AsyncClient
    ) -> None:
        """Ten seconds before the warm-up ends, POOL_BURST reads at once to each API: their
        read pools (SQLite: 4 kept connections, PostgreSQL: 5) open the connections they keep,
        so that a later burst (a neighbour pausing the machine) does not count as growth."""
        await asyncio.sleep(max(0.0, self.started + self.opts.warmup_s - 10 - time.monotonic()))
        if not self.submitted or not self.readers:
            return
        reader = self.readers[0]
        bearer = {"Authorization": f"Bearer {reader.token}"}
        application = self.submitted[-1].application_id
        requests = [
            *(billing.get("/v1/invoices", headers=bearer) for _ in range(POOL_BURST)),
            *(identity.get("/v1/me", headers=bearer) for _ in range(POOL_BURST)),
            *(onboarding.get(f"/v1/applications/{application}") for _ in range(POOL_BURST)),
        ]
        for answer in await asyncio.gather(*requests, return_exceptions=True):
            if isinstance(answer, BaseException) or answer.status_code != 200:
                self.error("pool filling", repr(answer))

    def rate_of(self, operation: str) -> float:
        return self.opts.reference_rate if operation == "reference" else self.opts.rate_of(operation)

    # -- the schedule --

    async def guarded(self, operation: str, due: float, run: Any) -> None:
        async with self.gate:
            self.late_starts.append(max(0.0, time.monotonic() - due))
            try:
                await run()
            except Exception as exc:
                self.error(operation, f"{type(exc).__name__}: {exc}")

    async def pace(self, operation: str, rate: float, phase: float, run: Any) -> None:
        """Starts `run` every 1/rate seconds until the end, without waiting for it."""
        interval = 1.0 / rate
        i = 0
        while True:
            due = self.started + phase * interval + i * interval
            if due - self.started >= self.opts.duration_s:
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            task = asyncio.create_task(self.guarded(operation, due, run))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
            i += 1

    async def sample(self, pids: dict[str, int], stop: asyncio.Event) -> None:
        while not stop.is_set():
            at_s = self.now_s()
            for name, pid in pids.items():
                found = rss_and_fds(pid)
                if found is None:
                    self.error("process", f"{name} (pid {pid}) is gone at {at_s:.0f}s")
                    continue
                self.samples.append(Sample(at_s, name, found[0], found[1], cpu_seconds(pid)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.opts.sample_s)

    async def run(self, pids: dict[str, int]) -> None:
        # Few kept-alive connections: a burst's extra connections are closed after it, so the
        # APIs' open fds show what they hold, not the largest burst the client has sent.
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=4)
        async with (
            httpx.AsyncClient(base_url=self.suite.url("onboarding"), timeout=60, limits=limits) as onboarding,
            httpx.AsyncClient(base_url=self.suite.url("identity"), timeout=60, limits=limits) as identity,
            httpx.AsyncClient(base_url=self.suite.url("billing"), timeout=60, limits=limits) as billing,
        ):
            runs = {
                "application": (lambda: self.application(onboarding)),
                "login": (lambda: self.login(identity)),
                "invoice": (lambda: self.invoice(billing)),
            }
            if self.opts.reference_rate > 0:
                runs["reference"] = lambda: self.reference(billing)
            self.started = time.monotonic()
            stop = asyncio.Event()
            sampler = asyncio.create_task(self.sample(pids, stop))
            pacers = [
                self.pace(name, self.rate_of(name), phase=i / len(runs), run=run)
                for i, (name, run) in enumerate(runs.items())
                if self.rate_of(name) > 0
            ]
            burst = asyncio.create_task(self.fill_pools(onboarding, identity, billing))
            await asyncio.gather(*pacers)
            await burst
            if self.in_flight:
                await asyncio.wait(set(self.in_flight), timeout=120)
            stop.set()
            await sampler


# --- the analysis -----------------------------------------------------------------------------


def windows(opts: Options) -> dict[str, tuple[float, float]]:
    end = opts.duration_s
    return {"first": (opts.warmup_s, opts.warmup_s + 60.0), "last": (end - 60.0, end)}


def growth_pct(first: float, last: float) -> float:
    return round((last - first) / first * 100.0, 1) if first else float("nan")


def slope_per_minute(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) in value per minute."""
    if len(points) < 2:
        return float("nan")
    mean_t = statistics.fmean(t for t, _ in points)
    mean_v = statistics.fmean(v for _, v in points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if not var:
        return float("nan")
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / var * 60.0


def in_span(samples: Sequence[Sample], attr: str, span: tuple[float, float]) -> list[float]:
    """The values of `attr` sampled in `span` (start included, end not); [nan] when none."""
    return [float(getattr(s, attr)) for s in samples if span[0] <= s.at_s < span[1]] or [math.nan]


class Window(NamedTuple):
    floor: float  # the least sample
    median: float


def window(samples: Sequence[Sample], attr: str, span: tuple[float, float]) -> Window:
    """The least and the median of `attr` sampled in `span`."""
    values = in_span(samples, attr, span)
    return Window(min(values), statistics.median(values))


def process_figures(load: Load, opts: Options) -> dict[str, Any]:
    spans = windows(opts)
    out: dict[str, Any] = {}
    for name in sorted({s.process for s in load.samples}):
        mine = [s for s in load.samples if s.process == name]
        measured = [s for s in mine if s.at_s >= opts.warmup_s]
        # The floor (the least of a minute's samples) is what a process holds between requests:
        # a leak raises it. A sample can also catch memory a request holds only while it runs
        # (identity's argon2 takes 64 MiB per password checked, and gives it back), and fds of
        # a connection or a write session opened for a moment; the medians show those too.
        rss, fds = (
            {label: window(mine, attr, span) for label, span in spans.items()} for attr in ("rss_kb", "fds")
        )
        cpu = [s.cpu_s for s in measured if s.cpu_s is not None]
        out[name] = {
            "rss_mb_first": round(rss["first"].floor / 1024, 1),
            "rss_mb_last": round(rss["last"].floor / 1024, 1),
            "rss_growth_pct": growth_pct(rss["first"].floor, rss["last"].floor),
            "rss_mb_median_first": round(rss["first"].median / 1024, 1),
            "rss_mb_median_last": round(rss["last"].median / 1024, 1),
            "fds_median_first": fds["first"].median,
            "fds_median_last": fds["last"].median,
            "rss_mb_max": round(max(s.rss_kb for s in mine) / 1024, 1),
            "rss_mb_per_minute": round(slope_per_minute([(s.at_s, s.rss_kb / 1024) for s in measured]), 3),
            "fds_first": fds["first"].floor,
            "fds_last": fds["last"].floor,
            "fds_growth_pct": growth_pct(fds["first"].floor, fds["last"].floor),
            "fds_max": max(s.fds for s in mine),
            "cpu_s_measured": round(cpu[-1] - cpu[0], 1) if len(cpu) > 1 else None,
        }
    return out


def latency_figures(timings: Sequence[Timing], opts: Options) -> dict[str, Any]:
    spans = windows(opts)
    out: dict[str, Any] = {}
    for measure in MEASURES:
        mine = [t for t in timings if t.measure == measure]
        if not mine:
            continue
        figures: dict[str, Any] = {}
        for label, (start, end) in (("all", (opts.warmup_s, math.inf)), *spans.items()):
            ms = [t.seconds * 1000 for t in mine if start <= t.at_s < end]
            figures[label] = {
                "n": len(ms),
                **{f"p{p}_ms": round(percentile(ms, p), 1) for p in PERCENTILES},
                "max_ms": round(max(ms), 1) if ms else float("nan"),
            }
        first, last = figures["first"], figures["last"]
        for p in PERCENTILES:
            figures[f"p{p}_ratio"] = (
                round(last[f"p{p}_ms"] / first[f"p{p}_ms"], 2) if first["n"] and last["n"] else None
            )
        out[measure] = figures
    return out


def normalise(latency: dict[str, Any]) -> None:
    """Each operation's p99 ratio divided by the reference's (`/healthz` beside it, the same
    minutes), when the machine was slower in the last minute than in the first: what the
    operation drifted beyond what the machine alone did. Without a reference, the ratio itself."""
    reference = latency.get(REFERENCE, {}).get("p99_ratio")
    for measure, figures in latency.items():
        ratio = figures["p99_ratio"]
        if ratio is None or measure == REFERENCE:
            figures["p99_vs_reference"] = ratio
        else:
            figures["p99_vs_reference"] = round(ratio / max(1.0, reference or 1.0), 2)


def checks(results: dict[str, Any], opts: Options) -> list[str]:
    """What failed; empty when the soak passed."""
    failed: list[str] = []
    for name, p in results["processes"].items():
        if name == UNJUDGED:
            continue
        if not p["rss_growth_pct"] <= opts.rss_limit_pct:
            failed.append(f"{name}: RSS grew {p['rss_growth_pct']} % (limit {opts.rss_limit_pct} %)")
        if not p["fds_growth_pct"] <= opts.fd_limit_pct:
            failed.append(f"{name}: open fds grew {p['fds_growth_pct']} % (limit {opts.fd_limit_pct} %)")
    for measure, figures in results["latency"].items():
        if measure == REFERENCE:
            continue
        ratio = figures["p99_vs_reference"]
        if ratio is None:
            failed.append(f"{measure}: no requests in the first or the last minute")
        elif ratio > opts.p99_ratio_limit:
            failed.append(
                f"{measure}: p99 last/first minute {figures['p99_ratio']}, {ratio} beyond the reference's"
                f" (limit {opts.p99_ratio_limit})"
            )
    lost = results["lost"]
    if lost["not_credentials_sent"]:
        failed.append(f"{lost['not_credentials_sent']} applications did not reach credentials_sent")
    if lost["companies_without_one_letter"]:
        failed.append(f"{len(lost['companies_without_one_letter'])} companies without exactly one letter")
    if results["errors"]:
        failed.append(f"request errors: {results['errors']}")
    if results["skipped"]:
        failed.append(f"requests not sent: {results['skipped']}")
    return failed


# --- the run ----------------------------------------------------------------------------------


async def after_the_load(suite: Suite, load: Load, admins: list[Admin], opts: Options) -> dict[str, Any]:
    """Nothing lost: every application's letter, exactly one per company, every status
    `credentials_sent`."""
    spool = suite.config.var_dir / "eboks"
    watcher = LetterWatcher(spool, [s.cvr for s in load.submitted])
    log(f"waiting for {len(load.submitted)} letters ...")
    await watcher.wait_all(opts.letter_deadline_s)
    watcher.recount()
    for submitted in load.submitted:
        letter = watcher.found[submitted.cvr]
        load.timings.append(
            Timing("application_letter", submitted.at_s, letter.mtime - submitted.submitted_at)
        )
    async with httpx.AsyncClient(base_url=suite.url("onboarding"), timeout=60) as client:
        statuses = await wait_statuses(client, [s.application_id for s in load.submitted], 8, deadline_s=120)
    per_company = {
        cvr: sum(1 for p in (spool / cvr).glob("*.xml") if not p.name.startswith("."))
        for cvr in [*(s.cvr for s in load.submitted), *(a.cvr for a in admins)]
    }
    return {
        "applications": len(load.submitted),
        "statuses": dict(Counter(statuses.values())),
        "not_credentials_sent": sum(1 for s in statuses.values() if s != "credentials_sent"),
        "companies_checked": len(per_company),
        "companies_without_one_letter": {cvr: n for cvr, n in per_company.items() if n != 1},
    }


def run(opts: Options) -> dict[str, Any]:
    login_rate = opts.rate_of("login")
    applications = math.ceil(opts.rate_of("application") * opts.duration_s) + 10
    admins_needed = opts.admins or max(3, math.ceil(login_rate * TOTP_STEP_S * 2) + 2)
    generated = [c.cvr for c in generated_companies(admins_needed + applications)]
    admin_cvrs = [*INVOICE_READERS, *generated[: max(0, admins_needed - len(INVOICE_READERS))]]
    application_cvrs = generated[len(admin_cvrs) - len(INVOICE_READERS) :]
    extra_env = {
        "ADGANG_BILLING_DEMO_EXTRA_CUSTOMERS": str(len(generated)),
        "ADGANG_BILLING_INVOICE_RUN_ENABLED": "false",
        # One client address sends every request: the per-address limits would answer 429.
        "ADGANG_ONBOARDING_RATE_LIMIT_PER_MINUTE": "0",
        "ADGANG_IDENTITY_LOGIN_RATE_LIMIT_PER_MINUTE": "0",
        "ADGANG_IDENTITY_ACTIVATION_RATE_LIMIT_PER_MINUTE": "0",
    }
    with (
        service_databases(opts.backend, "soak") as (_server, database_urls),
        running_suite("adgang-bench-soak-", extra_env, keep_var=opts.keep_var, database_urls=database_urls) as suite,
    ):
        log(f"starting the suite in {suite.config.var_dir} ({opts.backend}) ...")
        set_up_at = time.monotonic()
        suite.start(deadline_s=180)
        startup_s = time.monotonic() - set_up_at
        log(
            f"waiting for billing's {len(generated)} generated customers to reach onboarding and identity ..."
        )
        asyncio.run(wait_customers_known(suite, [*INVOICE_READERS, *generated], deadline_s=300))
        log(f"setting up {len(admin_cvrs)} administrators (activation, login, TOTP) ...")
        admins = set_up_admins(suite, admin_cvrs)
        # Each enrolment used its step's code: from the next step on, every administrator
        # can log in, and the pool's size holds for the rate (otherwise a short warm-up
        # finds most of them still in the step they enrolled in).
        next_step_s = (max(a.last_step for a in admins) + 1) * TOTP_STEP_S
        time.sleep(max(0.0, next_step_s - time.time()))
        set_up_s = time.monotonic() - set_up_at
        pids = process_table(suite)
        load = Load(suite, opts, admins, application_cvrs)
        log(
            f"load: {opts.rate:g} requests/s ({', '.join(f'{n} {opts.rate_of(n):.2f}/s' for n in OPERATIONS)})"
            f" for {opts.warmup_s:g} s of warm-up + {opts.minutes:g} min; {len(pids)} processes sampled"
            f" every {opts.sample_s:g} s"
        )
        ticker = threading.Event()
        threading.Thread(target=_progress, args=(load, opts, ticker), daemon=True).start()
        try:
            asyncio.run(load.run(pids))
        finally:
            ticker.set()
        lost = asyncio.run(after_the_load(suite, load, admins, opts))
        processes = process_figures(load, opts)
        latency = latency_figures(load.timings, opts)
        normalise(latency)
        late = sorted(load.late_starts)
        results: dict[str, Any] = {
            "benchmark": "adgang soak",
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine_info(),
            "git": git_state(),
            "options": {
                "minutes": opts.minutes,
                "rate_per_s": opts.rate,
                "mix": opts.mix,
                "rates_per_s": {n: round(opts.rate_of(n), 3) for n in OPERATIONS},
                "warmup_s": opts.warmup_s,
                "sample_s": opts.sample_s,
                "reference_rate_per_s": opts.reference_rate,
                "backend": opts.backend,
                "administrators": len(admins),
                "limits": {
                    "rss_growth_pct": opts.rss_limit_pct,
                    "fds_growth_pct": opts.fd_limit_pct,
                    "p99_ratio": opts.p99_ratio_limit,
                },
            },
            "suite_startup_s": round(startup_s, 1),
            "set_up_s": round(set_up_s, 1),
            "requests": dict(
                Counter(t.measure for t in load.timings if t.measure != "application_letter")
            ),
            "logins_per_administrator": dict(Counter(a.logins for a in admins)),
            "start_late_ms": {
                "p50": round(percentile(late, 50) * 1000, 1),
                "p99": round(percentile(late, 99) * 1000, 1),
                "max": round(late[-1] * 1000, 1) if late else None,
            },
            "processes": processes,
            "latency": latency,
            "lost": lost,
            "errors": dict(load.errors),
            "error_examples": load.error_examples,
            "skipped": dict(load.skipped),
            "timeline": [
                {"at_s": round(s.at_s, 1), "process": s.process, "rss_kb": s.rss_kb, "fds": s.fds}
                for s in load.samples
            ],
        }
        results["failed"] = checks(results, opts)
        if results["failed"]:
            # keep the var dir for its logs
            raise _Failed(results)
        return results


class _Failed(Exception):
    def __init__(self, results: dict[str, Any]) -> None:
        super().__init__("; ".join(results["failed"]))
        self.results = results


def _progress(load: Load, opts: Options, stop: threading.Event) -> None:
    """A line a minute, so that a ten-minute run is seen to move."""
    while not stop.wait(60):
        if not load.started:
            continue
        at_s = load.now_s()
        recent = [t for t in load.timings if at_s - 60 <= t.at_s]
        by = Counter(t.measure for t in recent)
        rss = {s.process: s.rss_kb for s in load.samples[-20:]}
        log(
            f"{at_s:5.0f}s of {opts.duration_s:.0f}s: last minute {dict(by)}, errors {dict(load.errors)}, "
            f"RSS MB {', '.join(f'{n} {v / 1024:.0f}' for n, v in sorted(rss.items()))}"
        )


def markdown(results: dict[str, Any]) -> str:
    opts = results["options"]
    lines = [
        f"Soak {results['at']}: {opts['minutes']:g} min after {opts['warmup_s']:g} s of warm-up, "
        f"{opts['rate_per_s']:g} requests/s ({', '.join(f'{n} {r}/s' for n, r in opts['rates_per_s'].items())}), "
        f"{opts['backend']}, {opts['administrators']} administrators {results['machine']['summary']}",
        "",
        "| process | RSS MB floor first min | last min | **growth** | median first / last | MB/min (slope) |"
        " fds floor first | last | **growth** | median first / last |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in results["processes"].items():
        lines.append(
            f"| {name + (' (not judged: memory-only)' if name == UNJUDGED else '')} | {p['rss_mb_first']} | {p['rss_mb_last']} | **{p['rss_growth_pct']:+} %** | "
            f"{p['rss_mb_median_first']} / {p['rss_mb_median_last']} | {p['rss_mb_per_minute']:+} | "
            f"{p['fds_first']:g} | {p['fds_last']:g} | **{p['fds_growth_pct']:+} %** | "
            f"{p['fds_median_first']:g} / {p['fds_median_last']:g} |"
        )
    lines += [
        "",
        "| operation | n | first min p50 / p90 / p99 ms | last min p50 / p90 / p99 ms | p50 ratio | p99 ratio |"
        " **p99 ratio ÷ reference's** |",
        "|---|---|---|---|---|---|---|",
    ]
    for measure, f in results["latency"].items():
        lines.append(
            f"| {measure} | {f['all']['n']} | {f['first']['p50_ms']} / {f['first']['p90_ms']} / "
            f"{f['first']['p99_ms']} | {f['last']['p50_ms']} / {f['last']['p90_ms']} / {f['last']['p99_ms']} | "
            f"{f['p50_ratio']} | {f['p99_ratio']} | **{f['p99_vs_reference'] if measure != REFERENCE else '–'}** |"
        )
    lost = results["lost"]
    lines += [
        "",
        f"Applications: {lost['applications']}, statuses {lost['statuses']}; companies checked "
        f"{lost['companies_checked']}, without exactly one letter: {len(lost['companies_without_one_letter'])}. "
        f"Errors: {results['errors'] or 'none'}; not sent: {results['skipped'] or 'none'}; "
        f"start late p99 {results['start_late_ms']['p99']} ms.",
        "",
        "FAILED: " + "; ".join(results["failed"])
        if results["failed"]
        else "PASSED: every limit held, nothing lost.",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="measured minutes after the warm-up (default 10)"
    )
    parser.add_argument(
        "--rate", type=float, default=4.0, help="requests started per second, all kinds (default 4)"
    )
    parser.add_argument(
        "--mix",
        type=parse_mix,
        default=parse_mix("application:5,login:1,invoice:14"),
        help="weights of the operations (default application:5,login:1,invoice:14)",
    )
    parser.add_argument(
        "--warmup", type=float, default=60.0, help="seconds of load before the first minute (default 60)"
    )
    parser.add_argument(
        "--sample", type=float, default=5.0, help="seconds between process samples (default 5)"
    )
    parser.add_argument(
        "--reference-rate",
        type=float,
        default=2.0,
        help="billing /healthz requests per second beside the mix, the noise reference (default 2; 0: none)",
    )
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--admins", type=int, default=0, help="administrators who log in (default: enough for the login rate)"
    )
    parser.add_argument(
        "--max-in-flight", type=int, default=64, help="requests in flight at most (default 64)"
    )
    parser.add_argument(
        "--rss-limit", type=float, default=10.0, help="RSS growth limit per process, %% (default 10)"
    )
    parser.add_argument(
        "--fd-limit", type=float, default=10.0, help="open fd growth limit per process, %% (default 10)"
    )
    parser.add_argument(
        "--p99-ratio-limit",
        type=float,
        default=2.0,
        help="limit of p99 last minute / first minute, divided by the reference's (default 2.0)",
    )
    parser.add_argument(
        "--deadline", type=float, default=180.0, help="seconds for the last letters after the load"
    )
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "soak-latest.json")
    parser.add_argument(
        "--keep-var", action="store_true", help="keep the temporary var dir (logs, databases)"
    )
    args = parser.parse_args(argv)
    if args.minutes < 1:
        parser.error("--minutes must be at least 1 (the first and the last minute are compared)")
    if (
        args.rate <= 0
        or args.sample <= 0
        or args.max_in_flight < 1
        or min(args.warmup, args.admins, args.reference_rate) < 0
    ):
        parser.error(
            "--rate, --sample and --max-in-flight must be positive, --warmup and --admins not negative"
        )
    opts = Options(
        minutes=args.minutes,
        rate=args.rate,
        mix=args.mix,
        warmup_s=args.warmup,
        sample_s=args.sample,
        reference_rate=args.reference_rate,
        backend=args.backend,
        admins=args.admins,
        max_in_flight=args.max_in_flight,
        rss_limit_pct=args.rss_limit,
        fd_limit_pct=args.fd_limit,
        p99_ratio_limit=args.p99_ratio_limit,
        letter_deadline_s=args.deadline,
        output=args.output.resolve(),
        keep_var=args.keep_var,
    )
    if (
        opts.rate_of("invoice") > 0
        and opts.rate_of("login") > 0
        and opts.admins
        and opts.admins < len(INVOICE_READERS)
    ):
        parser.error(f"--admins must be at least {len(INVOICE_READERS)} (the invoice readers)")
    return opts


def write(results: dict[str, Any], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".tmp")
    partial.write_text(json.dumps(results, indent=2) + "\n")
    partial.replace(output)
    output.with_suffix(".md").write_text(markdown(results) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.monotonic()
    try:
        results = run(opts)
    except _Failed as failed:
        write(failed.results, opts.output)
        print(markdown(failed.results), flush=True)
        print(f"[bench] results written to {opts.output}", file=sys.stderr, flush=True)
        return 1
    except Exception as exc:
        print(f"[bench] FAILED: {exc}", file=sys.stderr, flush=True)
        if not isinstance(exc, BenchError):
            traceback.print_exc()
        return 1
    results["total_s"] = round(time.monotonic() - started, 1)
    write(results, opts.output)
    print(markdown(results), flush=True)
    log(f"results written to {opts.output} (total {results['total_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
