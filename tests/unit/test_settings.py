"""Settings: no default secret outside development, one shared key ring in development."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from shared.sealing import generate_key
from shared.settings import Environment, ServiceSettings

PREFIX = "ADGANG_SETTINGSTEST_"
CONTEXT = "dk.adgang.identity.CredentialsIssued.v1:user"


class ExampleSettings(ServiceSettings):
    uses_sealing: ClassVar[bool] = True
    service: ClassVar[str] = "example"
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A clean environment for the example service, with `var/` in a temporary directory."""
    for name in ("ENVIRONMENT", "DATABASE_URL", "SEALING_KEYS", "SEALING_ACTIVE_KEY_ID", "VAR_DIR"):
        monkeypatch.delenv(PREFIX + name, raising=False)
    monkeypatch.setenv(PREFIX + "VAR_DIR", str(tmp_path / "var"))
    return monkeypatch


def test_settings_are_read_from_the_services_own_prefix(env: pytest.MonkeyPatch) -> None:
    env.setenv(PREFIX + "HTTP_PORT", "8123")
    env.setenv("ADGANG_SOMEONE_ELSE_HTTP_PORT", "9999")

    assert ExampleSettings().port == 8123


def test_production_without_a_database_url_is_refused(env: pytest.MonkeyPatch) -> None:
    env.setenv(PREFIX + "ENVIRONMENT", "production")
    env.setenv(PREFIX + "SEALING_KEYS", f"k1:{generate_key()}")
    env.setenv(PREFIX + "SEALING_ACTIVE_KEY_ID", "k1")

    with pytest.raises(ValidationError, match="database_url must be set in production"):
        ExampleSettings()


def test_production_without_sealing_keys_is_refused(env: pytest.MonkeyPatch) -> None:
    env.setenv(PREFIX + "ENVIRONMENT", "production")
    env.setenv(PREFIX + "DATABASE_URL", "postgresql+asyncpg://adgang@db/adgang")

    with pytest.raises(ValidationError, match="sealing_keys and sealing_active_key_id must be set"):
        ExampleSettings()


def test_production_without_an_active_key_id_is_refused(env: pytest.MonkeyPatch) -> None:
    env.setenv(PREFIX + "ENVIRONMENT", "production")
    env.setenv(PREFIX + "DATABASE_URL", "postgresql+asyncpg://adgang@db/adgang")
    env.setenv(PREFIX + "SEALING_KEYS", f"k1:{generate_key()}")

    with pytest.raises(ValidationError, match="sealing_active_key_id must be set"):
        ExampleSettings()


def test_production_with_everything_configured_is_accepted_and_creates_no_dev_key_file(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env.setenv(PREFIX + "ENVIRONMENT", "production")
    env.setenv(PREFIX + "DATABASE_URL", "postgresql+asyncpg://adgang@db/adgang")
    env.setenv(PREFIX + "SEALING_KEYS", f"k1:{generate_key()}")
    env.setenv(PREFIX + "SEALING_ACTIVE_KEY_ID", "k1")

    settings = ExampleSettings()

    assert settings.environment is Environment.production
    assert settings.db_url == "postgresql+asyncpg://adgang@db/adgang"
    assert settings.sealer().active_kid == "k1"
    assert not (tmp_path / "var").exists()


def test_the_secret_key_ring_is_not_shown_in_the_settings_repr(env: pytest.MonkeyPatch) -> None:
    key = generate_key()
    env.setenv(PREFIX + "SEALING_KEYS", f"k1:{key}")

    settings = ExampleSettings()

    assert key not in repr(settings)
    assert key not in str(settings.model_dump())


def test_development_defaults_to_sqlite_under_var(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = ExampleSettings()

    assert settings.environment is Environment.development
    assert settings.db_url == f"sqlite+aiosqlite:///{tmp_path / 'var' / 'example.db'}"


def test_development_without_keys_shares_one_key_ring_file_between_processes(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The api and worker of a service (and the notifier) must open each other's sealed codes."""
    first = ExampleSettings().sealer()
    second = ExampleSettings().sealer()

    key_files = list((tmp_path / "var").iterdir())
    assert [p.name for p in key_files] == ["dev-sealing-keys.json"]
    assert second.unseal(first.seal("ABCD", context=CONTEXT), context=CONTEXT) == "ABCD"
    assert first.unseal(second.seal("EFGH", context=CONTEXT), context=CONTEXT) == "EFGH"


def test_the_development_key_ring_file_is_readable_only_by_its_owner(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ExampleSettings().sealer()

    mode = stat.S_IMODE((tmp_path / "var" / "dev-sealing-keys.json").stat().st_mode)
    assert mode == 0o600


def test_configured_keys_are_used_instead_of_the_development_key_ring(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    old, new = generate_key(), generate_key()
    env.setenv(PREFIX + "SEALING_KEYS", f"old:{old},new:{new}")
    env.setenv(PREFIX + "SEALING_ACTIVE_KEY_ID", "new")

    sealer = ExampleSettings().sealer()
    sealed = sealer.seal("ABCD", context=CONTEXT)

    assert sealed.kid == "new"
    assert not (tmp_path / "var" / "dev-sealing-keys.json").exists()
    env.setenv(PREFIX + "SEALING_ACTIVE_KEY_ID", "old")
    assert ExampleSettings().sealer().unseal(sealed, context=CONTEXT) == "ABCD"


def test_configured_keys_without_an_active_id_seal_with_the_first_key(env: pytest.MonkeyPatch) -> None:
    env.setenv(PREFIX + "SEALING_KEYS", f"first:{generate_key()},second:{generate_key()}")

    assert ExampleSettings().sealer().active_kid == "first"


def test_a_service_that_never_touches_codes_needs_no_key_ring_in_production(env: pytest.MonkeyPatch) -> None:
    class NoSealing(ServiceSettings):
        service: ClassVar[str] = "plain"
        model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore")

    env.setenv(PREFIX + "ENVIRONMENT", "production")
    env.setenv(PREFIX + "DATABASE_URL", "postgresql+asyncpg://adgang@db/adgang")
    assert NoSealing().environment is Environment.production


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite:///:memory:",
        "sqlite+aiosqlite://",
        "sqlite+aiosqlite:///file:shared?mode=memory&cache=shared&uri=true",
    ],
)
def test_an_in_memory_sqlite_database_is_refused_with_its_reason(env: pytest.MonkeyPatch, url: str) -> None:
    """A service's API, worker, readers and migrations each open connections of their own: in
    memory, each would have a database of its own (and `shared.db` cannot pool one)."""
    env.setenv(PREFIX + "DATABASE_URL", url)
    with pytest.raises(ValidationError, match="database_url: an in-memory SQLite database .* use a file"):
        ExampleSettings()


def test_a_sqlite_file_and_postgresql_are_database_urls(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for url in (f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", "postgresql+asyncpg://u:p@db/adgang"):
        env.setenv(PREFIX + "DATABASE_URL", url)
        assert ExampleSettings().db_url == url
