"""What a DHT node keeps for other peers: hivemind's storage rules over raw bytes (PROTOCOL.md §2.3–2.4).

Every key (a 20-byte DHTID) holds either a *regular* value or a *dictionary* ``{subkey: (value, expiration)}``.
Values and subkeys are opaque msgpack bytes; a subkey must be the canonical msgpack encoding of the subkey
(the node canonicalizes what it receives), because it is embedded as-is in the ext-0x50 answer to FIND.

Rules (all comparisons against the caller's ``now``; nothing in here reads a clock):

* a store whose expiration is already past (``expiration < now``) is rejected and changes nothing;
* the newest expiration wins, separately per key and per subkey, **strictly** (equal is rejected);
* a subkey store replaces a regular value only if it is newer than it; a regular store replaces a whole
  dictionary only if it is newer than the dictionary's latest expiration;
* a dictionary's outer expiration is the maximum subkey expiration ever stored;
* a whole-dictionary store (tag ``IS_DICTIONARY``) stores subkeys in order and stops at the first rejected one;
* expired entries vanish on read.

**The eviction quirk** (§2.4 "QUIRK"): hivemind's ``TimedStorage.store`` reschedules eviction to the
expiration of *every* unexpired store attempt, accepted or not, so a rejected older store makes the node drop
the newer value early. We do **not** reproduce it by default (``eviction_quirk=False``): peers cannot rely on it
(readers query several replicas, and a value living until its stated expiration is what they expect), and it
lets any peer delete another server's announcement early by replaying a stale-but-unexpired store.
``eviction_quirk=True`` reproduces hivemind exactly as seen through reads; the ``storage_rules`` vectors are
checked in both modes. (hivemind's lazy heap clean-up timing is not modelled: an evicted entry is gone for
every later operation, not only after the next read.)

Beyond hivemind, hostile input is bounded by :class:`StorageLimits`: over a limit a store is rejected
(``False``), never an exception. The cache tier (items stored with ``in_cache=true``) uses the same rules but
evicts least-recently-used keys instead of rejecting when full.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import msgpack

KEY_BYTES = 20
DICTIONARY_EXT_CODE = 0x50  # hivemind's ext code for DictionaryDHTValue
ENTRY_OVERHEAD_BYTES = 64  # accounting cost of one value or key besides its payload
_HEAP_SLACK = 1024


@dataclass(frozen=True, slots=True)
class StorageLimits:
    """Bounds that keep a node alive under hostile stores. ``None`` disables a bound."""

    max_entries: int = 100_000  # regular values + dictionary subkeys, over all keys
    max_bytes: int = 256 * 1024 * 1024  # payload + ENTRY_OVERHEAD_BYTES per key and per entry
    max_value_bytes: int = 512 * 1024  # one value
    max_subkey_bytes: int = 4096  # one serialized subkey
    max_subkeys_per_key: int = 8192  # keeps one FIND answer well under the 4 MiB envelope
    max_ttl: float | None = 24 * 3600.0  # refuse expirations further than this in the future (hivemind: none)


@dataclass(frozen=True, slots=True)
class RegularItem:
    """A plain value as served by FIND (``FOUND_REGULAR``)."""

    value: bytes
    expiration: float


@dataclass(frozen=True, slots=True)
class DictionaryEntry:
    subkey: bytes  # canonical msgpack of the subkey
    value: bytes
    expiration: float


@dataclass(frozen=True, slots=True)
class DictionaryItem:
    """A dictionary as served by FIND (``FOUND_DICTIONARY``): unexpired entries in insertion order.

    ``latest_expiration`` is the outer expiration and is not recomputed when entries expire, so an
    item with zero entries is possible (hivemind does the same).
    """

    latest_expiration: float
    entries: tuple[DictionaryEntry, ...]

    @property
    def expiration(self) -> float:
        return self.latest_expiration

    def packb(self) -> bytes:
        """hivemind's ``DictionaryDHTValue.packb()``: ``[maxsize=inf, latest, [[subkey, value, exp], ...]]``."""
        packer = msgpack.Packer(use_bin_type=True)
        parts = [
            packer.pack_array_header(3),
            packer.pack(math.inf),
            packer.pack(float(self.latest_expiration)),
            packer.pack_array_header(len(self.entries)),
        ]
        for entry in self.entries:
            parts.append(packer.pack_array_header(3))
            parts.append(entry.subkey)  # already msgpack
            parts.append(packer.pack(entry.value))
            parts.append(packer.pack(float(entry.expiration)))
        return b"".join(parts)

    def to_msgpack(self) -> bytes:
        """The FIND ``value`` bytes: ext 0x50 around :meth:`packb`."""
        return msgpack.Packer(use_bin_type=True).pack_ext_type(DICTIONARY_EXT_CODE, self.packb())


