"""Kademlia k-bucket routing table, as hivemind keeps it (PROTOCOL.md §1.4). Pure: no I/O, no clock.

Node IDs are 160-bit integers (``int``, or any ``int`` subclass such as a DHTID); 20-byte big-endian
``bytes`` are accepted and converted. Peer IDs are opaque hashable values (the node uses base58 strings).

* ``bucket_size`` (k = 20) entries per bucket; a full bucket splits if it covers our own ID **or** its depth
  is not a multiple of ``depth_modulo`` (b = 5). Otherwise the newcomer goes to the bucket's replacement list
  and :meth:`RoutingTable.add_or_update` returns the least-recently-updated entry for the caller to ping:
  if it fails to answer, :meth:`RoutingTable.remove` drops it and promotes the newest replacement.
* :meth:`RoutingTable.nearest` returns main entries only (never replacements, never our own ID),
  sorted by XOR distance.
* Unlike hivemind, one peer ID maps to at most one node ID: a peer that shows up with a new node ID (a
  restart, or a peer inventing IDs to fill our table) replaces its old entry.
"""

from __future__ import annotations

import bisect
import heapq
from collections import OrderedDict
from collections.abc import Collection, Hashable, Iterator
from dataclasses import dataclass, field

ID_BITS = 160
ID_BYTES = ID_BITS // 8
MAX_ID = 1 << ID_BITS

NodeIdLike = int | bytes
PeerId = Hashable


def as_node_id(node_id: NodeIdLike) -> int:
    """An ``int`` in ``[0, 2**160)``; ``bytes`` are read big-endian (``b""`` is 0, as in hivemind)."""
    if isinstance(node_id, bytes | bytearray):
        if len(node_id) > ID_BYTES:
            raise ValueError(f"node id longer than {ID_BYTES} bytes")
        return int.from_bytes(node_id, "big")
    value = int(node_id)
    if not 0 <= value < MAX_ID:
        raise ValueError("node id out of the 160-bit range")
    return value


def node_id_bytes(node_id: NodeIdLike) -> bytes:
    """The 20-byte big-endian form used on the wire."""
    return as_node_id(node_id).to_bytes(ID_BYTES, "big")


def xor_distance(a: NodeIdLike, b: NodeIdLike) -> int:
    return as_node_id(a) ^ as_node_id(b)


@dataclass
class KBucket:
    """Nodes with IDs in ``[lower, upper)``; ``nodes`` is ordered least-recently-updated first."""

    lower: int
    upper: int
    size: int
    depth: int = 0
    nodes: OrderedDict[int, PeerId] = field(default_factory=OrderedDict)
    replacements: OrderedDict[int, PeerId] = field(default_factory=OrderedDict)
    pinging: set[int] = field(default_factory=set)

    def covers(self, node_id: int) -> bool:
        return self.lower <= node_id < self.upper

    def add_or_update(self, node_id: int, peer_id: PeerId) -> tuple[bool, int | None]:
        """Insert or refresh a node.

        Returns ``(stored, dropped)``: ``stored`` is False if the bucket is full (the node is then kept as a
        replacement); ``dropped`` is a replacement pushed out of the bounded replacement list, if any.
        """
        self.pinging.discard(node_id)
        if node_id in self.nodes:
            self.nodes.pop(node_id)
            self.nodes[node_id] = peer_id
            return True, None
        if len(self.nodes) < self.size:
            self.replacements.pop(node_id, None)
            self.nodes[node_id] = peer_id
            return True, None
        self.replacements.pop(node_id, None)
        self.replacements[node_id] = peer_id
        dropped = None
        if len(self.replacements) > self.size:  # keep the newest replacements only
            dropped, _ = self.replacements.popitem(last=False)
        return False, dropped

    def remove(self, node_id: int) -> PeerId | None:
        """Drop a node; if it was a main entry, promote the most recent replacement."""
        self.pinging.discard(node_id)
        if node_id in self.replacements:
            return self.replacements.pop(node_id)
        peer_id = self.nodes.pop(node_id, None)
        if peer_id is not None and self.replacements:
            promoted, promoted_peer = self.replacements.popitem(last=True)
            self.nodes[promoted] = promoted_peer
        return peer_id

    def node_to_ping(self) -> tuple[int, PeerId] | None:
        """The least-recently-updated main entry not already being pinged."""
        for node_id, peer_id in self.nodes.items():
            if node_id not in self.pinging:
                self.pinging.add(node_id)
                return node_id, peer_id
        return None

    def split(self) -> tuple[KBucket, KBucket]:
        middle = (self.lower + self.upper) // 2
        left = KBucket(self.lower, middle, self.size, self.depth + 1)
        right = KBucket(middle, self.upper, self.size, self.depth + 1)
        for source in (self.nodes, self.replacements):  # at most 2 * size nodes: nothing is dropped
            for node_id, peer_id in source.items():
                (left if node_id < middle else right).add_or_update(node_id, peer_id)
        return left, right


