"""Billing's invoice and usage reads on the large demo company, per database backend, in one run.

    python -m bench.invoices [--backend sqlite|postgres|both] [--requests 200] [--warmup 20]

For each backend (a SQLite file in a temporary directory; PostgreSQL on a throwaway server
from tests/support/postgres.py when its binaries are installed) it:

1. migrates billing's database and loads the demo data with `size=large` (timed: rows/s), and
   counts the large company's invoice lines, invoices and usage records;
2. measures, through the real billing app in process (httpx.ASGITransport, no network), one
   request at a time and the cases interleaved: (a) the first page of GET /v1/invoices for a
   caller granted the whole large company, (b) the same for a caller limited to two of its
   accounts, (c) a deep page (the page after following the cursor `--deep-pages` times),
   (d) GET /v1/invoices/{id} with its lines, (e) the first page of GET /v1/usage; GET
   /v1/products (token and revocation check, no invoice SQL) to split off auth; and GET
   /healthz as the baseline, so every p50 is also given as a multiple of the baseline p50 of
   the same run (the ratio to compare between runs: the machine is shared and noisy);
3. captures the SQL the API actually sent for each case (a SQLAlchemy `before_cursor_execute`
   listener) and explains it with its parameters: SQLite `EXPLAIN QUERY PLAN`, PostgreSQL
   `EXPLAIN (ANALYZE, BUFFERS)`, saying which index is used and whether there is a full scan
   or a sort; and runs that SQL directly (outside the app) to give the query's own time;
4. times one session of billing's own `Database` (every authenticated request opens two: the
   revocation check and the query), to show what the app spends around the SQL.

Results go to `bench/results/invoices-latest.json`, the plans also as text beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import Engine, make_url

from bench.measuring import BenchError, git_state, log, machine_info, over_backends, percentile, summary_ms
from services.billing.api import create_api
from services.billing.bootstrap import build
from services.billing.catalogue import sync_catalogue
from services.billing.config import BillingSettings
from services.billing.demo import LARGE_COMPANY_CVR, large_company
from services.billing.models import Invoice, InvoiceLine, UsageRecord, UserAccess
from services.registry import SERVICES
from shared.clock import FrozenClock
from shared.db import Database, migrate
from shared.tokens import TokenSigner, generate_signing_key, parse_signing_keys

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# As tests/integration/billing_fixtures.py: demo data loaded "now", newest closed month October 2026.
NOW = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)
BASE_URL = "http://billing.bench"
JWKS_URL = "http://identity.bench/.well-known/jwks.json"
LARGE_TABLES = ("invoices", "invoice_lines", "usage_records")
SLOW_P50_MS = 50.0
SQL_RUNS = 50  # direct executions of each captured statement, to separate SQL time from the rest


# --- helpers ------------------------------------------------------------------------------


class Tokens:
    """Access tokens with chosen grants, and a JWKS client that serves their key (as
    tests/integration/billing_fixtures.py, without importing pytest)."""

    def __init__(self, clock: FrozenClock) -> None:
        self.signer = TokenSigner(parse_signing_keys(f"b1:{generate_signing_key()}"), "b1")
        self.clock = clock

    def headers(self, grants: list[dict[str, Any]], functions: list[str]) -> dict[str, str]:
        token = self.signer.sign(
            subject=str(uuid.uuid4()),
            session_id=str(uuid.uuid4()),
            tenant=grants[0]["cvr"],
            role="user",
            grants=grants,
            functions=functions,
            now=self.clock.now(),
            lifetime=timedelta(minutes=5),  # the clock is frozen: valid for the whole run
        )
        return {"Authorization": f"Bearer {token}"}

    def jwks_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.MockTransport(lambda _: httpx.Response(200, json=self.signer.jwks()))
        )


# --- capturing the SQL the API sends ------------------------------------------------------


@dataclass
class Captured:
    statement: str
    parameters: Any


@dataclass
class SqlCapture:
    """A class-level `before_cursor_execute` listener on every Engine (the app's own engines
    are created inside `create_api`); it records only while `active`."""

    active: bool = False
    statements: list[Captured] = field(default_factory=list)

    def __post_init__(self) -> None:
        event.listen(Engine, "before_cursor_execute", self._on_execute)

    def close(self) -> None:
        event.remove(Engine, "before_cursor_execute", self._on_execute)

    def _on_execute(
        self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if self.active and not many:
            self.statements.append(Captured(statement, parameters))

    async def during(self, request: Any) -> list[Captured]:
        self.statements = []
        self.active = True
        try:
            await request()
        finally:
            self.active = False
        return [s for s in self.statements if any(re.search(rf"\b{t}\b", s.statement) for t in LARGE_TABLES)]


# --- query plans --------------------------------------------------------------------------


def _where_columns(statement: str, table: str) -> set[str]:
    """Columns of `table` compared with = or IN in a statement's WHERE clause."""
    where = " ".join(statement.split()).partition(" WHERE ")[2].partition(" ORDER BY ")[0]
    return set(re.findall(rf"\b{table}\.(\w+) (?:=|IN) ", where))


