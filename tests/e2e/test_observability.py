"""Observability of the running suite (issue 13, item 6; docs/operations.md).

- Every metric the alert rules and the dashboard under deploy/ use is exposed by the suite's
  running APIs and workers, and the dashboard shows every domain metric.
- One application, submitted with a known X-Correlation-ID, can be followed through onboarding,
  identity and the notifier: on every event it caused and in each service's log lines.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from services.billing.demo import generated_companies
from services.registry import SERVICES
from services.suite import Suite
from shared import metrics
from tests.conftest import EXTRA_CUSTOMERS, worker_metrics_url
from tests.support.flows import application_body, wait_for_status
from tests.support.kafka import read_all
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "adgang.json"
OWN_COMPANY = generated_companies(EXTRA_CUSTOMERS)[4].cvr  # see EXTRA_CUSTOMERS in conftest

# Series Prometheus makes itself for every scrape, not exposed by any process.
MADE_BY_PROMETHEUS = {"up"}
_IDENTIFIER = re.compile(r"(?<![\w.:])[a-zA-Z_:][a-zA-Z0-9_:]*")
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not a function or an
    aggregation (followed by `(`), a keyword, a label (inside `{}` or a `by (...)` list), a
    duration or a string."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in _IDENTIFIER.finditer(expr):
        if expr[match.end() :].lstrip().startswith("(") or match[0] in _PROMQL_WORDS:
            continue
        names.add(match[0])
    return names


def test_metric_names_are_found_in_promql() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (channel, le) (rate(adgang_delivery_latency_seconds_bucket'
        '{channel=~"sms|email"}[10m]))) > 60 and on (x) up{job="a"} == 0 unless 1e3 * process_open_fds'
    )
    assert metric_names(expr) == {"adgang_delivery_latency_seconds_bucket", "up", "process_open_fds"}


def alert_expressions() -> dict[str, str]:
    rules = yaml.safe_load(ALERTS.read_text())
    found = {}
    for group in rules["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]
            assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), rule["alert"]
            found[rule["alert"]] = rule["expr"]
    return found


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(p["targets"] for p in panels)
    return [target["expr"] for panel in panels for target in panel["targets"]]


def exposed_names(text: str) -> set[str]:
    """Every series name a /metrics text makes available, by the exposition format's suffix
    rules: a counter `x` is `x_total` (and `x_created`), a histogram `x_bucket`, `x_count` and
    `x_sum`, a summary `x`, `x_count` and `x_sum`. A metric declared without a sample yet (a
    counter nothing has counted) counts: its family is in the text."""
    names: set[str] = set()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "info": ("_info",),
    }
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


def scrape(url: str) -> str:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def test_every_metric_the_alerts_and_the_dashboard_use_is_exposed_by_the_running_processes(
    suite: Suite,
) -> None:
    api_names: dict[str, set[str]] = {}
    api_texts: dict[str, str] = {}
    for name, parts in SERVICES.items():
        if parts.has_api:
            api_texts[name] = scrape(f"{suite.url(name)}/metrics")
            api_names[name] = exposed_names(api_texts[name])
    worker_texts: dict[str, str] = {}

    def every_worker_reports_its_lag() -> bool:
        for name, parts in SERVICES.items():
            if parts.has_worker:
                worker_texts[name] = scrape(worker_metrics_url(suite, name))
        return all(
            f'adgang_consumer_lag_messages{{consumer="{name}:' in text for name, text in worker_texts.items()
        )

    wait_until(every_worker_reports_its_lag, deadline_s=60, what="every worker's consumer lag", poll_s=1)
    worker_names = {name: exposed_names(text) for name, text in worker_texts.items()}

    for name, names in api_names.items():
        assert {"http_requests_total", "http_request_seconds_bucket", "process_open_fds"} <= names, name
        assert "adgang_logins_total" in names, name
        # The outbox is measured by the service's worker, which relays it, not by its API.
        assert "adgang_outbox_backlog_events{" not in api_texts[name], name
        assert "adgang_outbox_oldest_age_seconds{" not in api_texts[name], name
    for name, names in worker_names.items():
        assert {"adgang_consumed_messages_total", "adgang_delivery_latency_seconds_bucket"} <= names, name
        for gauge in ("adgang_outbox_backlog_events", "adgang_outbox_oldest_age_seconds"):
            assert f'{gauge}{{service="{name}"}}' in worker_texts[name], (name, gauge)

    exposed = set().union(*api_names.values(), *worker_names.values()) | MADE_BY_PROMETHEUS
    alerts = alert_expressions()
    for alert, expr in alerts.items():
        assert metric_names(expr), alert
        assert metric_names(expr) <= exposed, f"{alert} uses {metric_names(expr) - exposed}"
    dashboard = dashboard_expressions()
    for expr in dashboard:
        assert metric_names(expr) <= exposed, f"the dashboard's {expr!r} uses {metric_names(expr) - exposed}"

    # The alerts the issue asks for, and a dashboard that shows every domain metric and HTTP.
    alerted = set().union(*(metric_names(expr) for expr in alerts.values()))
    assert {
        "adgang_outbox_oldest_age_seconds",
        "adgang_consumer_lag_messages",
        "adgang_sla_breaches_total",
        "adgang_dead_letters_total",
    } <= alerted
    shown = set().union(*(metric_names(expr) for expr in dashboard))
    for family in metrics.REGISTRY.collect():
        if family.name.startswith("adgang_"):
            assert exposed_names_of(family.type, family.name) & shown, f"the dashboard lacks {family.name}"
    assert {"http_requests_total", "http_request_seconds_bucket"} <= shown


def exposed_names_of(kind: str, name: str) -> set[str]:
    return {"counter": {f"{name}_total"}, "histogram": {f"{name}_bucket", f"{name}_sum", f"{name}_count"}}.get(
        kind, {name}
    )


def log_lines(suite: Suite, child: str) -> list[dict[str, Any]]:
    lines = []
    for line in (suite.log_dir / f"{child}.log").read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return lines


def test_one_application_is_followed_by_its_correlation_id_through_every_service(suite: Suite) -> None:
    correlation_id = f"e2e-{uuid.uuid4()}"

    def accepted() -> httpx.Response | None:
        response = httpx.post(
            f"{suite.url('onboarding')}/v1/applications",
            json=application_body(OWN_COMPANY),
            headers={"X-Correlation-ID": correlation_id},
            timeout=10,
        )
        assert response.headers["X-Correlation-ID"] == correlation_id
        return response if response.status_code == 202 else None  # 403 until the customer is known

    application = wait_until(accepted, deadline_s=30, what=f"onboarding to accept {OWN_COMPANY}").json()
    wait_for_status(suite, application["id"], "credentials_sent")

    # Every event of the chain carries the id; each names the event whose handler added it.
    topics = ["onboarding.applications", "identity.users", "identity.credentials", "notifier.deliveries"]
    records = asyncio.run(read_all(suite.config.bootstrap, topics))
    chain = {
        record.headers["ce_type"].decode().split(".")[-2]: record.headers
        for record in records
        if record.headers.get("ce_correlationid") == correlation_id.encode()
    }
    assert {"ApplicationSubmitted", "UserCreated", "CredentialsIssued", "DeliverySucceeded"} <= set(chain)
    submitted = chain["ApplicationSubmitted"]
    assert "ce_causationid" not in submitted  # the request caused it
    for caused in ("UserCreated", "CredentialsIssued"):
        assert chain[caused]["ce_causationid"] == submitted["ce_id"]

    # Each service's log lines of the story carry it: onboarding's API that took the request,
    # identity's worker that provisioned the login, the notifier's worker that delivered the letter.
    children = ("onboarding-api", "identity-worker", "notifier-worker")
    carrying: set[str] = set()

    def logged_by_every_service() -> bool:
        carrying.update(
            child
            for child in children
            if any(line.get("correlation_id") == correlation_id for line in log_lines(suite, child))
        )
        return len(carrying) == len(children)

    wait_until(
        logged_by_every_service, deadline_s=30, what=f"the correlation id in the logs of {children}"
    )
    delivered = [
        line
        for line in log_lines(suite, "notifier-worker")
        if line.get("correlation_id") == correlation_id and line["msg"].startswith("delivered credentials_letter")
    ]
    assert delivered, "the notifier's delivery line carries the application's correlation id"
    assert all("correlation_id" in line for line in log_lines(suite, "identity-worker"))


def test_a_request_without_a_usable_correlation_id_gets_a_new_one(suite: Suite) -> None:
    url = f"{suite.url('identity')}/healthz"
    fresh = httpx.get(url, timeout=10).headers["X-Correlation-ID"]
    assert uuid.UUID(fresh)
    for unusable in ("two words", "x" * 65, "semi;colon", "<script>"):
        answered = httpx.get(url, headers={"X-Correlation-ID": unusable}, timeout=10).headers["X-Correlation-ID"]
        assert answered != unusable and uuid.UUID(answered)
    assert httpx.get(url, timeout=10).headers["X-Correlation-ID"] != fresh
