"""A token bucket per client on an injected clock (tests need no sleeping), and the TTL cache the web uses."""

from __future__ import annotations

import time
from collections import OrderedDict

from dht.ttl_cache import Clock, TTLCache

__all__ = ["Clock", "TTLCache", "TokenBuckets"]


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
