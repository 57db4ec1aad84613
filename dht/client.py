"""Sans-IO hivemind DHT client: turns calls into request bytes and response bytes into typed results.

Nothing here does I/O or reads a clock. A driver (the async layer over the transport) does::

    request = dht.get_many(peer, ["Meta-Llama-3-1-405B-Instruct-hf.0", "_petals.models"])
    try:
        reply = await transport.call(request.peer, request.proto, request.data)
    except DHTError as exc:
        dht.handle_error(request.request_id, exc)
    else:
        found = dht.handle_response(request.request_id, reply)   # FindData

Every request is answered exactly once, by ``handle_response`` or ``handle_error``; an unknown or repeated
request id raises :class:`~dht.errors.RequestIdError`. A response that does not parse raises
:class:`~dht.errors.DecodeError` and also settles the request. The client always runs in client mode: its
requests carry an empty ``NodeInfo`` and never our node ID (PROTOCOL.md §1.5).

Keys are anything hivemind can hash (str, bytes, ints, tuples, ...; ``bytes`` are hashed raw) and results
are keyed by the caller's original key. Subkeys are any hashable msgpack-able value (Petals: base58 PeerID).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import protocol
from .decode_memo import DictionaryMemo
from .errors import DecodeError, RequestIdError
from .ids import dhtid_of
from .protocol import FindResult, ResultType, StoreItem
from .serializer import loads_dictionary
from .value import DHTValue, DictionaryValue, StoreValue

Peer = Hashable  # whatever the transport uses to name a peer (PeerID bytes, a libp2p ID, ...)


@dataclass(frozen=True)
class OutgoingRequest:
    """One unary call to make: send ``data`` to ``peer`` on protocol ``proto``."""

    request_id: int
    peer: Peer
    proto: str
    data: bytes


@dataclass(frozen=True)
class StoreEntry:
    """One thing to store: a value (or a whole dictionary) under ``key``, optionally under ``subkey``."""

    key: Any
    value: DHTValue | DictionaryValue | StoreValue
    subkey: Any = None


@dataclass(frozen=True)
class PingResult:
    request_id: int
    peer: Peer
    node_id: bytes  # b"" if the responder did not say
    dht_time: float  # the responder's clock
    available: bool


@dataclass(frozen=True)
class StoreOutcome:
    key: Any
    subkey: Any
    stored: bool  # False: rejected (expired, not newer than what is there, or failed validation)


@dataclass(frozen=True)
class StoreResults:
    request_id: int
    peer: Peer
    node_id: bytes
    outcomes: list[StoreOutcome]

    def stored(self, key: Any, subkey: Any = None) -> bool:
        """Whether the responder accepted ``key`` (/ ``subkey``); KeyError if it was not in this request."""
        for outcome in self.outcomes:
            if outcome.key == key and outcome.subkey == subkey:
                return outcome.stored
        raise KeyError((key, subkey))

    @property
    def all_stored(self) -> bool:
        return all(outcome.stored for outcome in self.outcomes)


@dataclass(frozen=True)
class FoundValue:
    """One responder's answer for one key.

    ``value`` is a :class:`DHTValue` (regular; payload still serialized), a :class:`DictionaryValue`, or
    ``None`` (not found, or found but unparseable: then ``error`` says why). ``expiration`` is the outer
    expiration the responder reported. ``nearest`` are ``(node_id, peer_id)`` pairs, nearest first.
    """

    key: Any
    key_id: bytes
    value: DHTValue | DictionaryValue | None
    expiration: float | None
    nearest: list[tuple[bytes, bytes]]
    error: str | None = None


@dataclass(frozen=True)
class FindData:
    request_id: int
    peer: Peer
    node_id: bytes
    results: dict[Any, FoundValue]

    def value(self, key: Any) -> DHTValue | DictionaryValue | None:
        return self.results[key].value

    def nearest_peers(self) -> dict[bytes, bytes]:
        """Every ``node_id → peer_id`` the responder named, over all keys."""
        return {node_id: peer_id for found in self.results.values() for node_id, peer_id in found.nearest}


@dataclass(frozen=True)
class RequestFailed:
    request_id: int
    peer: Peer
    proto: str
    error: BaseException


@dataclass
class _Pending:
    request: OutgoingRequest
    keys: list[Any] = field(default_factory=list)  # original keys (find) or (key, subkey) pairs (store)
    key_ids: list[bytes] = field(default_factory=list)


Result = PingResult | StoreResults | FindData


class HivemindDHT:
    """Request bookkeeping for the three DHT RPCs; see the module docstring for how to drive it."""

    def __init__(self, *, first_request_id: int = 1, memo: DictionaryMemo | None = None) -> None:
        """``memo``: decode byte-identical dictionaries once (see :mod:`dht.decode_memo`); results are the same."""
        self._next_id = first_request_id
        self._pending: dict[int, _Pending] = {}
        self._loads_dictionary = loads_dictionary if memo is None else memo.loads

    # ------------------------------------------------------------------------------------------ requests

    def ping(self, peer: Peer, *, validate: bool = False) -> OutgoingRequest:
        return self._register(peer, protocol.RPC_PING, protocol.build_ping_request(validate=validate))

    def store(self, peer: Peer, key: Any, value: Any, subkey: Any = None) -> OutgoingRequest:
        """Store one value; ``value`` is a :class:`DHTValue`, a :class:`StoreValue` (from
        :class:`~dht.value.DHTValueBuilder`) or a whole :class:`DictionaryValue` (then no subkey)."""
        return self.store_many(peer, [StoreEntry(key, value, subkey)])

    def store_many(
        self, peer: Peer, entries: Iterable[StoreEntry | tuple[Any, Any] | tuple[Any, Any, Any]]
    ) -> OutgoingRequest:
        """Store several items in one request; entries are :class:`StoreEntry` or ``(key, value[, subkey])``."""
        items: list[StoreItem] = []
        labels: list[Any] = []
        for raw in entries:
            entry = raw if isinstance(raw, StoreEntry) else StoreEntry(*raw)
            items.append(_store_item(entry))
            labels.append((entry.key, entry.subkey))
        if not items:
            raise ValueError("store_many needs at least one entry")
        data = protocol.build_store_request(items)
        return self._register(peer, protocol.RPC_STORE, data, labels, [item.key for item in items])

    def get(self, peer: Peer, key: Any) -> OutgoingRequest:
        return self.get_many(peer, [key])

    def get_many(self, peer: Peer, keys: Iterable[Any]) -> OutgoingRequest:
        """Ask ``peer`` for every key in one FindRequest (duplicates are sent once)."""
        unique = list(dict.fromkeys(keys))
        if not unique:
            raise ValueError("get_many needs at least one key")
        key_ids = [dhtid_of(key) for key in unique]
        return self._register(peer, protocol.RPC_FIND, protocol.build_find_request(key_ids), unique, key_ids)

    def pending(self) -> list[OutgoingRequest]:
        """Requests sent (or to be sent) and not yet answered, oldest first."""
        return [p.request for p in self._pending.values()]

    def _register(
        self,
        peer: Peer,
        proto: str,
        data: bytes,
        keys: list[Any] | None = None,
        key_ids: list[bytes] | None = None,
    ) -> OutgoingRequest:
        request = OutgoingRequest(self._next_id, peer, proto, data)
        self._next_id += 1
        self._pending[request.request_id] = _Pending(request, keys or [], key_ids or [])
        return request

    # ------------------------------------------------------------------------------------------ answers

    def _settle(self, request_id: int) -> _Pending:
        pending = self._pending.pop(request_id, None)
        if pending is None:
            raise RequestIdError(f"request id {request_id!r} is unknown or was already answered")
        return pending

    def handle_response(self, request_id: int, response: bytes) -> Result:
        """Parse the responder's bytes for ``request_id``: PingResult, StoreResults or FindData."""
        pending = self._settle(request_id)
        request = pending.request
        if request.proto == protocol.RPC_PING:
            ping = protocol.parse_ping_response(response)
            return PingResult(request_id, request.peer, ping.node_id, ping.dht_time, ping.available)
        if request.proto == protocol.RPC_STORE:
            store = protocol.parse_store_response(response, expected=len(pending.keys))
            outcomes = [
                StoreOutcome(key, subkey, ok) for (key, subkey), ok in zip(pending.keys, store.store_ok, strict=True)
            ]
            return StoreResults(request_id, request.peer, store.node_id, outcomes)
        find = protocol.parse_find_response(response, pending.key_ids)
        decode = self._loads_dictionary
        results = {
            key: _found_value(key, result, decode) for key, result in zip(pending.keys, find.results, strict=True)
        }
        return FindData(request_id, request.peer, find.node_id, results)

    def handle_error(self, request_id: int, error: BaseException) -> RequestFailed:
        """Settle a call that failed (timeout, unreachable, remote error, undecodable reply)."""
        pending = self._settle(request_id)
        return RequestFailed(request_id, pending.request.peer, pending.request.proto, error)


