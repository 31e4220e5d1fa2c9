"""How identity hashes and checks passwords (S7): argon2id with the parameters of its settings,
never weaker than OWASP's minimum (docs/security.md, Password hashing).

A password is checked with exactly one argon2 verification whether or not the login exists
(equal timing): a login without a hash is checked against a dummy hash made with the same
parameters. A right password whose hash was made with other parameters (an older default, or
settings changed since) gets a new hash, to be stored where the success is recorded.

Checks and hashes run off the event loop on a pool of `workers` threads of their own (the
machine's cores by default): argon2 is CPU bound and lets go of the GIL, so more threads than
cores only make each login wait longer and hold more memory at once. Each pool thread keeps
the block a verification works in (`memory_kib`: 19 MiB by default) and reuses it for the
next one: argon2 wipes it when a verification ends, and a fresh block of that size, taken
from and given back to the system each time (services/cli.py keeps glibc from holding on to
such blocks), costs the kernel about 10 ms of page faults per verification, half as much
again as argon2 itself (docs/security.md, Password hashing).

The pool lives as long as the API that checks (`close`, on the app's shutdown): its threads
end, and their kept blocks with them. A check still queued or running then ends at once with
`PasswordHashingStopped` (a 503), and so does any check asked for until the app starts again
(`start`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import itertools
import os
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from _argon2_cffi_bindings import ffi, lib
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from argon2.low_level import core, error_to_str

from shared.problems import ServiceUnavailable

# OWASP Password Storage Cheat Sheet, argon2id: "a minimum configuration of 19 MiB of memory,
# an iteration count of 2, and 1 degree of parallelism".
OWASP_MEMORY_KIB = 19 * 1024
OWASP_TIME_COST = 2
OWASP_PARALLELISM = 1

ARGON2_BLOCK_BYTES = 1024  # argon2's memory is counted in blocks of 1 KiB (m_cost)


def too_weak(*, memory_kib: int, time_cost: int, parallelism: int) -> str | None:
    """Why these parameters are refused, or None: each must be at least OWASP's minimum."""
    below = [
        f"{name}={value} is below {floor}"
        for name, value, floor in (
            ("password_hash_memory_kib", memory_kib, OWASP_MEMORY_KIB),
            ("password_hash_time_cost", time_cost, OWASP_TIME_COST),
            ("password_hash_parallelism", parallelism, OWASP_PARALLELISM),
        )
        if value < floor
    ]
    if not below:
        return None
    return (
        "password hashing is weaker than OWASP's minimum for argon2id (memory 19456 KiB, "
        f"time cost 2, parallelism 1): {'; '.join(below)}"
    )


class PasswordHashingStopped(ServiceUnavailable):
    """A check or hash asked of a pool that has stopped, or not finished before it stopped:
    the password was not checked (nothing was decided), and the request may be sent again."""

    RETRY_AFTER_S = 5

    def __init__(self) -> None:
        super().__init__(
            "Password checks have stopped: this instance of identity's API is shutting down. The "
            "password was not checked; send the request again.",
            retry_after=self.RETRY_AFTER_S,
        )


@dataclass(frozen=True)
class PasswordCheck:
    """The outcome of one password check: whether it was right, and, when it was right and the
    stored hash has other parameters than the configured ones, the password's new hash."""

    right: bool
    new_hash: str | None = None


class _KeptBlocks(threading.local):
    """The memory argon2 works in, one block per thread, kept between verifications up to
    `keep_bytes`; a larger block (a hash of stronger parameters than the configured ones) is
    made for its verification and dropped after it."""

    kept: Any = None  # a cffi uint8_t[] of `keep_bytes`
    once: Any = None


def _new_block(size: int) -> Any:
    """`size` bytes for argon2 to work in (cffi clears them), or MemoryError."""
    return ffi.new("uint8_t[]", size)


class _ReusedMemory:
    """argon2's allocation callbacks (`argon2_context.allocate_cbk` and `free_cbk`), handing
    out each thread's kept block. argon2 clears its memory before it calls `free_cbk`."""

    def __init__(self, keep_bytes: int) -> None:
        self.keep_bytes = keep_bytes
        self._blocks = _KeptBlocks()
        # Kept on the instance: the C callbacks live as long as these objects do.
        self.allocate = ffi.callback("int(uint8_t **, size_t)", self._allocate, error=-1)
        self.free = ffi.callback("void(uint8_t *, size_t)", self._free)

    def _allocate(self, memory: Any, size: int) -> int:
        blocks = self._blocks
        if size > self.keep_bytes:
            try:
                blocks.once = _new_block(size)
            except MemoryError:  # argon2 answers ARGON2_MEMORY_ALLOCATION_ERROR, as for malloc's NULL
                memory[0] = ffi.NULL
                return -1
            memory[0] = blocks.once
            return 0
        if blocks.kept is None:  # this thread's first verification
            blocks.kept = _new_block(self.keep_bytes)
        memory[0] = blocks.kept
        return 0

    def _free(self, memory: Any, size: int) -> None:
        self._blocks.once = None


