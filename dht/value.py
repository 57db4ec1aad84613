"""DHT values: opaque msgpack payloads with absolute expirations (PROTOCOL.md §2.2, §2.3, §2.5).

- :class:`DHTValue` is one payload and its absolute expiration (Unix seconds, "DHT time"). There is no TTL
  on the wire; :meth:`DHTValue.ttl` only helps humans.
- :class:`DictionaryValue` is hivemind's ``DictionaryDHTValue``: subkey → DHTValue in insertion order, plus
  ``latest_expiration`` (the newest expiration ever stored) and ``maxsize``. It serializes as ext 0x50.
- :class:`DHTValueBuilder` produces a :class:`StoreValue`, the value half of what a store sends.

Nothing here reads a clock: every rule that depends on time takes ``now`` from the caller.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from . import msgpack_codec
from .errors import DecodeError
from .msgpack_codec import EXT_DICTIONARY, DecodeLimits, dumps

_INF = float("inf")


class ValueWithExpiration(NamedTuple):
    """A decoded value with its expiration, as hivemind's ``get`` returns it."""

    value: Any
    expiration: float


@dataclass(frozen=True, slots=True)
class DHTValue:
    """One serialized value and the absolute DHT time at which it expires."""

    payload: bytes
    expiration: float

    def __post_init__(self) -> None:
        if type(self.payload) is not bytes:
            object.__setattr__(self, "payload", bytes(self.payload))
        if type(self.expiration) is not float:  # a FIND reply builds ~70,000 of these: skip the no-op set
            object.__setattr__(self, "expiration", float(self.expiration))

    def is_valid(self, now: float) -> bool:
        """Still alive at ``now``: receivers reject only expirations strictly before their clock."""
        return self.expiration >= now

    def ttl(self, now: float) -> float:
        """Seconds left at ``now`` (negative once expired)."""
        return self.expiration - now

    def decode(self, *, allow_unknown_ext: bool = False, limits: DecodeLimits | None = None) -> Any:
        """The Python object behind the payload (raises :class:`~dht.errors.DecodeError`)."""
        if limits is None:
            return _loads(self.payload, allow_unknown_ext=allow_unknown_ext)
        return _loads(self.payload, allow_unknown_ext=allow_unknown_ext, limits=limits)


