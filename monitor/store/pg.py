"""PostgreSQL connections for the store (psycopg 3 and its pool), speaking the store's SQLite-spelled SQL.

:class:`PgConnection` wraps a psycopg connection in autocommit mode (the store says ``BEGIN`` and ``COMMIT``
itself, as it does on SQLite) and rewrites placeholders: ``?`` becomes ``%s`` and ``:name`` becomes ``%(name)s``
(a literal ``%`` is doubled). The rewrite is cached per statement. psycopg is imported on first use only: SQLite
users never need it (it is the ``postgres`` extra).

PostgreSQL's text cannot hold NUL, which network names may contain (SQLite's can): text goes in and out through
:func:`escape_nul` / :func:`unescape_nul`, a reversible mapping onto a private-use character, so a hostile name
reads back exactly as it came.

Every call has a deadline: connecting (``CONNECT_TIMEOUT``), each statement (``statement_timeout``), and waiting
for a pooled connection (``POOL_TIMEOUT``). ``statement_timeout`` is the server's: against a server that died or was
cut off silently, the client's TCP keepalives and ``tcp_user_timeout`` break the call within ~30 s instead (the
writer thread and the pooled readers never hang, the web answers 503). The server's keepalives do the same for a
replica that vanished: its session, and with it its crawl advisory lock, ends within ~25 s, not the kernel's ~2 h.
None of that ends a call to a server that is frozen but reachable (a stopped backend: the kernel still ACKs, and
the backend enforces ``statement_timeout`` itself): the web's reads have a deadline of their own, after which
:func:`cut` shuts the connection's socket down under the thread blocked on it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import socket
from collections.abc import Callable
from typing import Any

from .dialect import POSTGRES

CHANGES_CHANNEL = "petals_monitor_store"  # every write transaction NOTIFYs it (the web's ``PgChangeWatch``)
CONNECT_TIMEOUT = 5  # seconds
STATEMENT_TIMEOUT_MS = 120_000
KEEPALIVE_IDLE = 10  # seconds of silence before the first probe (both ends)
KEEPALIVE_INTERVAL = 5  # seconds between probes
KEEPALIVE_COUNT = 3  # unanswered probes before the connection is dropped
TCP_USER_TIMEOUT_MS = 30_000  # unacknowledged data older than this breaks the client's connection
POOL_TIMEOUT = 5.0  # seconds a reader waits for a free connection (or for the server to come back)
CLIENT_CHECK_MS = 1000  # PostgreSQL 14+: a statement's backend checks this often that its client is still there
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_MARK = "\ue000"  # U+E000 (private use) escapes itself and NUL: MARK MARK is MARK, MARK U+E001 is NUL
_ESCAPED = re.compile("\ue000([\ue000\ue001])")


class PostgresMissing(RuntimeError):
    """psycopg is not installed (``pip install 'petals-swarm-monitor[postgres]'``)."""


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """SQLite placeholders to psycopg's (string literals in our SQL never hold ``?`` or ``:word``)."""
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%").replace("?", "%s"))


def escape_nul(text: str) -> str:
    if "\x00" not in text and _MARK not in text:
        return text
    return text.replace(_MARK, _MARK + _MARK).replace("\x00", _MARK + "\ue001")


def unescape_nul(text: str) -> str:
    if _MARK not in text:
        return text
    return _ESCAPED.sub(lambda m: _MARK if m[1] == _MARK else "\x00", text)


@functools.cache
def _nul_safe_adapters() -> Any:
    """psycopg's str dumpers and text loaders, wrapped in escape_nul / unescape_nul."""
    import psycopg
    from psycopg.adapt import AdaptersMap, PyFormat
    from psycopg.pq import Format
    from psycopg.types import string  # the pure-Python classes (psycopg_binary's C ones cannot be subclassed)

    def python_class(cls: type) -> type:
        return getattr(string, cls.__name__)

    adapters = AdaptersMap(psycopg.adapters)
    for fmt in (PyFormat.TEXT, PyFormat.BINARY):
        base = python_class(psycopg.adapters.get_dumper(str, fmt))
        adapters.register_dumper(str, type(f"NulSafe{base.__name__}", (base,), {"dump": _escaping_dump(base)}))
    for name in ("text", "varchar"):
        oid = psycopg.adapters.types[name].oid
        for fmt in (Format.TEXT, Format.BINARY):
            base = python_class(psycopg.adapters.get_loader(oid, fmt))
            adapters.register_loader(oid, type(f"NulSafe{base.__name__}", (base,), {"load": _unescaping_load(base)}))
    return adapters


