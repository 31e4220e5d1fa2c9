"""Identity's password hashing parameters (S7; docs/security.md, Password hashing): OWASP's
minimum for argon2id by default, stronger by setting, and nothing weaker: the API refuses to
start with a message that says why."""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from argon2 import extract_parameters
from pydantic import ValidationError

from services.identity.config import IdentitySettings
from services.identity.passwords import PasswordCheck, PasswordHashing, PasswordHashingStopped
from tests.support.waiting import wait_until_async

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


# The pool's life (services/identity/passwords.py): it ends with identity's API, and neither a
# second hashing in the process nor a caller that goes away mid-check disturbs it.

WRONG = "not the passphrase at all"
HELD_S = 60.0  # the longest a held check waits for its test, should the test fail first


def _threads_of(hashing: PasswordHashing) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith(f"{hashing.thread_name}_")]


def _blocks_made(monkeypatch: pytest.MonkeyPatch, hold_first: threading.Event | None = None) -> list[tuple[str, int]]:
    """(thread, size) of every block argon2 is given from now on. With `hold_first`, the first
    allocation, inside argon2's computation, waits until it is set."""
    from services.identity import passwords

    made: list[tuple[str, int]] = []
    new_block = passwords._new_block

    def recorded(size: int) -> object:
        made.append((threading.current_thread().name, size))
        if hold_first is not None and len(made) == 1:
            hold_first.wait(HELD_S)
        return new_block(size)

    monkeypatch.setattr(passwords, "_new_block", recorded)
    return made


def _kept_per_thread(hashing: PasswordHashing, made: list[tuple[str, int]]) -> Counter[str]:
    """How many blocks of its kept size each of `hashing`'s threads was given."""
    size = hashing.memory_kib * 1024
    return Counter(thread for thread, got in made if thread.startswith(f"{hashing.thread_name}_") and got == size)


async def test_a_stopped_pool_ends_its_checks_at_once_and_refuses_more() -> None:
    hashing = PasswordHashing(workers=1)
    stored = hashing.hash(PASSWORD)
    inside, go = threading.Event(), threading.Event()
    verify = hashing.verify

    def held(password_hash: str | None, password: str) -> bool:
        inside.set()
        go.wait(HELD_S)
        return verify(password_hash, password)

    hashing.verify = held  # type: ignore[method-assign]
    checks = asyncio.gather(*(hashing.check_off_loop(stored, PASSWORD) for _ in range(3)), return_exceptions=True)

    async def running() -> bool:
        return inside.is_set()

    await wait_until_async(running, deadline_s=30, what="a check running in the pool", poll_s=0.01)
    closing = asyncio.create_task(hashing.close())
    try:
        # One check runs in the pool's thread (held there), two wait behind it: all three end
        # with the refusal while the running one is still held.
        ended = await asyncio.wait_for(checks, timeout=30)
    finally:
        go.set()
    await asyncio.wait_for(closing, timeout=30)

    assert [type(outcome) for outcome in ended] == [PasswordHashingStopped] * 3, ended
    assert _threads_of(hashing) == []  # each thread ended, its kept block with it
    with pytest.raises(PasswordHashingStopped, match="shutting down.*not checked") as refused:
        await hashing.check_off_loop(stored, PASSWORD)
    assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "5"}
    with pytest.raises(PasswordHashingStopped):
        await hashing.hash_off_loop(PASSWORD)

    hashing.verify = verify  # type: ignore[method-assign]
    await hashing.start()  # the app started again
    assert await hashing.check_off_loop(stored, PASSWORD) == PasswordCheck(right=True)
    await hashing.close()
    assert _threads_of(hashing) == []


async def test_two_hashings_in_one_process_answer_right_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two instances of identity in one process, of other parameters: each pool keeps blocks of
    its own size, one per thread, and every answer is right, whichever made the hash."""
    made = _blocks_made(monkeypatch)
    first, second = PasswordHashing(workers=2), PasswordHashing(memory_kib=24576, workers=2)
    hashes = {"first": first.hash(PASSWORD), "second": second.hash(PASSWORD)}
    asks = [
        (hashing, made_by, password)
        for hashing in (first, second)
        for made_by in hashes
        for password in (PASSWORD, WRONG)
    ] * 3
    try:
        answers = await asyncio.gather(*(hashing.check_off_loop(hashes[by], password) for hashing, by, password in asks))
    finally:
        await first.close()
        await second.close()

    for (hashing, made_by, password), answer in zip(asks, answers, strict=True):
        own = (hashing is first) == (made_by == "first")
        assert answer.right == (password == PASSWORD), (hashing, made_by, password)
        assert (answer.new_hash is not None) == (answer.right and not own), (hashing, made_by, password)
    for hashing in (first, second):
        kept = _kept_per_thread(hashing, made)
        assert 1 <= len(kept) <= hashing.workers and set(kept.values()) == {1}, kept


async def test_a_check_cancelled_while_argon2_runs_leaves_the_pool_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's task is cancelled while argon2 runs in the pool's thread (held in its
    allocation): the thread finishes and keeps its block, and the next checks are right."""
    hashing = PasswordHashing(workers=2)
    stored = hashing.hash(PASSWORD)
    go = threading.Event()
    made = _blocks_made(monkeypatch, hold_first=go)
    try:
        cancelled = asyncio.create_task(hashing.check_off_loop(stored, PASSWORD))

        async def in_argon2() -> bool:
            return bool(made)

        await wait_until_async(in_argon2, deadline_s=30, what="argon2 running the check", poll_s=0.01)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        go.set()
        answers = await asyncio.gather(*(hashing.check_off_loop(stored, password) for password in [PASSWORD, WRONG] * 8))
    finally:
        go.set()
        await hashing.close()

    assert [answer.right for answer in answers] == [True, False] * 8
    kept = _kept_per_thread(hashing, made)  # the cancelled check's block included
    assert 1 <= len(kept) <= hashing.workers and set(kept.values()) == {1}, kept
