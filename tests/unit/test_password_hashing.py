"""Identity's password hashing parameters (S7; docs/security.md, Password hashing): OWASP's
minimum for argon2id by default, stronger by setting, and nothing weaker: the API refuses to
start with a message that says why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from argon2 import extract_parameters
from pydantic import ValidationError

from services.identity.config import IdentitySettings
from services.identity.passwords import PasswordCheck, PasswordHashing

ROOT = Path(__file__).resolve().parents[2]


def settings(tmp_path: Path, **values: int) -> IdentitySettings:
    return IdentitySettings(var_dir=tmp_path, **values)  # type: ignore[arg-type]


def test_the_default_is_owasps_minimum_for_argon2id(tmp_path: Path) -> None:
    hashing = settings(tmp_path).password_hashing()
    made = hashing.hash("a long enough passphrase")
    found = extract_parameters(made)

    assert made.startswith("$argon2id$")
    assert (found.memory_cost, found.time_cost, found.parallelism) == (19456, 2, 1)
    # The dummy hash that a login without a hash is checked against costs the same.
    assert extract_parameters(hashing.dummy_hash) == found
    assert hashing.verify(made, "a long enough passphrase")
    assert not hashing.verify(made, "another passphrase")
    assert not hashing.verify(None, "a long enough passphrase")


def test_stronger_parameters_are_taken_and_make_older_hashes_due_for_a_rehash(tmp_path: Path) -> None:
    default = PasswordHashing()
    stronger = settings(tmp_path, password_hash_memory_kib=32768, password_hash_time_cost=3).password_hashing()
    old = default.hash("a long enough passphrase")

    check = stronger.check(old, "a long enough passphrase")

    assert check.right and check.new_hash is not None
    found = extract_parameters(check.new_hash)
    assert (found.memory_cost, found.time_cost, found.parallelism) == (32768, 3, 1)
    assert stronger.check(check.new_hash, "a long enough passphrase") == PasswordCheck(right=True)
    assert stronger.check(old, "wrong passphrase").new_hash is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("password_hash_memory_kib", 19455), ("password_hash_time_cost", 1), ("password_hash_parallelism", 0)],
)
def test_settings_weaker_than_owasps_minimum_are_refused(tmp_path: Path, field: str, value: int) -> None:
    with pytest.raises(ValidationError, match=f"weaker than OWASP's minimum for argon2id.*{field}={value} is below"):
        settings(tmp_path, **{field: value})


def test_the_api_refuses_to_start_with_weak_hashing_and_says_why(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ADGANG_IDENTITY_VAR_DIR": str(tmp_path),
        "ADGANG_IDENTITY_PASSWORD_HASH_MEMORY_KIB": "4096",
        "ADGANG_IDENTITY_PASSWORD_HASH_TIME_COST": "1",
    }
    started = subprocess.run(
        [sys.executable, "-m", "services.cli", "api", "identity"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert started.returncode != 0
    assert "password hashing is weaker than OWASP's minimum for argon2id" in started.stderr, started.stderr
    assert "password_hash_memory_kib=4096 is below 19456" in started.stderr
    assert "password_hash_time_cost=1 is below 2" in started.stderr
    assert not (tmp_path / "run" / "identity-api.ready").exists()
