"""Identity's password hashing parameters (S7; docs/security.md, Password hashing): OWASP's
minimum for argon2id by default, stronger by setting, and nothing weaker: the API refuses to
start with a message that says why."""

from __future__ import annotations

import functools
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


# Checks recompute the hash through argon2's core in a block each pool thread keeps (S7;
# docs/security.md, Password hashing): the same answers as argon2-cffi's own verification,
# for every kind of stored hash, and no page faults for a fresh block per check.

PASSWORD = "a long enough passphrase"


def _next_base64(character: str) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return alphabet[alphabet.index(character) + 1]


@functools.cache
def _stored_hashes() -> dict[str, str]:
    from argon2.low_level import Type as LowType
    from argon2.low_level import hash_secret

    made = PasswordHashing().hash(PASSWORD)
    head, salt_text, digest = made.rsplit("$", 2)
    salt = b"sixteen byte slt"
    return {
        "configured": made,
        "stronger parameters (a block made for it)": PasswordHashing(memory_kib=32768, time_cost=3).hash(PASSWORD),
        "two lanes": PasswordHashing(parallelism=2).hash(PASSWORD),
        "argon2i": hash_secret(PASSWORD.encode(), salt, 2, 19456, 1, 32, LowType.I).decode(),
        "version 16": hash_secret(PASSWORD.encode(), salt, 2, 19456, 1, 32, LowType.ID, version=16).decode(),
        "a longer digest": hash_secret(PASSWORD.encode(), salt, 2, 19456, 1, 64, LowType.ID).decode(),
        "digest changed": f"{head}${salt_text}${'B' if digest[0] == 'A' else 'A'}{digest[1:]}",
        "salt not base64": f"{head}$!{salt_text[1:]}${digest}",
        "digest cut short": f"{head}${salt_text}${digest[:2]}",
        "no salt": f"{head}$${digest}",
        "not a hash": "plain text",
        "empty": "",
        # argon2's decoder takes one spelling of each value: any other is not a hash of it.
        "version 16 without its field": hash_secret(PASSWORD.encode(), salt, 2, 19456, 1, 32, LowType.ID, version=16)
        .decode()
        .replace("$v=16", ""),
        "a parameter with a sign": made.replace("m=19456", "m=+19456"),
        "a parameter with a leading zero": made.replace("m=19456", "m=019456"),
        "a parameter with an underscore": made.replace("m=19456", "m=19_456"),
        "a parameter with a space": made.replace("t=2", "t= 2"),
        "parameters in another order": made.replace("m=19456,t=2", "t=2,m=19456"),
        "a negative parameter": made.replace("t=2", "t=-2"),
        "a negative version": made.replace("v=19", "v=-19"),
        "a parameter beyond 32 bits": made.replace("t=2", f"t={2**32 + 2}"),
        "a digest with padding": f"{made}=",
        "a digest whose unused bits are not zero": f"{head}${salt_text}${digest[:-1]}{_next_base64(digest[-1])}",
    }


@pytest.mark.parametrize("name", list(_stored_hashes()))
@pytest.mark.parametrize(
    "password", [PASSWORD, "another passphrase", "", "pæssword med æøå ✓", "a lone surrogate \ud800", "nul\x00"]
)
def test_checks_in_a_kept_block_answer_as_argon2_cffi_does(name: str, password: str) -> None:
    stored = _stored_hashes()[name]
    kept, library = PasswordHashing(), PasswordHashing(reuse_memory=False)

    assert kept.verify(stored, password) == library.verify(stored, password)
    assert kept.check(stored, password).right == library.check(stored, password).right
    real = {"configured", "stronger parameters (a block made for it)", "two lanes", "argon2i", "version 16"}
    if name in real | {"version 16 without its field"}:
        assert kept.verify(stored, PASSWORD)  # each of these is a real hash of PASSWORD


