"""What a process of the suite holds (issue 14: each process at most 150 MB, the suite at most
1 GB): it imports what its role uses, not what another role does, and it gives large blocks
back to the system once they are freed. Each is seen in a fresh interpreter."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from services.registry import SERVICES

ROOT = Path(__file__).resolve().parents[2]

# Nothing a running API or worker does needs these: Alembic only migrates (the suite, `adgang
# migrate`), fpdf2 is loaded by the first PDF billing renders, asyncpg and SQLAlchemy's
# PostgreSQL dialect only on PostgreSQL, rich and pygments are httpx's command-line client.
NO_ROLE = {"alembic", "mako", "fpdf", "numpy", "rich", "pygments", "asyncpg"}
NOT_IN_AN_API = {"faust", "aiohttp", "mode"}
# No worker serves HTTP, so none loads FastAPI (~7 MB). Identity's and onboarding's tables hold
# their rate limits, whose module takes Starlette's Request (~1 MB); the others load no Starlette.
NOT_IN_A_WORKER = {"uvicorn", "fastapi", "services.portal"}
WORKERS_WITHOUT_STARLETTE = {"billing", "notifier"}
# httpx (~5 MB) is for the APIs' JWKS client and the notifier's deliveries (SMS gateway, billing's
# documents); a worker that makes no HTTP request does not load it.
WORKERS_WITHOUT_HTTPX = {"billing", "identity", "onboarding"}

BUILD = """
import json, sys
from services.registry import SERVICES
role, service = sys.argv[1], sys.argv[2]
parts = SERVICES[service]
if role == "api":
    import uvicorn  # what `adgang api` serves it with
    parts.create_api()
else:
    parts.create_worker()
print(json.dumps(sorted(sys.modules)))
"""


def _run(
    script: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: int = 120
) -> Any:
    """`script` run with `args` in a fresh interpreter of the project: what it printed last, as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        env={**(os.environ if env is None else env), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _roles() -> list[tuple[str, str]]:
    roles = [("api", name) for name, parts in SERVICES.items() if parts.has_api]
    return roles + [("worker", name) for name, parts in SERVICES.items() if parts.has_worker]


def _modules_of(role: str, service: str, var_dir: Path) -> set[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ADGANG_")}
    for parts in SERVICES.values():
        env[f"{parts.env_prefix}VAR_DIR"] = str(var_dir)
    # A build takes seconds; a machine busy with other work may take minutes.
    return set(_run(BUILD, role, service, env=env, cwd=var_dir, timeout=600))


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], set[str]]:
    var_dir = tmp_path_factory.mktemp("roles")
    roles = _roles()
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = pool.map(lambda role: _modules_of(*role, var_dir), roles)
        return dict(zip(roles, found, strict=True))


def _loaded(modules: set[str], packages: set[str]) -> set[str]:
    return {name for name in packages if name in modules}


@pytest.mark.slow  # one interpreter per role, each building its parts
@pytest.mark.parametrize(("role", "service"), _roles())
def test_a_process_loads_only_what_its_role_uses(
    modules: dict[tuple[str, str], set[str]], role: str, service: str
) -> None:
    mine = modules[(role, service)]
    assert "sqlalchemy" in mine and "pydantic" in mine  # the build did run
    assert not _loaded(mine, NO_ROLE)
    if role == "api":
        assert "fastapi" in mine
        assert not _loaded(mine, NOT_IN_AN_API)
    else:
        assert "faust" in mine
        assert not _loaded(mine, NOT_IN_A_WORKER)
        if service in WORKERS_WITHOUT_STARLETTE:
            assert not _loaded(mine, {"starlette"})
        if service in WORKERS_WITHOUT_HTTPX:
            assert not _loaded(mine, {"httpx"})
    if service != "portal":
        assert not any(name.startswith("services.portal") for name in mine)


HASH_IN_THREADS = """
import json, sys
from concurrent.futures import ThreadPoolExecutor
from services.cli import _return_large_blocks_to_the_system
from services.identity.passwords import OWASP_MEMORY_KIB, OWASP_PARALLELISM, OWASP_TIME_COST
from argon2 import PasswordHasher

def rss_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

if sys.argv[1] == "as-a-role-starts":
    _return_large_blocks_to_the_system()
hasher = PasswordHasher(memory_cost=OWASP_MEMORY_KIB, time_cost=OWASP_TIME_COST, parallelism=OWASP_PARALLELISM)
before = rss_kib()
with ThreadPoolExecutor(4) as pool:
    for _ in range(2):
        list(pool.map(lambda i: hasher.hash(f"password {i}"), range(8)))
print(json.dumps({"grown_kib": rss_kib() - before}))
"""


def _grown_after_hashing(mode: str) -> int:
    grown: int = _run(HASH_IN_THREADS, mode)["grown_kib"]
    return grown


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the threshold is glibc's")
def test_password_hashes_in_parallel_threads_leave_no_heap_behind() -> None:
    # argon2id takes 19 MiB a hash (S7). Without a fixed mmap threshold glibc keeps a freed
    # block that large in the heap of each thread that hashed: four threads held ~4 x 19 MiB.
    hash_kib = 19 * 1024
    assert _grown_after_hashing("as-a-role-starts") < hash_kib
    assert _grown_after_hashing("glibc-default") > 2 * hash_kib  # what the setting is for


CHECK_IN_POOL = """
import asyncio, json, sys
from services.cli import _return_large_blocks_to_the_system
from services.identity.passwords import PasswordHashing

def rss_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

_return_large_blocks_to_the_system()
hashing = PasswordHashing(workers=2)
stored = hashing.hash("a long enough passphrase")

async def checks():
    for _ in range(3):
        await asyncio.gather(*(hashing.check_off_loop(stored, "a long enough passphrase") for _ in range(8)))
    if sys.argv[1] == "then-stop":
        await hashing.close()  # as identity's API stops

before = rss_kib()
asyncio.run(checks())
print(json.dumps({"grown_kib": rss_kib() - before}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the threshold is glibc's")
def test_password_checks_keep_one_block_per_pool_thread_and_no_more() -> None:
    # Checks reuse a block per pool thread (services/identity/passwords.py): 24 checks, 8 at a
    # time, on a pool of two threads hold two blocks, not one per check or per waiting login.
    hash_kib = 19 * 1024
    grown: int = _run(CHECK_IN_POOL, "and-keep")["grown_kib"]
    assert grown < 2 * hash_kib + hash_kib // 2
    assert grown > hash_kib  # the blocks were kept: what the next test sees given back


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the threshold is glibc's")
def test_a_stopped_password_pool_gives_its_blocks_back() -> None:
    # Identity's API closes its pool as it stops: the threads end, and their kept blocks with
    # them (tests build many APIs in one process).
    hash_kib = 19 * 1024
    grown: int = _run(CHECK_IN_POOL, "then-stop")["grown_kib"]
    assert grown < hash_kib // 2
