"""Billing's invoice documents (S8, S10) on the large demo company, in one run per backend.

    python -m bench.documents [--backend sqlite|postgres|both] [--documents 100] [--requests 200]

For each backend (a SQLite file in a temporary directory; PostgreSQL on a throwaway server from
tests/support/postgres.py when its binaries are installed) it:

1. migrates billing's database and loads the demo data with `size=large` (as bench/invoices.py);
2. renders the PDFs of `--documents` invoices of the large company (72 lines each, newest first)
   in process, one after another: documents/s = documents ÷ the time of `render_pdf` alone,
   and per document the time, pages and bytes; then the same invoices' OIOUBL and Peppol XML
   (with a buyer endpoint made up for the run, which `render_ubl` does not check);
3. through the real billing app in process (httpx.ASGITransport, no network), one request at a
   time and the cases interleaved: GET /healthz (the baseline), GET /v1/invoices page 1 for the
   whole large company and for two of its accounts, and GET /v1/invoices/{id}/document?format=pdf;
   p50 and p99 of each are also given as a multiple of the baseline's p50 and p99 of the same
   run (the ratios to compare between runs: the machine is shared and noisy).

Results go to `bench/results/documents-latest.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pypdf import PdfReader
from sqlalchemy import select

from bench.invoices import BASE_URL, JWKS_URL, NOW, Tokens, load
from bench.measuring import BenchError, git_state, log, machine_info, over_backends, percentile, summary_ms
from services.billing.api import create_api
from services.billing.config import BillingSettings
from services.billing.demo import LARGE_COMPANY_CVR, large_company
from services.billing.documents import load_document
from services.billing.invoice_pdf import render_pdf
from services.billing.invoice_ubl import render_ubl
from services.billing.models import Invoice
from services.registry import SERVICES
from shared.clock import FrozenClock
from shared.db import Database, migrate

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Options:
    backends: list[str]
    documents: int
    requests: int
    warmup: int
    output: Path


async def render_documents(url: str, count: int) -> dict[str, Any]:
    """PDF and XML rendering alone (no HTTP), of `count` invoices of the large company."""
    db = Database(url)
    try:
        async with db.reading() as session:
            ids = list(
                await session.scalars(
                    select(Invoice.id)
                    .where(Invoice.cvr == LARGE_COMPANY_CVR)
                    .order_by(Invoice.issued_on.desc(), Invoice.id.desc())
                    .limit(count)
                )
            )
            if len(ids) < count:
                raise BenchError(f"the large company has only {len(ids)} invoices")
            started = time.perf_counter()
            loaded = [await load_document(session, invoice_id) for invoice_id in ids]
            load_s = time.perf_counter() - started
            documents = [document for document in loaded if document is not None]
            if len(documents) != len(loaded):
                raise BenchError("an invoice listed a moment ago could not be loaded")
    finally:
        await db.dispose()
    pdf_times, pages, sizes = [], [], []
    render_pdf(documents[0])  # warm-up: imports, font files into the page cache
    for document in documents:
        started = time.perf_counter()
        content = render_pdf(document)
        pdf_times.append(time.perf_counter() - started)
        sizes.append(len(content))
        pages.append(len(PdfReader(io.BytesIO(content)).pages))
    xml_times: dict[str, list[float]] = {"oioubl": [], "peppol": []}
    for document in documents:
        assert document is not None
        with_endpoint = dataclasses.replace(
            document, delivery_gln="5790000123452", delivery_peppol_scheme="0184", delivery_peppol_id=document.cvr
        )
        for profile, times in xml_times.items():
            started = time.perf_counter()
            render_ubl(with_endpoint, profile)  # type: ignore[arg-type]
            times.append(time.perf_counter() - started)
    lines = [len(d.lines) for d in documents if d is not None]
    return {
        "documents": len(documents),
        "lines_per_document": {"min": min(lines), "max": max(lines)},
        "load_from_database_s": round(load_s, 3),
        "pdf": {
            "documents_per_s": round(len(pdf_times) / sum(pdf_times), 2),
            **summary_ms(pdf_times),
            "pages": {"min": min(pages), "max": max(pages)},
            "bytes": {"min": min(sizes), "max": max(sizes)},
        },
        **{
            profile: {"documents_per_s": round(len(times) / sum(times), 1), **summary_ms(times)}
            for profile, times in xml_times.items()
        },
    }


async def measure_api(url: str, opts: Options) -> dict[str, Any]:
    clock = FrozenClock(NOW)
    tokens = Tokens(clock)
    company = large_company()
    two_accounts = [company.accounts[0][0], company.accounts[len(company.accounts) // 2][0]]
    whole = tokens.headers([{"cvr": LARGE_COMPANY_CVR, "accounts": "all"}], ["invoices"])
    limited = tokens.headers([{"cvr": LARGE_COMPANY_CVR, "accounts": two_accounts}], ["invoices"])
    settings = BillingSettings(
        database_url=url, var_dir=Path(tempfile.gettempdir()), identity_jwks_url=JWKS_URL, seed_demo_data=False
    )
    app = create_api(settings, clock=clock, jwks_client=tokens.jwks_client())
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as http,
    ):
        first = await http.get("/v1/invoices", headers=whole)
        if first.status_code != 200:
            raise BenchError(f"GET /v1/invoices answered {first.status_code}: {first.text[:300]}")
        invoice_id = first.json()["items"][0]["id"]
        cases: dict[str, tuple[str, str, dict[str, str], dict[str, str]]] = {
            "baseline": ("GET /healthz (baseline)", "/healthz", {}, {}),
            "list_company": ("GET /v1/invoices page 1, whole company", "/v1/invoices", whole, {}),
            "list_two_accounts": ("GET /v1/invoices page 1, 2 accounts", "/v1/invoices", limited, {}),
            "document_pdf": (
                "GET /v1/invoices/{id}/document?format=pdf (72 lines)",
                f"/v1/invoices/{invoice_id}/document",
                whole,
                {"format": "pdf"},
            ),
        }
        times: dict[str, list[float]] = {key: [] for key in cases}
        for round_number in range(opts.warmup + opts.requests):
            for key, (_, path, headers, params) in cases.items():  # interleaved: same noise for all
                started = time.perf_counter()
                response = await http.get(path, headers=headers, params=params)
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    raise BenchError(f"{path} answered {response.status_code}: {response.text[:300]}")
                if round_number >= opts.warmup:
                    times[key].append(elapsed)
    base = times["baseline"]
    base_p50, base_p99 = percentile(base, 50), percentile(base, 99)
    out = {}
    for key, (label, *_) in cases.items():
        values = times[key]
        out[key] = {
            "label": label,
            **summary_ms(values),
            "p50_over_baseline_p50": round(percentile(values, 50) / base_p50, 1),
            "p99_over_baseline_p99": round(percentile(values, 99) / base_p99, 1),
        }
    out["document_pdf"]["documents_per_s"] = round(len(times["document_pdf"]) / sum(times["document_pdf"]), 2)
    return out


def run_backend(backend: str, url: str, opts: Options) -> dict[str, Any]:
    started = time.perf_counter()
    migrate(SERVICES["billing"].migrations, url)
    log(f"{backend}: migrated in {time.perf_counter() - started:.1f}s; loading the large demo company")
    loaded = asyncio.run(load(url))
    log(f"{backend}: loaded in {loaded['load_s']:.1f}s; rendering {opts.documents} documents")
    rendering = asyncio.run(render_documents(url, opts.documents))
    log(f"{backend}: {rendering['pdf']['documents_per_s']} PDFs/s; measuring the API")
    return {"load_s": round(loaded["load_s"], 1), "rendering": rendering, "api": asyncio.run(measure_api(url, opts))}


def print_summary(results: dict[str, Any]) -> None:
    git = results["git"]
    code = git.get("commit", "?")[:10] + (" + uncommitted" if git.get("uncommitted_in_services_or_shared") else "")
    lines = ["", f"Adgang billing invoice documents  {results['machine']['summary']}  code {code}", "-" * 96]
    for backend, r in results["backends"].items():
        if "error" in r or "skipped" in r:
            lines += [f"{backend}: {r.get('error') or 'skipped: ' + r['skipped']}", ""]
            continue
        rendering = r["rendering"]
        pdf = rendering["pdf"]
        lines += [
            f"{backend}: {rendering['documents']} invoices of {rendering['lines_per_document']['max']} lines, "
            f"{pdf['pages']['max']} pages, {pdf['bytes']['max'] // 1024} kB",
            f"  PDF   {pdf['documents_per_s']:>8} documents/s  p50 {pdf['p50_ms']} ms  p99 {pdf['p99_ms']} ms",
        ]
        for profile in ("oioubl", "peppol"):
            x = rendering[profile]
            lines.append(
                f"  {profile:<6}{x['documents_per_s']:>8} documents/s  p50 {x['p50_ms']} ms  p99 {x['p99_ms']} ms"
            )
        lines.append(f"  {'API case (ms, n=' + str(results['options']['requests']) + ')':<58}"
                     f"{'p50':>8}{'p99':>8}{'p50 x':>8}{'p99 x':>8}")  # fmt: skip
        for c in r["api"].values():
            lines.append(
                f"  {c['label']:<58}{c['p50_ms']:>8.2f}{c['p99_ms']:>8.2f}"
                f"{c['p50_over_baseline_p50']:>8.1f}{c['p99_over_baseline_p99']:>8.1f}"
            )
        lines.append("")
    print("\n".join(lines), flush=True)


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.documents", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="sqlite",
                        help="database backend(s) (default sqlite)")  # fmt: skip
    parser.add_argument("--documents", type=int, default=100, help="PDFs rendered in process (default 100)")
    parser.add_argument("--requests", type=int, default=200, help="measured requests per API case (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up requests per API case (default 20)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "documents-latest.json")
    args = parser.parse_args(argv)
    if args.documents < 1 or args.requests < 1 or args.warmup < 0:
        parser.error("--documents and --requests must be positive, --warmup not negative")
    return Options(
        backends=["sqlite", "postgres"] if args.backend == "both" else [args.backend],
        documents=args.documents,
        requests=args.requests,
        warmup=args.warmup,
        output=args.output.resolve(),
    )


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.monotonic()
    results: dict[str, Any] = {
        "benchmark": "adgang billing invoice documents, large demo company",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "git": git_state(),
        "options": {k: v for k, v in dataclasses.asdict(opts).items() if k != "output"},
        "backends": {},
    }
    results["backends"], failed = over_backends(
        opts.backends,
        lambda backend, url, _db_file: run_backend(backend, url, opts),
        prefix="adgang-bench-documents-",
    )
    results["total_s"] = round(time.monotonic() - started, 1)
    print_summary(results)
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n")
    log(f"results written to {opts.output}  (total {results['total_s']}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
