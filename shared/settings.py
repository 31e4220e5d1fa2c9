"""Settings base: pydantic-settings, one environment prefix per service.

Defaults are the embedded development mode (SQLite under `var/`, the local broker). Outside
development every secret must be configured: no default secret is ever used in production.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.clock import Clock, OffsetFileClock, SystemClock
from shared.sealing import Sealer, SealingError, generate_key, parse_keyring
from shared.tokens import AccessClaims, TokenVerifier

if TYPE_CHECKING:
    import httpx


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
    # Several API processes of a service serve one port, the kernel spreading connections
    # among them (SO_REUSEPORT, docs/operations.md "Scaling each part"); every one sets it.
    http_reuse_port: bool = False
    # Which of a service's API or worker processes this is: 1 for the first. Names its ready
    # marker (`run/<service>-worker.<n>.ready` from 2 on) and its faust data directory.
    instance: int = Field(default=1, ge=1, le=99)
    log_level: str = "INFO"
    log_format: str = "json"
    sealing_keys: SecretStr | None = None
    sealing_active_key_id: str | None = None
    outbox_poll_interval_s: float = Field(default=0.05, gt=0, le=60)
    kafka_fetch_max_wait_ms: int = Field(
        default=50,
        ge=1,
        le=30_000,
        description=(
            "Milliseconds the broker may hold a worker's fetch while it has nothing to return "
            "(Kafka's `fetch.max.wait.ms`). The embedded broker holds a fetch of several "
            "partitions for the whole wait even when a record arrives meanwhile, so this wait is "
            "what a message waits on every hop of an idle suite: 50 ms keeps one application "
            "within its latency target at a few fetches a second of idle cost. Kafka answers a "
            "waiting fetch as soon as a record arrives: there set it to 500 (Kafka's default) or "
            "more, so that an idle worker asks less often at no cost in latency."
        ),
    )
    consumer_batch_max: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description=(
            "The most messages of one partition a worker's consumer handles in one database "
            "transaction (one inbox lookup, one commit). Messages that arrived together are "
            "handled together; a batch whose handler fails is rolled back and handled one message "
            "at a time, so a poison message costs only itself. 1: one transaction per message."
        ),
    )

    # The edge of the HTTP API (docs/security.md).
    trust_forwarded_for: bool = False
    # Comma-separated in the environment: `10.0.0.2,10.1.0.0/16`.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_request_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    api_docs_enabled: bool | None = None  # unset: on outside production, off in production
    metrics_token: SecretStr | None = None
    # A worker serves its /metrics (and /healthz) on this port when set (docs/operations.md).
    worker_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # Test only (refused in production): a file with an offset in seconds added to the clock.
    clock_offset_file: Path | None = None

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies_are_a_comma_separated_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [entry.strip() for entry in value.split(",") if entry.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses_or_networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                # `*` would be uvicorn's "trust every peer": anyone could choose their address.
                raise ValueError(
                    f"trusted_proxies: {entry!r} is not an IP address or network (like 10.0.0.2 or 10.0.0.0/24)"
                ) from None
        return value

    @field_validator("database_url")
    @classmethod
    def _a_database_every_process_shares(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from sqlalchemy.engine import make_url  # every process that reads it uses SQLAlchemy
        from sqlalchemy.exc import ArgumentError

        try:
            parsed = make_url(value)
        except ArgumentError:  # not a URL SQLAlchemy reads: its engine says why
            return value
        in_memory = not parsed.database or parsed.database == ":memory:" or parsed.query.get("mode") == "memory"
        if parsed.get_backend_name() == "sqlite" and in_memory:
            raise ValueError(
                "database_url: an in-memory SQLite database belongs to the connection that made it: the "
                "API, the worker and the migrations would each have an empty one of their own; use a file "
                "(sqlite+aiosqlite:///path/to/service.db) or PostgreSQL"
            )
        return value

    @field_validator("metrics_token")
    @classmethod
    def _an_empty_metrics_token_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty token would open /metrics to `Authorization: Bearer ` in production.
        return value if value is not None and value.get_secret_value().strip() else None

    @model_validator(mode="after")
    def _forwarded_for_names_its_proxies(self) -> ServiceSettings:
        if self.trust_forwarded_for and not self.trusted_proxies:
            raise ValueError(
                "trust_forwarded_for needs trusted_proxies: the addresses of the reverse proxies "
                "whose X-Forwarded-For is believed"
            )
        return self

    @model_validator(mode="after")
    def _no_moved_clock_in_production(self) -> ServiceSettings:
        if self.environment is Environment.production and self.clock_offset_file is not None:
            raise ValueError("clock_offset_file moves the clock for tests; it must not be set in production")
        return self

    def clock(self) -> Clock:
        """The system's clock; in tests, moved by the offset in `clock_offset_file` if set."""
        return OffsetFileClock(self.clock_offset_file) if self.clock_offset_file else SystemClock()

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

    def process_name(self, role: str) -> str:
        """`<service>-<role>` for instance 1 and `<service>-<role>.<n>` for the others: the name
        of its ready marker and, in `adgang run`, of its log."""
        return process_name(self.service, role, self.instance)

    def ready_marker(self, role: str) -> Path:
        """The file the process writes its pid into once it has started (`adgang run`, tests and
        the compose health checks read it)."""
        return self.var_dir / "run" / f"{self.process_name(role)}.ready"

    @property
    def port(self) -> int:
        return self.http_port or self.default_http_port

    @property
    def serves_api_docs(self) -> bool:
        """`/docs`, `/redoc` and `/openapi.json`: on in development, off in production unless
        switched on; they describe every route to whoever asks."""
        if self.api_docs_enabled is not None:
            return self.api_docs_enabled
        return self.environment is not Environment.production

    @property
    def serves_metrics(self) -> bool:
        """`/metrics`: in production only with a token to ask for it."""
        return self.metrics_token is not None or self.environment is not Environment.production

    def sealer(self) -> Sealer:
        if self.sealing_keys is not None:
            ring = parse_keyring(self.sealing_keys.get_secret_value())
            active = self.sealing_active_key_id or next(iter(ring))
            return Sealer(ring, active)
        if self.environment is Environment.production:
            raise SealingError("no sealing keys configured")
        return _development_sealer(self.var_dir)


class VerifiesAccessTokens(ServiceSettings):
    """Settings of a service that verifies identity's access tokens against its JWKS (S7)."""

    identity_jwks_url: str = "http://127.0.0.1:8002/.well-known/jwks.json"
    jwks_cache_seconds: float = Field(default=300.0, ge=1.0)
    jwks_min_refetch_seconds: float = Field(default=30.0, ge=0.0)

    def token_verifier(
        self,
        *,
        client: httpx.AsyncClient | None = None,
        is_revoked: Callable[[AccessClaims], Awaitable[bool]] | None = None,
    ) -> TokenVerifier:
        return TokenVerifier(
            self.identity_jwks_url,
            cache_seconds=self.jwks_cache_seconds,
            min_refetch_seconds=self.jwks_min_refetch_seconds,
            client=client,
            is_revoked=is_revoked,
        )


def process_name(service: str, role: str, instance: int = 1) -> str:
    """The name of a service's process: `identity-worker`, `identity-worker.2`, `billing-api.3`."""
    return f"{service}-{role}" + (f".{instance}" if instance > 1 else "")


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
