"""A small hivemind-compatible DHT node: serves ``DHTProtocol.rpc_ping/rpc_store/rpc_find`` (PROTOCOL.md §3).

The handlers are plain functions of ``(caller peer id, request bytes) -> response bytes`` over our own
:mod:`dht.storage` and :mod:`dht.routing`, so they are tested without a network; :meth:`DHTNode.serve`
registers them on a :class:`dht.net.transport.Host` and runs the few background jobs (pinging a full bucket's
oldest entry, pushing replicas to a newly met node).

Wire behaviour, as hivemind 1.1.12:

* every response carries our ``NodeInfo(node_id)``; a request whose ``peer.node_id`` is non-empty adds
  (node id → caller's libp2p peer id) to the routing table, and that node id is left out of FIND answers;
* FIND answers, per key, the stored value (storage, or cache if strictly later) plus the ``bucket_size``
  nearest known nodes, nearest first, never ourselves and never the requester;
* STORE answers one ``store_ok`` per item (the acceptance rules of :mod:`dht.storage`);
  ``subkeys`` shorter than ``keys`` truncates the batch (hivemind zips them); misaligned
  ``keys/values/expiration_time/in_cache`` is an error reply;
* PING answers ``dht_time`` = our clock; with ``validate`` and a node id we ping the caller back and set
  ``available`` to whether it answered with the node id it claimed.

Deliberate differences (hostile input must never crash the node or corrupt what it stores):

* an item that hivemind would turn into an error reply for the whole batch (an undecodable or unhashable
  subkey, an IS_DICTIONARY value that is not a dictionary, a key longer than 20 bytes) gets ``False`` alone;
* subkeys are canonicalized (decoded and re-encoded with hivemind's serializer) before storage, so the
  FOUND_DICTIONARY bytes are what hivemind would send;
* one peer id maps to at most one node id in the routing table (see :mod:`dht.routing`).

Limits (:class:`NodeLimits`; a peer over a limit gets an error reply, never a crash):

* ``max_request_bytes`` (default 4 MiB, the envelope limit) per request;
* ``max_keys_per_request`` (default 4096) keys per FIND and items per STORE;
* ``requests_per_second`` / ``burst`` (default 50/s, burst 200): a token bucket per caller peer id,
  for at most ``max_tracked_peers`` peers (least recently seen are forgotten first);
* storage limits: :class:`dht.storage.StorageLimits` (an item over them is answered ``False``).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import base58
import trio

from . import protocol
from ._pb import dht_pb2
from .deadlines import seconds_left, too_little_left
from .errors import AddressLookupTimeout, DecodeError, DHTError, PeerUnreachable
from .peerid import valid_neighbours
from .protocol import RPC_FIND, RPC_PING, RPC_STORE
from .routing import ID_BYTES, RoutingTable, as_node_id, node_id_bytes
from .serializer import dumps, loads, loads_dictionary
from .storage import DictionaryItem, LocalStorage, RegularItem, StoredItem
from .value import DictionaryValue

if TYPE_CHECKING:
    from .net.transport import Host

log = logging.getLogger(__name__)

IS_REGULAR_VALUE = b"\xc0"  # msgpack nil
IS_DICTIONARY = b""
MAX_DHT_TIME_DISCREPANCY = 3.0


class RequestRejected(DHTError):
    """A request we refuse as a whole (over a limit, malformed): the caller gets an error reply."""


@dataclass(frozen=True, slots=True)
class NodeLimits:
    max_request_bytes: int = 4 * 1024 * 1024
    max_keys_per_request: int = 4096
    requests_per_second: float = 50.0
    burst: float = 200.0
    max_tracked_peers: int = 10_000
    max_replication_items: int = 1000  # per newly met node


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens per second up to ``capacity``; pure: the caller passes ``now``."""

    rate: float
    capacity: float
    tokens: float
    updated: float

    def take(self, now: float, cost: float = 1.0) -> bool:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class PeerRateLimiter:
    """One token bucket per peer id, for a bounded number of peers (least recently seen forgotten first)."""

    def __init__(self, rate: float, burst: float, max_peers: int) -> None:
        self.rate, self.burst, self.max_peers = rate, burst, max_peers
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, peer_id: str, now: float) -> bool:
        bucket = self._buckets.pop(peer_id, None)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.burst, self.burst, now)
            while len(self._buckets) >= self.max_peers:
                self._buckets.popitem(last=False)
        self._buckets[peer_id] = bucket
        return bucket.take(now)


