"""Which connection each deadline-bound call is reading with, so a call whose caller gave up can be cut off.

The web gives every call on a read thread a deadline (``monitor.web.reader``). Past it, the caller answers 503, but
the thread is still blocked on the database: against a frozen server (a stopped backend, a paused machine: the
kernel still ACKs, so no TCP timeout fires, and the backend enforces ``statement_timeout`` itself) it would stay
blocked, and a few such reads would hold every read thread. :meth:`ReadGuard.interrupt` frees it: SQLite's statement
is interrupted, a PostgreSQL connection is shut down under it (``monitor.store.pg.cut``; a frozen backend acts on no
cancel request).

What is cut off is the call (a :class:`ReadCall`, set for its thread by :func:`reading_for`), not the thread: a call
that ended just before the interrupt lets the thread's next call (another request's) be, and a call cut off between
two of its reads (``read_heads`` makes several) takes no further connection (the pool would hand it the next frozen
one). Reads outside any call (no deadline) are not tracked.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class ReadInterrupted(RuntimeError):
    """A read cut off by :meth:`ReadGuard.interrupt` (its caller gave up on it)."""


class ReadCall:
    """One deadline-bound call on a read thread: what :meth:`ReadGuard.interrupt` cuts off, all its reads."""

    __slots__ = ("cut",)

    def __init__(self) -> None:
        self.cut = False


_current = threading.local()


@contextmanager
def reading_for(call: ReadCall) -> Iterator[None]:
    """The current thread's reads belong to ``call`` within this block."""
    _current.call = call
    try:
        yield
    finally:
        _current.call = None


def _current_call() -> ReadCall | None:
    return getattr(_current, "call", None)


class ReadGuard:
    """Call -> the connection its read is using now. Thread-safe; used by ``Store``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: dict[ReadCall, Any] = {}

    def using(self, conn: Any) -> None:
        """The current call's read uses ``conn`` now (PostgreSQL: from the pool's check on, which can hang
        too). Raises :class:`ReadInterrupted` if the call was cut off already."""
        call = _current_call()
        if call is None:
            return
        with self._lock:
            if call.cut:  # the pool then tries other connections until its timeout, and gives up
                raise ReadInterrupted("the read was cut off: it outlived its deadline")
            self._busy[call] = conn

    def ended(self) -> None:
        """The current call's read is over (call it before its connection goes back to a pool)."""
        call = _current_call()
        if call is not None:
            with self._lock:
                self._busy.pop(call, None)

    def interrupt(self, call: ReadCall) -> bool:
        """Cut off ``call``: the read it is running now, and every read it would start; returns whether one
        was running."""
        from .pg import cut

        with self._lock:  # never a connection that went back to the pool: ``ended`` takes the lock too
            call.cut = True
            conn = self._busy.get(call)
            if conn is None:
                return False
            if isinstance(conn, sqlite3.Connection):
                conn.interrupt()
            else:
                cut(conn)
        return True
