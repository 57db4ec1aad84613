"""What the web needs from the store: a read-only, synchronous API (``monitor.store.sqlite.Store`` satisfies it).

The web never writes. Calls are blocking (sqlite3), so handlers run them on :class:`ReadExecutor`'s threads,
never on the event loop. Under load most requests need only "which crawls are the newest?" (:meth:`ReadExecutor.
heads`, one read shared by every request waiting for it) and a snapshot already in memory.

Every read has a deadline (``[web] read_timeout_seconds``), waiting for a thread included: a database that hangs
(a frozen server still ACKs, so no TCP timeout fires) costs a request a 503 (:class:`ReadTimeout`), not forever,
and the read still running is cut off (``Store.interrupt``), so the few read threads are never all held by it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol, TypeVar, runtime_checkable

from ..snapshot import Snapshot
from ..store.history import BlockHistory, CrawlDiff, CrawlSummary, ModelPoint, ServerPoint
from ..store.read_guard import ReadCall, reading_for
from .changes import ChangeWatch, PgChangeWatch, open_watch

log = logging.getLogger(__name__)

T = TypeVar("T")

Heads = dict[str, tuple[CrawlSummary | None, CrawlSummary | None]]  # swarm -> (last crawl, last good crawl)


class ReadTimeout(TimeoutError):
    """A store read outlived its deadline (the web answers 503, as when the database is gone)."""


def read_heads(store: StoreReader) -> Heads:
    """Every swarm's newest crawl (any status) and newest succeeded crawl (run on a read thread)."""
    return {swarm: (store.last_crawl(swarm), store.last_good_crawl(swarm)) for swarm in store.swarms()}


@runtime_checkable
class StoreReader(Protocol):
    def swarms(self) -> list[str]: ...

    def latest_snapshot(self, swarm: str) -> Snapshot | None: ...

    def snapshot(self, crawl_id: int) -> Snapshot | None: ...

    def snapshot_at(self, swarm: str, ts: float) -> Snapshot | None: ...

    def last_crawl(self, swarm: str) -> CrawlSummary | None: ...

    def last_good_crawl(self, swarm: str) -> CrawlSummary | None: ...

    def crawls(
        self, swarm: str | None = None, limit: int = 100, before_id: int | None = None
    ) -> list[CrawlSummary]: ...

    def crawl(self, crawl_id: int) -> CrawlSummary | None: ...

    def diff(self, a_id: int, b_id: int) -> CrawlDiff: ...

    def model_history(
        self, swarm: str, dht_prefix: str, since: float, until: float, step: float | None
    ) -> list[ModelPoint]: ...

    def block_history(
        self, swarm: str, dht_prefix: str, since: float, until: float, step: float | None
    ) -> BlockHistory: ...

    def server_history(self, peer_id: str, since: float, until: float) -> list[ServerPoint]: ...

    def server_uptime(
        self, peer_id: str, now: float, windows: tuple[int, ...] = (86400, 604800, 2592000)
    ) -> dict[int, float | None]: ...


