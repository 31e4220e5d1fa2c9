"""Free TCP ports on 127.0.0.1 for the servers the tests start.

A port is free when the kernel hands it out for a bind to port 0, but it stays free only until
somebody binds it: a suite binds its ports seconds after they are chosen, and meanwhile another
test process (an xdist worker, or the other database's run beside this one) may be handed the
same port. So every port handed out is also claimed with a file of its own in a directory all
test processes share (created exclusively, naming the claiming process): a port another living
process claimed is never handed out again. A process's claims are released when it exits; the
claims of a process that died without releasing them are taken over."""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import tempfile
import threading
from pathlib import Path

CLAIMS = Path(tempfile.gettempdir()) / "adgang-test-ports"
_ATTEMPTS = 1000
_lock = threading.Lock()
_claimed: set[int] = set()


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1, none handed to another living test process."""
    ports: list[int] = []
    with _lock:
        for _ in range(_ATTEMPTS):
            if len(ports) == count:
                return ports
            port = _unbound_port(exclude=ports)
            if port is not None and _claim(port):
                ports.append(port)
    raise RuntimeError(f"no {count} free ports on 127.0.0.1 after {_ATTEMPTS} attempts (claims in {CLAIMS})")


def _unbound_port(exclude: list[int]) -> int | None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    return None if port in exclude or port in _claimed else port


def _claim(port: int) -> bool:
    """Claim `port` for this process: False when another living process holds it."""
    CLAIMS.mkdir(mode=0o777, exist_ok=True)
    path = CLAIMS / str(port)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if _owner_alive(path):
                return False
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a claim left by a process that died without releasing it
            continue
        with os.fdopen(fd, "w") as claim:
            claim.write(f"{os.getpid()}\n")
        if not _claimed:
            atexit.register(_release)
        _claimed.add(port)
        return True
    return False


def _owner_alive(path: Path) -> bool:
    try:
        pid = int(path.read_text().strip() or "0")
    except (OSError, ValueError):
        return True  # being written by its owner right now
    if pid <= 0:
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _release() -> None:
    for port in _claimed:
        with contextlib.suppress(OSError):
            path = CLAIMS / str(port)
            if path.read_text().strip() == str(os.getpid()):
                path.unlink()
    _claimed.clear()
