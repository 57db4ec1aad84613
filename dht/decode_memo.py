"""Decode each distinct FIND dictionary once: replicas of a key usually answer byte for byte alike.

A Petals block key is a dictionary of every server's announcement (~300 bytes each), kept by ~5 replicas, and
a ``latest=True`` lookup reads all of them: on the crawl benchmark 5 identical copies of each of 249 values.
Decoding is ~15 % of a crawl; keyed by the exact bytes, the 4 repeats cost a hash and a dict copy instead.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .serializer import loads_dictionary
from .value import DictionaryValue

# raw bytes remembered (one crawl of a large swarm: 250 keys x 20 KB = 5 MB); with the decoded dictionaries they
# keep alive (~1.5x their input), the memo holds at most ~20 MB
DEFAULT_MAX_BYTES = 8 * 1024 * 1024


class DictionaryMemo:
    """:func:`~dht.serializer.loads_dictionary` with a memory of recent inputs, bounded by their total size.

    Every call returns a fresh :class:`DictionaryValue` (a copy sharing the immutable entries), so callers may
    change what they get. Inputs that do not decode are not remembered: they raise as
    :func:`~dht.serializer.loads_dictionary` does, every time."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._decoded: OrderedDict[bytes, DictionaryValue] = OrderedDict()
        self._size = 0
        self.hits = 0

    def loads(self, data: bytes) -> Any:
        known = self._decoded.get(data)
        if known is not None:
            self._decoded.move_to_end(data)
            self.hits += 1
            return known.copy()
        value = loads_dictionary(data)
        if isinstance(value, DictionaryValue) and len(data) <= self.max_bytes:
            self._remember(bytes(data), value)
            return value.copy()
        return value

    def _remember(self, data: bytes, value: DictionaryValue) -> None:
        self._decoded[data] = value
        self._size += len(data)
        while self._size > self.max_bytes:
            old, _ = self._decoded.popitem(last=False)
            self._size -= len(old)

    def clear(self) -> None:
        self._decoded.clear()
        self._size = 0

    def __len__(self) -> int:
        return len(self._decoded)
