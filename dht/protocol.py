"""Build and parse the DHT RPC protobufs, both directions (PROTOCOL.md §3, §6.9).

Three unary RPCs, named by bare protocol IDs (:data:`RPC_PING`, :data:`RPC_STORE`, :data:`RPC_FIND`); one
request protobuf and one response protobuf each. The ``build_*`` functions emit hivemind's bytes exactly
(proto3, fields in number order, packed repeated scalars, ``peer`` always present). The ``parse_*`` functions
turn bytes from strangers into small frozen dataclasses and raise :class:`~dht.errors.DecodeError` for
anything malformed: bad protobuf, misaligned lists, a node ID that is not 0 or 20 bytes, a NaN expiration.

Client mode: pass no ``node_id`` and requests carry an empty-but-present ``NodeInfo`` (``12 00``/``1a 00``/
``3a 00``), so nobody adds us to a routing table or pushes replicas to us. A node passes its own ID.

Store subkey tags (one per item): ``c0`` (:data:`IS_REGULAR_VALUE`) for a plain value, ``b""``
(:data:`IS_DICTIONARY`) for a whole serialized dictionary, otherwise ``msgpack(subkey)``, never hashed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar

from google.protobuf.message import DecodeError as _PbDecodeError
from google.protobuf.message import Message

from ._pb import dht_pb2, runtime_pb2
from .errors import DecodeError
from .ids import DHTID, HASH_NBYTES
from .serializer import dumps, loads
from .value import DHTValue, DictionaryValue
from .wire import MAX_MESSAGE_SIZE

RPC_PING = "DHTProtocol.rpc_ping"
RPC_STORE = "DHTProtocol.rpc_store"
RPC_FIND = "DHTProtocol.rpc_find"
RPC_INFO = "TransformerConnectionHandler.rpc_info"

IS_REGULAR_VALUE = b"\xc0"  # msgpack nil: the item has no subkey
IS_DICTIONARY = b""  # the value is a whole serialized DictionaryDHTValue

NodeIdLike = bytes | DHTID | None


class ResultType(IntEnum):
    NOT_FOUND = dht_pb2.NOT_FOUND
    FOUND_REGULAR = dht_pb2.FOUND_REGULAR
    FOUND_DICTIONARY = dht_pb2.FOUND_DICTIONARY


# ---------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class StoreItem:
    """One aligned row of a ``StoreRequest``: 20-byte key ID, subkey tag, payload, expiration, tier."""

    key: bytes
    subkey_tag: bytes
    payload: bytes
    expiration: float
    in_cache: bool = False

    @property
    def is_regular(self) -> bool:
        return self.subkey_tag == IS_REGULAR_VALUE

    @property
    def is_whole_dictionary(self) -> bool:
        return self.subkey_tag == IS_DICTIONARY

    def subkey(self) -> Any:
        """The subkey object for a subkey store (``loads(tag)``); raises for the two reserved tags."""
        if self.is_regular or self.is_whole_dictionary:
            raise ValueError("this item has no subkey")
        return loads(self.subkey_tag)

    def dictionary(self) -> DictionaryValue:
        """The dictionary carried by an ``IS_DICTIONARY`` item (raises DecodeError if it is not one)."""
        value = loads(self.payload)
        if not isinstance(value, DictionaryValue):
            raise DecodeError(f"IS_DICTIONARY item carries a {type(value).__name__}, not a DictionaryDHTValue")
        return value


@dataclass(frozen=True)
class PingRequest:
    node_id: bytes  # b"" from a client-mode node
    validate: bool


@dataclass(frozen=True)
class PingResponse:
    node_id: bytes
    dht_time: float
    available: bool


@dataclass(frozen=True)
class StoreRequest:
    node_id: bytes
    items: list[StoreItem]


@dataclass(frozen=True)
class StoreResponse:
    node_id: bytes
    store_ok: list[bool]


@dataclass(frozen=True)
class FindRequest:
    node_id: bytes
    keys: list[bytes]


@dataclass(frozen=True)
class FindResult:
    """What one responder knows about one key: its value (if any) and its nearest known nodes.

    ``value`` is the raw payload (a serialized DictionaryDHTValue for ``FOUND_DICTIONARY``), ``None`` with
    ``expiration`` ``None`` when not found. ``nearest`` holds ``(node_id, peer_id)`` byte pairs, nearest first.
    """

    key: bytes
    type: ResultType
    value: bytes | None
    expiration: float | None
    nearest: list[tuple[bytes, bytes]]

    @classmethod
    def of(
        cls,
        key: bytes,
        value: DHTValue | DictionaryValue | None,
        nearest: Iterable[tuple[bytes, bytes]] = (),
        *,
        expiration: float | None = None,
        now: float | None = None,
    ) -> FindResult:
        """Server side: describe a stored value. A dictionary is serialized with entries expired at ``now``
        left out; its expiration defaults to ``latest_expiration`` (pass the storage's outer one)."""
        nearest = list(nearest)
        if value is None:
            return cls(key, ResultType.NOT_FOUND, None, None, nearest)
        if isinstance(value, DictionaryValue):
            payload = dumps(value if now is None else value.pruned(now))
            exp = value.latest_expiration if expiration is None else expiration
            return cls(key, ResultType.FOUND_DICTIONARY, payload, exp, nearest)
        exp = value.expiration if expiration is None else expiration
        return cls(key, ResultType.FOUND_REGULAR, value.payload, exp, nearest)


@dataclass(frozen=True)
class FindResponse:
    node_id: bytes
    results: list[FindResult]


# ---------------------------------------------------------------------------------------------- helpers


def subkey_tag(subkey: Any) -> bytes:
    """The wire tag for ``subkey``: ``c0`` for None, else ``msgpack(subkey)``."""
    return IS_REGULAR_VALUE if subkey is None else dumps(subkey)


def _id_bytes(value: bytes | DHTID, what: str) -> bytes:
    raw = value.to_bytes() if isinstance(value, DHTID) else bytes(value)
    if len(raw) != HASH_NBYTES:
        raise ValueError(f"{what} must be {HASH_NBYTES} bytes, got {len(raw)}")
    return raw


def _set_peer(msg: Any, node_id: NodeIdLike) -> None:
    msg.peer.SetInParent()  # always present, even empty: hivemind writes ``peer`` unconditionally
    if node_id is not None and node_id != b"":
        msg.peer.node_id = _id_bytes(node_id, "node_id")


_M = TypeVar("_M", bound=Message)


def _parse(cls: type[_M], data: bytes | bytearray | memoryview) -> _M:
    name = cls.DESCRIPTOR.name
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError(f"{name}: expected bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_SIZE:
        raise DecodeError(f"{name}: {len(data)} bytes exceed the {MAX_MESSAGE_SIZE}-byte limit")
    msg = cls()
    try:
        msg.ParseFromString(bytes(data))
    except (_PbDecodeError, ValueError, TypeError, RuntimeError) as exc:
        raise DecodeError(f"malformed {name}: {exc}") from None
    return msg


def _node_id(msg: Any, name: str) -> bytes:
    node_id = msg.peer.node_id
    if len(node_id) not in (0, HASH_NBYTES):
        raise DecodeError(f"{name}: node_id must be empty or {HASH_NBYTES} bytes, got {len(node_id)}")
    return node_id


def _keys(raw_keys: Iterable[bytes], name: str) -> list[bytes]:
    keys = list(raw_keys)
    for key in keys:
        if len(key) != HASH_NBYTES:
            raise DecodeError(f"{name}: key must be {HASH_NBYTES} bytes, got {len(key)}")
    return keys


def _expiration(value: float, name: str) -> float:
    if math.isnan(value):
        raise DecodeError(f"{name}: expiration_time is NaN")
    return value


# ---------------------------------------------------------------------------------------------- client side


def build_ping_request(validate: bool = False, node_id: NodeIdLike = None) -> bytes:
    msg = dht_pb2.PingRequest(validate=validate)
    _set_peer(msg, node_id)
    return msg.SerializeToString()


def build_store_request(items: Sequence[StoreItem], node_id: NodeIdLike = None) -> bytes:
    """One aligned row per item; ``subkeys`` and ``in_cache`` are always sent in full (§3.3)."""
    msg = dht_pb2.StoreRequest(
        keys=[_id_bytes(item.key, "key") for item in items],
        subkeys=[item.subkey_tag for item in items],
        values=[item.payload for item in items],
        expiration_time=[item.expiration for item in items],
        in_cache=[item.in_cache for item in items],
    )
    _set_peer(msg, node_id)
    return msg.SerializeToString()


def build_find_request(keys: Sequence[bytes | DHTID], node_id: NodeIdLike = None) -> bytes:
    msg = dht_pb2.FindRequest(keys=[_id_bytes(key, "key") for key in keys])
    _set_peer(msg, node_id)
    return msg.SerializeToString()


def parse_ping_response(data: bytes) -> PingResponse:
    msg = _parse(dht_pb2.PingResponse, data)
    return PingResponse(_node_id(msg, "PingResponse"), msg.dht_time, msg.available)


def parse_store_response(data: bytes, expected: int | None = None) -> StoreResponse:
    """``expected``: the number of items sent; a different count is an error (a shorter answer means the
    responder truncated the batch, which hivemind does when ``subkeys`` is short)."""
    msg = _parse(dht_pb2.StoreResponse, data)
    oks = list(msg.store_ok)
    if expected is not None and len(oks) != expected:
        raise DecodeError(f"StoreResponse: {len(oks)} results for {expected} items")
    return StoreResponse(_node_id(msg, "StoreResponse"), oks)


def parse_find_response(data: bytes, keys: Sequence[bytes | DHTID]) -> FindResponse:
    """Results aligned with the ``keys`` that were asked for (hivemind rejects a count mismatch too)."""
    msg = _parse(dht_pb2.FindResponse, data)
    key_bytes = [key.to_bytes() if isinstance(key, DHTID) else bytes(key) for key in keys]
    if len(msg.results) != len(key_bytes):
        raise DecodeError(f"FindResponse: {len(msg.results)} results for {len(key_bytes)} keys")
    results = [_find_result(key, result) for key, result in zip(key_bytes, msg.results, strict=True)]
    return FindResponse(_node_id(msg, "FindResponse"), results)


def _find_result(key: bytes, result: Any) -> FindResult:
    try:
        kind = ResultType(result.type)
    except ValueError:
        raise DecodeError(f"FindResult: unknown result type {result.type}") from None
    node_ids, peer_ids = list(result.nearest_node_ids), list(result.nearest_peer_ids)
    if len(node_ids) != len(peer_ids):
        raise DecodeError(f"FindResult: {len(node_ids)} nearest node ids but {len(peer_ids)} peer ids")
    for node_id in node_ids:
        if len(node_id) != HASH_NBYTES:
            raise DecodeError(f"FindResult: nearest node id of {len(node_id)} bytes")
    nearest = list(zip(node_ids, peer_ids, strict=True))
    if kind is ResultType.NOT_FOUND:
        return FindResult(key, kind, None, None, nearest)
    return FindResult(key, kind, result.value, _expiration(result.expiration_time, "FindResult"), nearest)


# ---------------------------------------------------------------------------------------------- server side


def parse_ping_request(data: bytes) -> PingRequest:
    msg = _parse(dht_pb2.PingRequest, data)
    return PingRequest(_node_id(msg, "PingRequest"), msg.validate)


def parse_store_request(data: bytes) -> StoreRequest:
    """Like hivemind: ``keys``, ``values``, ``expiration_time`` and ``in_cache`` must align (else error);
    ``subkeys`` is zipped, so a shorter ``subkeys`` list truncates the batch."""
    msg = _parse(dht_pb2.StoreRequest, data)
    lengths = (len(msg.keys), len(msg.values), len(msg.expiration_time), len(msg.in_cache))
    if len(set(lengths)) != 1:
        raise DecodeError(f"StoreRequest: misaligned keys/values/expiration_time/in_cache {lengths}")
    keys = _keys(msg.keys, "StoreRequest")
    items = [
        StoreItem(key, tag, value, _expiration(exp, "StoreRequest"), in_cache)
        for key, tag, value, exp, in_cache in zip(
            keys, msg.subkeys, msg.values, msg.expiration_time, msg.in_cache, strict=False
        )
    ]
    return StoreRequest(_node_id(msg, "StoreRequest"), items)


def parse_find_request(data: bytes) -> FindRequest:
    msg = _parse(dht_pb2.FindRequest, data)
    return FindRequest(_node_id(msg, "FindRequest"), _keys(msg.keys, "FindRequest"))


def build_ping_response(node_id: NodeIdLike, dht_time: float, available: bool = False) -> bytes:
    msg = dht_pb2.PingResponse(dht_time=dht_time, available=available)
    _set_peer(msg, node_id)
    return msg.SerializeToString()


def build_store_response(node_id: NodeIdLike, oks: Sequence[bool]) -> bytes:
    msg = dht_pb2.StoreResponse(store_ok=list(oks))
    _set_peer(msg, node_id)
    return msg.SerializeToString()


def build_find_response(node_id: NodeIdLike, results: Sequence[FindResult]) -> bytes:
    msg = dht_pb2.FindResponse()
    for result in results:
        item = msg.results.add()
        item.type = int(result.type)
        if result.type is not ResultType.NOT_FOUND:
            item.value = result.value or b""
            item.expiration_time = result.expiration or 0.0
        for node_id_, peer_id in result.nearest:
            item.nearest_node_ids.append(node_id_)
            item.nearest_peer_ids.append(peer_id)
    _set_peer(msg, node_id)
    return msg.SerializeToString()


# ---------------------------------------------------------------------------------------------- rpc_info


def build_info_request(uid: str = "") -> bytes:
    """``ExpertUID{uid}``; health.petals.dev probes with an empty uid, i.e. zero bytes."""
    return runtime_pb2.ExpertUID(uid=uid).SerializeToString()


def parse_info_request(data: bytes) -> str:
    return _parse(runtime_pb2.ExpertUID, data).uid


def build_info_response(info: dict[str, Any]) -> bytes:
    return runtime_pb2.ExpertInfo(serialized_info=dumps(info)).SerializeToString()


def parse_info_response(data: bytes) -> dict[str, Any]:
    """The msgpack map inside ``ExpertInfo.serialized_info`` (tensor schemas decode via ext 0x51)."""
    info = loads(_parse(runtime_pb2.ExpertInfo, data).serialized_info)
    if type(info) is not dict:
        raise DecodeError(f"ExpertInfo: serialized_info is a {type(info).__name__}, not a map")
    return info
