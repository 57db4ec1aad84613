"""The monitor's store: one writer, many read-only readers, crash-safe by construction; SQLite or PostgreSQL.

SQLite is the default (a path or ``sqlite:`` URL); a ``postgresql://`` URL selects PostgreSQL (``monitor.store.pg``:
psycopg 3, a pool for the readers), behind the same classes and the same SQL (``monitor.store.dialect`` holds
what differs). On PostgreSQL the writer's transactions are plain ``BEGIN``/``COMMIT`` (a crawl is still visible
whole or not at all) and each read is one ``REPEATABLE READ READ ONLY`` transaction, the equivalent of SQLite's
read transaction. The rest of this note describes SQLite.

Shape (after datasette): a :class:`StoreWriter` owns the only read-write connection and is used from one thread;
:meth:`Store.writer` runs one in a dedicated thread behind a queue (``submit(fn) -> Future``, or the typed proxies).
Readers (:class:`Store`) open ``mode=ro`` URI connections, one per thread, and run each call in one read
transaction, so a page never mixes two states of the file and never waits for a crawl being written (WAL).

Crash safety: ``finish_crawl`` inserts every row of a snapshot *and* flips the crawl to ``succeeded`` in one
``BEGIN IMMEDIATE`` transaction, and readers only ever look at succeeded crawls, so a crash (SIGKILL, power loss)
leaves either the whole snapshot or none of it. A crawl left ``started`` by a crash is marked failed
(``"interrupted"``) when the next writer opens. WAL with ``synchronous=NORMAL``: a process crash loses nothing
committed; a power cut may lose the last commits but never corrupts the file. Failed and empty crawls (no server
found) are logged without rows, so they never replace the last good snapshot.

Size (measured by ``tests/monitor/test_store_perf.py`` with ``tests/factories.py``): a crawl of the default factory
snapshot (3 models of 80/126/56 blocks, 12 servers each) adds ~41 KiB to the file; the 3 models x 80 blocks x
60 servers case ~150 KiB, two thirds of it server rows (their ``next_pings``/``pings_to_me`` JSON keyed by 52-char
peer ids). At one crawl a minute that is ~215 MB a day for the large case, so raw crawls are kept only
``raw_days`` (default 7: ~1.5 GB at that size and rate; lower it for big swarms crawled every minute) and then
rolled up by ``monitor.store.retention`` into hourly/daily rows of a few hundred bytes per model, peer and bucket.
SQLite reuses freed pages, so the file plateaus instead of growing. There is no cached JSON blob per crawl: the
rows are needed for history anyway, and ``latest_snapshot`` rebuilds the large case from them in ~10 ms.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from queue import SimpleQueue
from typing import Any, TypeVar

from ..alerts.rules import ActiveAlert, AlertEvent
from ..rules.vantages import ReachableFrom, VantageVerdicts
from ..rules.versions import VersionPoint
from ..snapshot import CrawlStats, Reachability, Snapshot
from . import alerts as store_alerts
from . import block_history as store_blocks
from . import history_queries as store_history
from . import vantages as store_vantages
from .dialect import dialect_of
from .diff import diff_snapshots
from .history import BlockHistory, CrawlDiff, CrawlSummary, ModelPoint, ServerModel, ServerPoint
from .location import DbLocation, parse_db
from .migrations import apply_migrations
from .notices import alert_notices, crawl_notice
from .pg import CHANGES_CHANNEL
from .read_guard import ReadCall, ReadGuard
from .retention import RetentionReport
from .retention import apply_retention as _apply_retention
from .rows import (
    CRAWL_COLUMNS,
    insert_row,
    is_empty,
    newest_first,
    read_snapshot,
    stats_columns,
    summary_from_row,
    write_snapshot_rows,
)

__all__ = [
    "CrawlNotFound",
    "LeadLost",
    "RetentionReport",
    "Store",
    "StoreWriter",
    "WriterThread",
    "open_store",
]

DEFAULT_BUSY_TIMEOUT_MS = 5000
PG_READERS = 8  # pooled reader connections per process (the web's read threads and the alert service share them)
INTERRUPTED = "interrupted"
EMPTY_CRAWL = "empty crawl: no server records found"
DATABASE_LOST = "database connection lost"
RETENTION_LOCK = 0x70E7A16  # PostgreSQL advisory lock held by a retention pass (next to migrations' 0x70E7A15)
UPTIME_WINDOWS = (86400, 604800, 2592000)

T = TypeVar("T")


def crawl_lock_key(swarm: str) -> int:
    """The PostgreSQL advisory lock (a signed 64-bit key) whose holder crawls ``swarm``."""
    digest = hashlib.sha256(f"petals-monitor crawl {swarm}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class CrawlNotFound(LookupError):
    """No succeeded crawl with that id (never written, failed, or deleted by retention)."""


class LeadLost(RuntimeError):
    """PostgreSQL: this writer led the swarm, but its connection, and with it the swarm's crawl lock, was replaced
    since; another replica may be crawling it now, so the write was refused (nothing was written)."""


def _connect_rw(path: Path, busy_timeout_ms: int, check_same_thread: bool = True) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=check_same_thread)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _connect_ro(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    # check_same_thread=False only so Store.close() can close every reader; each one is used by one thread.
    conn = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _connect_writer(location: DbLocation, busy_timeout_ms: int) -> Any:
    """The read-write connection: ``sqlite3`` (WAL) or a :class:`monitor.store.pg.PgConnection`."""
    if location.is_postgres:
        from .pg import PgConnection, connect

        return PgConnection(connect(location.url))
    return _connect_rw(location.path, busy_timeout_ms)


def ensure_schema(db: str | Path | DbLocation, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> list[int]:
    """Create the database if needed (SQLite: the file, in WAL mode) and apply pending migrations; returns the
    numbers applied."""
    conn = _connect_writer(parse_db(db), busy_timeout_ms)
    try:
        return apply_migrations(conn)
    finally:
        conn.close()


# ---- the writer


class StoreWriter:
    """The only read-write connection. Not thread-safe: use it from the thread that created it.

    Opening applies pending migrations and marks crawls left ``started`` by a crash as failed (``interrupted``);
    so run one crawling process per database at a time (the scheduler, or ``crawl --once``); ``monitor probe``
    writes beside it with ``recover=False``.
    On PostgreSQL a connection the server dropped is replaced at the next transaction; a crawl whose end could not
    be written because the database was gone is marked failed (``DATABASE_LOST``) as soon as it is back.
    """

    def __init__(
        self,
        db: str | Path | DbLocation,
        *,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        clock: Callable[[], float] = time.time,
        recover: bool = True,
    ) -> None:
        self.location = parse_db(db)
        self.path = self.location.path
        self.busy_timeout_ms = busy_timeout_ms
        self.conn = _connect_writer(self.location, busy_timeout_ms)
        self.clock = clock
        self._unrecorded: dict[int, str] = {}  # crawl id -> why its end is not in the database (it was gone)
        self._leading: set[str] = set()  # PostgreSQL: swarms whose crawl lock this connection holds (``lead``)
        self._claimed: set[str] = set()  # PostgreSQL: swarms this writer has led (their writes need the lock)
        self._notices: list[str] = []  # what the open transaction will announce at commit (``store.notices``)
        apply_migrations(self.conn)
        # ``recover=False``: a process that writes no crawls (``monitor probe``) must not fail a crawl that the
        # crawling process, alive beside it on the same SQLite file, has under way
        self.interrupted = self.mark_interrupted() if recover else 0

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """``BEGIN IMMEDIATE`` (PostgreSQL: ``BEGIN``) ... ``COMMIT``; rolled back on any exception.

        On PostgreSQL the commit NOTIFYs every replica's change watch, with what ``_notices`` holds (the crawl it
        ended, the alert events it recorded) or nothing."""
        if getattr(self.conn, "broken", False):  # PostgreSQL went away since the last call: try a new connection
            self._reconnect()
        self.conn.execute(dialect_of(self.conn).begin_write)
        self._notices = []
        try:
            yield self.conn
        except BaseException:
            if not getattr(self.conn, "broken", False) and self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        if dialect_of(self.conn).name == "postgresql":  # delivered at commit: the web replicas' change watches
            for payload in self._notices or [""]:
                self.conn.execute("SELECT pg_notify(?, ?)", (CHANGES_CHANNEL, payload))
        self.conn.execute("COMMIT")

    def _reconnect(self) -> None:
        """A new connection (raises while the database is still gone), then the crawls it lost marked failed."""
        conn = _connect_writer(self.location, self.busy_timeout_ms)
        self.conn.close()
        self.conn = conn
        self._leading.clear()  # the server released the old connection's locks
        if self._unrecorded:
            conn.execute(dialect_of(conn).begin_write)
            for crawl_id, error in self._unrecorded.items():
                conn.execute(
                    "UPDATE crawls SET status = 'failed', finished_at = ?, error = ? "
                    "WHERE id = ? AND status = 'started'",
                    (self.clock(), error, crawl_id),
                )
            conn.execute(f"NOTIFY {CHANGES_CHANNEL}")
            conn.execute("COMMIT")
            self._unrecorded.clear()

    @contextmanager
    def _ending(self, crawl_id: int) -> Iterator[None]:
        """Remember a crawl whose end could not be written because the database was gone."""
        try:
            yield
        except Exception as e:
            if getattr(self.conn, "broken", False):
                from .dbcheck import one_line

                self._unrecorded[crawl_id] = f"{DATABASE_LOST} ({one_line(e, self.location)})"
            raise

    def _summary(self, crawl_id: int) -> CrawlSummary:
        return summary_from_row(
            self.conn.execute(f"SELECT {CRAWL_COLUMNS} FROM crawls WHERE id = ?", (crawl_id,)).fetchone()
        )

    def _started(self, crawl_id: int) -> tuple[str, str]:
        row = self.conn.execute("SELECT swarm, status FROM crawls WHERE id = ?", (crawl_id,)).fetchone()
        if row is None:
            raise CrawlNotFound(f"no crawl {crawl_id}")
        self._check_lead(row[0])
        if row[1] != "started":
            raise ValueError(f"crawl {crawl_id} is already {row[1]}")
        return row

    def mark_interrupted(self, swarm: str | None = None) -> int:
        """Fail every crawl still ``started`` (left by a crash), of ``swarm`` or of every swarm. Returns how many.

        On PostgreSQL other replicas may be crawling right now: a swarm's crawls are failed only while holding its
        crawl lock (so its crawler is dead), and a swarm another process leads is left alone.
        """
        if swarm is None and dialect_of(self.conn).name == "postgresql":
            return sum(self._mark_interrupted_if_free(s) for s in self._swarms_started())
        with self.transaction():
            return self.conn.execute(
                "UPDATE crawls SET status = 'failed', error = ? "
                "WHERE status = 'started' AND (CAST(? AS TEXT) IS NULL OR swarm = ?)",
                (INTERRUPTED, swarm, swarm),
            ).rowcount

    def _swarms_started(self) -> list[str]:
        return [row[0] for row in self.conn.execute("SELECT DISTINCT swarm FROM crawls WHERE status = 'started'")]

    def _mark_interrupted_if_free(self, swarm: str) -> int:
        if swarm in self._leading:
            return self.mark_interrupted(swarm)
        if not self._try_lock(swarm):
            return 0
        try:
            return self.mark_interrupted(swarm)
        finally:
            self.conn.execute("SELECT pg_advisory_unlock(?)", (crawl_lock_key(swarm),))

    def _try_lock(self, swarm: str) -> bool:
        return bool(self.conn.execute("SELECT pg_try_advisory_lock(?)", (crawl_lock_key(swarm),)).fetchone()[0])

    def _check_lead(self, swarm: str) -> None:
        """Raise :class:`LeadLost` if this writer led ``swarm`` but no longer holds its lock (call in a
        transaction: its connection is then the one whose locks ``_leading`` lists)."""
        if swarm in self._claimed and swarm not in self._leading:
            raise LeadLost(f"swarm {swarm}: this replica's crawl lock was lost with its database connection")

    def lead(self, swarm: str) -> bool:
        """Should this process crawl ``swarm`` now? On SQLite, yes (one writing process per file).

        On PostgreSQL, yes while this connection holds the swarm's crawl lock: a session advisory lock, taken here
        when it is free and released by the server when the process or its connection dies. So among replicas on
        one database exactly one crawls a swarm, and when it dies the next replica to ask (at its next scheduled
        crawl: within one interval) takes over, failing the crawl its predecessor left ``started``. Once a writer
        has led a swarm, its crawl ends and alert events are written only while it still holds the lock (else
        :class:`LeadLost`): a replica whose connection was replaced mid-crawl cannot split the history.
        """
        if dialect_of(self.conn).name != "postgresql":
            return True
        if getattr(self.conn, "broken", False):
            self._reconnect()
        if swarm in self._leading:
            self.conn.execute("SELECT 1")  # raises if the connection, and with it the lock, is gone
            return True
        if not self._try_lock(swarm):
            return False
        self._leading.add(swarm)
        self._claimed.add(swarm)
        self.mark_interrupted(swarm)
        return True

    def begin_crawl(self, swarm: str, started_at: float, vantage: str | None = None) -> int:
        """Log a crawl as ``started``; returns its id (the crawl log shows it running). ``vantage``: the crawling
        process's vantage point (``[vantage] name``); its probe results then count as that vantage's."""
        with self.transaction():
            row = {"swarm": swarm, "status": "started", "started_at": started_at, "vantage": vantage}
            return insert_row(self.conn, "crawls", row)

    def finish_crawl(self, crawl_id: int, snapshot: Snapshot) -> CrawlSummary:
        """Write the whole snapshot and flip the crawl to ``succeeded``, in ONE transaction.

        An empty snapshot (no server in any model) is logged as failed (``EMPTY_CRAWL``) without rows, so it
        never replaces the last good snapshot. Returns the crawl's summary, so the caller sees which happened.
        """
        with self._ending(crawl_id), self.transaction():
            swarm, _ = self._started(crawl_id)
            if snapshot.swarm != swarm:
                raise ValueError(f"crawl {crawl_id} is of swarm {swarm!r}, not {snapshot.swarm!r}")
            empty = is_empty(snapshot)
            if not empty:
                write_snapshot_rows(self.conn, crawl_id, snapshot)
                vantage = self.conn.execute("SELECT vantage FROM crawls WHERE id = ?", (crawl_id,)).fetchone()[0]
                if vantage is not None:
                    store_vantages.write_crawl_probes(self.conn, crawl_id, vantage, snapshot)
            status = "failed" if empty else "succeeded"
            self._notices.append(crawl_notice(crawl_id, swarm, status))
            self.conn.execute(
                """UPDATE crawls SET status = :status, started_at = :started_at, finished_at = :finished_at,
                    dht_time = :dht_time, peers_contacted = :peers_contacted, peers_failed = :peers_failed,
                    rpcs = :rpcs, keys = :keys, records = :records, invalid_by_reason = :invalid_by_reason,
                    error = :error WHERE id = :id""",
                {
                    "id": crawl_id,
                    "status": status,
                    "started_at": snapshot.started_at,
                    "finished_at": snapshot.finished_at,
                    "dht_time": snapshot.dht_time,
                    "error": EMPTY_CRAWL if empty else snapshot.error,
                    **stats_columns(snapshot.stats),
                },
            )
            return self._summary(crawl_id)

    def fail_crawl(
        self, crawl_id: int, error: str, stats: CrawlStats | None = None, *, finished_at: float | None = None
    ) -> CrawlSummary:
        """Log a crawl as failed with its error and whatever it measured. No snapshot rows are written."""
        with self._ending(crawl_id), self.transaction():
            swarm, _ = self._started(crawl_id)
            self._notices.append(crawl_notice(crawl_id, swarm, "failed"))
            self.conn.execute(
                """UPDATE crawls SET status = 'failed', finished_at = :finished_at, error = :error,
                    peers_contacted = :peers_contacted, peers_failed = :peers_failed, rpcs = :rpcs, keys = :keys,
                    records = :records, invalid_by_reason = :invalid_by_reason WHERE id = :id""",
                {
                    "id": crawl_id,
                    "finished_at": self.clock() if finished_at is None else finished_at,
                    "error": error,
                    **stats_columns(stats or CrawlStats()),
                },
            )
            return self._summary(crawl_id)

    def write_snapshot(self, snapshot: Snapshot) -> CrawlSummary:
        """``begin_crawl`` + ``finish_crawl`` for a snapshot made elsewhere (demo, import, tests)."""
        return self.finish_crawl(self.begin_crawl(snapshot.swarm, snapshot.started_at), snapshot)

    def apply_retention(
        self,
        now: float,
        raw_days: float = 7.0,
        hourly_days: float = 30.0,
        daily_days: float | None = None,
        pings_days: float | None = None,
    ) -> RetentionReport:
        """Roll up and delete old data (see ``monitor.store.retention``), in one transaction; on PostgreSQL one
        replica at a time (a transaction advisory lock: the next one then finds nothing left to roll up)."""
        with self.transaction():
            if dialect_of(self.conn).name == "postgresql":
                self.conn.execute("SELECT pg_advisory_xact_lock(?)", (RETENTION_LOCK,))
            return _apply_retention(self.conn, now, raw_days, hourly_days, daily_days, pings_days)

    def record_vantage_probes(self, crawl_id: int, vantage: str, results: Sequence[Reachability]) -> int:
        """A ``monitor probe`` round: ``vantage``'s results for the servers of crawl ``crawl_id``, in one
        transaction (replacing its earlier round on that crawl). Raises ``NotProbeable`` when the crawl is gone."""
        with self.transaction():
            return store_vantages.write_probes(self.conn, crawl_id, vantage, results)

    def record_alert_events(self, events: list[AlertEvent]) -> list[int]:
        """Append alert events (``monitor.alerts.rules``) in one transaction; returns their ids."""
        if not events:
            return []
        with self.transaction():
            for swarm in {event.swarm for event in events}:
                self._check_lead(swarm)
            ids = store_alerts.insert_events(self.conn, events)
            self._notices += alert_notices(ids)
            return ids


class WriterThread:
    """A :class:`StoreWriter` in a dedicated thread: calls are queued and run one at a time, in order.

    ``submit(fn, *args)`` runs ``fn(writer, *args)`` there and returns a ``concurrent.futures.Future``
    (from asyncio: ``await asyncio.wrap_future(...)``). Opening errors are raised by the constructor.
    """

    def __init__(self, db: str | Path | DbLocation, **writer_options: Any) -> None:
        self._queue: SimpleQueue[tuple[Callable[..., Any], tuple, dict, Future] | None] = SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        opened: Future[StoreWriter] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(parse_db(db), writer_options, opened), name="store-writer", daemon=True
        )
        self._thread.start()
        self.interrupted = opened.result().interrupted

    def _run(self, db: DbLocation, options: dict[str, Any], opened: Future) -> None:
        try:
            writer = StoreWriter(db, **options)
        except BaseException as exc:
            opened.set_exception(exc)
            return
        opened.set_result(writer)
        try:
            while (item := self._queue.get()) is not None:
                fn, args, kwargs, future = item
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(fn(writer, *args, **kwargs))
                except BaseException as exc:
                    future.set_exception(exc)
        finally:
            writer.close()

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the store writer is closed")
            self._queue.put((fn, args, kwargs, future))
        return future

    def begin_crawl(self, swarm: str, started_at: float, vantage: str | None = None) -> Future[int]:
        return self.submit(StoreWriter.begin_crawl, swarm, started_at, vantage)

    def record_vantage_probes(self, crawl_id: int, vantage: str, results: Sequence[Reachability]) -> Future[int]:
        return self.submit(StoreWriter.record_vantage_probes, crawl_id, vantage, list(results))

    def finish_crawl(self, crawl_id: int, snapshot: Snapshot) -> Future[CrawlSummary]:
        return self.submit(StoreWriter.finish_crawl, crawl_id, snapshot)

    def fail_crawl(
        self, crawl_id: int, error: str, stats: CrawlStats | None = None, *, finished_at: float | None = None
    ) -> Future[CrawlSummary]:
        return self.submit(StoreWriter.fail_crawl, crawl_id, error, stats, finished_at=finished_at)

    def write_snapshot(self, snapshot: Snapshot) -> Future[CrawlSummary]:
        return self.submit(StoreWriter.write_snapshot, snapshot)

    def lead(self, swarm: str) -> Future[bool]:
        return self.submit(StoreWriter.lead, swarm)

    def apply_retention(self, now: float, **windows: float | None) -> Future[RetentionReport]:
        """:meth:`StoreWriter.apply_retention` on the writer thread (same keyword windows)."""
        return self.submit(StoreWriter.apply_retention, now, **windows)

    def record_alert_events(self, events: list[AlertEvent]) -> Future[list[int]]:
        return self.submit(StoreWriter.record_alert_events, list(events))

    def close(self, timeout: float = 30.0) -> None:
        """Finish queued work, close the connection and join the thread (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)
        self._thread.join(timeout)

    def __enter__(self) -> WriterThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- the readers


