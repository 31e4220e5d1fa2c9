"""The broker stops answering for 20 s (SIGSTOP) while applications flow (issue 13, outages):
the APIs keep accepting, since no request path talks to the broker (events wait in each
service's outbox); every API's readiness names the broker at once; and when the broker
continues, the backlog drains: every application ends in exactly one letter, and nothing went
to a dead-letter topic."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from services.billing.demo import generated_companies
from services.registry import SERVICES
from services.suite import Suite
from shared.events import TOPICS
from tests.conftest import start_suite
from tests.support.kafka import read_all
from tests.support.outage import (
    Submissions,
    all_letters,
    assert_every_application_sent_once,
    wait_for_known_customers,
)
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PAUSE_S = 20.0  # the fault: how long the broker is stopped (the number)
BEFORE, DURING, AFTER = 30, 60, 30
BROKER_APIS = [name for name, parts in SERVICES.items() if parts.has_api and parts.uses_broker]


@pytest.fixture(scope="module")
def paused_suite(tmp_path_factory: pytest.TempPathFactory, database_factory) -> Iterator[Suite]:
    suite = start_suite(
        tmp_path_factory.mktemp("broker-pause"),
        database_factory,
        ADGANG_BILLING_DEMO_EXTRA_CUSTOMERS=str(BEFORE + DURING + AFTER),
    )
    try:
        yield suite
    finally:
        if suite.broker is not None and suite.broker.process is not None:
            os.kill(suite.broker.process.pid, signal.SIGCONT)  # never leave it stopped
        suite.stop()


def readiness(suite: Suite, service: str) -> tuple[int, dict[str, str]]:
    try:
        response = httpx.get(f"{suite.url(service)}/readyz", timeout=10)
    except httpx.HTTPError as exc:
        return 0, {"error": type(exc).__name__}
    return response.status_code, response.json().get("checks", {})


def test_a_paused_broker_stops_no_request_and_loses_nothing(paused_suite: Suite) -> None:
    suite = paused_suite
    assert suite.broker is not None and suite.broker.process is not None
    cvrs = [c.cvr for c in generated_companies(BEFORE + DURING + AFTER)]
    wait_for_known_customers(suite, cvrs)
    submissions = Submissions(
        suite,
        {"before": cvrs[:BEFORE], "during": cvrs[BEFORE : BEFORE + DURING], "after": cvrs[BEFORE + DURING :]},
    )
    submissions.begin()
    submissions.start("before")
    try:
        # Stopped under load: letters are flowing and applications are still being submitted.
        wait_until(
            lambda: len(all_letters(suite.config.var_dir)) >= 5 and submissions.accepted_in("before") >= 10,
            deadline_s=120,
            what="the first letters",
        )
        os.kill(suite.broker.process.pid, signal.SIGSTOP)
        paused_at = time.monotonic()
        submissions.start("during")

        # Every API that uses the broker says so, while it still answers requests.
        def all_report_the_broker() -> dict[str, tuple[int, dict[str, str]]] | None:
            found = {service: readiness(suite, service) for service in BROKER_APIS}
            reporting = all(status == 503 and c.get("broker") == "unreachable" for status, c in found.values())
            return found if reporting else None

        not_ready = wait_until(
            all_report_the_broker,
            deadline_s=PAUSE_S / 2,
            what="every API's readiness to report the broker unreachable",
        )
        assert all(checks["database"] == "ok" for _, checks in not_ready.values()), not_ready

        # The rest of the pause is the fault itself.
        time.sleep(max(0.0, PAUSE_S - (time.monotonic() - paused_at)))
        # Every application of the pause was accepted while the broker was stopped.
        during_done = submissions.done("during")
        accepted_during = submissions.accepted_in("during")
    finally:
        os.kill(suite.broker.process.pid, signal.SIGCONT)
    assert during_done and accepted_during == DURING, submissions.answers

    submissions.start("after")
    submissions.join(timeout=300)
    assert set(submissions.answers["during"]) == {202}, submissions.answers
    assert len(submissions.accepted) == len(cvrs)

    wait_until(
        lambda: all(readiness(suite, s)[0] == 200 for s in BROKER_APIS),
        deadline_s=60,
        what="every API ready again",
    )
    assert_every_application_sent_once(suite, submissions.accepted)
    dead = asyncio.run(read_all(suite.config.bootstrap, [t.dlq for t in TOPICS]))
    assert dead == [], [(r.topic, r.headers.get("dlq_reason")) for r in dead]