class ReadExecutor:
    """Runs blocking store reads on a small dedicated thread pool, so the event loop never waits on SQLite."""

    def __init__(
        self, store: StoreReader, *, workers: int = 2, cached_snapshots: int = 16, deadline: float | None = None
    ) -> None:
        self.store = store
        self.deadline = deadline  # seconds a read may take, queueing included (None: no limit)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="web-read")
        self._snapshots: OrderedDict[int, Snapshot] = OrderedDict()
        self._cached = cached_snapshots
        self._snapshot_reads: dict[int, asyncio.Future] = {}
        self._heads_running: asyncio.Future | None = None
        self._heads_next: asyncio.Future | None = None
        self._watch: ChangeWatch | PgChangeWatch | None = None
        self._reopening: asyncio.Future | None = None
        self._heads: tuple[int, Heads] | None = None  # (data version read before, heads)
        self._fresh: dict[tuple, tuple[int, object]] = {}  # (method, args) -> (data version, answer)

    async def start(self) -> None:
        """Open the change watch (on a thread: opening a file blocks). Without it every request reads heads."""
        self._watch = await self._run(_open_watch, self.store)

    @property
    def watch(self) -> ChangeWatch | PgChangeWatch | None:
        """The change watch (None until :meth:`start`, or when the store has none)."""
        return self._watch

    def poll_changes(self) -> int | None:
        """The change watch's number now (None: unknown), having taken in what it received (the live feed)."""
        return self._version()

    def _version(self) -> int | None:
        """The change watch's number (None: unknown). A watch that is down is reopened on a read thread, in the
        background and rate-limited by the watch, so the database coming back brings the cached heads back."""
        if self._watch is None:
            return None
        version = self._watch.version()
        if version is None and self._reopening is None and self._watch.reopen_due():
            self._reopening = asyncio.ensure_future(self._run(self._watch.reopen))
            self._reopening.add_done_callback(self._reopened)
        return version

    def store_down(self) -> bool:
        """The change watch has lost the database (PostgreSQL): a read now would wait for a connection and fail."""
        return self._watch is not None and isinstance(self._watch, PgChangeWatch) and self._version() is None

    def _reopened(self, future: asyncio.Future) -> None:
        self._reopening = None
        if not future.cancelled() and future.exception() is not None:
            # the type only: a database error's text may quote the URL, with its password
            log.warning("could not reopen the change watch: %s", type(future.exception()).__name__)

    async def __call__(self, fn: Callable[..., T], /, *args, **kwargs) -> T:
        """``fn(*args, **kwargs)`` on a read thread, within the deadline: past it, :class:`ReadTimeout`, and a
        read still running is cut off (``store.interrupt``, when the store has it: its connection, not the
        thread, is what is stuck)."""
        if self.deadline is None:
            return await self._run(fn, *args, **kwargs)
        call = ReadCall()

        def run() -> T:
            with reading_for(call):
                return fn(*args, **kwargs)

        work = self._pool.submit(run)
        try:
            async with asyncio.timeout(self.deadline):
                return await asyncio.wrap_future(work)  # cancelled at the deadline: never started, or abandoned
        except TimeoutError:
            interrupt = getattr(self.store, "interrupt", None)
            if interrupt is not None:  # also when between two reads, or not started yet: it reads nothing more
                interrupt(call)
            raise ReadTimeout(f"a database read took longer than {self.deadline:g} s") from None

    async def _run(self, fn: Callable[..., T], /, *args, **kwargs) -> T:
        """On a read thread, without a deadline (the change watch's own connection work: bounded by its timeouts)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def read(self, method: str, /, *args, **kwargs):
        """``await reads.read("crawl", 3)`` runs ``store.crawl(3)`` on a read thread."""
        return await self(getattr(self.store, method), *args, **kwargs)

    async def read_fresh(self, method: str, /, *args):
        """``read``, answered from memory while the store's file is unchanged since the last same read (small,
        frequently wanted answers such as the alerts firing now). Without the change watch, a plain read."""
        version = self._version()  # before the read: it sees at least this
        key = (method, args)
        if version is not None:
            hit = self._fresh.get(key)
            if hit is not None and hit[0] == version:
                return hit[1]
        value = await self.read(method, *args)
        if version is not None:
            if len(self._fresh) >= 64:
                self._fresh.clear()
            self._fresh[key] = (version, value)
        return value

    async def snapshot(self, crawl_id: int) -> Snapshot | None:
        """A finished crawl's snapshot never changes: keep the few most recent ones in memory, and read each
        one once even when many requests want it at the same moment (right after a crawl, under load)."""
        if crawl_id in self._snapshots:
            self._snapshots.move_to_end(crawl_id)
            return self._snapshots[crawl_id]
        future = self._snapshot_reads.get(crawl_id)
        if future is None:
            future = asyncio.ensure_future(self.read("snapshot", crawl_id))
            self._snapshot_reads[crawl_id] = future
            future.add_done_callback(lambda f: self._snapshot_read(crawl_id, f))
        return await asyncio.shield(future)

    def _snapshot_read(self, crawl_id: int, future: asyncio.Future) -> None:
        self._snapshot_reads.pop(crawl_id, None)
        if future.cancelled() or future.exception() is not None:
            return
        snap = future.result()
        if snap is not None and snap.status != "started":
            self._snapshots[crawl_id] = snap
            while len(self._snapshots) > self._cached:
                self._snapshots.popitem(last=False)

    async def heads(self) -> Heads:
        """:func:`read_heads`, as of some moment after this call.

        When the store's file has not changed since the last read (see :mod:`.changes`), that read is the
        answer, without leaving the event loop. Otherwise a request waits for the next read to start (never
        reuses one already under way, which may predate a crawl it must see), and every request waiting shares
        that read: under load there is one such read at a time, whatever the number of requests."""
        if self._heads is not None and self._version() == self._heads[0]:
            return self._heads[1]
        if self._heads_next is None:
            self._heads_next = asyncio.get_running_loop().create_future()
            self._heads_next.add_done_callback(_retrieve)
        waiting = self._heads_next
        if self._heads_running is None:
            self._start_heads_read()
        return await asyncio.shield(waiting)

    def _start_heads_read(self) -> None:
        waiting, self._heads_next = self._heads_next, None
        assert waiting is not None
        version = self._version()  # before the read: it sees at least this
        self._heads_running = running = asyncio.ensure_future(self(read_heads, self.store))

        def done(f: asyncio.Future) -> None:
            self._heads_running = None
            if f.cancelled():
                waiting.cancel()
            elif f.exception() is not None:
                waiting.set_exception(f.exception())
            else:
                waiting.set_result(f.result())
                self._heads = None if version is None else (version, f.result())
            if self._heads_next is not None:
                self._start_heads_read()

        running.add_done_callback(done)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._watch is not None:
            self._watch.close()


def _open_watch(store: StoreReader) -> ChangeWatch | PgChangeWatch | None:
    try:
        return open_watch(store)
    except Exception:  # a store of another kind (tests' fakes): no watch, heads are read every time
        return None


def _retrieve(future: asyncio.Future) -> None:
    """Mark a shared future's exception as seen even if every waiter was cancelled (no "never retrieved")."""
    if not future.cancelled():
        future.exception()