def sqlite_plan(path: Path, captured: Captured) -> dict[str, Any]:
    """`EXPLAIN QUERY PLAN` of a captured statement with its parameters, as an indented tree,
    and the statement's own time run directly (sqlite3, read-only, no app around it)."""
    parameters = tuple(captured.parameters)
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute("EXPLAIN QUERY PLAN " + captured.statement, parameters).fetchall()
        times = []
        for i in range(SQL_RUNS + 5):
            t0 = time.perf_counter()
            conn.execute(captured.statement, parameters).fetchall()
            if i >= 5:
                times.append(time.perf_counter() - t0)
    depth: dict[int, int] = {0: -1}
    lines = []
    for node_id, parent, _, detail in rows:
        depth[node_id] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node_id] + detail)
    indexes, full_scans, sorts, row_filters = [], [], [], []
    for line in lines:
        detail = line.strip()
        if m := re.search(r"USING (?:COVERING )?INDEX (\S+)", detail):
            indexes.append(m.group(1) + (" (covering)" if "COVERING" in detail else ""))
        elif "USING INTEGER PRIMARY KEY" in detail or "USING ROWID" in detail:
            indexes.append(detail.split()[1] + " rowid")
        if re.match(r"SCAN \S+", detail):
            # "SCAN t" reads the whole table; "SCAN t USING INDEX i" the whole index.
            full_scans.append(detail)
        if "TEMP B-TREE" in detail:
            sorts.append(detail)
        # Columns the WHERE clause compares but the index search does not use: SQLite checks
        # them on every row of the index range it walks.
        if (m := re.match(r"(?:SEARCH|SCAN) (\w+)", detail)) and m.group(1) in LARGE_TABLES:
            table = m.group(1)
            used = set(re.findall(r"(\w+)[=<>]", detail.partition("(")[2])) | set(
                re.findall(r"\((\w+),", detail)
            )
            unused = sorted(_where_columns(captured.statement, table) - used)
            if unused:
                row_filters.append(f"{table}: {', '.join(unused)} checked on each row the index search finds")
    return {
        "plan": lines,
        "indexes": indexes,
        "full_scans": full_scans,
        "sorts": sorts,
        "row_filters": row_filters,
        "sql_p50_ms": round(percentile(times, 50) * 1000, 3),
    }


def _pg_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _pg_nodes(child)


