"""A throwaway PostgreSQL server for tests.

``ThrowawayPostgres`` runs ``initdb`` into a fresh temporary directory, starts a server on
a free port on 127.0.0.1 tuned for speed rather than durability, hands out SQLAlchemy URLs
for databases created on it and removes everything again on ``stop()``.

    with ThrowawayPostgres() as pg:
        url = pg.create_database("registry")   # postgresql+asyncpg://postgres@127.0.0.1:PORT/registry

PostgreSQL refuses to run as root, so when the tests run as root (as CI does) the server
binaries are run as the unprivileged ``postgres`` system user via ``setpriv`` (or
``runuser``), and the temporary directory is handed to that user.

Servers are stopped on ``stop()``, on leaving the ``with`` block and, as a safety net, at
interpreter exit. A run that dies without running ``atexit`` handlers (SIGKILL, a killed CI
job) leaves its server behind; the next ``start()`` stops and removes servers whose owning
process no longer exists.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import asyncpg

__all__ = [
    "PG_BIN_ENV",
    "PostgresStartError",
    "PostgresUnavailable",
    "ThrowawayPostgres",
    "find_pg_bin",
]

PG_BIN_ENV = "ADGANG_PG_BIN"
"""Environment variable naming a directory holding ``initdb``, ``pg_ctl`` and ``postgres``."""

_SYSTEM_PG_ROOT = Path("/usr/lib/postgresql")
_REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")
_SYSTEM_USER = "postgres"  # unprivileged OS user the server runs as when we are root
_SUPERUSER = "postgres"  # database superuser created by initdb
_HOST = "127.0.0.1"
_DIR_PREFIX = "adgang-pg-"
_OWNER_FILE = "owner.pid"
_DATA_DIR = "data"
_LOG_FILE = "postgres.log"
_NAME_RE = re.compile(r"[a-z0-9_]{1,63}")
# Unix-domain socket paths are limited to 107 bytes; leave room for "/.s.PGSQL.65535.lock".
_MAX_SOCKET_DIR_LEN = 107 - len("/.s.PGSQL.65535.lock")
_PORT_ATTEMPTS = 5
_BIND_FAILURE_MARKERS = ("could not bind", "Address already in use", "could not create any TCP")

_T = TypeVar("_T")


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be run on this machine: binaries or a required OS facility is missing.

    This is the only error that should make a test *skip*; everything else is a failure.
    """


class PostgresStartError(RuntimeError):
    """The PostgreSQL binaries exist but the server could not be initialised or started."""


def find_pg_bin(override: str | os.PathLike[str] | None = None) -> Path:
    """Return the directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Looks at, in order: ``override``, the ``ADGANG_PG_BIN`` environment variable, the newest
    ``/usr/lib/postgresql/<version>/bin`` and the directory of ``pg_ctl`` found on ``PATH``
    (symlinks resolved). Raises ``PostgresUnavailable`` naming what is missing.
    """
    explicit = override if override is not None else os.environ.get(PG_BIN_ENV) or None
    if explicit is not None:
        bin_dir = Path(explicit)
        missing = _missing_binaries(bin_dir)
        if missing:
            source = "bin_dir argument" if override is not None else PG_BIN_ENV
            raise PostgresUnavailable(
                f"{source}={bin_dir} does not contain the PostgreSQL server binaries {', '.join(missing)}"
            )
        return bin_dir

    candidates = [
        (_version_key(bin_dir.parent.name), bin_dir)
        for bin_dir in _SYSTEM_PG_ROOT.glob("*/bin")
        if not _missing_binaries(bin_dir)
    ]
    if candidates:
        return max(candidates)[1]

    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        bin_dir = Path(on_path).resolve().parent
        missing = _missing_binaries(bin_dir)
        if not missing:
            return bin_dir
        raise PostgresUnavailable(
            f"pg_ctl found on PATH at {on_path}, but {bin_dir} lacks {', '.join(missing)}; "
            f"set {PG_BIN_ENV} to a directory holding {', '.join(_REQUIRED_BINARIES)}"
        )

    raise PostgresUnavailable(
        "no PostgreSQL server binaries found: looked for "
        f"{', '.join(_REQUIRED_BINARIES)} in {_SYSTEM_PG_ROOT}/*/bin and for pg_ctl on PATH. "
        f"Install them (Debian: apt-get install postgresql) or set {PG_BIN_ENV}."
    )


