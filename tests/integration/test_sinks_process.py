"""`adgang sinks`: one process with a mail server and an SMS gateway for development, which says
when it listens, keeps what it receives where a developer looks, and stops cleanly."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from services.notifier.config import DEVELOPMENT_SMS_TOKEN
from services.notifier.sinks import read_mail, read_sms
from shared.sealing import generate_key
from tests.support.ports import free_ports
from tests.support.waiting import wait_until


@pytest.fixture
def sinks_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, int, int]]:
    smtp_port, sms_port = free_ports(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADGANG_NOTIFIER_")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "sinks",
            "--var-dir",
            str(tmp_path),
            "--smtp-port",
            str(smtp_port),
            "--sms-port",
            str(sms_port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield process, tmp_path, smtp_port, sms_port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_sinks_process_marks_itself_ready_keeps_mail_and_sms_and_stops_on_sigterm(sinks_process) -> None:
    process, var_dir, smtp_port, sms_port = sinks_process
    marker = var_dir / "run" / "sinks.ready"
    wait_until(
        lambda: marker.exists() and marker.read_text() == str(process.pid) or process.poll() is not None,
        deadline_s=30,
        what="the sinks' ready marker",
    )
    assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""

    message = EmailMessage()
    message["From"] = "no-reply@adgang.localhost"
    message["To"] = "mette@example.dk"
    message["Subject"] = "Hej"
    message["Message-ID"] = "<one@adgang.localhost>"
    message.set_content("Hej Mette\n")
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
        smtp.send_message(message)
    response = httpx.post(
        f"http://127.0.0.1:{sms_port}/v1/sms",
        json={
            "recipients": [{"msisdn": 4520123456}],
            "message": "Hej",
            "sender": "Adgang",
            "reference": "r1",
        },
        headers={"Authorization": f"Bearer {DEVELOPMENT_SMS_TOKEN}"},
        timeout=10,
    )
    assert response.status_code == 200 and response.json() == {"ids": ["r1"]}
    assert [m.subject for m in read_mail(var_dir / "sinks", "mette@example.dk")] == ["Hej"]
    assert [m.text for m in read_sms(var_dir / "sinks", "+4520123456")] == ["Hej"]

    os.kill(process.pid, signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert not marker.exists()


def test_the_sinks_refuse_to_run_in_production(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADGANG_NOTIFIER_")}
    production = {
        "ENVIRONMENT": "production",
        "VAR_DIR": str(tmp_path),
        "DATABASE_URL": "postgresql+asyncpg://adgang@postgres/notifier",
        "SEALING_KEYS": f"k1:{generate_key()}",
        "SEALING_ACTIVE_KEY_ID": "k1",
        "PORTAL_URL": "https://selvbetjening.example.dk",
        "EMAIL_SMTP_HOST": "smtp.example.dk",
        "EMAIL_FROM": "Adgang <no-reply@example.dk>",
        "SMS_GATEWAY_URL": "https://sms.example.dk/v1/sms",
        "SMS_GATEWAY_TOKEN": "token",
        "BILLING_DOCUMENT_TOKEN": "token",
    }
    env.update({f"ADGANG_NOTIFIER_{name}": value for name, value in production.items()})
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "sinks"], env=env, capture_output=True, timeout=60
    )
    assert result.returncode == 2
    assert b"development only" in result.stderr
    assert not (tmp_path / "run" / "sinks.ready").exists()
