"""The portal's Fakturaer and Forbrug pages (S8) over the large demo company.

Starts the whole suite (`services/suite.py`) on free ports in a temporary var dir with billing's
large demo data (`ADGANG_BILLING_DEMO_SIZE=large`: 1,300 accounts of 20 subscriptions, over a
million invoice lines): the large company applies, its administrator activates from the letter
and logs in through the portal. Then the administrator's browser session asks, one request at a
time, for the invoice list (the whole company, and one account), one invoice with its lines,
the usage page, and the portal's `/healthz`; the portal's own `Server-Timing` gives the server
time of each. What we keep is each page's ratio to `/healthz` within one run (the machine is
shared and noisy): `bench/README.md`.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.measuring import machine_info, p50_p99, running_suite
from bench.portal_users import ADMIN_EMAIL, ADMIN_MOBILE, log_in_through_portal, server_ms
from services.billing.demo import LARGE_COMPANY_CVR
from tests.support.flows import activate_letter, apply, wait_for_letters
from tests.support.waiting import wait_until

INVOICE_LINK = re.compile(r'<a href="/fakturaer/([0-9a-f-]{36})">')
ONE_ACCOUNT = "30000651"  # the middle account of the large company


def measure(http: httpx.Client, pages: dict[str, str], rounds: dict[str, int], warmup: int) -> dict[str, Any]:
    """Each round asks every page still to be measured, then `/healthz`."""
    times: dict[str, list[float]] = {name: [] for name in [*pages, "healthz"]}
    for n in range(warmup + max(rounds.values())):
        for name, path in pages.items():
            if n < warmup + rounds[name]:
                answer = http.get(path)
                if n >= warmup:
                    times[name].append(server_ms(answer))
        alive = http.get("/healthz")
        if n >= warmup:
            times["healthz"].append(server_ms(alive))

    result: dict[str, Any] = {name: p50_p99(values) for name, values in times.items()}
    health = result["healthz"]
    for name in pages:
        result[name]["ratio_p50"] = round(result[name]["p50_ms"] / health["p50_ms"], 1)
        result[name]["ratio_p99"] = round(result[name]["p99_ms"] / health["p99_ms"], 1)
    return result


def run(opts: argparse.Namespace) -> dict[str, Any]:
    extra_env = {
        "ADGANG_IDENTITY_LOGIN_RATE_LIMIT_PER_MINUTE": "0",
        "ADGANG_BILLING_INVOICE_RUN_ENABLED": "false",
        "ADGANG_BILLING_DEMO_SIZE": "large",
    }
    with running_suite("adgang-bench-portal-invoices-", extra_env, keep_var=opts.keep_var) as suite:
        # Billing's worker is ready, and announces the large company, once its demo data is
        # loaded (a minute or more).
        suite.start(deadline_s=opts.load_deadline)
        application = wait_until(
            lambda: (
                a
                if (a := apply(suite, LARGE_COMPANY_CVR, email=ADMIN_EMAIL, mobile=ADMIN_MOBILE)).status_code
                != 403
                else None
            ),
            deadline_s=opts.load_deadline,
            what=f"onboarding to learn the large company {LARGE_COMPANY_CVR}",
        )
        if application.status_code != 202:
            raise RuntimeError(f"application refused: {application.text}")
        letter = wait_for_letters(suite, LARGE_COMPANY_CVR)[0]
        activated = activate_letter(suite, letter, mobile=ADMIN_MOBILE, email=ADMIN_EMAIL)
        if activated.status_code != 200:
            raise RuntimeError(f"activation refused: {activated.text}")
        with httpx.Client(base_url=suite.url("portal"), timeout=120) as http:
            log_in_through_portal(suite, http, letter.username)
            first = http.get("/fakturaer")
            found = INVOICE_LINK.search(first.text)
            if first.status_code != 200 or not found:
                raise RuntimeError(f"/fakturaer: {first.status_code}, no invoice listed")
            pages = {
                "invoices_company": "/fakturaer",
                "invoices_one_account": f"/fakturaer?account={ONE_ACCOUNT}",
                "invoice": f"/fakturaer/{found.group(1)}",
                "usage_company": "/forbrug",
            }
            rounds = {name: opts.requests for name in pages}
            rounds["usage_company"] = opts.usage_requests
            result = measure(http, pages, rounds, opts.warmup)
        result.update(
            machine=machine_info(),
            at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="measured requests of each invoice page")
    parser.add_argument(
        "--usage-requests",
        type=int,
        default=10,
        help="measured requests of /forbrug (one call to billing's usage summary each)",
    )
    parser.add_argument("--warmup", type=int, default=3, help="requests of each page before measuring")
    parser.add_argument(
        "--load-deadline", type=float, default=600, help="seconds for billing to load the demo data"
    )
    parser.add_argument("--output", type=Path, default=Path("bench/results/portal-invoices-latest.json"))
    parser.add_argument("--keep-var", action="store_true")
    opts = parser.parse_args(argv)
    result = run(opts)
    opts.output.parent.mkdir(parents=True, exist_ok=True)
    opts.output.write_text(json.dumps(result, indent=2) + "\n")
    for name in ("invoices_company", "invoices_one_account", "invoice", "usage_company"):
        shown = result[name]
        print(
            f"{name}: p50 {shown['p50_ms']} ms, p99 {shown['p99_ms']} ms "
            f"(ratio to /healthz p50 {shown['ratio_p50']}x, p99 {shown['ratio_p99']}x)"
        )
    print(
        f"/healthz p50 {result['healthz']['p50_ms']} ms, p99 {result['healthz']['p99_ms']} ms; {result['machine']['summary']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
