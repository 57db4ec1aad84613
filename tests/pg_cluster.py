"""A throwaway PostgreSQL cluster for the ``postgres`` tests: initdb into a temp dir, the server on 127.0.0.1 at a
free port (trust auth for loopback TCP only; its socket in that dir), one fresh database per test.

The server is our child (``subprocess.Popen``), stopped by its pid at the end of the session, also when the run
is interrupted (pytest tears fixtures down on Ctrl-C and on the SIGTERM tests/conftest.py turns into one); if the
test process dies outright, the kernel sends the server SIGQUIT (``PR_SET_PDEATHSIG``) so it does not outlive us.
PostgreSQL refuses to run as root: as root, initdb and the server run as the ``postgres`` user, which owns the
temp dir. Without PostgreSQL or psycopg the tests are skipped with a reason naming what is missing
(``make test`` as root installs Debian's ``postgresql``).
"""

from __future__ import annotations

import ctypes
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

# The store tests' backends (``db_location``): PostgreSQL ones carry the ``postgres`` marker.
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
START_SECONDS = 30.0
PR_SET_PDEATHSIG = 1


class Unavailable(Exception):
    """Why the cluster cannot run here (the skip reason)."""


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise Unavailable("PostgreSQL is not installed (no initdb; `make test` as root installs Debian's postgresql)")


def _user() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as: ``postgres`` when we are root (it refuses root), else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise Unavailable("running as root and there is no `postgres` user to run PostgreSQL as") from None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGQUIT)


@dataclass
class Cluster:
    proc: subprocess.Popen
    root: Path
    port: int
    _names: itertools.count

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)

    def new_database(self, template: str | None = None) -> str:
        """A fresh empty database (or a copy of the database at URL ``template``, which nobody may be connected
        to); returns its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name}" + (f" TEMPLATE {template.rsplit('/', 1)[1]}" if template else ""))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")

    def database_gone(self, url: str, gone: bool) -> None:
        """Take the database at ``url`` away (refuse new sessions, end the open ones) or give it back."""
        self.admin(f"ALTER DATABASE {url.rsplit('/', 1)[1]} ALLOW_CONNECTIONS {'false' if gone else 'true'}")
        if gone:
            self.end_sessions(url)

    def end_sessions(self, url: str) -> None:
        """End every session on the database at ``url``, as a server restart does."""
        name = url.rsplit("/", 1)[1]
        # with a timeout, it returns once they are gone: every client has been told by then
        self.admin(f"SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = '{name}'")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: disconnect clients, exit
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> Cluster:
    """initdb + the server, ready to accept connections; raises :class:`Unavailable` (skip) when it cannot."""
    try:
        import psycopg
    except ImportError:
        raise Unavailable("psycopg is not installed (pip install -e '.[postgres]'; `make .venv/.test` does)") from None
    bindir = _bindir()
    user = _user()
    root = Path(tempfile.mkdtemp(prefix="monitor-pg-"))
    data = root / "data"
    run_as = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
    try:
        subprocess.run(
            [bindir / "initdb", "-D", data, "-U", "postgres", "-A", "reject", "--no-sync", "-E", "UTF8"],
            check=True,
            capture_output=True,
            timeout=120,
            cwd=root,
            **run_as,
        )
        # Nothing but TCP from 127.0.0.1, trusted: no socket file others could use, no password to leak.
        (data / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
    except (OSError, subprocess.SubprocessError) as e:
        shutil.rmtree(root, ignore_errors=True)
        detail = getattr(e, "stderr", b"") or b""
        raise Unavailable(f"initdb failed: {e} {detail.decode(errors='replace')[-300:]}") from None
    port = _free_port()
    proc = subprocess.Popen(
        [
            *(bindir / "postgres", "-D", data, "-p", str(port), "-c", "listen_addresses=127.0.0.1"),
            *("-c", f"unix_socket_directories={root}", "-c", "fsync=off", "-c", "max_connections=200"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(root / "server.log", "wb"),  # noqa: SIM115 (the child keeps it)
        cwd=root,
        preexec_fn=_die_with_parent,
        **run_as,
    )
    cluster = Cluster(proc, root, port, itertools.count())
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            psycopg.connect(cluster.url(), connect_timeout=2).close()
            return cluster
        except psycopg.OperationalError as e:
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (root / "server.log").read_text(errors="replace")[-500:]
                cluster.stop()
                raise Unavailable(f"PostgreSQL did not start: {e}; {log}") from None
        time.sleep(0.1)  # polling a server we do not control: it has no readiness event to wait on


def terminate(url: str, role: str) -> int:
    """End the sessions of our ``role`` connections (``writer``, ``reader``, ``watch``: their application_name) on
    the database at ``url``, as a dropped connection does; returns how many there were."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            (f"petals-monitor {role}",),
        ).fetchone()[0]