@dataclass(frozen=True, slots=True)
class StoreItem:
    """One item of an outgoing STORE: ``subkey`` is the wire tag (``IS_REGULAR_VALUE``, ``IS_DICTIONARY``
    or msgpack of the subkey)."""

    key: bytes
    subkey: bytes
    value: bytes
    expiration: float
    in_cache: bool = False


@dataclass(slots=True)
class FindAnswer:
    """One parsed FindResult of an outgoing FIND."""

    item: StoredItem | None
    nearest: list[tuple[bytes, str]] = field(default_factory=list)  # (node id, base58 peer id)


@lru_cache(maxsize=65536)
def _peer_bytes(peer_id: str) -> bytes:
    return base58.b58decode(peer_id)


def _canonical_key(key: bytes) -> bytes | None:
    """hivemind reads a key as a big-endian integer: shorter keys are zero-padded; longer ones are invalid."""
    if len(key) > ID_BYTES:
        return None
    return key.rjust(ID_BYTES, b"\x00")


def canonical_subkey(tag: bytes) -> bytes | None:
    """Decode a subkey tag as hivemind does and re-encode it; ``None`` if hivemind could not use it."""
    try:
        subkey = loads(tag, allow_unknown_ext=True)
        hash(subkey)
        return dumps(subkey)
    except Exception:
        return None


def _parse(message_type: type, data: bytes, limits: NodeLimits) -> Any:
    if len(data) > limits.max_request_bytes:
        raise RequestRejected(f"request of {len(data)} bytes exceeds {limits.max_request_bytes}")
    message = message_type()
    try:
        message.ParseFromString(data)
    except Exception as e:
        raise DecodeError(f"Error parsing message with type '{message_type.__name__}': {e}") from None
    return message


