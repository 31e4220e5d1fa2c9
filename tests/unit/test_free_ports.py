"""The tests' free ports (tests/support/ports.py): a port claimed by one living test process is
never handed to another, however the kernel picks; a dead process's claims are taken over; and
pytest-xdist hands out whole modules, and whole packages whose tests share a suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ports
from tests.support.scheduling import SuiteScopeScheduling

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(ports, "CLAIMS", tmp_path)
    monkeypatch.setattr(ports, "_claimed", set())
    return tmp_path


def other_process_claims(claims: Path, count: int) -> tuple[subprocess.Popen[str], list[int]]:
    """A living process that claimed `count` ports in `claims` (and holds them until stdin closes)."""
    code = (
        "import sys; from pathlib import Path; from tests.support import ports; "
        f"ports.CLAIMS = Path({str(claims)!r}); print(*ports.free_ports({count}), flush=True); sys.stdin.read()"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    return process, [int(port) for port in process.stdout.readline().split()]


def test_ports_claimed_by_a_living_process_are_never_handed_out(
    claims: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder, held = other_process_claims(claims, 3)
    try:
        assert len(set(held)) == 3 and all(
            (claims / str(port)).read_text() == f"{holder.pid}\n" for port in held
        )
        # The kernel offers the held ports first (they are not bound: a suite binds them later).
        offered = iter([*held, *held])
        real = ports._unbound_port
        monkeypatch.setattr(ports, "_unbound_port", lambda exclude: next(offered, None) or real(exclude))
        mine = ports.free_ports(3)
        assert not set(mine) & set(held), (mine, held)
        assert len(set(mine)) == 3
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    # Released when the holder exited; mine are still claimed, by me.
    assert not any((claims / str(port)).exists() for port in held)
    assert all((claims / str(port)).read_text() == f"{os.getpid()}\n" for port in mine)


def test_the_claims_of_a_dead_process_are_taken_over(claims: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = ports._unbound_port(exclude=[])
    assert stale is not None
    (claims / str(stale)).write_text(f"{int(dead.stdout)}\n")
    offered = iter([stale])
    monkeypatch.setattr(ports, "_unbound_port", lambda exclude: next(offered))
    assert ports.free_ports(1) == [stale]
    assert (claims / str(stale)).read_text() == f"{os.getpid()}\n"


def test_a_process_never_hands_out_a_port_twice(claims: Path) -> None:
    first, second = ports.free_ports(20), ports.free_ports(20)
    assert len(set(first) | set(second)) == 40


@pytest.mark.parametrize(
    ("nodeid", "scope"),
    [
        ("tests/e2e/test_dead_letters.py::test_a_poison_event", "tests/e2e/"),
        ("tests/browser/test_takeover.py::test_story[da]", "tests/browser/"),
        ("tests/integration/test_login.py::test_login[a::b]", "tests/integration/test_login.py"),
        ("tests/portal/test_login_pages.py::test_a[anna@example.dk]", "tests/portal/test_login_pages.py"),
        ("tests/unit/test_envelope.py::TestEnvelope::test_round_trip", "tests/unit/test_envelope.py"),
    ],
)
def test_xdist_hands_out_modules_and_the_packages_that_share_a_suite(nodeid: str, scope: str) -> None:
    assert SuiteScopeScheduling._split_scope(object.__new__(SuiteScopeScheduling), nodeid) == scope  # noqa: SLF001