# A stored hash as argon2's own decoder (`decode_string`, which argon2-cffi's `verify` runs)
# takes it: the fields in this order, decimals without a sign or leading zeros, the version
# optional (argon2 1.0, 0x10, when absent), base64 of the standard alphabet without padding.
_ENCODED = re.compile(
    r"\$(?P<type>argon2id|argon2i|argon2d)(?:\$v=(?P<v>0|[1-9][0-9]*))?"
    r"\$m=(?P<m>0|[1-9][0-9]*),t=(?P<t>0|[1-9][0-9]*),p=(?P<p>0|[1-9][0-9]*)"
    r"\$(?P<salt>[A-Za-z0-9+/]*)\$(?P<digest>[A-Za-z0-9+/]*)"
)
_TYPES = {"argon2id": Type.ID, "argon2i": Type.I, "argon2d": Type.D}
_UINT32_MAX = 2**32 - 1


@dataclass(frozen=True)
class _Stored:
    type: Type
    version: int
    memory_cost: int
    time_cost: int
    parallelism: int
    salt: bytes
    digest: bytes


def _unbase64(text: str) -> bytes:
    """The PHC string format's base64: standard alphabet, no padding, and, as argon2's decoder
    wants it, unused bits of the last character zero (one spelling per value)."""
    decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    if base64.b64encode(decoded).decode().rstrip("=") != text:
        raise ValueError("not the canonical base64 of its bytes")
    return decoded


def _decode(password_hash: str) -> _Stored:
    """The parameters, salt and digest of a stored hash; InvalidHashError for any string
    argon2's decoder refuses (a sign, leading zeros, a value beyond 32 bits, padding, …)."""
    found = _ENCODED.fullmatch(password_hash)
    if found is None:
        raise InvalidHashError("not an argon2 hash in the PHC string format")
    numbers = [int(found[name]) if found[name] is not None else 0x10 for name in ("v", "m", "t", "p")]
    if any(number > _UINT32_MAX for number in numbers):
        raise InvalidHashError("a parameter beyond 32 bits")
    try:
        salt, digest = _unbase64(found["salt"]), _unbase64(found["digest"])
    except ValueError as error:
        raise InvalidHashError(str(error)) from error
    version, memory_cost, time_cost, parallelism = numbers
    return _Stored(_TYPES[found["type"]], version, memory_cost, time_cost, parallelism, salt, digest)


_HASHINGS = itertools.count(1)


