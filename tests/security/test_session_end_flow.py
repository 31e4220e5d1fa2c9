"""S7, S12 end to end: a logout, or a refresh token presented twice, ends the session in billing
too, within moments rather than when the access token expires; the user's other session goes
on. And a logout over a kept-alive connection leaves the connection usable."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from services.billing.demo import generated_companies
from services.suite import Suite
from tests.conftest import start_shared_suite
from tests.e2e.test_administration_flow import bearer, identity, log_in
from tests.e2e.test_billing_flow import billing
from tests.support.flows import activate_letter, apply_once_known, wait_for_letters
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CVR = generated_companies(5)[4].cvr  # a company of its own (EXTRA_CUSTOMERS)
MOBILE = "+4520778899"
ROUNDS = 5


@pytest.fixture(scope="module")
def session_suite(tmp_path_factory: pytest.TempPathFactory, database_factory) -> Iterator[Suite]:
    """A suite for these tests: every round logs in again, and it has no per-client login limit."""
    running = start_shared_suite(tmp_path_factory, database_factory)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def username(session_suite: Suite) -> str:
    """The company's administrator, activated from the letter."""
    assert apply_once_known(session_suite, CVR, mobile=MOBILE).status_code == 202
    [letter] = wait_for_letters(session_suite, CVR)
    assert activate_letter(session_suite, letter, mobile=MOBILE).status_code == 200
    return letter.username


def new_session(suite: Suite, username: str) -> dict:
    return log_in(suite, username, method="sms", recipient=MOBILE)


def reads_invoices(http: httpx.Client, tokens: dict) -> int:
    return http.get("/v1/invoices", params={"limit": 1}, headers=bearer(tokens)).status_code


def wait_for_refusal(http: httpx.Client, tokens: dict, what: str) -> float:
    """Seconds until billing answers 401 for the token, polled every 10 ms."""
    since = time.monotonic()
    wait_until(lambda: reads_invoices(http, tokens) == 401 or None, deadline_s=30, poll_s=0.01, what=what)
    return time.monotonic() - since


def test_billing_refuses_a_logged_out_token_within_moments_and_the_other_session_goes_on(
    session_suite: Suite, username: str
) -> None:
    staying = new_session(session_suite, username)
    latencies = []
    with billing(session_suite) as bill, identity(session_suite) as idp:
        for _ in range(ROUNDS):
            leaving = new_session(session_suite, username)
            assert reads_invoices(bill, leaving) == 200
            assert idp.post("/v1/logout", headers=bearer(leaving)).status_code == 204
            latencies.append(wait_for_refusal(bill, leaving, "billing to refuse the logged-out token"))
            assert reads_invoices(bill, staying) == 200
        assert idp.get("/v1/me", headers=bearer(staying)).status_code == 200
    print("billing refused a logged-out token after (s):", " ".join(f"{t:.3f}" for t in latencies))


def test_billing_refuses_the_tokens_of_a_session_whose_refresh_token_was_reused(
    session_suite: Suite, username: str
) -> None:
    staying = new_session(session_suite, username)
    latencies = []
    with billing(session_suite) as bill, identity(session_suite) as idp:
        for _ in range(ROUNDS):
            first = new_session(session_suite, username)
            rotated = idp.post("/v1/token/refresh", json={"refresh_token": first["refresh_token"]})
            assert rotated.status_code == 200
            newest = rotated.json()
            assert reads_invoices(bill, newest) == 200
            reuse = idp.post("/v1/token/refresh", json={"refresh_token": first["refresh_token"]})
            assert reuse.status_code == 401
            latencies.append(
                wait_for_refusal(bill, newest, "billing to refuse the newest token of the reused session")
            )
            assert reads_invoices(bill, first) == 401
            assert reads_invoices(bill, staying) == 200
    print(
        "billing refused the tokens of a reused refresh token's session after (s):",
        " ".join(f"{t:.3f}" for t in latencies),
    )


def client_address(response: httpx.Response) -> tuple[str, int]:
    address: tuple[str, int] = response.extensions["network_stream"].get_extra_info("client_addr")
    return address


def test_a_logout_sends_no_body_and_the_kept_alive_connection_serves_the_next_request(
    session_suite: Suite, username: str
) -> None:
    tokens = new_session(session_suite, username)
    log = session_suite.log_dir / "identity-api.log"
    with identity(session_suite) as http:
        opened = http.get("/healthz")
        assert opened.status_code == 200
        start = log.stat().st_size
        logout = http.post("/v1/logout", headers=bearer(tokens))
        assert logout.status_code == 204
        assert logout.content == b"" and int(logout.headers.get("content-length", "0")) == 0
        after = http.get("/v1/me", headers=bearer(tokens))
        assert after.status_code == 401
        assert client_address(opened) == client_address(logout) == client_address(after), (
            "the logout's connection was not kept"
        )
    written = [json.loads(line) for line in log.read_bytes()[start:].decode().splitlines() if line.strip()]
    assert any("/v1/logout" in entry["msg"] for entry in written), "identity's access log was not captured"
    errors = [entry for entry in written if entry["level"] in ("error", "critical")]
    assert errors == []
