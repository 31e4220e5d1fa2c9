"""Settings base: pydantic-settings, one environment prefix per service.

Defaults are the embedded development mode (SQLite under `var/`, the local broker). Outside
development every secret must be configured: no default secret is ever used in production.
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from pydantic import SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.sealing import Sealer, SealingError, generate_key, parse_keyring


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class ServiceSettings(BaseSettings):
    """Settings every service has. Subclasses set `service` and their own `env_prefix`."""

    service: ClassVar[str] = ""
    default_http_port: ClassVar[int] = 8000
    uses_sealing: ClassVar[bool] = False  # seals or unseals codes on the bus

    model_config = SettingsConfigDict(extra="ignore", env_file=None)

    environment: Environment = Environment.development
    var_dir: Path = Path("var")
    database_url: str | None = None
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_session_timeout_s: float = 10.0
    kafka_heartbeat_interval_s: float = 1.0
    http_host: str = "127.0.0.1"
    http_port: int | None = None
    log_level: str = "INFO"
    log_format: str = "json"
    sealing_keys: SecretStr | None = None
    sealing_active_key_id: str | None = None
    outbox_poll_interval_s: float = 0.2

    @model_validator(mode="after")
    def _secrets_are_configured_outside_development(self) -> ServiceSettings:
        if self.environment is Environment.production:
            if self.database_url is None:
                raise ValueError("database_url must be set in production")
            if self.uses_sealing and (self.sealing_keys is None or not self.sealing_active_key_id):
                raise ValueError("sealing_keys and sealing_active_key_id must be set in production")
        if self.sealing_keys is not None:
            try:
                self.sealer()  # a malformed ring or an unknown active key fails at start, not mid-flow
            except SealingError as exc:
                raise ValueError(str(exc)) from exc
        return self

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.var_dir / (self.service + '.db')}"

    @property
    def port(self) -> int:
        return self.http_port or self.default_http_port

    def sealer(self) -> Sealer:
        if self.sealing_keys is not None:
            ring = parse_keyring(self.sealing_keys.get_secret_value())
            active = self.sealing_active_key_id or next(iter(ring))
            return Sealer(ring, active)
        if self.environment is Environment.production:
            raise SealingError("no sealing keys configured")
        return _development_sealer(self.var_dir)


def _development_sealer(var_dir: Path) -> Sealer:
    """A key ring made once per development `var/` and shared by its local processes."""
    path = var_dir / "dev-sealing-keys.json"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps({"active": "dev1", "keys": f"dev1:{generate_key()}"}))
        try:
            os.link(tmp, path)  # first writer wins; others read its key
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    data = json.loads(path.read_text())
    return Sealer(parse_keyring(data["keys"]), data["active"])