class ThrowawayPostgres:
    """A private, disposable PostgreSQL server listening on 127.0.0.1.

    Use as a context manager or call ``start()`` / ``stop()`` explicitly. Durability is
    switched off (``fsync``, ``synchronous_commit``, ``full_page_writes``); the data
    directory lives in a temporary directory that ``stop()`` deletes. Authentication is
    ``trust`` for the superuser ``postgres``. Methods are safe to call from inside a
    running event loop (they do their async work on a private thread).
    """

    def __init__(
        self,
        *,
        bin_dir: str | os.PathLike[str] | None = None,
        startup_timeout: float = 60.0,
        max_connections: int = 200,
        shared_buffers: str = "32MB",
        tmp_root: str | os.PathLike[str] | None = None,
    ) -> None:
        """Configure the server; nothing happens until ``start()``.

        ``bin_dir`` overrides binary discovery (see ``find_pg_bin``); ``tmp_root`` is where
        the temporary directory is created (default: ``tempfile.gettempdir()``, falling back
        to ``/tmp`` if that is unusable).
        """
        self._bin_dir_override = bin_dir
        self._startup_timeout = startup_timeout
        self._max_connections = max_connections
        self._shared_buffers = shared_buffers
        self._tmp_root = Path(tmp_root) if tmp_root is not None else None
        self._lock = threading.RLock()
        self._bin_dir: Path | None = None
        self._base_dir: Path | None = None
        self._port: int | None = None
        self._runner: _Runner | None = None

    # -- context manager -------------------------------------------------------------

    def __enter__(self) -> Self:
        """Start the server (if not already running) and return ``self``."""
        if not self.is_running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server and remove its files."""
        self.stop()

    # -- public properties -----------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """True between a successful ``start()`` and ``stop()``."""
        return self._port is not None

    @property
    def host(self) -> str:
        """The address the server listens on (always ``127.0.0.1``)."""
        return _HOST

    @property
    def port(self) -> int:
        """The TCP port the server listens on. Raises ``RuntimeError`` if not running."""
        if self._port is None:
            raise RuntimeError("ThrowawayPostgres is not running; call start() first")
        return self._port

    @property
    def bin_dir(self) -> Path | None:
        """Directory of the PostgreSQL binaries in use (``None`` before ``start()``)."""
        return self._bin_dir

    @property
    def base_dir(self) -> Path | None:
        """Temporary directory holding data, socket and log (``None`` when not started)."""
        return self._base_dir

    @property
    def log_path(self) -> Path | None:
        """The server log file (``None`` when not started); deleted by ``stop()``."""
        return self._base_dir / _LOG_FILE if self._base_dir is not None else None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> Self:
        """Initialise a data directory, start the server and wait until it accepts connections.

        Raises ``PostgresUnavailable`` if PostgreSQL cannot run here at all, and
        ``PostgresStartError`` (with the relevant output) if initdb or startup fails. On
        failure everything created so far is cleaned up.
        """
        with self._lock:
            if self._base_dir is not None:
                raise RuntimeError("ThrowawayPostgres is already started")
            bin_dir = find_pg_bin(self._bin_dir_override)
            runner = _Runner.for_current_user()
            parent = self._choose_tmp_root(runner)
            _reap_orphans(parent, bin_dir, runner)

            base = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX, dir=parent))
            self._bin_dir, self._base_dir, self._runner = bin_dir, base, runner
            atexit.register(self.stop)
            try:
                (base / _OWNER_FILE).write_text(f"{os.getpid()}\n")
                runner.hand_over(base)
                self._initdb()
                self._write_config()
                self._launch()
            except BaseException:
                self.stop()
                raise
            return self

    def stop(self) -> None:
        """Stop the server immediately and delete its temporary directory. Idempotent."""
        with self._lock:
            base, runner, bin_dir = self._base_dir, self._runner, self._bin_dir
            if base is None:
                return
            atexit.unregister(self.stop)
            self._port = None
            try:
                if runner is not None and bin_dir is not None:
                    _stop_server(base / _DATA_DIR, bin_dir, runner, timeout=30.0)
            finally:
                if _postmaster_alive(base / _DATA_DIR):
                    # Never delete the data directory from under a live server.
                    raise PostgresStartError(f"could not stop the PostgreSQL server in {base}")
                shutil.rmtree(base, ignore_errors=True)
                self._base_dir = None
                self._runner = None

    def stop_server(self) -> None:
        """Stop the server as an operator would (``pg_ctl stop -m fast``: open connections are
        cut, nothing is lost) and keep its data and port for ``start_server()``."""
        with self._lock:
            if self._base_dir is None or self._runner is None or self._bin_dir is None:
                raise RuntimeError("ThrowawayPostgres is not running; call start() first")
            data = self._base_dir / _DATA_DIR
            self._runner.run(
                [str(self._bin_dir / "pg_ctl"), "stop", "-m", "fast", "-w", "-t", "30", "-D", str(data)],
                cwd=self._base_dir,
                timeout=45.0,
                what="pg_ctl stop",
            )

    def accepts_connections(self) -> bool:
        """Whether the server is up (not stopped by ``stop_server()``)."""
        return self._base_dir is not None and _postmaster_alive(self._base_dir / _DATA_DIR)

    def start_server(self) -> None:
        """Start the server stopped by ``stop_server()`` again, on the same port and data, and
        wait until it accepts connections."""
        with self._lock:
            if self._base_dir is None or self._runner is None or self._bin_dir is None:
                raise RuntimeError("ThrowawayPostgres is not running; call start() first")
            port = self.port
            deadline = time.monotonic() + self._startup_timeout
            self._runner.run(
                [
                    str(self._bin_dir / "pg_ctl"), "start",
                    "-w", "-t", str(max(1, int(self._startup_timeout))),
                    "-D", str(self._base_dir / _DATA_DIR),
                    "-l", str(self._base_dir / _LOG_FILE),
                    "-o", f"-p {port}",
                ],
                cwd=self._base_dir,
                timeout=self._startup_timeout + 15.0,
                what="pg_ctl start",
            )  # fmt: skip
            _run_async(functools.partial(_wait_until_accepting, port, deadline))

    # -- databases -------------------------------------------------------------------

    def url_for(self, name: str) -> str:
        """Return the SQLAlchemy URL of database ``name`` on this server without creating it."""
        _validate_name(name)
        return f"postgresql+asyncpg://{_SUPERUSER}@{_HOST}:{self.port}/{name}"

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create database ``name`` and return its SQLAlchemy (asyncpg) URL.

        ``name`` must be 1-63 characters of lowercase letters, digits and underscores.
        With ``template``, the new database is a copy of that database on this server (which
        nobody may be connected to; a session still closing is waited for, up to 10 s).
        Raises ``asyncpg.DuplicateDatabaseError`` if it already exists.
        """
        create_database_on(self.port, name, template=template)
        return self.url_for(name)

    # -- internals -------------------------------------------------------------------

    def _choose_tmp_root(self, runner: _Runner) -> Path:
        candidates = [self._tmp_root] if self._tmp_root is not None else []
        candidates += [Path(tempfile.gettempdir()), Path("/tmp")]  # noqa: S108
        problems: list[str] = []
        for candidate in candidates:
            candidate = candidate.resolve()
            if len(str(candidate)) + len(_DIR_PREFIX) + 8 + 1 > _MAX_SOCKET_DIR_LEN:
                problems.append(f"{candidate}: too long for a Unix socket path")
            elif not candidate.is_dir() or not os.access(candidate, os.W_OK | os.X_OK):
                problems.append(f"{candidate}: not a writable directory")
            elif not runner.can_traverse(candidate):
                problems.append(f"{candidate}: not traversable by user {runner.user_name}")
            else:
                return candidate
        raise PostgresStartError("no usable temporary directory: " + "; ".join(problems))

    def _initdb(self) -> None:
        assert self._base_dir is not None and self._bin_dir is not None
        assert self._runner is not None
        self._runner.run(
            [
                str(self._bin_dir / "initdb"),
                "-D", str(self._base_dir / _DATA_DIR),
                "-A", "trust",
                "-U", _SUPERUSER,
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            cwd=self._base_dir,
            timeout=max(self._startup_timeout, 60.0),
            what="initdb",
        )  # fmt: skip

    def _write_config(self) -> None:
        assert self._base_dir is not None
        socket_dir = str(self._base_dir).replace("'", "''")
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{socket_dir}'",
            "unix_socket_permissions": "0777",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": str(self._max_connections),
            "shared_buffers": f"'{self._shared_buffers}'",
            "logging_collector": "off",
        }
        lines = ["", "# ThrowawayPostgres (tests/support/postgres.py)"]
        lines += [f"{key} = {value}" for key, value in settings.items()]
        with (self._base_dir / _DATA_DIR / "postgresql.conf").open("a") as conf:
            conf.write("\n".join(lines) + "\n")

    def _launch(self) -> None:
        """Start the server on a free port, retrying with another port if it was taken."""
        assert self._base_dir is not None and self._bin_dir is not None
        assert self._runner is not None
        log = self._base_dir / _LOG_FILE
        new_log = ""
        for _attempt in range(_PORT_ATTEMPTS):
            port = _free_port()
            log_offset = log.stat().st_size if log.exists() else 0
            deadline = time.monotonic() + self._startup_timeout
            try:
                self._runner.run(
                    [
                        str(self._bin_dir / "pg_ctl"), "start",
                        "-w", "-t", str(max(1, int(self._startup_timeout))),
                        "-D", str(self._base_dir / _DATA_DIR),
                        "-l", str(log),
                        "-o", f"-p {port}",
                    ],
                    cwd=self._base_dir,
                    timeout=self._startup_timeout + 15.0,
                    what="pg_ctl start",
                )  # fmt: skip
            except PostgresStartError as exc:
                new_log = _read_from(log, log_offset)
                if any(marker in new_log for marker in _BIND_FAILURE_MARKERS):
                    _stop_server(self._base_dir / _DATA_DIR, self._bin_dir, self._runner, 30.0)
                    continue
                raise PostgresStartError(f"{exc}\n--- server log ---\n{new_log[-4000:]}") from None
            _run_async(functools.partial(_wait_until_accepting, port, deadline))
            self._port = port
            return
        raise PostgresStartError(
            f"could not bind a free port after {_PORT_ATTEMPTS} attempts; last server log:\n{new_log[-4000:]}"
        )


