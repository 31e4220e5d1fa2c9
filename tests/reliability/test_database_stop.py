"""The PostgreSQL server stopped for 10 s while applications flow (issue 13, outages): every
API answers 503 problem+json with `Retry-After` and its readiness names the database, the
workers wait for it, and once it is back every application ends in exactly one letter, with
nothing dead-lettered and no process gone. PostgreSQL only: SQLite has no server to stop."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from services.billing.demo import generated_companies
from services.registry import SERVICES
from services.suite import Suite
from shared.events import TOPICS
from tests.conftest import BACKEND, start_suite
from tests.support.flows import application_body
from tests.support.kafka import read_all
from tests.support.outage import (
    Submissions,
    all_letters,
    assert_every_application_sent_once,
    wait_for_known_customers,
)
from tests.support.postgres import ThrowawayPostgres
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(BACKEND != "postgres", reason="a PostgreSQL server to stop (ADGANG_TEST_DATABASE=postgres)"),
]
STOP_S = 10.0  # the fault: how long the server is stopped (the number)
BEFORE, DURING, AFTER = 30, 30, 30
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def stopped_suite(tmp_path_factory: pytest.TempPathFactory, database_factory, postgres) -> Iterator[Suite]:
    suite = start_suite(
        tmp_path_factory.mktemp("database-stop"),
        database_factory,
        ADGANG_BILLING_DEMO_EXTRA_CUSTOMERS=str(BEFORE + DURING + AFTER),
    )
    try:
        yield suite
    finally:
        if not postgres.accepts_connections():
            postgres.start_server()  # never leave the session's server stopped
        suite.stop()


def refused_requests(suite: Suite) -> dict[str, httpx.Response]:
    """One request of each API that needs its database, and each API's readiness."""
    token = suite.config.billing_document_token
    answers: dict[str, httpx.Response] = {}
    with httpx.Client(timeout=30) as client:
        answers["onboarding POST /v1/applications"] = client.post(
            f"{suite.url('onboarding')}/v1/applications", json=application_body("22109340")
        )
        answers["identity POST /v1/login/unlock"] = client.post(
            f"{suite.url('identity')}/v1/login/unlock", json={"username": "22109340-abcd"}
        )
        answers["billing GET internal document"] = client.get(
            f"{suite.url('billing')}/internal/v1/invoices/{uuid.uuid4()}/document",
            headers={"Authorization": f"Bearer {token}"},
        )
        for service, parts in SERVICES.items():
            if parts.has_api:
                answers[f"{service} /readyz"] = client.get(f"{suite.url(service)}/readyz")
    return answers


def test_a_stopped_database_answers_503_and_loses_nothing(stopped_suite: Suite, postgres: ThrowawayPostgres) -> None:
    suite = stopped_suite
    cvrs = [c.cvr for c in generated_companies(BEFORE + DURING + AFTER)]
    wait_for_known_customers(suite, cvrs)
    submissions = Submissions(
        suite,
        {"before": cvrs[:BEFORE], "during": cvrs[BEFORE : BEFORE + DURING], "after": cvrs[BEFORE + DURING :]},
        retry_statuses=frozenset({403, 503}),  # a 503 says when to try again, and the client does
    )
    submissions.begin()
    submissions.start("before")
    wait_until(
        lambda: len(all_letters(suite.config.var_dir)) >= 5 and submissions.accepted_in("before") >= 10,
        deadline_s=120,
        what="the first letters",
    )
    postgres.stop_server()
    stopped_at = time.monotonic()
    try:
        submissions.start("during")
        answers = refused_requests(suite)
        time.sleep(max(0.0, STOP_S - (time.monotonic() - stopped_at)))  # the rest of the fault
    finally:
        postgres.start_server()

    for what, answer in answers.items():
        assert answer.status_code == 503, (what, answer.status_code, answer.text)
        if what.endswith("/readyz"):
            assert answer.json()["checks"]["database"].startswith("unreachable"), (what, answer.text)
        else:
            assert answer.headers["content-type"] == PROBLEM, what
            assert int(answer.headers["retry-after"]) > 0, what
            assert answer.json()["type"].endswith("/service-unavailable"), (what, answer.text)
    assert submissions.answers["during"][503] > 0, submissions.answers  # they met the outage

    submissions.start("after")
    submissions.join(timeout=300)
    for phase, statuses in submissions.answers.items():
        assert set(statuses) <= {202, 403, 503}, (phase, statuses)  # never a 500
    assert len(submissions.accepted) == len(cvrs)

    assert_every_application_sent_once(suite, submissions.accepted)
    dead = asyncio.run(read_all(suite.config.bootstrap, [t.dlq for t in TOPICS]))
    assert dead == [], [(r.topic, r.headers.get("dlq_reason")) for r in dead]
    # The workers waited for the database rather than giving up.
    gone = [name for name, child in suite.children.items() if child.process and child.process.poll() is not None]
    assert gone == [], gone
