"""Which connection each reader thread is using, so a read whose caller gave up can be cut off from another thread.

The web gives every read a deadline (``monitor.web.reader``). Past it, the caller answers 503, but the thread is
still blocked on the database: against a frozen server (a stopped backend, a paused machine: the kernel still ACKs,
so no TCP timeout fires, and the backend enforces ``statement_timeout`` itself) it would stay blocked, and a few such
reads would hold every read thread. :meth:`ReadGuard.interrupt` frees it: SQLite's statement is interrupted, a
PostgreSQL connection is shut down under it (``monitor.store.pg.cut``; a frozen backend acts on no cancel request).
A thread cut off takes no further connection in that read (the pool would hand it the next frozen one).
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any


class ReadInterrupted(RuntimeError):
    """A read cut off by :meth:`ReadGuard.interrupt` (its caller gave up on it)."""


class ReadGuard:
    """Thread id -> the connection its read is using now. Thread-safe; used by ``Store``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: dict[int, Any] = {}
        self._cut_off: set[int] = set()

    def using(self, conn: Any) -> None:
        """The current thread's read uses ``conn`` now (PostgreSQL: from the pool's check on, which can hang
        too). Raises :class:`ReadInterrupted` if this read was cut off already."""
        me = threading.get_ident()
        with self._lock:
            if me in self._cut_off:  # the pool then tries other connections until its timeout, and gives up
                raise ReadInterrupted("the read was cut off: it outlived its deadline")
            self._busy[me] = conn

    def ended(self) -> None:
        """The current thread's read is over (call it before its connection goes back to a pool)."""
        me = threading.get_ident()
        with self._lock:
            self._busy.pop(me, None)
            self._cut_off.discard(me)

    def interrupt(self, thread_id: int) -> bool:
        """Cut off the read running on thread ``thread_id``; returns whether one was running there."""
        from .pg import cut

        with self._lock:  # never a connection that went back to the pool: ``ended`` takes the lock too
            conn = self._busy.get(thread_id)
            if conn is None:
                return False
            self._cut_off.add(thread_id)
            if isinstance(conn, sqlite3.Connection):
                conn.interrupt()
            else:
                cut(conn)
        return True
