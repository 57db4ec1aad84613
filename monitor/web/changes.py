"""Has anything been committed to the store since we last looked? Answered without a thread hop.

Every request needs "which crawls are the newest?". Asking SQLite on a read thread for each one costs a thread
hop, and under load those hops fight the event loop for the GIL (each time the loop releases it for a socket
call, a busy worker takes it for up to ``sys.getswitchinterval()``). ``PRAGMA data_version`` on a read-only
connection of our own changes whenever another connection commits; reading it takes ~25 µs and touches only the
WAL index in shared memory. With ``busy_timeout = 0`` it never waits on a lock: if SQLite says busy, we answer
"unknown" and the caller reads the heads on a thread as it would anyway. So the event loop never blocks on it.

On PostgreSQL (:class:`PgChangeWatch`) every write transaction of every replica ends with a ``NOTIFY`` on
``monitor.store.pg.CHANGES_CHANNEL``; the watch LISTENs on a connection of its own and counts what has arrived,
polling its socket with a zero timeout. If that connection fails it answers "unknown" from then on.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


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

    def close(self) -> None:
        self._conn.close()


class PgChangeWatch:
    """``version()``: how many change notifications have arrived (None once the listening connection failed)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._count = 0
        self._failed = False

    @classmethod
    def open(cls, url: str) -> PgChangeWatch | None:
        """A watch on the PostgreSQL database at ``url`` (blocking: call it on a thread); None if it cannot."""
        from ..store.pg import CHANGES_CHANNEL, connect, is_connection_error

        try:
            conn = connect(url)
            conn.execute(f"LISTEN {CHANGES_CHANNEL}")
        except Exception as e:
            if is_connection_error(e):
                return None
            raise
        return cls(conn)

    def version(self) -> int | None:
        if self._failed:
            return None
        try:
            for _ in self._conn.notifies(timeout=0):
                self._count += 1
        except Exception:  # the connection broke: notifications may be lost, so never claim "unchanged" again
            self._failed = True
            return None
        return self._count

    def close(self) -> None:
        self._conn.close()


def open_watch(store: object) -> ChangeWatch | PgChangeWatch | None:
    """The watch that suits ``store`` (blocking: call it on a thread); None for a store of another kind."""
    location = getattr(store, "location", None)
    if location is not None and getattr(location, "is_postgres", False):
        return PgChangeWatch.open(location.url)
    return ChangeWatch.open(getattr(store, "path", None))
