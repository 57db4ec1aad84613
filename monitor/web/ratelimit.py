"""A token bucket per client and a small TTL cache, both on an injected clock (tests need no sleeping)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

Clock = Callable[[], float]


class TokenBuckets:
    """``burst`` tokens per key, refilled at ``rate`` per second. Keeps at most ``max_keys`` keys (LRU)."""

    def __init__(self, *, burst: float, rate: float, clock: Clock = time.monotonic, max_keys: int = 10_000) -> None:
        self.burst, self.rate, self._clock, self._max = float(burst), float(rate), clock, max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """Take one token: returns 0 if allowed, else the seconds until a token is available."""
        now = self._clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate if self.rate > 0 else float("inf")
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        return wait


class TTLCache(Generic[K, V]):
    """Values that expire ``ttl`` seconds after they were put; at most ``max_items`` (oldest dropped first)."""

    def __init__(self, ttl: float, *, clock: Clock = time.monotonic, max_items: int = 1024) -> None:
        self.ttl, self._clock, self._max = ttl, clock, max_items
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= self._clock():
            del self._items[key]
            return None
        return item[1]

    def put(self, key: K, value: V) -> None:
        self._items.pop(key, None)
        self._items[key] = (self._clock() + self.ttl, value)
        while len(self._items) > self._max:
            self._items.popitem(last=False)