class RoutingTable:
    def __init__(self, own_id: NodeIdLike, bucket_size: int = 20, depth_modulo: int = 5) -> None:
        if bucket_size < 1 or depth_modulo < 1:
            raise ValueError("bucket_size and depth_modulo must be positive")
        self.own_id = as_node_id(own_id)
        self.bucket_size = bucket_size
        self.depth_modulo = depth_modulo
        self.buckets: list[KBucket] = [KBucket(0, MAX_ID, bucket_size)]
        self._lowers: list[int] = [0]
        self._peer_of: dict[int, PeerId] = {}  # main entries and replacements
        self._node_of: dict[PeerId, int] = {}

    # ----------------------------------------------------------------- lookup

    def bucket_index(self, node_id: NodeIdLike) -> int:
        return bisect.bisect_right(self._lowers, as_node_id(node_id)) - 1

    def peer_id(self, node_id: NodeIdLike) -> PeerId | None:
        return self._peer_of.get(as_node_id(node_id))

    def node_id(self, peer_id: PeerId) -> int | None:
        return self._node_of.get(peer_id)

    def __contains__(self, node_id: NodeIdLike) -> bool:
        return as_node_id(node_id) in self._peer_of

    def __len__(self) -> int:
        """Main entries (the ones FIND may return)."""
        return sum(len(bucket.nodes) for bucket in self.buckets)

    def entries(self) -> Iterator[tuple[int, PeerId]]:
        for bucket in self.buckets:
            yield from bucket.nodes.items()

    # ---------------------------------------------------------------- updates

    def add_or_update(self, node_id: NodeIdLike, peer_id: PeerId) -> tuple[int, PeerId] | None:
        """Record that ``node_id`` answered or called us from ``peer_id``.

        Returns ``(node_id, peer_id)`` of an entry to ping if the node could only be kept as a replacement
        (the bucket is full and may not split), else ``None``. Our own ID is never added.
        """
        node = as_node_id(node_id)
        if node == self.own_id:
            return None
        previous_node = self._node_of.get(peer_id)
        if previous_node is not None and previous_node != node:
            self.remove(previous_node)
        previous_peer = self._peer_of.get(node)
        if previous_peer is not None and previous_peer != peer_id:
            self._node_of.pop(previous_peer, None)

        for _ in range(ID_BITS + 1):  # each split deepens a bucket by one level: bounded
            index = self.bucket_index(node)
            bucket = self.buckets[index]
            stored, dropped = bucket.add_or_update(node, peer_id)
            self._peer_of[node] = peer_id
            self._node_of[peer_id] = node
            if dropped is not None:
                self._forget(dropped)
            if stored:
                return None
            if bucket.covers(self.own_id) or bucket.depth % self.depth_modulo != 0:
                if bucket.upper - bucket.lower < 2:
                    return bucket.node_to_ping()
                self._split(index)
                continue
            return bucket.node_to_ping()
        raise AssertionError("bucket splitting did not terminate")  # pragma: no cover

    def remove(self, node_id: NodeIdLike) -> PeerId | None:
        """Forget a node (e.g. it failed to answer). Returns its peer ID if it was known."""
        node = as_node_id(node_id)
        if node not in self._peer_of:
            return None
        bucket = self.buckets[self.bucket_index(node)]
        bucket.remove(node)
        peer_id = self._peer_of[node]
        self._forget(node)
        return peer_id

    def remove_peer(self, peer_id: PeerId) -> int | None:
        node = self._node_of.get(peer_id)
        if node is not None:
            self.remove(node)
        return node

    def _split(self, index: int) -> None:
        left, right = self.buckets[index].split()
        self.buckets[index : index + 1] = [left, right]
        self._lowers[index : index + 1] = [left.lower, right.lower]

    def _forget(self, node: int) -> None:
        peer_id = self._peer_of.pop(node, None)
        if peer_id is not None and self._node_of.get(peer_id) == node:
            del self._node_of[peer_id]

    # ---------------------------------------------------------------- queries

    def nearest(
        self,
        key_id: NodeIdLike,
        k: int | None = None,
        exclude: NodeIdLike | Collection[NodeIdLike] | None = None,
    ) -> list[tuple[int, PeerId]]:
        """Up to ``k`` (default ``bucket_size``) main entries nearest to ``key_id`` by XOR, nearest first."""
        key = as_node_id(key_id)
        limit = self.bucket_size if k is None else k
        if limit <= 0:
            return []
        if exclude is None:
            excluded: set[int] = set()
        elif isinstance(exclude, int | bytes | bytearray):
            excluded = {as_node_id(exclude)}
        else:
            excluded = {as_node_id(item) for item in exclude}
        excluded.add(self.own_id)
        candidates = ((node ^ key, node, peer) for node, peer in self.entries() if node not in excluded)
        return [(node, peer) for _, node, peer in heapq.nsmallest(limit, candidates, key=lambda c: c[0])]