class DictionaryValue:
    """hivemind's ``DictionaryDHTValue``: a timed map ``subkey → DHTValue`` (serialized as ext 0x50).

    * :meth:`store` follows hivemind: a subkey is replaced only by a strictly newer expiration and keeps its
      slot; ``latest_expiration`` is raised by every store call, accepted or not.
    * A dictionary parsed from the wire (:meth:`unpackb`, :meth:`from_packed`) keeps expired entries, like
      hivemind's "frozen" unpacking; pass ``now`` to :meth:`packb`, :meth:`pruned` or :meth:`merge` to drop
      entries whose expiration is before ``now`` (what a live hivemind dictionary does on serialization).
    """

    MSGPACK_EXT_CODE = EXT_DICTIONARY
    __hash__ = None  # type: ignore[assignment]  # mutable

    def __init__(
        self,
        entries: Iterable[tuple[Any, DHTValue]] = (),
        *,
        maxsize: float = _INF,
        latest_expiration: float | None = None,
    ) -> None:
        self.maxsize: float = maxsize or _INF
        self.latest_expiration: float = -_INF
        self._entries: dict[Any, DHTValue] = {}
        for subkey, value in entries:
            self.store(subkey, value)
        if latest_expiration is not None:
            self.latest_expiration = float(latest_expiration)

    # ------------------------------------------------------------------------------------------ mapping

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, subkey: object) -> bool:
        return subkey in self._entries

    def __iter__(self) -> Iterator[Any]:
        return iter(self._entries)

    def __getitem__(self, subkey: Any) -> DHTValue:
        return self._entries[subkey]

    def get(self, subkey: Any) -> DHTValue | None:
        return self._entries.get(subkey)

    def items(self) -> list[tuple[Any, DHTValue]]:
        """``(subkey, DHTValue)`` pairs in insertion order."""
        return list(self._entries.items())

    @property
    def expiration(self) -> float:
        """The outer expiration: the newest expiration ever stored (``latest_expiration_time``)."""
        return self.latest_expiration

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DictionaryValue):
            return NotImplemented
        return (
            self._entries == other._entries
            and self.maxsize == other.maxsize
            and self.latest_expiration == other.latest_expiration
        )

    def __repr__(self) -> str:
        inner = ", ".join(f"{k!r}: {v.expiration}" for k, v in self._entries.items())
        return f"DictionaryValue({{{inner}}}, latest_expiration={self.latest_expiration})"

    # ------------------------------------------------------------------------------------------ rules

    def store(self, subkey: Any, value: DHTValue, now: float | None = None) -> bool:
        """Add or refresh one entry; ``True`` if it was stored.

        With ``now``: an entry already expired at ``now`` is refused and expired entries are dropped, as on
        a live hivemind node. Without it nothing expires (a "frozen" dictionary). Over ``maxsize``, the
        entries that expire first are evicted.
        """
        hash(subkey)  # a subkey must be hashable, as a dict key
        self.latest_expiration = max(self.latest_expiration, value.expiration)
        if now is not None and value.expiration < now:
            return False
        existing = self._entries.get(subkey)
        if existing is not None:
            if existing.expiration < value.expiration:
                self._entries[subkey] = value
                return True
            return False
        self._entries[subkey] = value
        if now is not None:
            self._drop_expired(now)
        while len(self._entries) > self.maxsize:
            earliest = min(self._entries, key=lambda k: self._entries[k].expiration)
            del self._entries[earliest]
        return subkey in self._entries

    def _drop_expired(self, now: float) -> None:
        for subkey in [k for k, v in self._entries.items() if v.expiration < now]:
            del self._entries[subkey]

    def copy(self) -> DictionaryValue:
        clone = DictionaryValue(maxsize=self.maxsize)
        clone._entries = dict(self._entries)
        clone.latest_expiration = self.latest_expiration
        return clone

    def pruned(self, now: float) -> DictionaryValue:
        """A copy without the entries expired at ``now``; ``latest_expiration`` is kept, as hivemind does."""
        clone = self.copy()
        clone._drop_expired(now)
        return clone

    def merge(self, other: DictionaryValue, now: float | None = None) -> DictionaryValue:
        """Combine two replicas' answers for one key (``latest=True`` search, vector ``search_merge``).

        Per subkey the newest expiration wins; subkeys of ``self`` keep their order and new ones are appended.
        With ``now``, entries expired at ``now`` are dropped. The result's ``latest_expiration`` and
        ``maxsize`` are the larger of the two. Neither input is modified.
        """
        merged = self.copy() if now is None else self.pruned(now)
        merged.maxsize = max(self.maxsize, other.maxsize)
        entries = merged._entries
        for subkey, value in other._entries.items():
            if entries.get(subkey) is not value:  # the very same entry (identical replicas decoded once): no-op
                merged.store(subkey, value, now)
        merged.latest_expiration = max(self.latest_expiration, other.latest_expiration)
        return merged

    def decode(self, *, allow_unknown_ext: bool = False) -> dict[Any, ValueWithExpiration]:
        """``{subkey: ValueWithExpiration(object, expiration)}``, the shape hivemind's ``get`` returns."""
        return {
            subkey: ValueWithExpiration(value.decode(allow_unknown_ext=allow_unknown_ext), value.expiration)
            for subkey, value in self._entries.items()
        }

    # ------------------------------------------------------------------------------------------ wire

    def packb(self, now: float | None = None) -> bytes:
        """hivemind's layout: msgpack ``[maxsize, latest_expiration, [[subkey, value, expiration], ...]]``.

        With ``now``, entries expired at ``now`` are left out (hivemind prunes a live dictionary while
        serializing it); ``latest_expiration`` is written as stored either way.
        """
        source = self if now is None else self.pruned(now)
        items = [[subkey, value.payload, value.expiration] for subkey, value in source._entries.items()]
        return dumps([self.maxsize, self.latest_expiration, items])

    @classmethod
    def unpackb(cls, raw: bytes) -> DictionaryValue:
        """Parse the ext 0x50 payload; expired entries are kept (hivemind unpacks "frozen")."""
        return cls.from_packed(_loads(raw))

    @classmethod
    def from_packed(cls, packed: Any) -> DictionaryValue:
        """Validate and build from the decoded ``[maxsize, latest_expiration, items]`` list."""
        if type(packed) is not list or len(packed) != 3:
            raise DecodeError("DictionaryDHTValue: payload must be a 3-element array")
        maxsize, latest, items = packed
        if not _is_number(maxsize) or maxsize < 0:
            raise DecodeError(f"DictionaryDHTValue: bad maxsize {maxsize!r}")
        if not _is_number(latest):
            raise DecodeError(f"DictionaryDHTValue: bad latest_expiration_time {latest!r}")
        if type(items) is not list:
            raise DecodeError("DictionaryDHTValue: items must be an array")
        result = cls(maxsize=maxsize)
        entries = result._entries
        for item in items:  # the hot loop of every FIND reply; a "frozen" store: newest expiration wins, no eviction
            if type(item) is not list or len(item) != 3:
                raise DecodeError("DictionaryDHTValue: each item must be [subkey, value, expiration]")
            subkey, payload, expiration = item
            if type(payload) is not bytes:
                raise DecodeError(f"DictionaryDHTValue: value of subkey {subkey!r} is not bin")
            if type(expiration) not in _NUMBER_TYPES or expiration != expiration:
                raise DecodeError(f"DictionaryDHTValue: bad expiration {expiration!r}")
            try:
                existing = entries.get(subkey)
            except TypeError:
                raise DecodeError(f"DictionaryDHTValue: unhashable subkey {subkey!r}") from None
            if existing is None or existing.expiration < expiration:
                entries[subkey] = DHTValue(payload, expiration)
        result.latest_expiration = float(latest)
        return result


