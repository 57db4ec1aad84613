"""Has anything been committed to the store since we last looked? Answered without a thread hop.

Every request needs "which crawls are the newest?". Asking SQLite on a read thread for each one costs a thread
hop, and under load those hops fight the event loop for the GIL (each time the loop releases it for a socket
call, a busy worker takes it for up to ``sys.getswitchinterval()``). ``PRAGMA data_version`` on a read-only
connection of our own changes whenever another connection commits; reading it takes ~25 µs and touches only the
WAL index in shared memory. With ``busy_timeout = 0`` it never waits on a lock: if SQLite says busy, we answer
"unknown" and the caller reads the heads on a thread as it would anyway. So the event loop never blocks on it.

On PostgreSQL (:class:`PgChangeWatch`) every write transaction of every replica ends with a ``NOTIFY`` on
``monitor.store.pg.CHANGES_CHANNEL``; the watch LISTENs on a connection of its own and counts what has arrived,
polling its socket with a zero timeout. While that connection is down (it broke, or the database was down when the
web started) it answers "unknown"; its owner reopens it on a thread, at most every ``REOPEN_SECONDS``. Notifications
that carry a payload (``monitor.store.notices``: a crawl ended, alert events recorded) are also kept, at most
``MAX_PENDING_NOTICES``, for the live feed (``monitor.web.live_feed``) to take.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

REOPEN_SECONDS = 5.0  # at most one reconnection attempt this often (each may wait CONNECT_TIMEOUT)
MAX_PENDING_NOTICES = 1024  # payloads kept until the live feed takes them; beyond, they are dropped as lost


class ChangeWatch:
    """``version()``: a number that changes whenever the file changes (None when it cannot tell)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, path: object) -> ChangeWatch | None:
        """A watch on the SQLite file at ``path`` (blocking: call it on a thread); None if it is not one."""
        if not isinstance(path, str | Path) or not Path(path).is_file():
            return None
        try:
            conn = sqlite3.connect(
                f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error:
            return None
        return cls(conn)

    def version(self) -> int | None:
        try:
            row = self._conn.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error:  # busy (a checkpoint or a recovery holds the WAL index) or closed
            return None
        return None if row is None else int(row[0])

    def reopen_due(self) -> bool:
        """A file watch never breaks for good (busy is momentary): nothing to reopen."""
        return False

    def close(self) -> None:
        self._conn.close()


class PgChangeWatch:
    """``version()``: how many change notifications have arrived (None while the listening connection is down).

    Every reopening adds one to the count: notifications sent while it was down are lost, so the number after it
    must differ from every number before it."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self._conn: Any = None
        self._count = 0
        self._failed = True
        self._clock = clock
        self._tried_at: float | None = None
        self._notices: deque[str] = deque()
        self._lost = False  # notices were dropped, or the connection broke, since the last ``take_notices``
        self.opened = 0  # successful (re)openings: a new number means a new connection (and socket)
        self.on_notice: Callable[[], None] | None = None  # told (on the event loop) when notices arrive

    @classmethod
    def open(cls, url: str, *, clock: Callable[[], float] = time.monotonic) -> PgChangeWatch:
        """A watch on the PostgreSQL database at ``url`` (blocking: call it on a thread); down, if it cannot
        connect now."""
        watch = cls(url, clock=clock)
        watch.reopen()
        return watch

    def reopen_due(self) -> bool:
        """Down, and the last attempt to reopen is ``REOPEN_SECONDS`` old."""
        return self._failed and (self._tried_at is None or self._clock() - self._tried_at >= REOPEN_SECONDS)

    def reopen(self) -> bool:
        """Connect and LISTEN anew (blocking: call it on a thread); False if the database cannot be reached."""
        from ..store.pg import CHANGES_CHANNEL, connect, is_connection_error

        self._tried_at = self._clock()
        conn = None
        try:
            conn = connect(self.url, "watch")
            conn.execute(f"LISTEN {CHANGES_CHANNEL}")
        except Exception as e:
            if conn is not None:
                conn.close()
            if is_connection_error(e):
                return False
            raise
        old, self._conn = self._conn, conn
        self._count += 1  # before ``_failed`` flips: ``version()`` on the event loop may run between the two
        self.opened += 1
        self._failed = False
        if old is not None:
            with contextlib.suppress(Exception):
                old.close()
        return True

    def version(self) -> int | None:
        if self._failed:
            return None
        arrived = False
        try:
            for notify in self._conn.notifies(timeout=0):
                self._count += 1
                arrived |= self._keep(notify.payload)
        except Exception:  # the connection broke: notifications may be lost, never claim "unchanged" until reopened
            self._failed = self._lost = True
            return None
        finally:
            if arrived and self.on_notice is not None:
                self.on_notice()
        return self._count

    def _keep(self, payload: str) -> bool:
        if not payload:
            return False
        if len(self._notices) >= MAX_PENDING_NOTICES:
            self._lost = True
            return False
        self._notices.append(payload)
        return True

    def take_notices(self) -> tuple[list[str], bool]:
        """The payloads that arrived since the last call, and whether some may have been lost meanwhile."""
        taken, lost = list(self._notices), self._lost
        self._notices.clear()
        self._lost = False
        return taken, lost

    def fileno(self) -> int | None:
        """The listening connection's socket (None while down): readable when a notification arrives."""
        return None if self._failed or self._conn is None else self._conn.fileno()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def open_watch(store: object) -> ChangeWatch | PgChangeWatch | None:
    """The watch that suits ``store`` (blocking: call it on a thread); None for a store of another kind."""
    location = getattr(store, "location", None)
    if location is not None and getattr(location, "is_postgres", False):
        return PgChangeWatch.open(location.url)
    return ChangeWatch.open(getattr(store, "path", None))