def test_a_hash_with_digits_of_another_script_is_not_a_hash() -> None:
    """Python's int() reads '١٩٤٥٦' as 19456; argon2's decoder takes ASCII digits only."""
    made = PasswordHashing().hash(PASSWORD)

    assert not PasswordHashing().verify(made.replace("m=19456", "m=\u0661\u0669\u0664\u0665\u0666"), PASSWORD)


def test_a_block_that_cannot_be_had_is_a_wrong_password_and_nothing_more(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A stored hash asking for more memory than the system gives fails as with argon2's own
    malloc: a wrong password, quietly (no traceback from the allocation callback), and the
    next check of a hash of that size gets its block."""
    from services.identity import passwords

    stronger = PasswordHashing(memory_kib=32768).hash(PASSWORD)  # more than the kept block
    hashing = PasswordHashing()
    configured = hashing.hash(PASSWORD)
    assert hashing.verify(configured, PASSWORD)  # this thread's kept block is made

    def no_memory(size: int) -> object:
        raise MemoryError

    with monkeypatch.context() as patched:
        patched.setattr(passwords, "_new_block", no_memory)
        assert not hashing.verify(stronger, PASSWORD)
        assert hashing.verify(configured, PASSWORD)  # in the kept block
    assert "MemoryError" not in capfd.readouterr().err
    assert hashing.verify(stronger, PASSWORD)


def test_a_right_password_is_right_only_for_its_own_hash() -> None:
    hashing = PasswordHashing()
    first, second = hashing.hash(PASSWORD), hashing.hash(PASSWORD)

    assert first != second  # salted
    assert hashing.verify(first, PASSWORD) and hashing.verify(second, PASSWORD)
    assert not hashing.verify(first.rsplit("$", 1)[0] + "$" + second.rsplit("$", 1)[1], PASSWORD)
    assert not hashing.verify(None, PASSWORD)  # a login without a hash: the dummy's check, refused


def test_a_check_in_the_pool_does_not_fault_a_fresh_block_in() -> None:
    """With glibc's mmap threshold fixed as `adgang api` fixes it, argon2-cffi's own verification
    maps 19 MiB and faults it in page by page every time; a pool thread's kept block is faulted
    in once, at its first check."""
    import asyncio
    import resource

    from services.cli import _return_large_blocks_to_the_system

    _return_large_blocks_to_the_system()
    hashing = PasswordHashing(workers=1)
    stored = hashing.hash(PASSWORD)
    block_pages = hashing.memory_kib * 1024 // resource.getpagesize()

    def faults_of_checks(count: int) -> int:
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        for _ in range(count):
            assert hashing.verify(stored, PASSWORD)
        return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before

    async def run() -> int:
        assert await hashing.verify_off_loop(stored, PASSWORD)  # the thread's first check: its block
        return await asyncio.get_running_loop().run_in_executor(hashing._executor(), faults_of_checks, 5)

    faults = asyncio.run(run())

    assert faults < block_pages // 4, f"{faults} page faults for 5 checks; a block is {block_pages} pages"


def test_no_more_checks_run_at_once_than_the_pool_has_threads() -> None:
    import asyncio
    import threading

    hashing = PasswordHashing(workers=2)
    stored = hashing.hash(PASSWORD)
    running, most, lock = 0, 0, threading.Lock()
    verify = hashing.verify

    def counted(password_hash: str | None, password: str) -> bool:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            return verify(password_hash, password)
        finally:
            with lock:
                running -= 1

    hashing.verify = counted  # type: ignore[method-assign]

    async def run() -> list[PasswordCheck]:
        return await asyncio.gather(*(hashing.check_off_loop(stored, PASSWORD) for _ in range(8)))

    checks = asyncio.run(run())

    assert checks == [PasswordCheck(right=True)] * 8
    assert most == 2


def test_a_pool_without_threads_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one worker thread"):
        PasswordHashing(workers=0)
    with pytest.raises(ValidationError, match="password_hash_workers"):
        settings(tmp_path, password_hash_workers=0)