_NUMBER_TYPES = (int, float)


def _loads(data: bytes, **options: Any) -> Any:
    """The codec's ``loads`` with ext 0x50 as :class:`DictionaryValue` (what :func:`dht.serializer.loads` is)."""
    return msgpack_codec.loads(data, dictionary=DictionaryValue.from_packed, **options)


def _is_number(value: Any) -> bool:
    return type(value) in _NUMBER_TYPES and not math.isnan(value)


@dataclass(frozen=True)
class StoreValue:
    """The value half of one store item: payload, expiration, which tier (cache or storage) and its kind.

    ``whole_dictionary`` means the payload is a serialized :class:`DictionaryValue` sent with the subkey tag
    ``b""`` (hivemind's ``IS_DICTIONARY``): the receiver stores each entry with its own expiration.
    """

    payload: bytes
    expiration: float
    in_cache: bool = False
    whole_dictionary: bool = False

    @classmethod
    def of(cls, value: DHTValue | DictionaryValue | StoreValue, *, in_cache: bool = False) -> StoreValue:
        """Wrap a value for storing; a :class:`StoreValue` is returned unchanged."""
        if isinstance(value, StoreValue):
            return value
        if isinstance(value, DictionaryValue):
            return cls(dumps(value), value.latest_expiration, in_cache=in_cache, whole_dictionary=True)
        if isinstance(value, DHTValue):
            return cls(value.payload, value.expiration, in_cache=in_cache)
        raise TypeError(f"cannot store a {type(value).__name__}: build it with DHTValueBuilder")

    @property
    def value(self) -> DHTValue:
        return DHTValue(self.payload, self.expiration)


@dataclass(frozen=True)
class DHTValueBuilder:
    """Fluent, immutable construction of a :class:`StoreValue`::

    DHTValueBuilder.from_object(server_info).ttl_seconds(240, now=clock()).build()
    """

    payload: bytes
    whole_dictionary: bool = False
    expiration: float | None = None
    in_cache: bool = False

    @classmethod
    def from_object(cls, obj: Any) -> DHTValueBuilder:
        """Serialize ``obj`` with hivemind's msgpack; a :class:`DictionaryValue` is stored whole."""
        if isinstance(obj, DictionaryValue):
            return cls.from_dictionary(obj)
        return cls(dumps(obj))

    @classmethod
    def from_bytes(cls, payload: bytes) -> DHTValueBuilder:
        """An already-serialized payload, sent as is."""
        return cls(bytes(payload))

    @classmethod
    def from_dictionary(cls, dictionary: DictionaryValue) -> DHTValueBuilder:
        """A whole dictionary (tag ``b""``); its expiration defaults to ``latest_expiration``."""
        return cls(dumps(dictionary), whole_dictionary=True, expiration=dictionary.latest_expiration)

    def ttl_seconds(self, seconds: float, *, now: float) -> DHTValueBuilder:
        """Expire ``seconds`` after ``now`` (the caller's DHT time)."""
        return self.expiration_time(now + seconds)

    def expiration_time(self, expiration: float) -> DHTValueBuilder:
        if math.isnan(expiration):
            raise ValueError("expiration must not be NaN")
        return replace(self, expiration=float(expiration))

    def cached(self, in_cache: bool = True) -> DHTValueBuilder:
        """Send to the receiver's cache tier (``in_cache=true``) instead of its storage."""
        return replace(self, in_cache=in_cache)

    def build(self) -> StoreValue:
        if self.expiration is None:
            raise ValueError("set an expiration first (ttl_seconds or expiration_time)")
        return StoreValue(self.payload, self.expiration, self.in_cache, self.whole_dictionary)