async def postgres_plan(url: str, captured: Captured) -> dict[str, Any]:
    """`EXPLAIN (ANALYZE, BUFFERS)` of a captured statement with its parameters (the text for
    people, the JSON form for the summary), and the statement's own time run directly."""
    parsed = make_url(url)
    parameters = tuple(captured.parameters)
    conn = await asyncpg.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, database=parsed.database, ssl=False
    )
    try:
        rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + captured.statement, *parameters)
        raw = await conn.fetchval(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + captured.statement, *parameters
        )
        times = []
        for i in range(SQL_RUNS + 5):
            t0 = time.perf_counter()
            await conn.fetch(captured.statement, *parameters)
            if i >= 5:
                times.append(time.perf_counter() - t0)
    finally:
        await conn.close()
    explained = (json.loads(raw) if isinstance(raw, str) else raw)[0]
    indexes, full_scans, sorts, row_filters = [], [], [], []
    for node in _pg_nodes(explained["Plan"]):
        kind, table = node["Node Type"], node.get("Relation Name", "")
        loops = node.get("Actual Loops", 1)
        removed = int(node.get("Rows Removed by Filter", 0)) * loops
        if kind in ("Index Scan", "Index Only Scan"):
            backward = ", backward" if node.get("Scan Direction") == "Backward" else ""
            indexes.append(f"{node['Index Name']} ({kind.lower()}{backward})")
        elif kind == "Bitmap Index Scan":
            indexes.append(f"{node['Index Name']} (bitmap)")
        elif kind == "Seq Scan":
            read = int(node.get("Actual Rows", 0)) * loops + removed
            full_scans.append(f"Seq Scan on {table} ({read} rows read)")
        if kind in ("Sort", "Incremental Sort"):
            sorts.append(
                f"{kind} by {', '.join(node.get('Sort Key', []))} ({node.get('Sort Method', '?')}, "
                f"{node.get('Actual Rows', '?')} rows, {node.get('Sort Space Used', '?')} kB)"
            )
        if table in LARGE_TABLES and removed:
            row_filters.append(f"{table}: {removed} rows read and dropped by the filter {node.get('Filter')}")
    return {
        "plan": [r[0] for r in rows],
        "indexes": indexes,
        "full_scans": full_scans,
        "sorts": sorts,
        "row_filters": row_filters,
        "execution_ms": explained.get("Execution Time"),
        "planning_ms": explained.get("Planning Time"),
        "sql_p50_ms": round(percentile(times, 50) * 1000, 3),
    }


def plan_verdict(plan: dict[str, Any]) -> str:
    """One line: which index, full scan of a large table or not, sort or not."""
    parts = [f"index: {', '.join(plan['indexes'])}" if plan["indexes"] else "index: NONE"]
    large_scans = [s for s in plan["full_scans"] if any(re.search(rf"\b{t}\b", s) for t in LARGE_TABLES)]
    small_scans = [s for s in plan["full_scans"] if s not in large_scans]
    parts.append("FULL SCAN: " + "; ".join(large_scans) if large_scans else "no full scan of a large table")
    if small_scans:
        parts.append("full scan of a small table: " + "; ".join(small_scans))
    parts.append(
        "SORT: " + "; ".join(dict.fromkeys(plan["sorts"]))
        if plan["sorts"]
        else "no sort (order from the index)"
    )
    parts += plan["row_filters"]
    parts.append(f"SQL alone p50 {plan['sql_p50_ms']:.3f} ms")
    return "; ".join(parts)


def short_params(parameters: Any) -> list[Any]:
    return [p.isoformat() if hasattr(p, "isoformat") else p for p in tuple(parameters)]


# --- one backend --------------------------------------------------------------------------


@dataclass
class Options:
    backends: list[str]
    requests: int
    warmup: int
    deep_pages: int
    output: Path
    keep_db: bool
    pg_shared_buffers: str
    sqlite_analyze: bool


@dataclass
class Case:
    key: str
    label: str
    path: str
    headers: dict[str, str]
    params: dict[str, Any] = field(default_factory=dict)


async def load(url: str) -> dict[str, Any]:
    """Billing's demo data with the large company, in one transaction, as the service seeds it."""
    clock = FrozenClock(NOW)
    parts = build(BillingSettings(database_url=url, seed_demo_data=False), clock=clock)
    db = parts.db
    try:
        started = time.perf_counter()
        async with db.transaction() as session:
            await sync_catalogue(session)
            await parts.demo.seed(session, size="large")
        load_s = time.perf_counter() - started
        async with db.reading() as session:
            tables = [
                row[0]
                for row in await session.execute(
                    text("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
                    if db.engine.dialect.name == "sqlite"
                    else text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                )
            ]
            all_rows = {
                t: int(await session.scalar(text(f'SELECT count(*) FROM "{t}"')) or 0)
                for t in sorted(tables)
                if t != "alembic_version"
            }
            large = {
                "invoice_lines": int(
                    await session.scalar(
                        select(func.count())
                        .select_from(InvoiceLine)
                        .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
                        .where(Invoice.cvr == LARGE_COMPANY_CVR)
                    )
                    or 0
                ),
                "invoices": int(
                    await session.scalar(
                        select(func.count()).select_from(Invoice).where(Invoice.cvr == LARGE_COMPANY_CVR)
                    )
                    or 0
                ),
                "usage_records": int(
                    await session.scalar(
                        select(func.count())
                        .select_from(UsageRecord)
                        .where(UsageRecord.cvr == LARGE_COMPANY_CVR)
                    )
                    or 0
                ),
            }
    finally:
        await db.dispose()
    total = sum(all_rows.values())
    return {
        "load_s": round(load_s, 2),
        "rows_loaded": total,
        "rows_per_s": round(total / load_s),
        "rows_by_table": all_rows,
        "large_company": {"cvr": LARGE_COMPANY_CVR, **large},
        "invoice_lines_over_one_million": large["invoice_lines"] >= 1_000_000,
    }


async def analyze_postgres(url: str) -> float:
    """ANALYZE after the bulk load, as autovacuum would within a minute: plans need statistics,
    and without this the run would depend on whether autovacuum happened to get there first."""
    parsed = make_url(url)
    conn = await asyncpg.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, database=parsed.database, ssl=False
    )
    try:
        started = time.perf_counter()
        await conn.execute("ANALYZE")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def postgres_facts(url: str) -> dict[str, Any]:
    parsed = make_url(url)
    conn = await asyncpg.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, database=parsed.database, ssl=False
    )
    try:
        return {
            "server_version": await conn.fetchval("SHOW server_version"),
            "shared_buffers": await conn.fetchval("SHOW shared_buffers"),
            "database_mb": round(await conn.fetchval("SELECT pg_database_size(current_database())") / 1e6, 1),
        }
    finally:
        await conn.close()


