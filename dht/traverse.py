"""Multi-key iterative search that asks each DHT node ONE batched FIND for every key it is near.

hivemind's ``traverse_dht`` runs a beam search per key and packs at most ``min(sqrt(n), 16)`` keys into a request.
A monitor asks for every block key of every model at once, so we turn it around: keep, for every key, the
``beam_size`` nearest nodes known so far (by XOR distance of node ids, which every FindResult reveals); whenever a
node enters some key's beam and has not been asked that key, it gets that key in its next request. Each node is
asked its keys in as few requests as the size limit allows. The search ends when every key's beam has been asked
(or failed) - Kademlia's own termination rule, with the same beam (20) hivemind uses for ``get_many(latest=True)``.

``beam_size=None`` asks every reachable node every key: a sweep that discovers the whole DHT.

``quorum=q`` asks each key's ``q`` replicas first: hivemind stores a value on its 5 nearest nodes, so the rest of a
beam of 20 mostly repeats what those hold (or holds nothing). The ``q`` are the ``q - 1`` nearest nodes and one
*witness* drawn at random, per key and per search, among the next three (ranks ``q - 1`` to ``q + 1``: with ``q =
3``, the 3rd, 4th or 5th nearest, all likely holders; ``q = 1`` is the nearest node alone). When the search
settles, a key whose ``q`` replicas answered alike (the caller's ``agree``) is done; a key whose replicas differ,
or that none of them holds, is widened to the whole beam and the search goes on for it. A swarm whose replicas
agree is then read ``q`` times per key, not 20. The witness is the defence against ids chosen near a key: nodes
that placed themselves nearest and agree on a value that omits a subkey are caught unless they also hold every rank
the witness may be drawn from (with 2 of the next 3 honest, a hidden server spanning 10 blocks is caught with
probability 1 - (1/3)^10 per crawl); before it, 3 colluding nearest nodes were enough.

Node ids come from the network and are unauthenticated (docs/PROTOCOL.md §1.3): a node id only decides whom we ask
first, never what we believe. Seeds (bootstrap peers) are asked every key, since their ids are not known up front.
"""

from __future__ import annotations

import bisect
import logging
import math
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import trio

from .errors import AddressLookupTimeout

log = logging.getLogger(__name__)

# find(peer_id, key_ids) -> (responder node_id or None, per-key nearest lists aligned with key_ids)
# The callable handles values itself (see ``on_response``); traversal only needs the neighbours.
Neighbours = list[tuple[bytes, str]]  # (node_id 20 bytes, base58 peer id)
FindFn = Callable[[str, list[bytes]], Awaitable[tuple[bytes | None, list[Neighbours]]]]


@dataclass(slots=True)
class NodeVisit:
    """What happened when we asked one DHT node."""

    peer_id: str
    node_id: bytes | None = None
    requests: int = 0
    keys_asked: int = 0
    ok: bool = False
    error: str | None = None
    latency: float | None = None  # seconds, of its fastest request


@dataclass(slots=True)
class TraversalResult:
    nodes: dict[str, NodeVisit] = field(default_factory=dict)
    complete: bool = True  # False when the deadline cut the search short
    requests: int = 0

    @property
    def contacted(self) -> list[NodeVisit]:
        return [v for v in self.nodes.values() if v.ok]

    @property
    def failed(self) -> list[NodeVisit]:
        return [v for v in self.nodes.values() if v.requests and not v.ok]


