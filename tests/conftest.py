"""Test fixtures: the database backend (SQLite by default, PostgreSQL with
ADGANG_TEST_DATABASE=postgres) and the whole suite started as processes."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from services.identity.config import IdentitySettings
from services.registry import SERVICES
from services.suite import Suite, SuiteConfig
from shared.clock import FrozenClock
from shared.db import Database, migrate
from shared.sealing import Sealer, generate_key, parse_keyring
from shared.tokens import generate_signing_key
from tests.support.ports import free_ports

# Generated standalone customers, for tests that need a company of their own (the demo group's
# subsidiaries are held by the group's administrator once one applies): 0 test_no_secret_leaks,
# 1 test_dead_letters, 2 and 3 test_apply_and_activate, 4 test_observability.
EXTRA_CUSTOMERS = 5
BACKEND = os.environ.get("ADGANG_TEST_DATABASE", "sqlite").lower()
_database_numbers = itertools.count(1)


def pytest_report_header() -> str:
    return f"adgang database backend: {BACKEND}"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """`--dist loadscope` (`make test`): whole modules per worker, and whole packages whose tests
    share a suite (tests/support/scheduling.py)."""
    if config.getoption("dist") != "loadscope":
        return None
    from tests.support.scheduling import SuiteScopeScheduling

    return SuiteScopeScheduling(config, log)


@pytest.fixture(scope="session")
def postgres() -> Iterator[object | None]:
    if BACKEND != "postgres":
        yield None
        return
    from tests.support.postgres import ThrowawayPostgres

    with ThrowawayPostgres() as server:
        yield server


@pytest.fixture(scope="session")
def database_factory(postgres: object | None, tmp_path_factory: pytest.TempPathFactory):
    """Makes a fresh, empty database URL for a service on the backend under test."""

    def make(service: str) -> str:
        n = next(_database_numbers)
        if postgres is None:
            return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / f'{service}{n}.db'}"
        return postgres.create_database(f"{service}_{n}")  # type: ignore[attr-defined]

    return make


@pytest.fixture(scope="session")
def migrated_database(
    postgres: object | None, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], str]:
    """Makes a fresh database for a service on the backend under test, migrated to its head.

    Each service's migrations run once a session, into a template; every database handed out
    is a copy of it (a file copy on SQLite, CREATE DATABASE ... TEMPLATE on PostgreSQL), the
    same schema and rows as migrating it afresh, in a fraction of the time. The migrations
    themselves are tested from an empty database in tests/integration/test_migrations.py."""
    templates: dict[str, str] = {}

    def template(service: str) -> str:
        if service not in templates:
            if postgres is None:
                path = tmp_path_factory.mktemp("templates") / f"{service}.db"
                migrate(SERVICES[service].migrations, f"sqlite+aiosqlite:///{path}")
                # Fold the write-ahead log into the file, so that the file alone is the database.
                with contextlib.closing(sqlite3.connect(path)) as conn:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                templates[service] = str(path)
            else:
                name = f"template_{service}"
                migrate(SERVICES[service].migrations, postgres.create_database(name))  # type: ignore[attr-defined]
                templates[service] = name
        return templates[service]

    def make(service: str) -> str:
        source = template(service)
        n = next(_database_numbers)
        if postgres is None:
            path = tmp_path_factory.mktemp("db") / f"{service}{n}.db"
            shutil.copyfile(source, path)
            return f"sqlite+aiosqlite:///{path}"
        return postgres.create_database(f"{service}_{n}", template=source)  # type: ignore[attr-defined]

    return make


@pytest.fixture
def identity_url(migrated_database: Callable[[str], str]) -> str:
    return migrated_database("identity")


@pytest.fixture
def onboarding_url(migrated_database: Callable[[str], str]) -> str:
    return migrated_database("onboarding")


@pytest.fixture
def notifier_url(migrated_database: Callable[[str], str]) -> str:
    return migrated_database("notifier")


@pytest.fixture
def portal_url(migrated_database: Callable[[str], str]) -> str:
    return migrated_database("portal")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """The database of the service a test module is about: the module names it with a
    `database_url` fixture, e.g. `def database_url(identity_url: str) -> str`."""
    database = Database(database_url)
    yield database
    await database.dispose()


def start_suite(
    var_dir: Path,
    database_factory,
    *,
    worker_instances: int = 1,
    api_instances: int = 1,
    start_deadline_s: float = 120,
    **extra_env: str,
) -> Suite:
    broker, smtp, sms, *ports = free_ports(3 + len(SERVICES))
    config = SuiteConfig(
        var_dir=var_dir,
        worker_instances=worker_instances,
        api_instances=api_instances,
        broker_port=broker,
        smtp_port=smtp,
        sms_port=sms,
        ports=dict(zip(SERVICES, ports, strict=True)),
        database_urls={name: database_factory(name) for name in SERVICES},
        extra_env={
            "ADGANG_ONBOARDING_RATE_LIMIT_PER_MINUTE": "0",
            "ADGANG_NOTIFIER_SLA_CHECK_INTERVAL_S": "1",
            # The monthly invoice run would email the month's invoices to whichever users exist
            # when it first runs; end-to-end tests issue invoices themselves, when they mean to.
            "ADGANG_BILLING_INVOICE_RUN_ENABLED": "false",
            **extra_env,
        },
    )
    suite = Suite(config)
    try:
        suite.start(deadline_s=start_deadline_s)
    except BaseException:
        suite.stop()
        raise
    return suite


def start_shared_suite(tmp_path_factory: pytest.TempPathFactory, database_factory) -> Suite:
    """The suite end-to-end tests share when they kill nothing: `suite` in tests/e2e/, and
    the session-end tests' own. Started per package, not per session: idle, its processes
    would slow every test after the last that uses it."""
    return start_suite(
        tmp_path_factory.mktemp("suite"),
        database_factory,
        ADGANG_BILLING_DEMO_EXTRA_CUSTOMERS=str(EXTRA_CUSTOMERS),
        # The stories log in more often a minute than a person would (the limit has tests of its own).
        ADGANG_IDENTITY_LOGIN_RATE_LIMIT_PER_MINUTE="0",
        **worker_metrics_ports(),
    )


def worker_metrics_ports() -> dict[str, str]:
    """Each worker serves its /metrics on a port of its own (`worker_metrics_port`)."""
    workers = [parts for parts in SERVICES.values() if parts.has_worker]
    return {
        f"{parts.env_prefix}WORKER_METRICS_PORT": str(port)
        for parts, port in zip(workers, free_ports(len(workers)), strict=True)
    }


def worker_metrics_url(suite: Suite, service: str) -> str:
    port = suite.config.extra_env[f"{SERVICES[service].env_prefix}WORKER_METRICS_PORT"]
    return f"http://127.0.0.1:{port}/metrics"


@pytest.fixture
def clock() -> FrozenClock:
    """A clock the test moves: expiry and deadlines without waiting."""
    return FrozenClock()


@pytest.fixture
def sealer() -> Sealer:
    """A key ring of one fresh key, as identity and notifier would be configured."""
    return Sealer(parse_keyring(f"k1:{generate_key()}"), "k1")


@pytest.fixture
def identity_settings(database_url: str, tmp_path: Path) -> Callable[..., IdentitySettings]:
    """Identity's settings on the module's database, as the login tests use them: a fresh
    signing key, and the per-address limits off (tests/security fires those). A module's
    `settings` fixture passes the rules it is about, e.g. `login_lock_after_failures=3`."""

    def make(**rules: object) -> IdentitySettings:
        return IdentitySettings(
            database_url=database_url,
            var_dir=tmp_path,
            signing_keys=SecretStr(f"t1:{generate_signing_key()}"),
            signing_active_key_id="t1",
            login_rate_limit_per_minute=0,
            activation_rate_limit_per_minute=0,
            **rules,  # type: ignore[arg-type]
        )

    return make
