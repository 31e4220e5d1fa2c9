"""S10 end to end: the group administrator chooses how each account receives its invoices in
billing's API; the month's invoices are issued; the notifier delivers each document as chosen
at issue — the PDF attached to an email in the mail sink, OIOUBL and Peppol in the e-invoice
spool, paper in the print spool — with documents read from the real billing, and each exactly
once although the notifier's worker was down while they were issued, the formats changed
meanwhile, and the worker was killed and started again after delivering them."""

from __future__ import annotations

import io
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pypdf import PdfReader

from services.billing.invoicing import last_closed_period
from services.notifier.sinks import read_mail
from services.suite import Suite
from shared.clock import SystemClock
from tests.conftest import start_suite
from tests.e2e.test_administration_flow import bearer, log_in
from tests.support.flows import activate_letter, apply, sinks_dir, wait_for_letters
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
PARENT = "35657193"
ADMIN_EMAIL = "mette@example.dk"
ADMIN_MOBILE = "+4520123456"
BOOKKEEPING = "bogholderi@nordlys.example"
GLN = "5790000435951"

# Account → the format chosen before the invoices are issued, and the one it is changed to
# after they are issued and before the notifier delivers them (which must not matter).
CHOSEN: dict[str, tuple[dict, dict | None]] = {
    "10000011": ({"format": "pdf_email", "email": BOOKKEEPING}, {"format": "paper"}),
    "10000012": ({"format": "oioubl", "gln": GLN}, {"format": "pdf_email", "email": BOOKKEEPING}),
    "10000021": ({"format": "peppol", "scheme": "0184", "endpoint_id": "DK37826111"}, None),
    "10000022": ({"format": "paper"}, {"format": "oioubl", "gln": GLN}),
}


@pytest.fixture(scope="module")
def delivery_suite(tmp_path_factory: pytest.TempPathFactory, database_factory) -> Iterator[Suite]:
    suite = start_suite(tmp_path_factory.mktemp("invoice-delivery"), database_factory)
    yield suite
    suite.stop()


def set_format(http: httpx.Client, admin: dict, account: str, body: dict) -> None:
    answer = http.put(
        f"/v1/accounts/{account}/invoice-format", json=body, headers={**bearer(admin), "If-Match": "*"}
    )
    assert answer.status_code == 200, answer.text


def issued_invoice(http: httpx.Client, admin: dict, account: str) -> dict:
    period = last_closed_period(SystemClock()).isoformat()
    answer = http.get("/v1/invoices", params={"account": account, "from": period, "to": period}, headers=bearer(admin))
    assert answer.status_code == 200, answer.text
    [invoice] = answer.json()["items"]
    return dict(invoice)


def spooled(suite: Suite) -> dict[Path, tuple[int, int]]:
    """Every spooled e-invoice and print file, with its inode and modification time."""
    var = suite.config.var_dir
    files = [*(var / "einvoice").rglob("*.xml"), *(var / "print").glob("*.pdf")]
    return {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in files}


def invoice_mails(suite: Suite) -> list:
    return [m for m in read_mail(sinks_dir(suite), BOOKKEEPING) if m.attachments]


def pdf_text(content: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)


def test_each_invoice_is_delivered_as_chosen_at_issue_once_across_notifier_restarts(
    delivery_suite: Suite,
) -> None:
    suite = delivery_suite
    var = suite.config.var_dir
    assert apply(suite, PARENT, mobile=ADMIN_MOBILE).status_code == 202
    [letter] = wait_for_letters(suite, PARENT)
    assert activate_letter(suite, letter, mobile=ADMIN_MOBILE, email=ADMIN_EMAIL).status_code == 200
    admin = log_in(suite, letter.username, method="sms", recipient=ADMIN_MOBILE)

    with httpx.Client(base_url=suite.url("billing"), timeout=30) as http:
        for account, (before, _) in CHOSEN.items():
            set_format(http, admin, account, before)

        # The notifier's worker is down while the invoices are issued and the formats change.
        suite.kill("notifier-worker")
        issued = subprocess.run(
            [sys.executable, "-m", "services.cli", "billing", "issue-invoices"],
            env=suite.service_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert issued.returncode == 0, issued.stderr
        for account, (_, after) in CHOSEN.items():
            if after is not None:
                set_format(http, admin, account, after)
        suite.start_again("notifier-worker")

        invoices = {account: issued_invoice(http, admin, account) for account in CHOSEN}
        expected = {
            var / "einvoice" / "oioubl" / GLN / f"{invoices['10000012']['id']}.xml",
            var / "einvoice" / "peppol" / "0184:37826111" / f"{invoices['10000021']['id']}.xml",
            var / "print" / f"{invoices['10000022']['id']}.pdf",
        }
        wait_until(
            lambda: expected <= set(spooled(suite)) and len(invoice_mails(suite)) >= 1 or None,
            deadline_s=90,
            what="the e-invoices and the paper invoice spooled, and the PDF emailed",
        )

        # The files are billing's documents of those invoices, as issued.
        for account, path in (("10000012", "oioubl"), ("10000021", "peppol")):
            spooled_xml = next(p for p in expected if invoices[account]["id"] in p.name).read_bytes()
            from_billing = http.get(
                f"/v1/invoices/{invoices[account]['id']}/document", params={"format": path}, headers=bearer(admin)
            )
            assert from_billing.status_code == 200, from_billing.text
            assert spooled_xml == from_billing.content
        paper = pdf_text((var / "print" / f"{invoices['10000022']['id']}.pdf").read_bytes())
        assert invoices["10000022"]["number"] in paper

        [mail] = invoice_mails(suite)
        [attachment] = mail.attachments
        number = invoices["10000011"]["number"]
        assert attachment.content_type == "application/pdf" and attachment.filename == f"faktura-{number}.pdf"
        assert number in pdf_text(attachment.content) and number in mail.subject

        # Nothing else of these accounts was delivered: the changes after issue did not count.
        ours = {p for p in spooled(suite) if any(i["id"] in p.name for i in invoices.values())}
        assert ours == expected
        before_restart = spooled(suite)

        # Killed after delivering: a new worker reads what the old one had not committed, and
        # delivers nothing twice. An order placed after it started is confirmed by email once
        # it has caught up, which is when a second delivery would have shown.
        suite.kill("notifier-worker")
        suite.start_again("notifier-worker")
        order = http.post(
            "/v1/orders",
            json={"account_number": "10000011", "product_code": "MOBIL-10"},
            headers={**bearer(admin), "Idempotency-Key": str(uuid.uuid4())},
        )
        assert order.status_code == 201, order.text
        wait_until(
            lambda: any(order.json()["id"] in m.text for m in read_mail(sinks_dir(suite), ADMIN_EMAIL)) or None,
            deadline_s=90,
            what="the order confirmation from the restarted notifier",
        )

    # Nothing spooled before the restart was written again, and no invoice of these accounts
    # came again. Invoices of other accounts (the demo data's) may still be arriving on a busy
    # machine; each of them is a file of its own, never one already there.
    after = spooled(suite)
    assert {path: after.get(path) for path in before_restart} == before_restart
    assert {p for p in after if any(i["id"] in p.name for i in invoices.values())} == expected
    assert len(invoice_mails(suite)) == 1