class _Beams:
    """For every key, all known nodes sorted by XOR distance; the beam is the first ``beam_size`` live ones."""

    def __init__(
        self,
        key_ids: Sequence[bytes],
        beam_size: int | None,
        quorum: int | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.keys = [int.from_bytes(k, "big") for k in key_ids]
        self.beam_size = beam_size
        self.quorum = quorum  # the beam of a key not widened (None: always the whole beam)
        # each key's witness: the rank (0-based, among live nodes by distance) of its last replica, drawn once
        draw = rng or random.SystemRandom()
        # a quorum of 1 is the nearest node alone: a witness would replace it, not check it
        witnessed = quorum is not None and quorum >= 2
        self.witness = [draw.randrange(quorum - 1, quorum + 2) for _ in key_ids] if witnessed else []
        self.widened: set[int] = set()
        self.sorted: list[list[tuple[int, str]]] = [[] for _ in key_ids]
        self.known: dict[str, int] = {}

    def add(self, node_id: bytes, peer_id: str) -> bool:
        if peer_id in self.known or len(node_id) != 20:
            return False
        nid = int.from_bytes(node_id, "big")
        self.known[peer_id] = nid
        for i, k in enumerate(self.keys):
            bisect.insort(self.sorted[i], (k ^ nid, peer_id))
        return True

    def beam(self, i: int, dead: set[str], failed: dict[str, set[int]]) -> list[str]:
        """The beam of key ``i``: skips dead nodes, and nodes that failed to answer this very key. Not widened
        under a quorum: its ``quorum - 1`` nearest and its witness (the live node at the witness's rank, or the
        farthest one there is)."""
        limit = self.beam_size if self.beam_size is not None else math.inf
        narrow = self.quorum is not None and i not in self.widened
        if narrow:
            limit = min(limit, self.witness[i] + 1 if self.witness else self.quorum)
        out: list[str] = []
        for _dist, peer in self.sorted[i]:
            if peer in dead or i in failed.get(peer, ()):
                continue
            out.append(peer)
            if len(out) >= limit:
                break
        if narrow and self.quorum is not None and len(out) > self.quorum:
            return [*out[: self.quorum - 1], out[-1]]
        return out


async def traverse(
    find: FindFn,
    key_ids: Sequence[bytes],
    seeds: Sequence[str],
    *,
    beam_size: int | None = 20,
    max_keys_per_request: int = 1000,
    concurrency: int = 16,
    max_nodes: int = 10_000,
    timeout: float | None = None,
    clock: Callable[[], float] = trio.current_time,
    known: Sequence[tuple[bytes, str]] = (),
    quorum: int | None = None,
    agree: Callable[[int, list[str]], bool] | None = None,
    rng: random.Random | None = None,
) -> TraversalResult:
    """Ask the DHT for ``key_ids`` starting from ``seeds`` (peer ids the caller can already reach).

    ``known``: ``(node id, peer id)`` of nodes met before (a previous crawl's): they enter the beams at once, so
    the nodes a seed would name are asked in the first round instead of one round trip later. A seed among them
    (its node id known) is asked only the keys it is near, like any node.

    ``quorum`` and ``agree(key index, peers)``: see the module's docstring; ``agree`` says whether ``peers``
    (the key's nearest, all of which answered it) gave the same answer for that key; "nothing" from all of them
    must not count as the same answer (newer or hostile nodes nearer the key than its holders would hide it).
    ``rng`` draws the witnesses (default: the system's, so nobody can predict them; a seeded one for tests).

    Runs until every key's beam is asked, or until ``timeout`` seconds have passed (then ``complete`` is False
    and the partial result is returned). ``find`` must enforce its own per-call timeout and
    raise on failure; a failed node is dropped from every beam and the next-nearest node takes its place.
    """
    result = TraversalResult()
    if quorum is not None and (quorum < 1 or agree is None):
        raise ValueError("quorum needs agree, and must be >= 1")
    beams = _Beams(key_ids, beam_size, quorum, rng)
    for node_id, peer in known[:max_nodes]:
        beams.add(node_id, peer)
    n = len(key_ids)
    asked: dict[str, set[int]] = {}  # peer -> key indices asked (or in flight)
    dead: set[str] = set()
    failed: dict[str, set[int]] = {}  # peer -> keys it did not answer twice (skipped in their beams)
    retried: dict[str, set[int]] = {}  # peer -> keys whose failed chunk was given a second chance
    wake = trio.Event()
    in_flight = 0
    limiter = trio.CapacityLimiter(max(1, concurrency))

    def visit(peer: str) -> NodeVisit:
        v = result.nodes.get(peer)
        if v is None:
            v = result.nodes[peer] = NodeVisit(peer)
        return v

    def wanted() -> dict[str, list[int]]:
        want: dict[str, list[int]] = {}
        want_all: set[str] = set()  # seeds being asked every key they were not asked yet
        for seed in seeds:
            if seed not in dead and seed not in beams.known:
                rest = [i for i in range(n) if i not in asked.setdefault(seed, set())]
                if rest:
                    want[seed] = rest
                    want_all.add(seed)
        for i in range(n):
            for peer in beams.beam(i, dead, failed):
                if i not in asked.setdefault(peer, set()) and peer not in want_all:
                    want.setdefault(peer, []).append(i)
        return want

    async def ask_chunk(peer: str, v: NodeVisit, chunk: list[int]) -> None:
        t0 = clock()
        v.requests += 1
        v.keys_asked += len(chunk)
        result.requests += 1
        node_id, neighbours = await find(peer, [key_ids[i] for i in chunk])
        dt = clock() - t0
        v.latency = dt if v.latency is None else min(v.latency, dt)
        v.ok = True
        if node_id:
            v.node_id = node_id
            beams.add(node_id, peer)
        for near in neighbours:
            for nid, pid in near:
                if pid != peer and len(beams.known) < max_nodes:
                    beams.add(nid, pid)

    async def ask(peer: str, idx: list[int]) -> None:
        """All of ``peer``'s chunks at once: on a long round trip, chunks one after another cost a round trip
        each (a seed asked 241 keys in chunks of 64: four), while the peer answers them side by side."""
        nonlocal in_flight, wake
        v = visit(peer)
        unanswered: list[int] = []
        errors: list[Exception] = []

        async def one(chunk: list[int]) -> None:
            try:
                await ask_chunk(peer, v, chunk)
            except Exception as e:  # a dead or hostile node: dropped below, the next-nearest takes its place
                errors.append(e)
                unanswered.extend(chunk)
            else:
                wake.set()  # the nodes this chunk's answer named are asked now, not after the peer's last chunk

        try:
            async with limiter, trio.open_nursery() as nursery:
                for start in range(0, len(idx), max_keys_per_request):
                    nursery.start_soon(one, idx[start : start + max_keys_per_request])
            if errors:
                e = errors[0]
                v.error = f"{type(e).__name__}: {e}"
                # our own look-up of its address ran out of time: no evidence against the node, so it gets the
                # second chance a node that answered before gets, not a place among the dead
                ours = all(isinstance(x, AddressLookupTimeout) for x in errors)
                if not v.ok and not ours:
                    dead.add(peer)
                else:  # it answered before: ask the unanswered keys once more, then move on to the next-nearest
                    again = retried.setdefault(peer, set())
                    for i in unanswered:
                        if i in again:
                            failed.setdefault(peer, set()).add(i)
                        else:
                            again.add(i)
                            asked[peer].discard(i)
                log.debug("find on %s failed: %s", peer, v.error)
        finally:
            in_flight -= 1
            wake.set()

    with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
        async with trio.open_nursery() as nursery:
            while True:
                want = wanted()
                for peer, idx in want.items():
                    asked[peer].update(idx)
                    in_flight += 1
                    nursery.start_soon(ask, peer, idx)
                if in_flight == 0:
                    if not _widen_disagreeing(beams, agree, n, dead, failed):
                        break
                    continue
                await wake.wait()
                wake = trio.Event()
    if scope.cancelled_caught:
        result.complete = False
    return result


def _widen_disagreeing(
    beams: _Beams, agree: Callable[[int, list[str]], bool] | None, n: int, dead: set[str], failed: dict[str, set[int]]
) -> bool:
    """Once the search has settled: widen to the whole beam every key whose nearest nodes answered differently.
    True if any key was widened (the search goes on for those)."""
    if beams.quorum is None or agree is None:
        return False
    wider = [i for i in range(n) if i not in beams.widened and not agree(i, beams.beam(i, dead, failed))]
    beams.widened.update(wider)
    return bool(wider)