def _store_item(entry: StoreEntry) -> StoreItem:
    value = StoreValue.of(entry.value)
    if value.whole_dictionary:
        if entry.subkey is not None:
            raise ValueError("a whole dictionary is stored without a subkey")
        tag = protocol.IS_DICTIONARY
    else:
        tag = protocol.subkey_tag(entry.subkey)
    return StoreItem(dhtid_of(entry.key), tag, value.payload, value.expiration, value.in_cache)


def _found_value(key: Any, result: FindResult, loads_dictionary: Callable[[bytes], Any]) -> FoundValue:
    if result.type is ResultType.NOT_FOUND or result.value is None or result.expiration is None:
        return FoundValue(key, result.key, None, None, result.nearest)
    if result.type is ResultType.FOUND_REGULAR:
        return FoundValue(key, result.key, DHTValue(result.value, result.expiration), result.expiration, result.nearest)
    try:
        dictionary = loads_dictionary(result.value)
    except DecodeError as exc:
        return FoundValue(key, result.key, None, result.expiration, result.nearest, error=str(exc))
    if not isinstance(dictionary, DictionaryValue):
        error = f"FOUND_DICTIONARY carries a {type(dictionary).__name__}"
        return FoundValue(key, result.key, None, result.expiration, result.nearest, error=error)
    return FoundValue(key, result.key, dictionary, result.expiration, result.nearest)
