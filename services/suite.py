"""Runs the whole suite as processes on one machine: the embedded broker, the local mail and SMS
sinks, then each service's worker and API. `adgang run` uses it, and so do the end-to-end and
reliability tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from services.registry import SERVICES
from shared.broker import EmbeddedBroker, wait_for_port
from shared.db import migrate
from shared.kafka import ensure_topics


class SuiteError(RuntimeError):
    pass


@dataclass
class SuiteConfig:
    var_dir: Path
    broker_host: str = "127.0.0.1"
    broker_port: int = 9092
    embedded_broker: bool = True
    ports: dict[str, int] = field(
        default_factory=lambda: {
            "onboarding": 8001,
            "identity": 8002,
            "billing": 8003,
            "notifier": 8004,
            "portal": 8000,
        }
    )
    smtp_port: int = 8025  # the mail sink
    sms_port: int = 8005  # the SMS gateway sink
    database_urls: dict[str, str] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    log_format: str = "json"
    # The notifier reads invoice documents from billing with it (S10); one per suite, made up
    # when it is configured, like the development sealing keys are made up per `var/`.
    billing_document_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def bootstrap(self) -> str:
        return f"{self.broker_host}:{self.broker_port}"


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None


class Suite:
    def __init__(self, config: SuiteConfig) -> None:
        self.config = config
        self.broker: EmbeddedBroker | None = None
        self.children: dict[str, Child] = {}
        self.log_dir = config.var_dir / "logs"

    # --- environment ----------------------------------------------------------------------

    def service_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name, parts in SERVICES.items():
            prefix = parts.env_prefix
            env[f"{prefix}VAR_DIR"] = str(self.config.var_dir)
            env[f"{prefix}KAFKA_BOOTSTRAP_SERVERS"] = self.config.bootstrap
            env[f"{prefix}HTTP_PORT"] = str(self.config.ports[name])
            env[f"{prefix}LOG_FORMAT"] = self.config.log_format
            if name in self.config.database_urls:
                env[f"{prefix}DATABASE_URL"] = self.config.database_urls[name]
        env["ADGANG_NOTIFIER_EMAIL_SMTP_PORT"] = str(self.config.smtp_port)
        env["ADGANG_NOTIFIER_SMS_GATEWAY_URL"] = self.sms_gateway_url
        # Access tokens are identity's; these services verify them against its published keys.
        for prefix in ("ADGANG_BILLING_", "ADGANG_ONBOARDING_", "ADGANG_NOTIFIER_"):
            env[f"{prefix}IDENTITY_JWKS_URL"] = f"{self.url('identity')}/.well-known/jwks.json"
        # The notifier fetches invoice documents from billing, with a token both know.
        env["ADGANG_NOTIFIER_BILLING_URL"] = self.url("billing")
        env["ADGANG_BILLING_DOCUMENT_READER_TOKEN"] = self.config.billing_document_token
        env["ADGANG_NOTIFIER_BILLING_DOCUMENT_TOKEN"] = self.config.billing_document_token
        # The letters link to the portal, and the portal calls the services' APIs.
        env["ADGANG_NOTIFIER_PORTAL_URL"] = self.url("portal")
        for name in ("onboarding", "identity", "billing", "notifier"):
            env[f"ADGANG_PORTAL_{name.upper()}_URL"] = self.url(name)
        env.update(self.config.extra_env)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def database_url(self, service: str) -> str:
        return self.config.database_urls.get(
            service, f"sqlite+aiosqlite:///{self.config.var_dir / (service + '.db')}"
        )

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.config.ports[service]}"

    @property
    def sms_gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.config.sms_port}/v1/sms"

    # --- life cycle -----------------------------------------------------------------------

    def start(self, *, deadline_s: float = 90.0) -> None:
        self.config.var_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # First, so that it starts while the broker does; the notifier's worker waits for it.
        self._spawn(
            "sinks",
            [
                "sinks",
                "--var-dir",
                str(self.config.var_dir),
                "--smtp-port",
                str(self.config.smtp_port),
                "--sms-port",
                str(self.config.sms_port),
            ],
        )
        if self.config.embedded_broker:
            broker_log = (self.log_dir / "broker.log").open("ab")
            self.broker = EmbeddedBroker(
                host=self.config.broker_host, port=self.config.broker_port, log=broker_log
            )
            self.broker.start()
        else:
            wait_for_port(self.config.broker_host, self.config.broker_port, deadline_s=30)
        asyncio.run(ensure_topics(self.config.bootstrap))
        for name, parts in SERVICES.items():
            migrate(parts.migrations, self.database_url(name))
        self.wait_ready(deadline_s=deadline_s, names=["sinks"])
        for name, parts in SERVICES.items():
            if parts.has_worker:
                self._spawn(f"{name}-worker", ["worker", name])
        for name, parts in SERVICES.items():
            if parts.has_api:
                self._spawn(f"{name}-api", ["api", name])
        self.wait_ready(deadline_s=deadline_s)

    def _spawn(self, name: str, args: list[str]) -> Child:
        child = self.children.get(name) or Child(
            name=name,
            argv=[sys.executable, "-m", "services.cli", *args],
            log_path=self.log_dir / f"{name}.log",
        )
        child.log_file = child.log_path.open("ab")
        child.process = subprocess.Popen(
            child.argv,
            env=self.service_env(),
            stdout=child.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.children[name] = child
        return child

    def ready_marker(self, name: str) -> Path:
        return self.config.var_dir / "run" / f"{name}.ready"

    def wait_ready(self, *, deadline_s: float, names: list[str] | None = None) -> None:
        deadline = time.monotonic() + deadline_s
        pending = set(names or self.children)
        while pending:
            for name in sorted(pending):
                child = self.children[name]
                assert child.process is not None
                if child.process.poll() is not None:
                    raise SuiteError(
                        f"{name} exited with code {child.process.returncode}; see {child.log_path}:\n"
                        + _tail(child.log_path)
                    )
                if self._is_ready(name):
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise SuiteError(f"not ready within {deadline_s:.0f}s: {', '.join(sorted(pending))}")
            if pending:
                time.sleep(0.1)

    def _is_ready(self, name: str) -> bool:
        service, _, role = name.rpartition("-")
        if role in ("worker", "sinks"):
            marker = self.ready_marker(name)
            child = self.children[name]
            return (
                marker.exists()
                and child.process is not None
                and marker.read_text().strip() == str(child.process.pid)
            )
        try:
            return httpx.get(f"{self.url(service)}/readyz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        child = self.children[name]
        if child.process and child.process.poll() is None:
            os.killpg(child.process.pid, sig)
            child.process.wait(timeout=30)

    def restart(self, name: str, *, deadline_s: float = 90.0) -> None:
        self.kill(name, signal.SIGTERM)
        self.ready_marker(name).unlink(missing_ok=True)
        service, _, role = name.rpartition("-")
        self._spawn(name, [role, service])
        self.wait_ready(deadline_s=deadline_s, names=[name])

    def start_again(self, name: str, *, deadline_s: float = 90.0) -> None:
        """Start a child that was killed."""
        self.ready_marker(name).unlink(missing_ok=True)
        service, _, role = name.rpartition("-")
        self._spawn(name, [role, service])
        self.wait_ready(deadline_s=deadline_s, names=[name])

    def stop(self, timeout: float = 15.0) -> None:
        for child in self.children.values():
            if child.process and child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children.values():
            if child.process is None:
                continue
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()
            if child.log_file:
                child.log_file.close()
        if self.broker:
            self.broker.stop()

    def logs(self) -> str:
        return "".join(path.read_text(errors="replace") for path in sorted(self.log_dir.glob("*.log")))


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