class Store:
    """Read API over one database (thread-safe: SQLite, one read-only connection per thread; PostgreSQL, a pool).

    ``Store(db)`` creates and migrates the database if needed (``create=False``: an SQLite file must already
    exist). ``path`` is the SQLite file (``None`` on PostgreSQL); ``location`` says which database it is.
    """

    def __init__(
        self, db: str | Path | DbLocation, *, create: bool = True, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS
    ) -> None:
        self.location = parse_db(db)
        self.path = self.location.path
        self.busy_timeout_ms = busy_timeout_ms
        if create:
            ensure_schema(self.location, busy_timeout_ms)
        elif self.path is not None and not self.path.exists():
            raise FileNotFoundError(self.path)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._guard = ReadGuard()  # which connection each read uses: ``interrupt``
        self._pool: Any = None
        if self.location.is_postgres:
            from .pg import open_pool

            self._pool = open_pool(self.location.url, PG_READERS, on_checkout=self._guard.using)

    def writer(self, **writer_options: Any) -> WriterThread:
        """Start the writer thread for this database (one per process; close it when done)."""
        return WriterThread(self.location, busy_timeout_ms=self.busy_timeout_ms, **writer_options)

    def close(self) -> None:
        """Close every reader connection (call when no reader is running)."""
        with self._lock:
            readers, self._readers = self._readers, []
            self._local = threading.local()
        for conn in readers:
            conn.close()
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def interrupt(self, call: ReadCall) -> bool:
        """Cut off ``call`` (its caller gave up on it: ``monitor.store.read_guard``): the read it runs raises, the
        thread is free, and the call reads nothing more. Returns whether a read was running."""
        return self._guard.interrupt(call)

    @contextmanager
    def _read(self) -> Iterator[Any]:
        if self._pool is not None:
            with self._read_pg() as conn:
                yield conn
            return
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect_ro(self.path, self.busy_timeout_ms)
            with self._lock:
                self._readers.append(conn)
            self._local.conn = conn
        try:  # an interrupt may land during BEGIN too: ``ended`` must follow whatever ``using`` began
            self._guard.using(conn)
            conn.execute("BEGIN")
            yield conn
        finally:
            self._guard.ended()
            with contextlib.suppress(sqlite3.OperationalError):  # an ``interrupt`` that came as the read ended
                conn.execute("COMMIT")
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    @contextmanager
    def _read_pg(self) -> Iterator[Any]:
        from .pg import PgConnection

        try:
            with self._pool.connection() as raw:
                self._guard.using(raw)
                conn = PgConnection(raw)
                try:
                    conn.execute(conn.dialect.begin_read)
                    try:
                        yield conn
                    finally:
                        if not conn.broken:
                            conn.execute("ROLLBACK")  # nothing to keep: the transaction only read
                finally:
                    self._guard.ended()  # before the connection goes back to the pool
        finally:
            self._guard.ended()  # also when none was had

    # -- crawls

    def swarms(self) -> list[str]:
        with self._read() as conn:
            return [row[0] for row in conn.execute("SELECT DISTINCT swarm FROM crawls ORDER BY swarm")]

    def crawl(self, crawl_id: int) -> CrawlSummary | None:
        with self._read() as conn:
            row = conn.execute(f"SELECT {CRAWL_COLUMNS} FROM crawls WHERE id = ?", (crawl_id,)).fetchone()
        return None if row is None else summary_from_row(row)

    def crawls(self, swarm: str | None = None, limit: int = 100, before_id: int | None = None) -> list[CrawlSummary]:
        """The crawl log, newest first; page with ``before_id`` (the last id of the previous page)."""
        with self._read() as conn:
            rows = newest_first(conn, "crawls", CRAWL_COLUMNS, swarm=swarm, limit=limit, before_id=before_id)
        return [summary_from_row(row) for row in rows]

    def last_crawl(self, swarm: str) -> CrawlSummary | None:
        """The newest crawl of ``swarm`` in any status (it may be running or have failed)."""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {CRAWL_COLUMNS} FROM crawls WHERE swarm = ? ORDER BY id DESC LIMIT 1", (swarm,)
            ).fetchone()
        return None if row is None else summary_from_row(row)

    def last_good_crawl(self, swarm: str) -> CrawlSummary | None:
        """The crawl whose snapshot users see (``latest_snapshot``)."""
        with self._read() as conn:
            crawl_id = self._latest_good_id(conn, swarm, None)
            if crawl_id is None:
                return None
            row = conn.execute(f"SELECT {CRAWL_COLUMNS} FROM crawls WHERE id = ?", (crawl_id,)).fetchone()
        return summary_from_row(row)

    # -- snapshots

    @staticmethod
    def _latest_good_id(conn: Any, swarm: str, ts: float | None) -> int | None:
        row = conn.execute(
            "SELECT id FROM crawls WHERE swarm = ? AND status = 'succeeded' AND finished_at <= ? "
            "ORDER BY finished_at DESC, id DESC LIMIT 1",
            (swarm, float("inf") if ts is None else ts),
        ).fetchone()
        return None if row is None else row[0]

    def latest_snapshot(self, swarm: str) -> Snapshot | None:
        """The last succeeded crawl of ``swarm`` (failed, empty and running crawls never replace it)."""
        return self.snapshot_at(swarm, None)

    def snapshot_at(self, swarm: str, ts: float | None) -> Snapshot | None:
        """The last succeeded crawl of ``swarm`` that finished at or before ``ts`` (``None``: the latest)."""
        with self._read() as conn:
            crawl_id = self._latest_good_id(conn, swarm, ts)
            return None if crawl_id is None else read_snapshot(conn, crawl_id)

    def snapshot(self, crawl_id: int) -> Snapshot | None:
        """A succeeded crawl's snapshot; ``None`` for an unknown, running, failed or rolled-up crawl."""
        with self._read() as conn:
            return read_snapshot(conn, crawl_id)

    def diff(self, a_id: int, b_id: int) -> CrawlDiff:
        """Changes from crawl ``a_id`` to ``b_id``. Raises :class:`CrawlNotFound` if either has no snapshot."""
        with self._read() as conn:
            a, b = read_snapshot(conn, a_id), read_snapshot(conn, b_id)
        for crawl_id, snap in ((a_id, a), (b_id, b)):
            if snap is None:
                raise CrawlNotFound(f"no succeeded crawl {crawl_id}")
        return diff_snapshots(a, b)

    # -- history

    def model_history(
        self, swarm: str, dht_prefix: str, since: float, until: float, step: float | None = None
    ) -> list[ModelPoint]:
        """Points for one model in ``[since, until]``, bucketed by ``step`` seconds (see ``store_history``)."""
        with self._read() as conn:
            return store_history.model_history(conn, swarm, dht_prefix, since, until, step)

    def probe_targets(self, swarm: str) -> tuple[int, list[str]] | None:
        """``monitor probe``: the newest good crawl of ``swarm`` and the servers to probe (``store_vantages``)."""
        with self._read() as conn:
            return store_vantages.probe_targets(conn, swarm)

    def reachable_from(self, crawl_id: int, max_age: float) -> VantageVerdicts:
        """Per server of crawl ``crawl_id``: "reachable from k of n" vantage points (``store_vantages``)."""
        with self._read() as conn:
            return store_vantages.reachable_from_crawl(conn, crawl_id, max_age)

    def peer_vantage_results(self, peer_id: str, since: float) -> ReachableFrom | None:
        """One server's newest result from each vantage point checked since ``since``."""
        with self._read() as conn:
            return store_vantages.peer_results(conn, peer_id, since)

    def block_history(
        self, swarm: str, dht_prefix: str, since: float, until: float, step: float | None = None
    ) -> BlockHistory:
        """Online servers per block of one model in ``[since, until]`` and when each was dark (``store_blocks``)."""
        with self._read() as conn:
            return store_blocks.block_history(conn, swarm, dht_prefix, since, until, step)

    def server_history(self, peer_id: str, since: float, until: float) -> list[ServerPoint]:
        with self._read() as conn:
            return store_history.server_history(conn, peer_id, since, until)

    def server_uptime(
        self, peer_id: str, now: float, windows: Iterable[int] = UPTIME_WINDOWS
    ) -> dict[int, float | None]:
        """window seconds -> fraction of crawls in which the peer was online (``None``: no data)."""
        with self._read() as conn:
            return store_history.server_uptime(conn, peer_id, now, windows)

    def server_models(self, peer_id: str) -> list[ServerModel]:
        with self._read() as conn:
            return store_history.server_models(conn, peer_id)

    def version_history(self, swarm: str, since: float, until: float, step: float | None = None) -> list[VersionPoint]:
        """Servers per Petals version over time (see ``store_alerts.version_history``)."""
        with self._read() as conn:
            return store_alerts.version_history(conn, swarm, since, until, step)

    # -- alerts

    def alert_events(
        self, swarm: str | None = None, limit: int = 100, before_id: int | None = None
    ) -> list[tuple[int, AlertEvent]]:
        """``(id, event)`` newest first; page with ``before_id``."""
        with self._read() as conn:
            return store_alerts.events(conn, swarm, limit, before_id)

    def active_alerts(self, swarm: str | None = None) -> list[ActiveAlert]:
        with self._read() as conn:
            return store_alerts.active_alerts(conn, swarm)

    def failure_streaks(self) -> dict[str, int]:
        with self._read() as conn:
            return store_alerts.failure_streaks(conn)


def open_store(db: str | Path | DbLocation, **options: Any) -> Store:
    return Store(db, **options)
