"""S8–S11 and S14 end to end, as people drive them: the group administrator and a colleague
limited to two accounts use billing with the tokens identity gave them; orders and invoices
reach them by email; a disabled colleague's still-valid token is refused at once."""

from __future__ import annotations

import csv
import io
import math
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator

import httpx
import pytest

from services.notifier.sinks import read_mail
from services.suite import Suite
from tests.conftest import start_suite
from tests.e2e.test_administration_flow import bearer, identity, log_in
from tests.support.flows import (
    CODE,
    USERNAME,
    activate,
    activate_letter,
    apply,
    sinks_dir,
    wait_for_letters,
    wait_for_mail,
)
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PARENT = "35657193"
GROUP = {"35657193", "37826111", "41204559", "33112874"}
ADMIN_EMAIL = "mette@example.dk"
ADMIN_MOBILE = "+4520123456"
COLLEAGUE_EMAIL = "jonas@nordlys.example"
COLLEAGUE_ACCOUNTS = {"10000021", "10000022"}


@pytest.fixture(scope="module")
def billing_suite(tmp_path_factory: pytest.TempPathFactory, database_factory) -> Iterator[Suite]:
    suite = start_suite(
        tmp_path_factory.mktemp("billing"),
        database_factory,
        ADGANG_BILLING_ORDER_FULFILMENT_INTERVAL_S="0.5",
    )
    yield suite
    suite.stop()


def billing(suite: Suite) -> httpx.Client:
    return httpx.Client(base_url=suite.url("billing"), timeout=15)


def pages(http: httpx.Client, path: str, headers: dict, **params: object) -> list[dict]:
    items: list[dict] = []
    cursor = None
    while True:
        response = http.get(
            path, params={**params, **({"cursor": cursor} if cursor else {})}, headers=headers
        )
        assert response.status_code == 200, response.text
        items += response.json()["items"]
        if (cursor := response.json()["next_cursor"]) is None:
            return items


def mails_containing(suite: Suite, address: str, text: str) -> list[str]:
    return [m.text for m in read_mail(sinks_dir(suite), address) if text in m.text]


def problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict = response.json()
    return body


