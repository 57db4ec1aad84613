"""Awaitable hivemind DHT calls over a live host, and lookups across the whole swarm (trio).

:class:`SwarmClient` drives the sans-IO :class:`~dht.client.HivemindDHT` over a :class:`~dht.net.transport.Host`:
every call has a deadline, batches above ``max_keys_per_request`` are split, and :meth:`SwarmClient.lookup`
runs :func:`~dht.traverse.traverse` from bootstrap peers, merging every replica's answer per key the way
hivemind's ``get_many(latest=True)`` does (newest expiration per subkey wins). Peer ids learned from
FindResults carry no addresses; they are resolved through the node that named them (kad FIND_NODE).

We stay in client mode throughout: no node id is ever sent, so no routing table ever holds us.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from .client import FindData, FoundValue, HivemindDHT, OutgoingRequest, PingResult, StoreEntry, StoreResults
from .deadlines import seconds_left as _left
from .deadlines import too_little_left
from .decode_memo import DictionaryMemo
from .errors import AddressLookupTimeout, CallTimeout, DHTError, DialFailed, FrameError, PeerUnreachable, RemoteError
from .ids import dhtid_of
from .net.transport import DEFAULT_CALL_TIMEOUT, Host, split_p2p_addr
from .peerid import valid_neighbours
from .protocol import RPC_INFO, build_info_request
from .traverse import TraversalResult, traverse
from .value import DHTValue, DictionaryValue

log = logging.getLogger(__name__)

# A Petals block key answers with ~0.3 KB per announcing server plus ~1.3 KB of nearest peers: at 60 servers a
# key that is ~17 KB, so 64 keys stay near 1 MiB, well under the 4 MiB reply limit (measured in bench/README.md).
DEFAULT_MAX_KEYS_PER_REQUEST = 64
# A relayed circuit carries ~128 KiB per direction over its whole life, and each key's FindResult can carry
# 20 nearest peers (~1-1.5 KiB): keep FINDs to relayed peers small.
RELAYED_MAX_KEYS_PER_REQUEST = 48
MAX_INTRODUCERS = 4  # nodes remembered per peer id as "who told us about it", for address resolution
MAX_REMEMBERED_NODES = 1024  # DHT nodes remembered between lookups (asked in the next lookup's first round)
# Replicas read per key before trusting them (more when they disagree): hivemind stores each value on 5 nodes.
DEFAULT_QUORUM = 3
RESOLVE_CONCURRENCY = 8  # kad FIND_NODEs in flight per kind (servers, DHT nodes); each answer names ~20 peers

Value = DHTValue | DictionaryValue


@dataclass(frozen=True, slots=True)
class BootstrapResult:
    """One initial peer: ``ok`` only if it answered a DHT ping."""

    address: str
    peer_id: str | None
    ok: bool
    latency: float | None = None
    node_id: bytes | None = None
    dht_time: float | None = None
    error: str | None = None


@dataclass(slots=True)
class Lookup:
    """The merged answer of a swarm-wide lookup."""

    values: dict[Any, Value | None]
    traversal: TraversalResult
    undecodable: dict[Any, list[str]] = field(default_factory=dict)  # key -> errors of replicas that sent garbage

    def found(self) -> dict[Any, Value]:
        return {k: v for k, v in self.values.items() if v is not None}


def merge_values(a: Value | None, b: Value | None) -> Value | None:
    """hivemind's ``latest=True`` merge of two replicas' answers for one key.

    Two dictionaries merge per subkey (newest expiration wins); otherwise the later outer expiration wins
    (a regular value and a dictionary are never merged).
    """
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, DictionaryValue) and isinstance(b, DictionaryValue):
        return a.merge(b)
    return b if _expiration(b) > _expiration(a) else a


def answer_fingerprint(v: Value | None) -> int | None:
    """What two replicas must share to count as the same answer: the subkeys and their expirations (a regular
    value: its expiration), hashed; payloads are not compared (a subkey re-stored with a new payload gets a new
    expiration). None: the replica had nothing, which :func:`answers_agree` never counts as agreement."""
    if v is None:
        return None
    if isinstance(v, DictionaryValue):
        return hash(frozenset((subkey, item.expiration) for subkey, item in v.items()))
    return hash(("value", v.expiration))


def answers_agree(fingerprints: dict[str, int | None], peers: Sequence[str]) -> bool:
    """Whether ``peers`` (a key's nearest nodes) all answered the key, alike and with a value. Nodes that all hold
    nothing do not agree: newer nodes that joined nearer the key than its holders, or hostile nodes that chose ids
    near it (node ids are unauthenticated), would otherwise hide the key from the rest of its beam."""
    if not all(p in fingerprints for p in peers):
        return False
    seen = {fingerprints[p] for p in peers}
    return len(seen) <= 1 and None not in seen


def _expiration(v: Value) -> float:
    return v.latest_expiration if isinstance(v, DictionaryValue) else v.expiration


class SwarmClient:
    """A client-mode hivemind DHT participant on one host. Cheap: create one per host and reuse it."""

    def __init__(
        self,
        host: Host,
        *,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        max_keys_per_request: int = DEFAULT_MAX_KEYS_PER_REQUEST,
        concurrency: int = 16,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if max_keys_per_request < 1:
            raise ValueError("max_keys_per_request must be >= 1")
        self.host = host
        self.timeout = timeout
        self.max_keys_per_request = max_keys_per_request
        self.concurrency = concurrency
        self._clock = clock
        self._memo = DictionaryMemo()
        self._dht = HivemindDHT(memo=self._memo)
        self._introducers: dict[str, list[str]] = {}
        self._resolve_slots = trio.CapacityLimiter(RESOLVE_CONCURRENCY)
        self._node_resolve_slots = trio.CapacityLimiter(RESOLVE_CONCURRENCY)
        # (peer id, as a DHT node?) -> its resolution in flight: a probe's look-up of a server that is also a
        # DHT node queues on the servers' slots, and must not hold up the lookup's own look-up of that node
        self._resolving: dict[tuple[str, bool], _Resolution] = {}
        self._answered: dict[str, None] = {}  # DHT nodes that answered a FIND (ordered, bounded): asked for addresses
        self._reply_limits: dict[str, int] = {}  # peer id -> keys per FIND it could answer within the size limit
        self._met: dict[str, bytes] = {}  # peer id -> node id of DHT nodes that answered our last lookups
        self.rpcs = 0  # every request we sent: DHT RPCs, rpc_info probes, kad FIND_NODEs (the load on the swarm)
        self.kad_rpcs = 0  # of which kad FIND_NODEs (address look-ups)

    # ---- single calls

    async def _call(self, request: OutgoingRequest, timeout: float | None) -> Any:
        self.rpcs += 1
        try:
            # Pipelined: every peer asked a DHT RPC is a DHT node, and a DHT node serves all three
            reply = await self.host.call_unary(
                str(request.peer),
                request.proto,
                request.data,
                timeout=self.timeout if timeout is None else timeout,
                pipeline=True,
            )
        except BaseException as e:
            self._dht.handle_error(request.request_id, e)
            raise
        return self._dht.handle_response(request.request_id, reply)  # settles it, even when it raises

    async def connect(self, multiaddr: str, *, timeout: float | None = None) -> str:
        """Dial a ``…/p2p/<peer id>`` multiaddr; returns the peer id."""
        return await self.host.connect(multiaddr, timeout=self.timeout if timeout is None else timeout)

    def _deadline(self, timeout: float | None) -> float:
        """The trio time by which a call given ``timeout`` (None: the client's) must be over."""
        return trio.current_time() + (self.timeout if timeout is None else timeout)

    async def _addressed(self, peer_id: str, deadline: float, *, dht_node: bool = True) -> None:
        """An address for ``peer_id`` by ``deadline``, the call's own: its look-up (slot wait included) is part of
        the call's budget, never added to it. Raises :class:`AddressLookupTimeout` when the look-up left too little
        of it for the call (``dht.deadlines.too_little_left``; no evidence against the peer),
        :class:`PeerUnreachable` when nobody knew the peer."""
        if self.host.is_connected(peer_id) or self.host.known_addrs(peer_id):
            return
        budget = _left(deadline)
        await self._ensure_addrs(peer_id, dht_node=dht_node, deadline=deadline)
        if too_little_left(deadline, budget):
            raise AddressLookupTimeout(f"the look-up of {peer_id}'s address left the call too little of its time")

    async def ping(self, peer_id: str, *, timeout: float | None = None) -> tuple[PingResult, float]:
        """``rpc_ping`` with an empty NodeInfo; returns the result and the round-trip time. ``timeout`` covers
        the address look-up (when the peer's address is unknown), the dial and the call."""
        deadline = self._deadline(timeout)
        await self._addressed(peer_id, deadline)
        t0 = self._clock()
        result = await self._call(self._dht.ping(peer_id), _left(deadline))
        return result, self._clock() - t0

    async def store_many(
        self, peer_id: str, entries: Iterable[StoreEntry | tuple], *, timeout: float | None = None
    ) -> StoreResults:
        """One ``rpc_store`` with all ``entries`` (see :meth:`HivemindDHT.store_many`); ``timeout`` covers the
        address look-up, the dial and the call."""
        deadline = self._deadline(timeout)
        await self._addressed(peer_id, deadline)
        return await self._call(self._dht.store_many(peer_id, entries), _left(deadline))

    async def store(
        self, peer_id: str, key: Any, value: Any, subkey: Any = None, *, timeout: float | None = None
    ) -> StoreResults:
        return await self.store_many(peer_id, [StoreEntry(key, value, subkey)], timeout=timeout)

    async def get_many(self, peer_id: str, keys: Sequence[Any], *, timeout: float | None = None) -> FindData:
        """``rpc_find`` of ``keys`` on one peer, in requests of at most ``max_keys_per_request`` keys.

        ``timeout`` is each request's budget; the first one's also covers the address look-up and the dial."""
        deadline = self._deadline(timeout)
        await self._addressed(peer_id, deadline)
        unique = list(dict.fromkeys(keys))
        limit = self.max_keys_per_request
        if not self.host.is_connected(peer_id):
            await self.host.connect(peer_id, timeout=_left(deadline))
        if self.host.is_relayed(peer_id):
            limit = min(limit, RELAYED_MAX_KEYS_PER_REQUEST)
        limit = min(limit, self._reply_limits.get(peer_id, limit))
        parts: list[FindData] = []
        for start in range(0, len(unique), limit):
            budget = _left(deadline) if start == 0 else timeout  # later requests: a connection is open
            parts += await self._find_chunk(peer_id, unique[start : start + limit], budget)
        results: dict[Any, FoundValue] = {}
        for part in parts:
            results.update(part.results)
        first = parts[0]
        return FindData(first.request_id, first.peer, first.node_id, results)

    async def _find_chunk(self, peer_id: str, chunk: list[Any], timeout: float | None) -> list[FindData]:
        """One FIND; when the reply would exceed the 4 MiB message limit (large swarms: every key's value holds
        hundreds of servers), the peer refuses it, so ask again in halves and remember the size for this peer."""
        try:
            return [await self._call(self._dht.get_many(peer_id, chunk), timeout)]
        except (RemoteError, FrameError) as e:
            if len(chunk) == 1 or not _reply_too_large(e):
                raise
        half = len(chunk) // 2
        self._reply_limits[peer_id] = min(half, self._reply_limits.get(peer_id, half))
        return await self._find_chunk(peer_id, chunk[:half], timeout) + await self._find_chunk(
            peer_id, chunk[half:], timeout
        )

    async def get(self, peer_id: str, key: Any, *, timeout: float | None = None) -> FoundValue:
        return (await self.get_many(peer_id, [key], timeout=timeout)).results[key]

    async def rpc_info(self, peer_id: str, uid: str = "", *, timeout: float | None = None) -> tuple[bytes, float]:
        """Petals' ``TransformerConnectionHandler.rpc_info`` (the reachability probe).

        Returns the raw ``ExpertInfo`` bytes (see :func:`dht.protocol.parse_info_response`) and the round trip.
        ``timeout`` is the whole probe's budget: the address look-up (its wait for a slot too) and each call get
        what is left of it, so a probe never holds its caller's slot longer. When every address we had fails to
        dial, the DHT is asked once more where the server is (see :meth:`_readdress`), within the same budget.
        Raises :class:`AddressLookupTimeout` when the look-up left nothing of it (no evidence against the peer)."""
        deadline = self._deadline(timeout)
        await self._addressed(peer_id, deadline, dht_node=False)
        request = build_info_request(uid)
        t0 = self._clock()
        self.rpcs += 1
        try:
            reply = await self.host.call_unary(peer_id, RPC_INFO, request, timeout=_left(deadline))
        except DialFailed:
            if trio.current_time() >= deadline or not await self._readdress(peer_id, deadline):
                raise
            t0 = self._clock()
            self.rpcs += 1
            reply = await self.host.call_unary(peer_id, RPC_INFO, request, timeout=_left(deadline))
        return reply, self._clock() - t0

    async def _readdress(self, peer_id: str, deadline: float) -> bool:
        """Ask the DHT for the current addresses of ``peer_id`` (kad FIND_NODE), whose known ones just failed to
        dial, by ``deadline``; True when it gave new ones. A server that restarted on another port or IP announces
        itself there: measured on real Petals (bench/freshness.py), a rejoined server's probes dialled its old
        port, were refused, and it showed unreachable for the failure cache's 300 s. The old addresses are replaced
        only once new ones arrive: a look-up that fails leaves the peer the addresses it had."""
        stale = set(self.host.known_addrs(peer_id))
        if not stale or self.host.is_connected(peer_id):
            return False
        try:
            await self._resolve(peer_id, False, _Resolution(), deadline, refresh=True)
        except PeerUnreachable:  # nobody knew it, or no answer in time (AddressLookupTimeout)
            return False
        return bool(set(self.host.known_addrs(peer_id)) - stale)

    # ---- swarm-wide

    async def bootstrap(self, addresses: Sequence[str], *, timeout: float | None = None) -> list[BootstrapResult]:
        """Dial and ping every initial peer concurrently; each gets its own deadline (``timeout``, the dial's and
        the ping's together)."""
        results: list[BootstrapResult | None] = [None] * len(addresses)

        async def one(i: int, address: str) -> None:
            peer_id = None
            deadline = self._deadline(timeout)  # the dial and the ping share it
            try:
                peer_id, _ = split_p2p_addr(address)
                await self.connect(address, timeout=_left(deadline))
                ping, rtt = await self.ping(peer_id, timeout=_left(deadline))
                # A DHT node that answered: asked for servers' addresses too, so the probes' first burst of
                # look-ups is spread over every seed, not sent through the first node to answer a FIND
                self._answered[peer_id] = None
                results[i] = BootstrapResult(address, peer_id, True, rtt, ping.node_id or None, ping.dht_time or None)
            except (DHTError, ValueError) as e:
                results[i] = BootstrapResult(address, peer_id, False, error=_describe(e))

        async with trio.open_nursery() as nursery:
            for i, address in enumerate(addresses):
                nursery.start_soon(one, i, address)
        return [r for r in results if r is not None]

    async def lookup(
        self,
        keys: Sequence[Any],
        seeds: Sequence[str],
        *,
        beam_size: int | None = 20,
        quorum: int | None = DEFAULT_QUORUM,
        timeout: float | None = None,
        max_nodes: int = 10_000,
        on_found: Callable[[Any, Value], None] | None = None,
    ) -> Lookup:
        """Find ``keys`` across the swarm from ``seeds`` (reachable peer ids) and merge all replicas' values.

        ``quorum``: each key is read from its ``quorum`` nearest nodes, and from its whole beam only when those
        answered differently or had nothing (see :mod:`dht.traverse`; None: the whole beam always, as hivemind's
        client).
        ``on_found(key, value)`` sees each replica's value as it arrives (a crawler starts work on it early)."""
        unique = list(dict.fromkeys(keys))
        by_id = {dhtid_of(k): k for k in unique}
        key_ids = list(by_id)
        values: dict[Any, Value | None] = dict.fromkeys(unique)
        undecodable: dict[Any, list[str]] = {}
        answers: dict[bytes, dict[str, int | None]] = {}  # key id -> peer -> fingerprint of its answer

        async def find(peer_id: str, key_ids: list[bytes]) -> tuple[bytes | None, list[list[tuple[bytes, str]]]]:
            data = await self.get_many(peer_id, [by_id[k] for k in key_ids])
            self._answered[peer_id] = None
            neighbours: list[list[tuple[bytes, str]]] = []
            for key_id in key_ids:
                found = data.results[by_id[key_id]]
                if found.error:
                    undecodable.setdefault(found.key, []).append(f"{peer_id}: {found.error}")
                values[found.key] = merge_values(values[found.key], found.value)
                if quorum is not None:
                    answers.setdefault(key_id, {})[peer_id] = answer_fingerprint(found.value)
                if on_found is not None and found.value is not None:
                    on_found(found.key, found.value)
                near = valid_neighbours(found.nearest)  # node ids: 20 bytes (dht.protocol checked)
                for _node_id, pid in near:
                    self._introduce(pid, peer_id)
                neighbours.append(near)
            return data.node_id or None, neighbours

        def agree(i: int, peers: list[str]) -> bool:
            return answers_agree(answers.get(key_ids[i], {}), peers)

        try:
            traversal = await traverse(
                find,
                key_ids,
                list(seeds),
                beam_size=beam_size,
                quorum=quorum if beam_size is not None else None,
                agree=agree,
                max_keys_per_request=self.max_keys_per_request,
                concurrency=self.concurrency,
                max_nodes=max_nodes,
                timeout=timeout,
                clock=self._clock,
                known=self._still_connected_nodes(),
            )
        finally:
            self._memo.clear()  # replicas answer within one lookup; between crawls the values change anyway
        self._remember_nodes(traversal)
        return Lookup(values, traversal, undecodable)

    async def sweep(self, seeds: Sequence[str], *, timeout: float | None = None, max_nodes: int = 10_000):
        """Discover every reachable DHT node: ask everyone we hear of for a few random keys."""
        probe_keys = [f"_sweep.{i}" for i in range(4)]
        return (await self.lookup(probe_keys, seeds, beam_size=None, timeout=timeout, max_nodes=max_nodes)).traversal

    def _remember_nodes(self, traversal: TraversalResult) -> None:
        while len(self._answered) > MAX_REMEMBERED_NODES:
            del self._answered[next(iter(self._answered))]
        for visit in traversal.contacted:
            if visit.node_id and (visit.peer_id in self._met or len(self._met) < MAX_REMEMBERED_NODES):
                self._met[visit.peer_id] = visit.node_id

    def _still_connected_nodes(self) -> list[tuple[bytes, str]]:
        """Nodes a previous lookup met whose connection is still open: asked in the first round of this one (a
        dropped connection is evidence the node is gone; then it is forgotten, and found again if it is not)."""
        for peer in [p for p in self._met if not self.host.is_connected(p)]:
            del self._met[peer]
        return [(node_id, peer) for peer, node_id in self._met.items()]

    # ---- address resolution

    def _introduce(self, peer_id: str, by: str) -> None:
        intro = self._introducers.setdefault(peer_id, [])
        if by not in intro and len(intro) < MAX_INTRODUCERS:
            intro.append(by)

    def _spread_over_nodes(self, peer_id: str) -> list[str]:
        """Whom to ask for a peer nobody introduced (a server named in a record): the connected DHT nodes that
        answered us, starting at a different one per peer, so a burst of probes' look-ups does not queue on the
        first seed's few call slots (the lookup's own look-ups wait there too). Empty: the host's connections."""
        nodes = [p for p in self._answered if self.host.is_connected(p)]
        if not nodes:
            return []
        start = zlib.crc32(peer_id.encode()) % len(nodes)
        return nodes[start:] + nodes[:start]

    async def _ensure_addrs(self, peer_id: str, *, dht_node: bool = True, deadline: float = math.inf) -> None:
        """Addresses for ``peer_id`` in the peerstore, asking the peers that named it (kad FIND_NODE) if need be.

        One resolution per peer and kind at a time (a node's FIND chunks go out together and would each ask). Servers
        (``dht_node=False``: probes) resolve a few at a time and DHT nodes on slots of their own, so a burst of
        probes started during a lookup never makes the lookup's next nodes wait (they are its critical path).
        ``deadline`` (trio time): the caller's, when it has one; no wait here outlasts it.
        Raises :class:`AddressLookupTimeout` when our look-up ran out of time (no evidence against the peer),
        :class:`PeerUnreachable` when the nodes asked answered and none knew the peer."""
        if self.host.is_connected(peer_id) or self.host.known_addrs(peer_id):
            return
        key = (peer_id, dht_node)
        pending = self._resolving.get(key)
        if pending is not None:
            # its wait for a slot and its look-up, each bounded
            with trio.move_on_at(min(trio.current_time() + 2 * self.timeout, deadline)):
                await pending.done.wait()
            if self.host.known_addrs(peer_id):
                return
            if pending.done.is_set() and not pending.timed_out:
                raise PeerUnreachable(f"no address known for {peer_id} (asked {pending.asked} peers)")
            raise AddressLookupTimeout(f"the look-up of {peer_id}'s address did not finish in time")
        self._resolving[key] = mine = _Resolution()
        try:
            await self._resolve(peer_id, dht_node, mine, deadline)
        finally:
            del self._resolving[key]
            mine.done.set()

    async def _resolve(
        self, peer_id: str, dht_node: bool, mine: _Resolution, deadline: float, *, refresh: bool = False
    ) -> None:
        """One look-up of ``peer_id``'s address: its wait for a slot and its kad FIND_NODEs each end by the
        caller's ``deadline`` (the call's whole budget: the time spent queued counts), and by the client's timeout
        at most. ``refresh``: the known addresses failed (see ``Host.resolve``)."""
        slots = self._node_resolve_slots if dht_node else self._resolve_slots
        with trio.move_on_at(min(trio.current_time() + self.timeout, deadline)) as queued:
            await slots.acquire()
        if queued.cancelled_caught:
            mine.timed_out = True
            raise AddressLookupTimeout(f"no free slot to look up {peer_id}'s address in time")
        try:
            # Whom to ask is chosen now, holding the slot, not when queued: the DHT nodes that answered while we
            # waited share the burst (chosen at the start, a burst all went through the first node to answer).
            via = self._introducers.get(peer_id, []) or self._spread_over_nodes(peer_id)
            mine.asked = len(via) or "connected"
            deadline = min(trio.current_time() + self.timeout, deadline)
            # Few at a time: a FIND_NODE answer carries the addresses of the ~20 peers nearest the target, so when
            # 50 probes start at once, the first answers usually resolve the others (resolve looks in the
            # peerstore before it asks anyone).
            if await self.host.resolve(
                peer_id, via=via, timeout=_left(deadline), on_call=self._count_kad, refresh=refresh
            ):
                return
        finally:
            slots.release()
        if trio.current_time() >= deadline:
            mine.timed_out = True
            raise AddressLookupTimeout(f"the look-up of {peer_id}'s address got no answer in time")
        raise PeerUnreachable(f"no address known for {peer_id} (asked {mine.asked} peers)")

    def _count_kad(self) -> None:
        self.rpcs += 1
        self.kad_rpcs += 1


@dataclass(slots=True, eq=False)
class _Resolution:
    """A look-up of one peer's address in flight: callers that find it pending wait for it and learn how it ended."""

    done: trio.Event = field(default_factory=trio.Event)
    timed_out: bool = False
    asked: int | str = 0


def _reply_too_large(e: BaseException) -> bool:
    """The FIND failed only because its reply is over the message size limit: our node says so in its error
    reply (``dht.net.transport``), and our reader refuses a frame that declares more (``dht.wire.check_length``)."""
    text = str(e)
    if isinstance(e, RemoteError):
        return "exceeds message size limit" in text
    return isinstance(e, FrameError) and "exceeds the" in text and "limit" in text


def _describe(e: BaseException) -> str:
    if isinstance(e, CallTimeout):
        return f"timeout: {e}"
    return str(e) or type(e).__name__


__all__ = ["BootstrapResult", "Lookup", "SwarmClient", "merge_values"]