# -- running server binaries as the right user -------------------------------------------


class _Runner:
    """Runs PostgreSQL binaries as the current user, or as ``postgres`` when we are root."""

    def __init__(self, prefix: list[str], uid: int, gid: int, user_name: str, home: str) -> None:
        self.prefix = prefix
        self.uid = uid
        self.gid = gid
        self.user_name = user_name
        self.home = home
        self.is_switching = bool(prefix)

    @classmethod
    def for_current_user(cls) -> _Runner:
        """Build a runner; as root, one that drops to the ``postgres`` system user."""
        if os.geteuid() != 0:
            me = pwd.getpwuid(os.geteuid())
            return cls([], me.pw_uid, me.pw_gid, me.pw_name, me.pw_dir)
        try:
            pg = pwd.getpwnam(_SYSTEM_USER)
        except KeyError:
            raise PostgresUnavailable(
                f"running as root, PostgreSQL refuses to run as root, and there is no "
                f"'{_SYSTEM_USER}' system user to run it as "
                f"(create one: useradd --system --user-group {_SYSTEM_USER})"
            ) from None
        search_path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
        setpriv = shutil.which("setpriv", path=search_path)
        if setpriv is not None:
            prefix = [
                setpriv, f"--reuid={pg.pw_uid}", f"--regid={pg.pw_gid}", "--init-groups", "--",
            ]  # fmt: skip
        elif (runuser := shutil.which("runuser", path=search_path)) is not None:
            prefix = [runuser, "-u", _SYSTEM_USER, "--"]
        else:
            raise PostgresUnavailable(
                "running as root, PostgreSQL refuses to run as root, and neither setpriv nor "
                "runuser (util-linux) is available to drop to the postgres user"
            )
        return cls(prefix, pg.pw_uid, pg.pw_gid, pg.pw_name, pg.pw_dir)

    def hand_over(self, path: Path) -> None:
        """Give ``path`` to the server's user (a no-op unless we are switching users)."""
        if self.is_switching:
            os.chown(path, self.uid, self.gid)

    def can_traverse(self, path: Path) -> bool:
        """Whether the server's user may search ``path`` and all its ancestors."""
        if not self.is_switching:
            return True
        groups = set(os.getgrouplist(self.user_name, self.gid))
        for directory in (path, *path.parents):
            try:
                st = directory.stat()
            except OSError:
                return False
            if st.st_uid == self.uid:
                bit = stat.S_IXUSR
            elif st.st_gid in groups:
                bit = stat.S_IXGRP
            else:
                bit = stat.S_IXOTH
            if not st.st_mode & bit:
                return False
        return True

    def run(
        self, argv: list[str], *, cwd: Path, timeout: float, what: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as the server's user; raise ``PostgresStartError`` on failure."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", HOME=self.home)
        try:
            result = subprocess.run(
                [*self.prefix, *argv],
                cwd=cwd,  # must be accessible to the postgres user
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresStartError(f"{what} timed out after {timeout:.0f}s") from exc
        if check and result.returncode != 0:
            raise PostgresStartError(
                f"{what} failed (exit {result.returncode}) running as {self.user_name}:\n"
                f"{result.stdout.strip()}"
            )
        return result


def _stop_server(data_dir: Path, bin_dir: Path, runner: _Runner, timeout: float) -> None:
    """Stop the postmaster of ``data_dir`` (``pg_ctl stop -m immediate``, then SIGKILL)."""
    pid = _postmaster_pid(data_dir)
    if pid is None or not _pid_alive(pid):
        return
    cmd = [str(bin_dir / "pg_ctl"), "stop", "-m", "immediate", "-w", "-t", str(int(timeout))]
    with contextlib.suppress(PostgresStartError):  # a timeout; fall through to SIGKILL
        runner.run(
            [*cmd, "-D", str(data_dir)],
            cwd=data_dir.parent,
            timeout=timeout + 10.0,
            what="pg_ctl stop",
            check=False,
        )
    # The postmaster deletes postmaster.pid as the last thing it does on exit.
    if not _postmaster_alive(data_dir):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + timeout
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for exit, bounded by the deadline


def _reap_orphans(parent: Path, bin_dir: Path, runner: _Runner) -> None:
    """Stop and remove servers left in ``parent`` by test runs that died without cleanup."""
    for base in parent.glob(f"{_DIR_PREFIX}*"):
        try:
            if base.stat().st_uid != runner.uid:
                continue  # someone else's; not ours to touch
            owner = int((base / _OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue  # still being created, or not one of ours
        if _pid_alive(owner):
            continue
        data_dir = base / _DATA_DIR
        _stop_server(data_dir, bin_dir, runner, timeout=30.0)
        if not _postmaster_alive(data_dir):
            shutil.rmtree(base, ignore_errors=True)


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _postmaster_alive(data_dir: Path) -> bool:
    pid = _postmaster_pid(data_dir)
    return pid is not None and _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (an unreaped zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # "pid (comm) STATE ..."; comm may contain spaces and parentheses.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


# -- small helpers -----------------------------------------------------------------------


def _missing_binaries(bin_dir: Path) -> list[str]:
    return [name for name in _REQUIRED_BINARIES if not os.access(bin_dir / name, os.X_OK)]


def _version_key(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        return ()


def create_database_on(port: int, name: str, *, template: str | None = None) -> None:
    """Create database ``name`` on the throwaway server listening on ``port``
    (``ThrowawayPostgres.create_database``), for a caller that has only the server's URL."""
    _validate_name(name)
    if template is not None:
        _validate_name(template)
    statement = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")

    async def create() -> None:
        conn = await _connect(port, "postgres", connect_timeout=10.0)
        try:
            deadline = time.monotonic() + 10.0
            while True:
                try:
                    await conn.execute(statement)
                    return
                except asyncpg.ObjectInUseError:
                    # "source database is being accessed by other users": the backend of a
                    # connection just closed may not have exited yet.
                    if template is None or time.monotonic() >= deadline:
                        raise
                    await asyncio.sleep(0.05)
        finally:
            await conn.close()

    _run_async(create)


def _validate_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid database name {name!r}: use 1-63 lowercase letters, digits or underscores")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _run_async(factory: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine to completion on a private thread (works inside a running loop)."""

    def runner() -> _T:
        async def main() -> _T:
            return await factory()

        return asyncio.run(main())

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="throwaway-pg") as pool:
        return pool.submit(runner).result()


async def _connect(port: int, database: str, connect_timeout: float) -> asyncpg.Connection:
    # ssl=False: ignore any PGSSLMODE in the environment; the server has no SSL.
    return await asyncpg.connect(
        host=_HOST,
        port=port,
        user=_SUPERUSER,
        database=database,
        ssl=False,
        timeout=connect_timeout,
    )


async def _wait_until_accepting(port: int, deadline: float) -> None:
    """Poll until a TCP connection succeeds and answers a query, or ``deadline`` passes."""
    while True:
        remaining = deadline - time.monotonic()
        try:
            conn = await _connect(port, "postgres", connect_timeout=max(0.5, min(5.0, remaining)))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if time.monotonic() >= deadline:
                raise PostgresStartError(
                    f"server on {_HOST}:{port} did not accept connections in time: {exc!r}"
                ) from exc
            await asyncio.sleep(0.05)  # poll interval, bounded by the deadline
            continue
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()
        return