def test_billing_as_the_group_administrator_and_a_limited_colleague_use_it(billing_suite: Suite) -> None:
    suite = billing_suite
    assert apply(suite, PARENT, mobile=ADMIN_MOBILE).status_code == 202
    [letter] = wait_for_letters(suite, PARENT)
    assert activate_letter(suite, letter, mobile=ADMIN_MOBILE, email=ADMIN_EMAIL).status_code == 200
    admin = log_in(suite, letter.username, method="sms", recipient=ADMIN_MOBILE)

    with identity(suite) as http:
        created = http.post(
            "/v1/users",
            headers=bearer(admin),
            json={
                "name": "Jonas Berg",
                "email": COLLEAGUE_EMAIL,
                "mobile": "+4520304050",
                "grants": [{"cvr": "37826111", "accounts": sorted(COLLEAGUE_ACCOUNTS)}],
                "functions": ["invoices", "orders", "telephony"],
            },
        )
        assert created.status_code == 201, created.text
    [mail] = wait_for_mail(suite, COLLEAGUE_EMAIL)
    username, code = USERNAME.search(mail.text), CODE.search(mail.text)
    assert username and code
    assert activate(suite, username.group(), code.group()).status_code == 200
    colleague = log_in(suite, username.group(), method="email", recipient=COLLEAGUE_EMAIL)

    with billing(suite) as http:
        # S8, S14: the group administrator sees the parent and every subsidiary.
        everything = pages(http, "/v1/invoices", bearer(admin), limit=20)
        assert {i["cvr"] for i in everything} == GROUP

        # The colleague sees only two accounts; every other invoice id is 404.
        mine = pages(http, "/v1/invoices", bearer(colleague))
        assert mine and {i["account_number"] for i in mine} == COLLEAGUE_ACCOUNTS
        for other in (i for i in everything if i["account_number"] not in COLLEAGUE_ACCOUNTS):
            problem(http.get(f"/v1/invoices/{other['id']}", headers=bearer(colleague)), 404)

        # Usage and its CSV export agree with the invoice lines of the same period.
        period = mine[0]["period_start"]
        invoiced: dict[tuple[str, str], int] = defaultdict(int)
        for invoice in (i for i in mine if i["period_start"] == period):
            for line in http.get(f"/v1/invoices/{invoice['id']}", headers=bearer(colleague)).json()["lines"]:
                if line["category"] != "subscription":
                    invoiced[(line["subscription_id"], line["category"])] += line["amount_ore"]
        export = http.get(
            "/v1/usage", params={"from": period, "to": period, "format": "csv"}, headers=bearer(colleague)
        )
        assert export.status_code == 200
        exported = {
            (r["subscription_id"], r["category"]): int(r["amount_ore"])
            for r in csv.DictReader(io.StringIO(export.text))
        }
        assert exported == dict(invoiced)
        listed = pages(http, "/v1/usage", bearer(colleague), **{"from": period, "to": period})
        assert {(r["subscription_id"], r["category"]): r["amount_ore"] for r in listed} == exported

        # S9: an order, retried with the same key, is one order; it completes; the orderer is emailed.
        key = {"Idempotency-Key": str(uuid.uuid4())}
        body = {"account_number": "10000021", "product_code": "MOBIL-50", "options": {"sim": "esim"}}
        first = http.post("/v1/orders", json=body, headers={**bearer(colleague), **key})
        retry = http.post("/v1/orders", json=body, headers={**bearer(colleague), **key})
        assert (
            first.status_code == 201 and retry.status_code == 200 and retry.json()["id"] == first.json()["id"]
        )
        order_id = first.json()["id"]
        wait_until(
            lambda: (
                http.get(f"/v1/orders/{order_id}", headers=bearer(colleague)).json()["status"] == "completed"
            ),
            deadline_s=30,
            what="the order to be provisioned",
        )
        wait_until(
            lambda: len(mails_containing(suite, COLLEAGUE_EMAIL, order_id)) == 1 or None,
            deadline_s=60,
            what="one order confirmation email to the colleague",
        )

        # An upgrade along an allowed path; one outside them, an account outside the grants and a
        # missing function are refused with a clear problem.
        subscriptions = pages(http, "/v1/subscriptions", bearer(colleague), account="10000021")
        basic = next(
            s for s in subscriptions if s["product"]["code"] == "MOBIL-10" and s["status"] == "active"
        )
        refused = problem(
            http.post(
                f"/v1/subscriptions/{basic['id']}/upgrade",
                json={"product_code": "BB-1000"},
                headers={**bearer(colleague), "Idempotency-Key": str(uuid.uuid4())},
            ),
            422,
        )
        assert refused["type"].endswith("/upgrade-not-allowed")
        upgraded = http.post(
            f"/v1/subscriptions/{basic['id']}/upgrade",
            json={"product_code": "MOBIL-50"},
            headers={**bearer(colleague), "Idempotency-Key": str(uuid.uuid4())},
        )
        assert upgraded.status_code == 201 and upgraded.json()["status"] == "completed"
        wait_until(
            lambda: len(mails_containing(suite, COLLEAGUE_EMAIL, upgraded.json()["id"])) == 1 or None,
            deadline_s=60,
            what="an upgrade confirmation email",
        )
        outside = problem(
            http.post(
                "/v1/orders",
                json={"account_number": "10000023", "product_code": "MOBIL-10"},
                headers={**bearer(colleague), "Idempotency-Key": str(uuid.uuid4())},
            ),
            422,
        )
        assert outside["errors"][0]["field"] == "account_number"
        missing = problem(http.get("/v1/companies/37826111/master-data", headers=bearer(colleague)), 403)
        assert "master_data" in missing["detail"]

        # S10: master data with ETag / If-Match; a stale ETag is 412; an invalid GLN names the field.
        read = http.get(f"/v1/companies/{PARENT}/master-data", headers=bearer(admin))
        changed = http.patch(
            f"/v1/companies/{PARENT}/master-data",
            json={"contact_phone": "+4533998877"},
            headers={**bearer(admin), "If-Match": read.headers["etag"]},
        )
        assert changed.status_code == 200
        problem(
            http.patch(
                f"/v1/companies/{PARENT}/master-data",
                json={"city": "København V"},
                headers={**bearer(admin), "If-Match": read.headers["etag"]},
            ),
            412,
        )
        bad_gln = problem(
            http.put(
                "/v1/accounts/10000011/invoice-format",
                json={"format": "oioubl", "gln": "5790000435967"},
                headers={**bearer(admin), "If-Match": "*"},
            ),
            422,
        )
        assert bad_gln["errors"][0]["field"].endswith("gln")

        # S13: billing's changes reach identity's audit trail over billing.audit, where the group
        # administrator reads them with the logins; the colleague (no user administration) cannot.
        with identity(suite) as idp:
            wanted = {"order.placed", "subscription.upgraded", "master_data.changed", "login.succeeded"}

            def trail() -> list[dict] | None:
                entries = idp.get("/v1/audit", params={"limit": 200}, headers=bearer(admin)).json()
                return entries if wanted <= {e["action"] for e in entries} else None

            entries = wait_until(trail, deadline_s=60, what="billing's changes in identity's audit trail")
            order = next(e for e in entries if e["action"] == "order.placed" and e["target"] == order_id)
            assert (order["source"], order["account_number"], order["tenant_cvr"]) == ("billing", "10000021", "37826111")
            assert idp.get("/v1/audit", headers=bearer(colleague)).status_code == 403

        # S8: the month's invoices are issued; users with the invoices function for an account
        # are told, and nobody else.
        issued = subprocess.run(
            [sys.executable, "-m", "services.cli", "billing", "issue-invoices"],
            env=suite.service_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert issued.returncode == 0, issued.stderr
        wait_until(
            lambda: len(mails_containing(suite, ADMIN_EMAIL, "Fakturanummer")) == 9 or None,
            deadline_s=60,
            what="nine invoice emails to the group administrator (every account of the group)",
        )
        colleague_notices = wait_until(
            lambda: m if len(m := mails_containing(suite, COLLEAGUE_EMAIL, "Fakturanummer")) == 2 else None,
            deadline_s=60,
            what="two invoice emails to the colleague (their two accounts)",
        )
        assert all(any(a in text for a in COLLEAGUE_ACCOUNTS) for text in colleague_notices)

        # S12: the administrator disables the colleague; billing refuses the still-valid token
        # at once. Five rounds (enabled and logged in again between them) give the latency.
        latencies = []
        for _ in range(5):
            # After an enable, billing accepts new tokens once it has read `UserEnabled`.
            wait_until(
                lambda headers=bearer(colleague): (
                    http.get("/v1/invoices", headers=headers).status_code == 200 or None
                ),
                deadline_s=30,
                what="billing to accept the colleague's new token",
            )
            with identity(suite) as idp:
                disable = idp.post(f"/v1/users/{created.json()['id']}/disable", headers=bearer(admin))
                assert disable.status_code == 200
                disabled_at, disabled_wall = time.monotonic(), time.time()
                still_valid = bearer(colleague)
                wait_until(
                    lambda headers=still_valid: (
                        http.get("/v1/invoices", headers=headers).status_code == 401 or None
                    ),
                    deadline_s=30,
                    poll_s=0.01,
                    what="billing to refuse the disabled colleague's token",
                )
                latencies.append(time.monotonic() - disabled_at)
                assert (
                    idp.post(f"/v1/users/{created.json()['id']}/enable", headers=bearer(admin)).status_code
                    == 200
                )
            # A token of the disable's own second stays refused (iat has whole seconds).
            wait_until(
                lambda wall=disabled_wall: time.time() >= math.floor(wall) + 1 or None,
                deadline_s=5,
                poll_s=0.05,
                what="the second of the disable to pass",
            )
            colleague = log_in(suite, username.group(), method="email", recipient=COLLEAGUE_EMAIL)
        print("billing refused a disabled user's token after (s):", " ".join(f"{t:.3f}" for t in latencies))