class DHTNode:
    """A DHT node: local storage + routing table + the three handlers. See the module docstring."""

    def __init__(
        self,
        node_id: int | bytes | None = None,
        *,
        storage: LocalStorage | None = None,
        limits: NodeLimits | None = None,
        bucket_size: int = 20,
        depth_modulo: int = 5,
        num_replicas: int = 5,
        wait_timeout: float = 3.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if node_id is None:
            from .ids import DHTID

            node_id = DHTID.random()
        self.node_id: int = as_node_id(node_id)
        self.node_id_bytes = node_id_bytes(self.node_id)
        self.bucket_size = bucket_size
        self.num_replicas = num_replicas
        self.wait_timeout = wait_timeout
        self.routing = RoutingTable(self.node_id, bucket_size, depth_modulo)
        self.storage = storage or LocalStorage()
        self.limits = limits or NodeLimits()
        self.clock = clock
        self.monotonic = monotonic
        self.rate_limiter = PeerRateLimiter(
            self.limits.requests_per_second, self.limits.burst, self.limits.max_tracked_peers
        )
        self.host: Host | None = None
        self._nursery: trio.Nursery | None = None
        self._node_info = dht_pb2.NodeInfo(node_id=self.node_id_bytes)

    # ================================================================== serving

    async def serve(self, host: Host, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Register the handlers on ``host`` and run background jobs until cancelled.

        Use as ``await nursery.start(node.serve, host)``; cancelling the nursery unregisters the handlers.
        """
        self.host = host
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            host.set_unary_handler(RPC_PING, self.rpc_ping)
            host.set_unary_handler(RPC_STORE, self.rpc_store)
            host.set_unary_handler(RPC_FIND, self.rpc_find)
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                for proto in (RPC_PING, RPC_STORE, RPC_FIND):
                    try:
                        host.remove_unary_handler(proto)
                    except Exception:  # the host may already be closed
                        log.debug("could not remove handler %s", proto)
                self._nursery = None

    def _admit(self, caller: str, data: bytes) -> None:
        if not self.rate_limiter.allow(caller, self.monotonic()):
            raise RequestRejected("rate limit exceeded")
        if len(data) > self.limits.max_request_bytes:
            raise RequestRejected(f"request of {len(data)} bytes exceeds {self.limits.max_request_bytes}")

    async def rpc_ping(self, caller: str, data: bytes) -> bytes:
        """The ping handler, with hivemind's ping-back when ``validate`` is set (needs :meth:`serve`)."""
        self._admit(caller, data)
        request = _parse(dht_pb2.PingRequest, data, self.limits)
        available = False
        sender = request.peer.node_id
        if sender and request.validate and self.host is not None and len(sender) <= ID_BYTES:
            with trio.move_on_after(self.wait_timeout):
                available = await self.ping(caller, validate=False, update_routing=False) == as_node_id(sender)
        return self._ping_response(caller, request, available)

    def handle_ping(self, caller: str, data: bytes) -> bytes:
        """The ping handler without the network (``available`` stays false)."""
        self._admit(caller, data)
        return self._ping_response(caller, _parse(dht_pb2.PingRequest, data, self.limits), False)

    def _ping_response(self, caller: str, request: Any, available: bool) -> bytes:
        response = dht_pb2.PingResponse(peer=self._node_info, dht_time=self.clock(), available=available)
        if not request.validate or available:
            self._met(request.peer.node_id, caller)
        return response.SerializeToString()

    async def rpc_store(self, caller: str, data: bytes) -> bytes:
        return self.handle_store(caller, data)

    def handle_store(self, caller: str, data: bytes) -> bytes:
        self._admit(caller, data)
        request = _parse(dht_pb2.StoreRequest, data, self.limits)
        n = len(request.keys)
        if not n == len(request.values) == len(request.expiration_time) == len(request.in_cache):
            raise RequestRejected("StoreRequest lists are not aligned")
        if n > self.limits.max_keys_per_request:
            raise RequestRejected(f"{n} items exceed the limit of {self.limits.max_keys_per_request}")
        now = self.clock()
        store_ok = [
            self._store_item(key, tag, value, expiration, in_cache, now)
            for key, tag, value, expiration, in_cache in zip(
                request.keys, request.subkeys, request.values, request.expiration_time, request.in_cache, strict=False
            )
        ]
        self._met(request.peer.node_id, caller)
        return dht_pb2.StoreResponse(store_ok=store_ok, peer=self._node_info).SerializeToString()

    def _store_item(self, key: bytes, tag: bytes, value: bytes, expiration: float, in_cache: bool, now: float) -> bool:
        key = _canonical_key(key)
        if key is None:
            return False
        tier = self.storage.tier(in_cache)
        if tag == IS_DICTIONARY:
            try:
                dictionary = loads(value)
            except DecodeError:
                return False
            if not isinstance(dictionary, DictionaryValue):
                return False
            entries = []
            for subkey, item in dictionary.items():
                try:
                    entries.append((dumps(subkey), item.payload, item.expiration))
                except Exception:
                    return False
            return tier.store_dictionary(key, entries, now)
        if tag == IS_REGULAR_VALUE:
            return tier.store(key, value, expiration, now)
        subkey = canonical_subkey(tag)
        if subkey is None:
            return False
        return tier.store_subkey(key, subkey, value, expiration, now)

    async def rpc_find(self, caller: str, data: bytes) -> bytes:
        return self.handle_find(caller, data)

    def handle_find(self, caller: str, data: bytes) -> bytes:
        self._admit(caller, data)
        request = _parse(dht_pb2.FindRequest, data, self.limits)
        if len(request.keys) > self.limits.max_keys_per_request:
            raise RequestRejected(f"{len(request.keys)} keys exceed the limit of {self.limits.max_keys_per_request}")
        keys = [_canonical_key(key) for key in request.keys]
        if any(key is None for key in keys):
            raise RequestRejected("FindRequest key longer than 20 bytes")
        requester = request.peer.node_id
        exclude = {self.node_id}
        if requester and len(requester) <= ID_BYTES:
            exclude.add(as_node_id(requester))
        caller_node = self.routing.node_id(caller)
        if caller_node is not None:
            exclude.add(caller_node)
        now = self.clock()
        response = dht_pb2.FindResponse(peer=self._node_info)
        for key in keys:
            assert key is not None
            result = response.results.add()
            item = self.storage.find(key, now)
            if isinstance(item, RegularItem):
                result.type = dht_pb2.FOUND_REGULAR
                result.value = item.value
                result.expiration_time = item.expiration
            elif isinstance(item, DictionaryItem):
                result.type = dht_pb2.FOUND_DICTIONARY
                result.value = item.to_msgpack()
                result.expiration_time = item.expiration
            for node, peer in self.routing.nearest(key, self.bucket_size, exclude=exclude):
                result.nearest_node_ids.append(node_id_bytes(node))
                result.nearest_peer_ids.append(_peer_bytes(peer))
        self._met(requester, caller)
        return response.SerializeToString()

    # ========================================================= routing upkeep

    def _met(self, node_id: bytes, peer_id: str) -> None:
        """A request or response from ``peer_id`` claimed ``node_id``: keep it in the routing table."""
        if not node_id or len(node_id) > ID_BYTES:
            return
        node = as_node_id(node_id)
        if node == self.node_id:
            return
        is_new = node not in self.routing
        to_ping = self.routing.add_or_update(node, peer_id)
        if self._nursery is None:
            return
        if to_ping is not None:
            self._nursery.start_soon(self._check_alive, *to_ping)
        if is_new:
            items = self.replication_items(node)
            if items:
                self._nursery.start_soon(self._push_replicas, peer_id, items)

    async def _check_alive(self, node: int, peer_id: str) -> None:
        """A full bucket wants room: keep its oldest entry if it still answers, else drop it."""
        answered = await self.ping(peer_id, update_routing=False)
        if answered == node:
            self.routing.add_or_update(node, peer_id)
        else:
            self.routing.remove(node)

    def replication_items(self, new_node: int) -> list[StoreItem]:
        """What hivemind pushes to a newly met node (§1.4): items it is now among the nearest to, and for
        which we are nearer than all our current neighbours."""
        items: list[StoreItem] = []
        now = self.clock()
        for key, item in self.storage.storage.items(now):
            neighbours = self.routing.nearest(key, self.num_replicas, exclude=new_node)
            key_int = int.from_bytes(key, "big")
            if neighbours:
                nearest = neighbours[0][0] ^ key_int
                farthest = neighbours[-1][0] ^ key_int
                if not (new_node ^ key_int < farthest and self.node_id ^ key_int < nearest):
                    continue
            if isinstance(item, RegularItem):
                items.append(StoreItem(key, IS_REGULAR_VALUE, item.value, item.expiration))
            else:
                items.append(StoreItem(key, IS_DICTIONARY, item.to_msgpack(), item.expiration))
            if len(items) >= self.limits.max_replication_items:
                break
        return items

    async def _push_replicas(self, peer_id: str, items: list[StoreItem]) -> None:
        await self.call_store(peer_id, items)

    # ================================================================ client side

    def _require_host(self) -> Host:
        if self.host is None:
            raise DHTError("the node is not serving: call serve(host) first")
        return self.host

    async def _call(self, peer_id: str, proto: str, request: bytes, *, deadline: float | None = None) -> bytes:
        """One call with ONE budget, ``wait_timeout`` (or until ``deadline``, trio time): the look-up of the
        peer's address when we have none (kad FIND_NODE through our connections) and the call share it, so a
        slow look-up never doubles how long a caller waits."""
        host = self._require_host()
        if deadline is None:
            deadline = trio.current_time() + self.wait_timeout
        if not host.is_connected(peer_id) and not host.known_addrs(peer_id):
            budget = seconds_left(deadline)
            found = await host.resolve(peer_id, timeout=budget)
            if not found and trio.current_time() < deadline:
                raise PeerUnreachable(f"no address known for {peer_id}")
            if too_little_left(deadline, budget):  # no evidence against the peer: our look-up took the time
                raise AddressLookupTimeout(f"the look-up of {peer_id}'s address left the call too little of its time")
        return await host.call_unary(peer_id, proto, request, timeout=seconds_left(deadline))

    async def ping(
        self, peer_id: str, *, validate: bool = False, update_routing: bool = True, deadline: float | None = None
    ) -> int | None:
        """Ping a peer; its node id, or ``None`` if it did not answer with one. Failures are not raised.
        ``deadline`` (trio time): the caller's, when the ping is part of a larger step (default: ``wait_timeout``)."""
        request = protocol.build_ping_request(validate, node_id=self.node_id_bytes)
        sent = self.clock()
        try:
            response = protocol.parse_ping_response(await self._call(peer_id, RPC_PING, request, deadline=deadline))
        except Exception as e:
            log.debug("ping %s failed: %s", peer_id, e)
            if update_routing:
                self.routing.remove_peer(peer_id)
            return None
        node_id = response.node_id
        if not node_id:
            return None
        if (
            validate
            and response.dht_time
            and not (sent - MAX_DHT_TIME_DISCREPANCY <= response.dht_time <= self.clock() + MAX_DHT_TIME_DISCREPANCY)
        ):
            log.warning("peer %s clock differs from ours by more than %s s", peer_id, MAX_DHT_TIME_DISCREPANCY)
        if update_routing:
            self._met(node_id, peer_id)
        return as_node_id(node_id)

    async def call_find(self, peer_id: str, key_ids: Sequence[bytes]) -> tuple[bytes | None, list[FindAnswer]]:
        """One FIND to ``peer_id``. Raises on failure (the peer is then dropped from the routing table)."""
        request = protocol.build_find_request(key_ids, node_id=self.node_id_bytes)
        try:  # strict: misaligned results, NaN expirations, malformed node ids are errors (dht.protocol)
            response = protocol.parse_find_response(await self._call(peer_id, RPC_FIND, request), key_ids)
        except Exception:
            self.routing.remove_peer(peer_id)
            raise
        responder = response.node_id or None
        if responder:
            self._met(responder, peer_id)
        answers = []
        for result in response.results:
            answers.append(FindAnswer(_parse_found(result), valid_neighbours(result.nearest)))
        return responder, answers

    async def call_store(self, peer_id: str, items: Sequence[StoreItem]) -> list[bool] | None:
        """One STORE of ``items`` to ``peer_id``; its ``store_ok`` list, or ``None`` if it did not answer."""
        rows = [protocol.StoreItem(i.key, i.subkey, i.value, i.expiration, i.in_cache) for i in items]
        request = protocol.build_store_request(rows, node_id=self.node_id_bytes)
        try:
            response = protocol.parse_store_response(await self._call(peer_id, RPC_STORE, request), len(rows))
        except Exception as e:
            log.debug("store to %s failed: %s", peer_id, e)
            self.routing.remove_peer(peer_id)
            return None
        if response.node_id:
            self._met(response.node_id, peer_id)
        return response.store_ok

    async def bootstrap(self, initial_peers: Iterable[str], *, timeout: float = 30.0) -> int:
        """Ping the initial peers (multiaddrs ``…/p2p/<id>`` or peer ids), then one FIND for our own id.

        Returns how many nodes the routing table holds afterwards.
        """
        host = self._require_host()
        seeds: list[str] = []
        with trio.move_on_after(timeout):
            for target in initial_peers:
                deadline = trio.current_time() + self.wait_timeout  # the dial and the ping share it
                try:
                    peer_id = await host.connect(target, timeout=self.wait_timeout)
                except Exception as e:
                    log.warning("bootstrap peer %s unreachable: %s", target, e)
                    continue
                if await self.ping(peer_id, validate=True, deadline=deadline) is not None:
                    seeds.append(peer_id)
            if seeds:
                await self._traverse([self.node_id_bytes], seeds, timeout=timeout)
        return len(self.routing)

    async def _traverse(self, key_ids: list[bytes], seeds: list[str], *, timeout: float) -> Any:
        from .traverse import traverse

        async def find(peer: str, keys: list[bytes]) -> tuple[bytes | None, list[list[tuple[bytes, str]]]]:
            responder, answers = await self.call_find(peer, keys)
            return responder, [answer.nearest for answer in answers]

        return await traverse(find, key_ids, seeds, beam_size=self.bucket_size, timeout=timeout)

    async def store_many(
        self,
        items: Sequence[StoreItem],
        *,
        nodes: Sequence[str] | None = None,
        num_replicas: int | None = None,
        timeout: float = 30.0,
    ) -> dict[str, list[bool] | None]:
        """Announce ``items`` onto the DHT: each key goes to the ``num_replicas`` nodes nearest to it.

        With ``nodes``, the items are stored on exactly those peers. Otherwise an iterative FIND over all
        keys (seeded by our routing table) finds, per key, the nearest responding nodes; we store the key
        locally too when we are among them (as hivemind does). Returns ``{peer id: store_ok or None}``; our
        own storage appears under our ``host.peer_id``.
        """
        host = self._require_host()
        replicas = num_replicas or self.num_replicas
        results: dict[str, list[bool] | None] = {}
        with trio.move_on_after(timeout):
            if nodes is not None:
                plan = {peer: list(items) for peer in nodes}
            else:
                plan = await self._plan_replicas(items, replicas, timeout=timeout)
            now = self.clock()
            if host.peer_id in plan:
                results[host.peer_id] = [
                    self._store_item(i.key, i.subkey, i.value, i.expiration, i.in_cache, now)
                    for i in plan.pop(host.peer_id)
                ]

            async def store_on(peer: str, batch: list[StoreItem]) -> None:
                results[peer] = await self.call_store(peer, batch)

            async with trio.open_nursery() as nursery:
                for peer, batch in plan.items():
                    nursery.start_soon(store_on, peer, batch)
        return results

    async def _plan_replicas(
        self, items: Sequence[StoreItem], replicas: int, *, timeout: float
    ) -> dict[str, list[StoreItem]]:
        assert self.host is not None
        keys = list(dict.fromkeys(item.key for item in items))
        seeds = list(dict.fromkeys(peer for key in keys for _, peer in self.routing.nearest(key)))
        candidates: dict[str, int] = {peer: self.routing.node_id(peer) for peer in seeds}  # type: ignore[misc]
        if seeds:
            result = await self._traverse(keys, seeds, timeout=timeout)
            for visit in result.contacted:
                if visit.node_id:
                    candidates[visit.peer_id] = as_node_id(visit.node_id)
            for visit in result.failed:
                candidates.pop(visit.peer_id, None)
        candidates[self.host.peer_id] = self.node_id
        plan: dict[str, list[StoreItem]] = {}
        for key in keys:
            key_int = int.from_bytes(key, "big")
            nearest = sorted(candidates, key=lambda peer: candidates[peer] ^ key_int)[:replicas]
            for peer in nearest:
                plan.setdefault(peer, []).extend(item for item in items if item.key == key)
        return plan


def _parse_found(result: protocol.FindResult) -> StoredItem | None:
    """A FindResult's value as a storage item (``None`` if not found or undecodable)."""
    if result.value is None or result.expiration is None:
        return None
    if result.type is protocol.ResultType.FOUND_REGULAR:
        return RegularItem(result.value, result.expiration)
    if result.type is protocol.ResultType.FOUND_DICTIONARY:
        from .storage import DictionaryEntry

        try:
            dictionary = loads_dictionary(result.value)  # the client's decoder: same result, C fast path
        except DecodeError:
            return None
        if not isinstance(dictionary, DictionaryValue):
            return None
        entries = tuple(DictionaryEntry(dumps(s), v.payload, v.expiration) for s, v in dictionary.items())
        return DictionaryItem(result.expiration, entries)
    return None


__all__ = [
    "IS_DICTIONARY",
    "IS_REGULAR_VALUE",
    "RPC_FIND",
    "RPC_PING",
    "RPC_STORE",
    "DHTNode",
    "FindAnswer",
    "NodeLimits",
    "PeerRateLimiter",
    "RequestRejected",
    "StoreItem",
    "TokenBucket",
    "canonical_subkey",
]