class PasswordHashing:
    """argon2id with fixed parameters (`IdentitySettings.password_hashing()`).

    `verify` and `check` recompute the stored hash with its own parameters and salt through
    argon2's `argon2_ctx` (argon2-cffi's `low_level.core`) in a kept block, and compare the
    results in constant time, as argon2's own verification does; `reuse_memory=False` gives the
    same answers through argon2-cffi's `PasswordHasher.verify`, with a fresh block each time."""

    def __init__(
        self,
        *,
        memory_kib: int = OWASP_MEMORY_KIB,
        time_cost: int = OWASP_TIME_COST,
        parallelism: int = OWASP_PARALLELISM,
        workers: int | None = None,
        reuse_memory: bool = True,
    ) -> None:
        if weak := too_weak(memory_kib=memory_kib, time_cost=time_cost, parallelism=parallelism):
            raise ValueError(weak)
        if workers is not None and workers < 1:
            raise ValueError(f"password hashing needs at least one worker thread, not {workers}")
        self.memory_kib, self.time_cost, self.parallelism = memory_kib, time_cost, parallelism
        self.workers = workers or os.cpu_count() or 1
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        self._memory = _ReusedMemory(memory_kib * ARGON2_BLOCK_BYTES) if reuse_memory else None
        # Each hashing's threads named apart (argon2-1_0, argon2-2_0, …), in thread dumps too.
        self.thread_name = f"argon2-{next(_HASHINGS)}"
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._stopped = False
        # What the callers of checks in the pool are waiting for (`_off_loop`), to end at `close`.
        self._waiting: set[asyncio.Future[Any]] = set()
        # Same parameters as every new hash: checking a login without a hash costs the same.
        self.dummy_hash = self._hasher.hash("an unguessable dummy password to spend the same time")

    def __repr__(self) -> str:
        return f"PasswordHashing(m={self.memory_kib} KiB, t={self.time_cost}, p={self.parallelism})"

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """Always one argon2 verification, whether or not there is a hash (equal timing)."""
        try:
            right = self._verify(password_hash or self.dummy_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        return right and password_hash is not None

    def _verify(self, password_hash: str, password: str) -> bool:
        # A JSON string may hold a lone surrogate ("\ud800"), which UTF-8 cannot encode: no
        # password was ever hashed with one, so it is checked (for equal timing) and is wrong,
        # not an error.
        secret = password.encode("utf-8", "surrogatepass")
        if self._memory is None:
            return self._hasher.verify(password_hash, secret)
        found = _decode(password_hash)
        salt, expected = found.salt, found.digest
        out = ffi.new("uint8_t[]", len(expected))
        context = ffi.new(
            "argon2_context *",
            {
                "out": out,
                "outlen": len(expected),
                "pwd": ffi.from_buffer(secret),
                "pwdlen": len(secret),
                "salt": ffi.from_buffer(salt),
                "saltlen": len(salt),
                "secret": ffi.NULL,
                "secretlen": 0,
                "ad": ffi.NULL,
                "adlen": 0,
                "t_cost": found.time_cost,
                "m_cost": found.memory_cost,
                "lanes": found.parallelism,
                "threads": found.parallelism,
                "version": found.version,
                "allocate_cbk": self._memory.allocate,
                "free_cbk": self._memory.free,
                "flags": lib.ARGON2_DEFAULT_FLAGS,
            },
        )
        status = core(context, found.type.value)
        if status != lib.ARGON2_OK:
            raise VerificationError(error_to_str(status))
        return hmac.compare_digest(ffi.buffer(out)[:], expected)

    def needs_rehash(self, password_hash: str) -> bool:
        return self._hasher.check_needs_rehash(password_hash)

    def check(self, password_hash: str | None, password: str) -> PasswordCheck:
        """`verify`, and for a right password whose hash has other parameters, its new hash
        (one more argon2 hash, once per login whose parameters changed)."""
        if not self.verify(password_hash, password):
            return PasswordCheck(right=False)
        assert password_hash is not None
        return PasswordCheck(right=True, new_hash=self.hash(password) if self.needs_rehash(password_hash) else None)

    # The same, off the event loop, on this hashing's own threads.

    async def verify_off_loop(self, password_hash: str | None, password: str) -> bool:
        return await self._off_loop(self.verify, password_hash, password)

    async def check_off_loop(self, password_hash: str | None, password: str) -> PasswordCheck:
        return await self._off_loop(self.check, password_hash, password)

    async def hash_off_loop(self, password: str) -> str:
        return await self._off_loop(self.hash, password)

    async def _off_loop(self, call: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[Any] = loop.create_future()
        with self._pool_lock:
            work = self._running_pool().submit(call, *args)
            self._waiting.add(outcome)
        work.add_done_callback(lambda done: _settle_soon(outcome, done))
        try:
            return await outcome
        finally:
            with self._pool_lock:
                self._waiting.discard(outcome)
            # A caller that went away (its task cancelled) leaves no queued check behind; one
            # that argon2 already runs finishes in its thread, which keeps its block.
            work.cancel()

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            return self._running_pool()

    def _running_pool(self) -> ThreadPoolExecutor:
        """The pool, its threads started with its first work; refused once stopped. Under
        `_pool_lock`."""
        if self._stopped:
            raise PasswordHashingStopped()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=self.thread_name)
        return self._pool

    async def start(self) -> None:
        """Take checks again after `close` (the app started again); the pool's threads start
        with the first check."""
        with self._pool_lock:
            self._stopped = False

    async def close(self) -> None:
        """Stop the pool: from now on (until `start`) every check is refused with
        `PasswordHashingStopped`; each check still queued or running ends at once with it; the
        threads end (a running argon2 is not interrupted: it is waited for, a verification's
        time), and each thread's kept block is freed with it."""
        with self._pool_lock:
            self._stopped = True
            pool, self._pool = self._pool, None
            waiting, self._waiting = self._waiting, set()
        for outcome in waiting:
            _stop_soon(outcome)
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


def _settle_soon(outcome: asyncio.Future[Any], done: Future[Any]) -> None:
    """From the pool's thread: `outcome`, in its event loop, as `done` ended."""

    def settle() -> None:
        if outcome.done():  # its caller went away, or `close` ended it
            return
        if done.cancelled():
            outcome.set_exception(PasswordHashingStopped())
        elif (error := done.exception()) is not None:
            outcome.set_exception(error)
        else:
            outcome.set_result(done.result())

    with contextlib.suppress(RuntimeError):  # its event loop has closed: no one waits
        outcome.get_loop().call_soon_threadsafe(settle)


def _stop_soon(outcome: asyncio.Future[Any]) -> None:
    def stop() -> None:
        if not outcome.done():
            outcome.set_exception(PasswordHashingStopped())

    with contextlib.suppress(RuntimeError):  # its event loop has closed: no one waits
        outcome.get_loop().call_soon_threadsafe(stop)
