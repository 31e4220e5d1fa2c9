"""Runs the whole suite as processes on one machine: the embedded broker, the local mail and SMS
sinks, then each service's workers and APIs, one or more instances of each. `adgang run` uses
it, and so do the end-to-end, reliability and scale tests.

Instance 1 of a service's worker is the child `<service>-worker`, further ones
`<service>-worker.2`, `<service>-worker.3`…; likewise `<service>-api`, `<service>-api.2`. All
workers of a service form one consumer group. All APIs of a service listen on its one port
(SO_REUSEPORT) where the system allows it, otherwise instance n on the port + 100·(n-1)."""

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
from shared.settings import process_name
from shared.web import reuse_port_supported

MAX_INSTANCES = 10  # per service and role: the worker metrics ports leave room for ten
ALTERNATIVE_PORT_STEP = 100  # without SO_REUSEPORT, API instance n listens on port + 100·(n-1)
SOURCE_ROOT = Path(__file__).resolve().parent.parent  # where `services` and `shared` are


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
    # How many processes of every service's worker and of every service's API start.
    worker_instances: int = 1
    api_instances: int = 1
    # Worker n of the k-th service with a worker serves its metrics on base + 10·k + n - 1
    # (`worker_metrics_port`); None: no worker metrics port is set.
    worker_metrics_base_port: int | None = None

    def __post_init__(self) -> None:
        for what, count in (("workers", self.worker_instances), ("APIs", self.api_instances)):
            if not 1 <= count <= MAX_INSTANCES:
                raise ValueError(f"instances of the {what}: between 1 and {MAX_INSTANCES}, not {count}")

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
    # A service's API or worker: which, and which instance (None for the sinks).
    service: str | None = None
    role: str | None = None
    instance: int = 1
    env: dict[str, str] = field(default_factory=dict)  # this process's own settings


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
        # The children run the code this process runs, whatever their working directory (a
        # benchmark runs them in its var dir, where `-m services.cli` would find the installed
        # package, which may be another checkout).
        paths = [path for path in env.get("PYTHONPATH", "").split(os.pathsep) if path and path != str(SOURCE_ROOT)]
        env["PYTHONPATH"] = os.pathsep.join([str(SOURCE_ROOT), *paths])
        return env

    def database_url(self, service: str) -> str:
        return self.config.database_urls.get(
            service, f"sqlite+aiosqlite:///{self.config.var_dir / (service + '.db')}"
        )

    def url(self, service: str, instance: int = 1) -> str:
        """The service's API; with a shared port, whichever instance the kernel picks."""
        return f"http://127.0.0.1:{self.api_port(service, instance)}"

    @property
    def shares_api_ports(self) -> bool:
        """Every API instance of a service listens on the service's port (SO_REUSEPORT)."""
        return self.config.api_instances > 1 and reuse_port_supported()

    def api_port(self, service: str, instance: int = 1) -> int:
        port = self.config.ports[service]
        return port if self.shares_api_ports else port + ALTERNATIVE_PORT_STEP * (instance - 1)

    def worker_metrics_port(self, service: str, instance: int = 1) -> int | None:
        base = self.config.worker_metrics_base_port
        if base is None:
            return None
        with_worker = [name for name, parts in SERVICES.items() if parts.has_worker]
        return base + 10 * with_worker.index(service) + instance - 1

    def instances(self, service: str, role: str) -> list[str]:
        """The names of a service's API or worker children, instance 1 first."""
        found = [c for c in self.children.values() if c.service == service and c.role == role]
        return [c.name for c in sorted(found, key=lambda c: c.instance)]

    @property
    def sms_gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.config.sms_port}/v1/sms"

    # --- life cycle -----------------------------------------------------------------------

    def start(self, *, deadline_s: float = 90.0) -> None:
        self.config.var_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # First, so that it starts while the broker does; the notifier's worker waits for it.
        self._spawn_sinks()
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
                for instance in range(1, self.config.worker_instances + 1):
                    self._spawn(self._service_child(name, "worker", instance))
        for name, parts in SERVICES.items():
            if parts.has_api:
                for instance in range(1, self.config.api_instances + 1):
                    self._spawn(self._service_child(name, "api", instance))
        self.wait_ready(deadline_s=deadline_s)

    def _service_child(self, service: str, role: str, instance: int) -> Child:
        if not 1 <= instance <= MAX_INSTANCES:
            raise SuiteError(f"instance {instance} of {service}-{role}: at most {MAX_INSTANCES} instances")
        name = process_name(service, role, instance)
        prefix = SERVICES[service].env_prefix
        env = {f"{prefix}INSTANCE": str(instance)}
        if role == "api":
            env[f"{prefix}HTTP_PORT"] = str(self.api_port(service, instance))
            env[f"{prefix}HTTP_REUSE_PORT"] = "true" if self.shares_api_ports else "false"
        elif (metrics_port := self.worker_metrics_port(service, instance)) is not None:
            env[f"{prefix}WORKER_METRICS_PORT"] = str(metrics_port)
        return Child(
            name=name,
            argv=[sys.executable, "-m", "services.cli", role, service],
            log_path=self.log_dir / f"{name}.log",
            service=service,
            role=role,
            instance=instance,
            env=env,
        )

    def _spawn_sinks(self) -> Child:
        return self._spawn(
            Child(
                name="sinks",
                argv=[
                    sys.executable,
                    "-m",
                    "services.cli",
                    "sinks",
                    "--var-dir",
                    str(self.config.var_dir),
                    "--smtp-port",
                    str(self.config.smtp_port),
                    "--sms-port",
                    str(self.config.sms_port),
                ],
                log_path=self.log_dir / "sinks.log",
            )
        )

    def _spawn(self, child: Child) -> Child:
        if child.log_file:
            child.log_file.close()
        child.log_file = child.log_path.open("ab")
        child.process = subprocess.Popen(
            child.argv,
            env={**self.service_env(), **child.env},
            stdout=child.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.children[child.name] = child
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
        """A process is ready once it has written its own pid into its ready marker (an API
        does so when it listens: with a shared port, a request to it may reach any instance)
        and, for an API, once its service answers /readyz."""
        child = self.children[name]
        marker = self.ready_marker(name)
        try:
            written = marker.read_text().strip()
        except OSError:
            return False
        if child.process is None or written != str(child.process.pid):
            return False
        if child.role != "api":
            return True
        assert child.service is not None
        try:
            response = httpx.get(f"{self.url(child.service, child.instance)}/readyz", timeout=1.0)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        child = self.children[name]
        if child.process and child.process.poll() is None:
            os.killpg(child.process.pid, sig)
            child.process.wait(timeout=30)

    def restart(self, name: str, *, deadline_s: float = 90.0) -> None:
        self.kill(name, signal.SIGTERM)
        self.start_again(name, deadline_s=deadline_s)

    def start_again(self, name: str, *, deadline_s: float = 90.0) -> None:
        """Start a child that was killed, as the same instance."""
        child = self.children[name]
        if child.process is not None and child.process.poll() is None:
            raise SuiteError(f"{name} is still running (pid {child.process.pid})")
        self.ready_marker(name).unlink(missing_ok=True)
        self._spawn(child)
        self.wait_ready(deadline_s=deadline_s, names=[name])

    def add_instance(self, service: str, role: str, *, deadline_s: float = 90.0) -> str:
        """Start one more instance of a service's worker or API (the next free number); returns
        its name. A new worker joins the consumer group, which rebalances its partitions."""
        if role not in ("api", "worker"):
            raise SuiteError(f"role must be api or worker, not {role!r}")
        taken = [self.children[name].instance for name in self.instances(service, role)]
        child = self._service_child(service, role, max(taken, default=0) + 1)
        self.ready_marker(child.name).unlink(missing_ok=True)
        self._spawn(child)
        self.wait_ready(deadline_s=deadline_s, names=[child.name])
        return child.name

    def stop(self, timeout: float = 15.0) -> None:
        try:
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
        finally:
            # Also when stopping was cut short (a test's time limit ran out meanwhile): the
            # broker is a process of its own and would outlive the run.
            if self.broker:
                self.broker.stop()

    def logs(self) -> str:
        return "".join(path.read_text(errors="replace") for path in sorted(self.log_dir.glob("*.log")))


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
