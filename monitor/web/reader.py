"""What the web needs from the store: a read-only, synchronous API (``monitor.store.Store`` satisfies it).

The web never writes. Calls are blocking (sqlite3), so handlers run them on :class:`ReadExecutor`'s threads,
never on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol, TypeVar, runtime_checkable

from ..history import CrawlDiff, CrawlSummary, ModelPoint, ServerPoint
from ..snapshot import Snapshot

T = TypeVar("T")


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

    def server_history(self, peer_id: str, since: float, until: float) -> list[ServerPoint]: ...

    def server_uptime(
        self, peer_id: str, now: float, windows: tuple[int, ...] = (86400, 604800, 2592000)
    ) -> dict[int, float | None]: ...


class ReadExecutor:
    """Runs blocking store reads on a small dedicated thread pool, so the event loop never waits on SQLite."""

    def __init__(self, store: StoreReader, *, workers: int = 2, cached_snapshots: int = 16) -> None:
        self.store = store
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="web-read")
        self._snapshots: OrderedDict[int, Snapshot] = OrderedDict()
        self._cached = cached_snapshots

    async def __call__(self, fn: Callable[..., T], /, *args, **kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def read(self, method: str, /, *args, **kwargs):
        """``await reads.read("crawl", 3)`` runs ``store.crawl(3)`` on a read thread."""
        return await self(getattr(self.store, method), *args, **kwargs)

    async def snapshot(self, crawl_id: int) -> Snapshot | None:
        """A finished crawl's snapshot never changes: keep the few most recent ones in memory."""
        if crawl_id in self._snapshots:
            self._snapshots.move_to_end(crawl_id)
            return self._snapshots[crawl_id]
        snap = await self.read("snapshot", crawl_id)
        if snap is not None and snap.status != "started":
            self._snapshots[crawl_id] = snap
            while len(self._snapshots) > self._cached:
                self._snapshots.popitem(last=False)
        return snap

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
