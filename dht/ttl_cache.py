"""A small map whose entries expire, on an injected clock (tests need no sleeping), bounded in size.

Used by the web (reachability answers) and, as a :class:`TTLSet`, by the DHT host (peers that refused our lean
transport)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

Clock = Callable[[], float]


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


class TTLSet(Generic[K]):
    """A set whose members expire ``ttl`` seconds after they were added; at most ``max_items`` (oldest dropped
    first). ``add`` and ``in`` as for a set."""

    def __init__(self, ttl: float, *, clock: Clock = time.monotonic, max_items: int = 1024) -> None:
        self._members: TTLCache[K, bool] = TTLCache(ttl, clock=clock, max_items=max_items)

    def add(self, key: K) -> None:
        self._members.put(key, True)

    def __contains__(self, key: object) -> bool:
        return self._members.get(key) is not None  # type: ignore[arg-type]

    def __len__(self) -> int:
        """Members held, expired ones not yet dropped included (what the bound counts)."""
        return len(self._members._items)


__all__ = ["Clock", "TTLCache", "TTLSet"]