StoredItem = RegularItem | DictionaryItem


@dataclass(slots=True)
class _Slot:
    """One stored value (the regular value of a key, or one subkey of a dictionary)."""

    value: bytes
    expiration: float
    evict_at: float  # == expiration unless the eviction quirk moved it
    token: int  # identifies the heap entry that currently governs eviction


@dataclass(slots=True)
class _Record:
    expiration: float  # regular: the value's; dictionary: the latest subkey expiration ever stored
    evict_at: float
    token: int
    regular: _Slot | None = None
    entries: dict[bytes, _Slot] | None = None  # insertion-ordered; an updated subkey keeps its slot
    payload_bytes: int = field(default=0)

    @property
    def is_dictionary(self) -> bool:
        return self.entries is not None


def _slot_cost(subkey: bytes, value: bytes) -> int:
    return len(subkey) + len(value) + ENTRY_OVERHEAD_BYTES


def is_single_msgpack_object(data: bytes) -> bool:
    """True if ``data`` is exactly one complete msgpack object (so it can be embedded in a packed array)."""
    try:
        msgpack.unpackb(data, raw=True, strict_map_key=False, ext_hook=lambda code, payload: None)
    except Exception:
        return False
    return True


class TimedStore:
    """One storage tier (hivemind's ``DHTLocalStorage``) with explicit ``now`` and bounded size.

    ``evict_lru=False``: over a limit, expired entries are purged and then the store is rejected.
    ``evict_lru=True`` (cache tier): over a limit, least-recently-used keys are dropped to make room.
    """

    def __init__(
        self,
        limits: StorageLimits | None = None,
        *,
        eviction_quirk: bool = False,
        evict_lru: bool = False,
    ) -> None:
        self.limits = limits or StorageLimits()
        self.eviction_quirk = eviction_quirk
        self.evict_lru = evict_lru
        self._records: OrderedDict[bytes, _Record] = OrderedDict()  # LRU order: oldest first
        self._heap: list[tuple[float, int, bytes, bytes | None]] = []  # (evict_at, token, key, subkey)
        self._next_token = 0
        self.num_entries = 0
        self.total_bytes = 0

    # ------------------------------------------------------------------ reads

    def get(self, key: bytes, now: float) -> StoredItem | None:
        """The live item under ``key`` (expired entries are dropped first), or ``None``."""
        _check_key(key)
        record = self._live_record(key, now)
        if record is None:
            return None
        if self.evict_lru:
            self._records.move_to_end(key)
        if record.regular is not None:
            return RegularItem(record.regular.value, record.expiration)
        return DictionaryItem(record.expiration, self._live_entries(key, record, now))

    def __contains__(self, key: bytes) -> bool:  # ignores expiration; use get() for a live view
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def keys(self) -> list[bytes]:
        return list(self._records)

    def items(self, now: float) -> Iterator[tuple[bytes, StoredItem]]:
        """Every live item, e.g. to replicate to a newly met node."""
        for key in list(self._records):
            item = self.get(key, now)
            if item is not None:
                yield key, item

    # ----------------------------------------------------------------- writes

    def store(self, key: bytes, value: bytes, expiration: float, now: float) -> bool:
        """Store a regular value. True if stored, False if rejected (expired, not newer, over a limit)."""
        _check_key(key)
        if not self._admissible(value, b"", expiration, now):
            return False
        record = self._live_record(key, now)
        if record is not None:
            if self.eviction_quirk:
                self._reschedule_record(key, record, expiration)
            if not expiration > record.expiration:
                return False
        cost = _slot_cost(b"", value)
        old_entries, old_bytes = self._record_usage(record)
        if not self._make_room(key, 1 - old_entries, cost + ENTRY_OVERHEAD_BYTES - old_bytes, now):
            return False
        self._replace_record(key, _Record(expiration, expiration, 0, regular=_Slot(value, expiration, expiration, 0)))
        return True

    def store_subkey(self, key: bytes, subkey: bytes, value: bytes, expiration: float, now: float) -> bool:
        """Store one dictionary entry. True if stored, False if rejected."""
        _check_key(key)
        if not self._admissible(value, subkey, expiration, now) or not is_single_msgpack_object(subkey):
            return False
        record = self._live_record(key, now)
        if record is None or not record.is_dictionary:
            if record is not None and not expiration > record.expiration:
                return False  # hivemind leaves a newer regular value untouched, quirk included
            old_entries, old_bytes = self._record_usage(record)
            delta_bytes = _slot_cost(subkey, value) + ENTRY_OVERHEAD_BYTES - old_bytes
            if not self._make_room(key, 1 - old_entries, delta_bytes, now):
                return False
            new_record = _Record(expiration, expiration, 0, entries={})
            new_record.entries[subkey] = _Slot(value, expiration, expiration, 0)
            self._replace_record(key, new_record)
            return True

        assert record.entries is not None
        slot = self._live_slot(key, record, subkey, now)
        if slot is not None:
            if self.eviction_quirk:
                self._reschedule_slot(key, subkey, slot, expiration)
            if not expiration > slot.expiration:
                return False
            delta_entries, delta_bytes = 0, len(value) - len(slot.value)
        else:
            if len(record.entries) >= self.limits.max_subkeys_per_key:
                return False
            delta_entries, delta_bytes = 1, _slot_cost(subkey, value)
        if not self._make_room(key, delta_entries, delta_bytes, now):
            return False
        record = self._records[key]  # _make_room never drops `key` itself
        assert record.entries is not None
        if expiration > record.expiration:
            record.expiration = expiration
            self._reschedule_record(key, record, expiration)
        if slot is None:
            slot = _Slot(value, expiration, expiration, 0)
            record.entries[subkey] = slot
        else:
            slot.value, slot.expiration = value, expiration
        self._reschedule_slot(key, subkey, slot, expiration)
        record.payload_bytes += delta_bytes
        self.num_entries += delta_entries
        self.total_bytes += delta_bytes
        if self.evict_lru:
            self._records.move_to_end(key)
        return True

    def store_dictionary(self, key: bytes, entries: Iterable[tuple[bytes, bytes, float]], now: float) -> bool:
        """Store a whole dictionary (tag ``IS_DICTIONARY``): ``all(store_subkey(...))`` with short-circuit.

        Each entry keeps its own expiration. Duplicate subkeys are first merged as hivemind's parser does
        (first position, strictly newer value wins). An empty dictionary stores nothing and returns True.
        """
        merged: dict[bytes, tuple[bytes, float]] = {}
        for subkey, value, expiration in entries:
            previous = merged.get(subkey)
            if previous is None or expiration > previous[1]:
                merged[subkey] = (value, expiration)
        return all(
            self.store_subkey(key, subkey, value, expiration, now) for subkey, (value, expiration) in merged.items()
        )

    def purge(self, now: float) -> int:
        """Drop everything whose eviction time has passed. Returns the number of entries dropped."""
        dropped = 0
        while self._heap and self._heap[0][0] < now:
            _evict_at, token, key, subkey = heapq.heappop(self._heap)
            record = self._records.get(key)
            if record is None:
                continue
            if subkey is None:
                if record.token == token:
                    dropped += self._record_usage(record)[0]
                    self._drop_record(key)
            elif record.entries is not None:
                slot = record.entries.get(subkey)
                if slot is not None and slot.token == token:
                    self._drop_slot(key, record, subkey)
                    dropped += 1
        return dropped

    def clear(self) -> None:
        self._records.clear()
        self._heap.clear()
        self.num_entries = self.total_bytes = 0

    # -------------------------------------------------------------- internals

    def _admissible(self, value: bytes, subkey: bytes, expiration: float, now: float) -> bool:
        limits = self.limits
        if not isinstance(expiration, (int, float)) or math.isnan(expiration) or expiration < now:
            return False
        if limits.max_ttl is not None and expiration > now + limits.max_ttl:
            return False
        if len(value) > limits.max_value_bytes or len(subkey) > limits.max_subkey_bytes:
            return False
        cost = _slot_cost(subkey, value) + ENTRY_OVERHEAD_BYTES
        return limits.max_bytes is None or cost <= limits.max_bytes

    def _live_record(self, key: bytes, now: float) -> _Record | None:
        record = self._records.get(key)
        if record is not None and record.evict_at < now:
            self._drop_record(key)
            return None
        return record

    def _live_slot(self, key: bytes, record: _Record, subkey: bytes, now: float) -> _Slot | None:
        assert record.entries is not None
        slot = record.entries.get(subkey)
        if slot is not None and slot.evict_at < now:
            self._drop_slot(key, record, subkey)
            return None
        return slot

    def _live_entries(self, key: bytes, record: _Record, now: float) -> tuple[DictionaryEntry, ...]:
        assert record.entries is not None
        for subkey in [s for s, slot in record.entries.items() if slot.evict_at < now]:
            self._drop_slot(key, record, subkey)
        return tuple(DictionaryEntry(s, slot.value, slot.expiration) for s, slot in record.entries.items())

    @staticmethod
    def _record_usage(record: _Record | None) -> tuple[int, int]:
        """(entries, bytes) that a record accounts for."""
        if record is None:
            return 0, 0
        entries = 1 if record.regular is not None else len(record.entries or ())
        return entries, record.payload_bytes + ENTRY_OVERHEAD_BYTES

    def _make_room(self, key: bytes, delta_entries: int, delta_bytes: int, now: float) -> bool:
        """Check the global limits for a pending change to ``key``; purge (or evict LRU) to fit."""
        if self._fits(delta_entries, delta_bytes):
            return True
        self.purge(now)  # cannot drop `key`'s record: the caller just saw it live at this `now`
        if self.evict_lru:
            while not self._fits(delta_entries, delta_bytes):
                victim = next((k for k in self._records if k != key), None)
                if victim is None:
                    return False
                self._drop_record(victim)
        return self._fits(delta_entries, delta_bytes)

    def _fits(self, delta_entries: int, delta_bytes: int) -> bool:
        limits = self.limits
        if limits.max_entries is not None and self.num_entries + delta_entries > limits.max_entries:
            return False
        return limits.max_bytes is None or self.total_bytes + delta_bytes <= limits.max_bytes

    def _replace_record(self, key: bytes, record: _Record) -> None:
        self._drop_record(key)
        self._records[key] = record
        self._reschedule_record(key, record, record.evict_at)
        if record.regular is not None:
            record.payload_bytes = _slot_cost(b"", record.regular.value)
        else:
            assert record.entries is not None
            record.payload_bytes = 0
            for subkey, slot in record.entries.items():
                self._reschedule_slot(key, subkey, slot, slot.evict_at)
                record.payload_bytes += _slot_cost(subkey, slot.value)
        entries, used = self._record_usage(record)
        self.num_entries += entries
        self.total_bytes += used

    def _drop_record(self, key: bytes) -> None:
        record = self._records.pop(key, None)
        if record is not None:
            entries, used = self._record_usage(record)
            self.num_entries -= entries
            self.total_bytes -= used

    def _drop_slot(self, key: bytes, record: _Record, subkey: bytes) -> None:
        assert record.entries is not None
        slot = record.entries.pop(subkey)
        cost = _slot_cost(subkey, slot.value)
        record.payload_bytes -= cost
        self.num_entries -= 1
        self.total_bytes -= cost

    def _reschedule_record(self, key: bytes, record: _Record, evict_at: float) -> None:
        record.evict_at = evict_at
        record.token = self._push(evict_at, key, None)

    def _reschedule_slot(self, key: bytes, subkey: bytes, slot: _Slot, evict_at: float) -> None:
        slot.evict_at = evict_at
        slot.token = self._push(evict_at, key, subkey)

    def _push(self, evict_at: float, key: bytes, subkey: bytes | None) -> int:
        self._next_token += 1
        heapq.heappush(self._heap, (evict_at, self._next_token, key, subkey))
        if len(self._heap) > 2 * (self.num_entries + len(self._records)) + _HEAP_SLACK:
            self._compact_heap()
        return self._next_token

    def _compact_heap(self) -> None:
        """Keep only heap entries that still govern a record or slot (stale ones pile up on updates)."""
        live: list[tuple[float, int, bytes, bytes | None]] = []
        for key, record in self._records.items():
            live.append((record.evict_at, record.token, key, None))
            for subkey, slot in (record.entries or {}).items():
                live.append((slot.evict_at, slot.token, key, subkey))
        heapq.heapify(live)
        self._heap = live


class LocalStorage:
    """A node's two tiers: ``storage`` (normal stores) and ``cache`` (``in_cache=true`` stores, LRU-bounded).

    FIND answers from the cache only if the cached entry's outer expiration is strictly later.
    """

    def __init__(
        self,
        storage_limits: StorageLimits | None = None,
        cache_limits: StorageLimits | None = None,
        *,
        eviction_quirk: bool = False,
    ) -> None:
        self.storage = TimedStore(storage_limits, eviction_quirk=eviction_quirk)
        self.cache = TimedStore(
            cache_limits or StorageLimits(max_entries=10_000, max_bytes=32 * 1024 * 1024),
            eviction_quirk=eviction_quirk,
            evict_lru=True,
        )

    def tier(self, in_cache: bool) -> TimedStore:
        return self.cache if in_cache else self.storage

    def find(self, key: bytes, now: float) -> StoredItem | None:
        item = self.storage.get(key, now)
        cached = self.cache.get(key, now)
        if cached is not None and (item is None or cached.expiration > item.expiration):
            return cached
        return item


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise ValueError(f"storage keys are {KEY_BYTES}-byte DHTIDs")
