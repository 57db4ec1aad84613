"""Per-app state shared by handlers: one :class:`WebContext` under ``app[CTX]`` (no globals)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from prometheus_client import CollectorRegistry

from ..snapshot import Reachability
from .events import EventHub
from .ratelimit import TokenBuckets, TTLCache
from .reader import ReadExecutor, StoreReader
from .settings import WebSettings

Prober = Callable[[str], Awaitable[Reachability]]
SchedulerInfo = Callable[[], Any]


class RenderCache:
    """Rendered documents keyed by what they depend on (swarm, crawl ids, ...): at most ``size`` kept (LRU)."""

    def __init__(self, size: int = 64) -> None:
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._size = size
        self._making: dict[Hashable, asyncio.Future] = {}
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> Any:
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]
        self.misses += 1
        return None

    def put(self, key: Hashable, value: Any) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    async def get_or_make(self, key: Hashable, make: Callable[[], Awaitable[Any]]) -> Any:
        """The cached value, else ``await make()`` once: concurrent misses of one key share one render (a new
        crawl under load would otherwise render the same page once per waiting request)."""
        value = self.get(key)
        if value is not None:
            return value
        future = self._making.get(key)
        if future is None:
            future = asyncio.ensure_future(make())
            self._making[key] = future
            future.add_done_callback(lambda f: self._made(key, f))
        return await asyncio.shield(future)

    def _made(self, key: Hashable, future: asyncio.Future) -> None:
        self._making.pop(key, None)
        if not future.cancelled() and future.exception() is None:
            self.put(key, future.result())


@dataclass(slots=True)
class WebContext:
    store: StoreReader
    settings: WebSettings
    env: jinja2.Environment
    static_dir: Path
    clock: Callable[[], float]
    monotonic: Callable[[], float]
    prober: Prober | None
    scheduler_info: SchedulerInfo | None
    limiter: TokenBuckets
    reach_cache: TTLCache[str, Reachability]
    registry: CollectorRegistry
    reads: ReadExecutor | None = None  # created and closed by the app's cleanup_ctx
    rendered: RenderCache = field(default_factory=RenderCache)
    events: EventHub = field(default_factory=EventHub)  # /api/v1/events; fed by the crawl job (monitor.app)
    probes_in_flight: dict[str, asyncio.Future] = field(default_factory=dict)

    @property
    def reader(self) -> ReadExecutor:
        if self.reads is None:
            raise RuntimeError("the app is not started (reads are opened by its cleanup_ctx)")
        return self.reads


CTX = web.AppKey("petals_monitor_web", WebContext)