async def session_costs(url: str, n: int) -> dict[str, Any]:
    """What one database session costs the app, with billing's own `Database`: every
    authenticated request opens two (the revocation check's primary-key read of `user_access`,
    then the query); on SQLite each is a new aiosqlite connection (NullPool). A write session
    (`db.transaction()`: BEGIN IMMEDIATE on SQLite) is timed beside it for reference."""
    db = Database(url)

    async def revocation_read() -> None:
        async with db.reading() as session:
            await session.get(UserAccess, "00000000-0000-0000-0000-000000000000")

    async def write_session() -> None:
        async with db.transaction() as session:
            await session.execute(text("SELECT 1"))

    costs: dict[str, Any] = {}
    try:
        for name, unit in (
            ("reading_user_access_get", revocation_read),
            ("transaction_select_1", write_session),
        ):
            for _ in range(10):
                await unit()
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                await unit()
                times.append(time.perf_counter() - t0)
            costs[name] = summary_ms(times)
    finally:
        await db.dispose()
    return costs


async def measure(url: str, backend: str, opts: Options, sqlite_file: Path | None) -> dict[str, Any]:
    clock = FrozenClock(NOW)
    tokens = Tokens(clock)
    company = large_company()
    two_accounts = [company.accounts[0][0], company.accounts[len(company.accounts) // 2][0]]
    whole = tokens.headers([{"cvr": LARGE_COMPANY_CVR, "accounts": "all"}], ["invoices"])
    limited = tokens.headers([{"cvr": LARGE_COMPANY_CVR, "accounts": two_accounts}], ["invoices"])
    settings = BillingSettings(
        database_url=url,
        var_dir=Path(tempfile.gettempdir()),
        identity_jwks_url=JWKS_URL,
        seed_demo_data=False,
    )
    app = create_api(settings, clock=clock, jwks_client=tokens.jwks_client())
    capture = SqlCapture()
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as http,
        ):

            async def get_ok(path: str, headers: dict[str, str], **params: Any) -> dict[str, Any]:
                response = await http.get(path, headers=headers, params=params)
                if response.status_code != 200:
                    raise BenchError(
                        f"GET {path} {params} answered {response.status_code}: {response.text[:300]}"
                    )
                return dict(response.json())

            # Set-up (not timed): the deep page's cursor and an invoice id of the large company.
            first = await get_ok("/v1/invoices", whole)
            cursor = first["next_cursor"]
            for page in range(opts.deep_pages):
                if cursor is None:
                    raise BenchError(f"the large company has only {page + 1} pages; lower --deep-pages")
                cursor = (await get_ok("/v1/invoices", whole, cursor=cursor))["next_cursor"]
            if cursor is None:
                raise BenchError(f"no page after {opts.deep_pages + 1} pages; lower --deep-pages")
            invoice_id = first["items"][0]["id"]

            cases = [
                Case("baseline", "GET /healthz (baseline)", "/healthz", {}),
                Case(
                    "auth_only",
                    "GET /v1/products (token + revocation check, no invoice SQL)",
                    "/v1/products",
                    whole,
                ),
                Case("a_first_page_company", "(a) /v1/invoices page 1, whole company", "/v1/invoices", whole),
                Case(
                    "b_first_page_two_accounts",
                    "(b) /v1/invoices page 1, 2 accounts",
                    "/v1/invoices",
                    limited,
                ),
                Case(
                    "c_deep_page",
                    f"(c) /v1/invoices page {opts.deep_pages + 2}, whole company",
                    "/v1/invoices",
                    whole,
                    {"cursor": cursor},
                ),
                Case(
                    "d_invoice_detail",
                    "(d) /v1/invoices/{id} with lines",
                    f"/v1/invoices/{invoice_id}",
                    whole,
                ),
                Case("e_usage_first_page", "(e) /v1/usage page 1, whole company", "/v1/usage", whole),
            ]

            # What each answers (also a check that it works), and the SQL it sends.
            responses: dict[str, Any] = {}
            statements: dict[str, list[Captured]] = {}
            for case in cases:
                body: dict[str, Any] = {}

                async def once(case: Case = case, body: dict[str, Any] = body) -> None:
                    response = await http.get(case.path, headers=case.headers, params=case.params)
                    if response.status_code != 200:
                        raise BenchError(f"{case.label}: HTTP {response.status_code}: {response.text[:300]}")
                    body["bytes"] = len(response.content)
                    data = response.json()
                    if isinstance(data, dict) and "items" in data:
                        body["items"] = len(data["items"])
                        body["next_cursor"] = data["next_cursor"] is not None
                    if isinstance(data, dict) and "lines" in data:
                        body["lines"] = len(data["lines"])

                statements[case.key] = await capture.during(once)
                responses[case.key] = body

            log(
                f"{backend}: warm-up {opts.warmup} x {len(cases)} cases, then {opts.requests} x {len(cases)} interleaved"
            )
            for _ in range(opts.warmup):
                for case in cases:
                    await http.get(case.path, headers=case.headers, params=case.params)
            timings: dict[str, list[float]] = {case.key: [] for case in cases}
            started = time.perf_counter()
            for _ in range(opts.requests):
                for case in cases:  # interleaved: a noisy neighbour hits every case alike
                    t0 = time.perf_counter()
                    response = await http.get(case.path, headers=case.headers, params=case.params)
                    timings[case.key].append(time.perf_counter() - t0)
                    if response.status_code != 200:
                        raise BenchError(f"{case.label}: HTTP {response.status_code}")
            measured_s = time.perf_counter() - started
    finally:
        capture.close()

    baseline_p50 = percentile(timings["baseline"], 50)
    results_cases: dict[str, Any] = {}
    for case in cases:
        s = summary_ms(timings[case.key])
        results_cases[case.key] = {
            "label": case.label,
            "path": case.path if case.key != "c_deep_page" else f"{case.path}?cursor=…",
            **s,
            "p50_over_baseline_p50": round(percentile(timings[case.key], 50) / baseline_p50, 1),
            "response": responses[case.key],
        }

    plans: dict[str, list[dict[str, Any]]] = {}
    for key, captured in statements.items():
        plans[key] = []
        for c in captured:
            if backend == "sqlite":
                assert sqlite_file is not None
                plan = sqlite_plan(sqlite_file, c)
            else:
                plan = await postgres_plan(url, c)
            plan["verdict"] = plan_verdict(plan)
            plans[key].append(
                {"sql": " ".join(c.statement.split()), "parameters": short_params(c.parameters), **plan}
            )
        results_cases[key]["sql_alone_p50_ms"] = round(sum(p["sql_p50_ms"] for p in plans[key]), 3)

    return {
        "callers": {"whole_company": LARGE_COMPANY_CVR, "two_accounts": two_accounts},
        "deep_page": opts.deep_pages + 2,
        "invoice_id": invoice_id,
        "measured_s": round(measured_s, 1),
        "cases": results_cases,
        "plans": plans,
    }


def run_backend(backend: str, url: str, opts: Options, sqlite_file: Path | None) -> dict[str, Any]:
    log(f"{backend}: migrating")
    started = time.perf_counter()
    migrate(SERVICES["billing"].migrations, url)
    migrate_s = time.perf_counter() - started
    log(f"{backend}: loading the demo data with size=large (one transaction) ...")
    loaded = asyncio.run(load(url))
    lc = loaded["large_company"]
    log(
        f"{backend}: loaded {loaded['rows_loaded']:,} rows in {loaded['load_s']:.1f}s "
        f"({loaded['rows_per_s']:,} rows/s); large company: {lc['invoice_lines']:,} invoice lines, "
        f"{lc['invoices']:,} invoices, {lc['usage_records']:,} usage records"
    )
    facts: dict[str, Any] = {}
    if backend == "postgres":
        loaded["analyze_s"] = round(asyncio.run(analyze_postgres(url)), 2)
        facts = asyncio.run(postgres_facts(url))
    else:
        assert sqlite_file is not None
        if opts.sqlite_analyze:
            started = time.perf_counter()
            with sqlite3.connect(sqlite_file) as conn:
                conn.execute("ANALYZE")
            loaded["analyze_s"] = round(time.perf_counter() - started, 2)
        facts = {
            "sqlite_version": sqlite3.sqlite_version,
            "database_mb": round(
                sum(p.stat().st_size for p in sqlite_file.parent.glob(sqlite_file.name + "*")) / 1e6, 1
            ),
            "analyzed": opts.sqlite_analyze,
            "note": "ANALYZE run after the load (--sqlite-analyze)"
            if opts.sqlite_analyze
            else "no ANALYZE (no sqlite_stat1): billing never runs it, so the plans are SQLite's defaults",
        }
    measured = asyncio.run(measure(url, backend, opts, sqlite_file))
    sessions = asyncio.run(session_costs(url, opts.requests))
    return {
        "backend": backend,
        **facts,
        "migrate_s": round(migrate_s, 2),
        "load": loaded,
        **measured,
        "session_costs": sessions,
    }


# --- output -------------------------------------------------------------------------------


def plans_text(results: dict[str, Any]) -> str:
    out = []
    for backend, r in results["backends"].items():
        if "error" in r:
            continue
        kind = "EXPLAIN QUERY PLAN" if backend == "sqlite" else "EXPLAIN (ANALYZE, BUFFERS)"
        out.append(f"===== {backend}: {kind} =====")
        for key, plans in r["plans"].items():
            for p in plans:
                out += [f"--- {key}: {r['cases'][key]['label']}", p["sql"], f"parameters: {p['parameters']}"]
                out += ["  " + line for line in p["plan"]]
                out += [f"=> {p['verdict']}", ""]
    return "\n".join(out) + "\n"


def print_summary(results: dict[str, Any]) -> None:
    git = results["git"]
    code = git.get("commit", "?")[:10] + (
        " + uncommitted changes" if git.get("uncommitted_in_services_or_shared") else ""
    )
    lines = ["", f"Adgang billing invoice reads  {results['machine']['summary']}  code {code}", "-" * 96]
    for backend, r in results["backends"].items():
        if "error" in r:
            lines += [f"{backend}: FAILED: {r['error']}", ""]
            continue
        load = r["load"]
        lc = load["large_company"]
        extra = f", ANALYZE {load['analyze_s']:.1f}s" if "analyze_s" in load else ", no ANALYZE"
        version = r.get("server_version") or r.get("sqlite_version")
        lines += [
            f"{backend} {version}: migrate {r['migrate_s']:.1f}s, load {load['rows_loaded']:,} rows in "
            f"{load['load_s']:.1f}s = {load['rows_per_s']:,} rows/s{extra}, database {r['database_mb']} MB",
            f"  large company {lc['cvr']}: {lc['invoice_lines']:,} invoice lines"
            f"{'' if load['invoice_lines_over_one_million'] else ' (UNDER 1,000,000)'}, "
            f"{lc['invoices']:,} invoices, {lc['usage_records']:,} usage records",
            f"  {'case (ms, n=' + str(results['options']['requests']) + ')':<62}{'p50':>8}{'p95':>8}{'p99':>8}"
            f"{'x base':>8}{'SQL p50':>9}",
        ]
        for key, c in r["cases"].items():
            flag = "  SLOW" if c["p50_ms"] > SLOW_P50_MS else ""
            lines.append(
                f"  {c['label']:<62}{c['p50_ms']:>8.2f}{c['p95_ms']:>8.2f}{c['p99_ms']:>8.2f}"
                f"{c['p50_over_baseline_p50']:>8.1f}"
                f"{(format(c['sql_alone_p50_ms'], '.3f') if r['plans'].get(key) else '-'):>9}{flag}"
            )
        lines.append("  (x base: p50 / baseline p50 of this run; SQL p50: the API's statements run directly)")
        sc = r["session_costs"]
        lines.append(
            f"  one session of billing's Database (2 per request): reading()+get(UserAccess) p50 "
            f"{sc['reading_user_access_get']['p50_ms']:.2f} ms; a write session, transaction()+SELECT 1, "
            f"p50 {sc['transaction_select_1']['p50_ms']:.2f} ms"
        )
        lines.append("  plans:")
        for key, plans in r["plans"].items():
            for p in plans:
                table = next(
                    (
                        t
                        for t in ("invoice_lines", "invoices", "usage_records")
                        if re.search(rf"FROM {t}\b", p["sql"])
                    ),
                    "?",
                )
                lines.append(f"    {key} [{table}]: {p['verdict']}")
        lines.append("")
    lines.append("-" * 96)
    print("\n".join(lines), flush=True)
    for backend in ("sqlite", "postgres"):
        r = results["backends"].get(backend)
        if r and "plans" in r:
            for key in ("a_first_page_company", "b_first_page_two_accounts"):
                for p in r["plans"].get(key, []):
                    print(f"{backend} {key}:", *("    " + line for line in p["plan"]), sep="\n")
    print(flush=True)


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.invoices", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend", choices=("sqlite", "postgres", "both"), default="both",
        help="database backend(s) to measure (default both; postgres is skipped if its binaries are missing)",
    )  # fmt: skip
    parser.add_argument("--requests", type=int, default=200, help="measured requests per case (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up requests per case (default 20)")
    parser.add_argument(
        "--deep-pages", type=int, default=50, help="cursor pages followed before the deep page (default 50)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS_DIR / "invoices-latest.json",
        help="JSON results (default bench/results/invoices-latest.json); plans go beside it as <stem>-plans.txt",
    )
    parser.add_argument("--keep-db", action="store_true", help="keep the SQLite file's temporary directory")
    parser.add_argument(
        "--pg-shared-buffers",
        default="128MB",
        help="shared_buffers of the throwaway PostgreSQL (default 128MB)",
    )
    parser.add_argument(
        "--sqlite-analyze",
        action="store_true",
        help="run ANALYZE on the SQLite file after the load (billing itself never does; default off)",
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or args.warmup < 0 or args.deep_pages < 0:
        parser.error("--requests must be positive, --warmup and --deep-pages not negative")
    return Options(
        backends=["sqlite", "postgres"] if args.backend == "both" else [args.backend],
        requests=args.requests,
        warmup=args.warmup,
        deep_pages=args.deep_pages,
        output=args.output.resolve(),
        keep_db=args.keep_db,
        pg_shared_buffers=args.pg_shared_buffers,
        sqlite_analyze=args.sqlite_analyze,
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.monotonic()
    results: dict[str, Any] = {
        "benchmark": "adgang billing invoice and usage reads, large demo company",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "git": git_state(),
        "options": {
            "backends": opts.backends,
            "requests": opts.requests,
            "warmup": opts.warmup,
            "deep_pages": opts.deep_pages,
            "pg_shared_buffers": opts.pg_shared_buffers,
            "sqlite_analyze": opts.sqlite_analyze,
        },
        "backends": {},
    }
    results["backends"], failed = over_backends(
        opts.backends,
        lambda backend, url, db_file: run_backend(backend, url, opts, db_file),
        prefix="adgang-bench-invoices-",
        keep_sqlite=opts.keep_db,
        postgres_options={"shared_buffers": opts.pg_shared_buffers},
    )
    results["total_s"] = round(time.monotonic() - started, 1)
    print_summary(results)
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    partial = opts.output.with_name(opts.output.name + ".tmp")
    partial.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n")
    partial.replace(opts.output)
    plans_file = opts.output.with_name(opts.output.stem + "-plans.txt")
    plans_file.write_text(plans_text(results))
    log(f"results written to {opts.output} and {plans_file.name}  (total {results['total_s']}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
