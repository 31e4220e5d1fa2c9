"""One service's API as its own process, started as `adgang api <service>` starts it: the real
uvicorn server with the settings' proxy handling, body limit and all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.registry import SERVICES
from tests.support.ports import free_ports
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ApiProcess:
    url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def api_process(
    service: str, var_dir: Path, *, environ: dict[str, str] | None = None, **settings: str
) -> Iterator[ApiProcess]:
    """Run `python -m services.cli api <service>` with `settings` as its environment variables
    (`rate_limit_per_minute="3"` becomes `ADGANG_ONBOARDING_RATE_LIMIT_PER_MINUTE=3`), plus any
    other variables in `environ`; stop it when done."""
    prefix = SERVICES[service].env_prefix
    (port,) = free_ports(1)
    env = {name: value for name, value in os.environ.items() if not name.startswith("ADGANG_")}
    env |= {f"{prefix}VAR_DIR": str(var_dir), f"{prefix}HTTP_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    env |= {f"{prefix}{name.upper()}": value for name, value in settings.items()}
    env |= environ or {}
    var_dir.mkdir(parents=True, exist_ok=True)
    log_path = var_dir / f"{service}-api.log"
    url = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "api", service],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_until(
            lambda: process.poll() is not None or _healthy(url),
            deadline_s=60,
            what=f"{service}'s API to answer /healthz",
        )
        assert process.poll() is None, f"{service} api exited:\n{log_path.read_text(errors='replace')}"
        yield ApiProcess(url=url, log_path=log_path, process=process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