def _escaping_dump(base: Any) -> Any:
    def dump(self: Any, obj: str) -> Any:
        return base.dump(self, escape_nul(obj))

    return dump


def _unescaping_load(base: Any) -> Any:
    def load(self: Any, data: Any) -> str:
        return unescape_nul(base.load(self, data))

    return load


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as e:
        raise PostgresMissing("PostgreSQL needs psycopg: pip install 'petals-swarm-monitor[postgres]'") from e
    return psycopg


def connect_options(role: str) -> dict[str, Any]:
    """``role`` names the connection's job in ``pg_stat_activity`` (``petals-monitor writer``, ``reader``,
    ``watch``): which sessions are whose, for an operator and for the tests."""
    return {
        "application_name": f"petals-monitor {role}",
        "autocommit": True,
        "context": _nul_safe_adapters(),
        "connect_timeout": CONNECT_TIMEOUT,
        "keepalives": 1,
        "keepalives_idle": KEEPALIVE_IDLE,
        "keepalives_interval": KEEPALIVE_INTERVAL,
        "keepalives_count": KEEPALIVE_COUNT,
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
        "options": " ".join(
            f"-c {name}={value}"
            for name, value in (
                ("statement_timeout", STATEMENT_TIMEOUT_MS),
                ("tcp_keepalives_idle", KEEPALIVE_IDLE),
                ("tcp_keepalives_interval", KEEPALIVE_INTERVAL),
                ("tcp_keepalives_count", KEEPALIVE_COUNT),
            )
        ),
    }


def connect(url: str, role: str = "writer") -> Any:
    """One raw psycopg connection (raises ``psycopg.OperationalError`` when the server cannot be reached).

    On PostgreSQL 14 and later its backend checks every ``CLIENT_CHECK_MS`` that we are still there while it runs a
    statement: a backend notices a client that died only when it next reads from it, so a replica killed while its
    backend waited for a lock (its retention pass, behind another replica's) or ran a long statement kept its
    crawl lock, and stalled the takeover, until that statement ended."""
    raw = _psycopg().connect(url, **connect_options(role))
    try:
        if raw.info.server_version >= 140000:  # an unknown setting would fail the connection on older servers
            raw.execute(f"SET client_connection_check_interval = {CLIENT_CHECK_MS}")
    except BaseException:
        raw.close()
        raise
    return raw


def cut(raw: Any) -> None:
    """Shut the socket of psycopg connection ``raw`` down, from any thread: a call blocked on it (a server that
    stopped answering) fails at once with ``OperationalError``, the connection is broken, and a pool discards it.
    A cancel request would not do: a frozen backend never acts on it."""
    with contextlib.suppress(Exception):  # closed already, or never connected: nothing to cut
        sock = socket.socket(fileno=os.dup(raw.fileno()))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()  # the duplicate only; psycopg still owns (and closes) its descriptor


def open_pool(url: str, max_size: int, on_checkout: Callable[[Any], None] | None = None) -> Any:
    """A pool of reader connections, opened lazily (a server that is down now may be up by the first read).

    Each connection is checked (a round trip) before it is handed out: after the server restarted, every pooled
    connection is dead, and without the check each would fail one request with a 503 before being replaced.
    ``on_checkout(conn)`` is called first, on the thread that asked for it (the check can hang too)."""
    _psycopg()
    from psycopg_pool import ConnectionPool

    def check(conn: Any) -> None:
        if on_checkout is not None:
            on_checkout(conn)
        ConnectionPool.check_connection(conn)

    return ConnectionPool(
        url,
        min_size=0,
        max_size=max_size,
        kwargs=connect_options("reader"),
        timeout=POOL_TIMEOUT,
        open=True,
        name="store",
        check=check,
    )


def is_connection_error(exc: BaseException) -> bool:
    """The database went away (as opposed to a bad statement): worth a retry later."""
    try:
        import psycopg
        from psycopg_pool import PoolTimeout
    except ImportError:
        return False
    return isinstance(exc, psycopg.OperationalError | PoolTimeout)


class PgConnection:
    """A psycopg connection with the subset of ``sqlite3.Connection`` the store uses."""

    dialect = POSTGRES

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Any = ()) -> Any:
        return self.raw.execute(translate(sql), params)

    def executemany(self, sql: str, rows: Any) -> Any:
        with self.raw.cursor() as cur:
            cur.executemany(translate(sql), rows)
            return cur

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self.raw.info.transaction_status != TransactionStatus.IDLE

    @property
    def broken(self) -> bool:
        return self.raw.closed or self.raw.broken

    def close(self) -> None:
        self.raw.close()
