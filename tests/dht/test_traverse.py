"""The batched multi-key search over a simulated DHT (pure: in-memory nodes, trio's MockClock)."""

from __future__ import annotations

import hashlib
import random

import pytest
import trio
import trio.testing

from dht.swarm import answer_fingerprint, answers_agree
from dht.traverse import traverse
from dht.value import DHTValue

K = 20


def _id(x: str) -> bytes:
    return hashlib.sha1(x.encode()).digest()


class FakeDHT:
    """N nodes that all know each other (each knows a random subset), values on the 5 nearest nodes of each key
    (``ranks``: on the nodes at those ranks of distance instead, as when newer nodes joined nearer the key)."""

    def __init__(self, n: int, keys: list[bytes], *, seed: int = 0, table: int = 40, dead=(), slow=(), ranks=(0, 5)):
        rng = random.Random(seed)
        self.peers = [f"peer{i}" for i in range(n)]
        self.node_id = {p: _id(p) for p in self.peers}
        self.tables = {p: rng.sample([q for q in self.peers if q != p], min(table, n - 1)) for p in self.peers}
        self.dead, self.slow = set(dead), set(slow)
        self.holders = {}
        for k in keys:
            ki = int.from_bytes(k, "big")
            by_distance = sorted(self.peers, key=lambda p: ki ^ int.from_bytes(self.node_id[p], "big"))
            self.holders[k] = set(by_distance[ranks[0] : ranks[1]])
        self.calls: list[tuple[str, int]] = []
        self.found: dict[bytes, set[str]] = {}

    async def find(self, peer: str, key_ids: list[bytes]):
        self.calls.append((peer, len(key_ids)))
        if peer in self.slow:
            await trio.sleep(1000)
        await trio.sleep(0.01)
        if peer in self.dead:
            raise ConnectionError("dead")
        out = []
        for k in key_ids:
            if peer in self.holders[k]:
                self.found.setdefault(k, set()).add(peer)
            ki = int.from_bytes(k, "big")
            near = sorted(self.tables[peer], key=lambda q: ki ^ int.from_bytes(self.node_id[q], "big"))[:K]
            out.append([(self.node_id[q], q) for q in near])
        return self.node_id[peer], out


KEYS = [_id(f"model.{i}") for i in range(200)]


async def test_every_replica_is_reached_with_one_batched_request_per_node():
    dht = FakeDHT(120, KEYS)
    res = await traverse(dht.find, KEYS, ["peer0"], beam_size=K, max_keys_per_request=1000)
    assert res.complete
    for k in KEYS:  # the 5 nearest nodes of every key were asked it
        assert dht.found.get(k) == dht.holders[k]
    per_peer = {}
    for peer, _n in dht.calls:
        per_peer[peer] = per_peer.get(peer, 0) + 1
    assert max(per_peer.values()) <= 3  # batched: a node is asked in few requests, not one per key
    assert len(dht.calls) < 120 * 2


async def test_dead_nodes_are_replaced_by_the_next_nearest():
    keys = KEYS[:50]
    probe = FakeDHT(80, keys)
    victims = sorted({p for k in keys for p in probe.holders[k]})[:5]
    dht = FakeDHT(80, keys, dead=victims)
    res = await traverse(dht.find, keys, ["peer1" if "peer1" not in victims else "peer2"], beam_size=K)
    assert res.complete
    for v in victims:
        assert not res.nodes[v].ok and res.nodes[v].error
    for k in keys:
        assert dht.found.get(k, set()) == dht.holders[k] - set(victims)


async def test_key_chunks_respect_the_request_limit():
    dht = FakeDHT(10, KEYS)
    res = await traverse(dht.find, KEYS, ["peer0"], beam_size=None, max_keys_per_request=64)
    assert all(n <= 64 for _p, n in dht.calls)
    assert len(res.contacted) == 10  # beam None sweeps every reachable node


async def test_deadline_returns_partial_result(autojump_clock):
    dht = FakeDHT(30, KEYS[:10], slow={f"peer{i}" for i in range(1, 30)})
    res = await traverse(dht.find, KEYS[:10], ["peer0"], beam_size=K, timeout=5)
    assert not res.complete
    assert res.nodes["peer0"].ok
    assert trio.current_time() == pytest.approx(5, abs=0.1)


async def test_no_seeds_no_work():
    dht = FakeDHT(5, KEYS[:3])
    res = await traverse(dht.find, KEYS[:3], [])
    assert res.complete and not res.nodes and not dht.calls


async def test_keys_of_a_failed_later_chunk_are_asked_again():
    """A node that answers its first request and fails the second must not swallow the second chunk's keys."""
    dht = FakeDHT(60, KEYS)
    flaky: dict[str, int] = {}
    failed: set[str] = set()
    real_find = dht.find

    async def find(peer, key_ids):
        flaky[peer] = flaky.get(peer, 0) + 1
        if flaky[peer] == 2:  # every node fails its second request
            failed.add(peer)
            raise ConnectionError("reset")
        return await real_find(peer, key_ids)

    res = await traverse(find, KEYS, ["peer0"], beam_size=K, max_keys_per_request=16)
    assert res.complete
    assert failed  # failures really happened
    for k in KEYS:  # every replica still answered for every key
        assert dht.found.get(k) == dht.holders[k]


async def test_a_key_a_node_fails_twice_moves_to_the_next_nearest():
    dht = FakeDHT(40, KEYS[:20])
    bad = sorted(dht.holders[KEYS[0]])[0]
    real_find = dht.find
    calls = []

    async def find(peer, key_ids):
        calls.append(peer)
        if peer == bad and calls.count(bad) > 1:  # answers once, then never again
            raise ConnectionError("reset")
        return await real_find(peer, key_ids)

    res = await traverse(find, KEYS[:20], [bad], beam_size=K, max_keys_per_request=4)
    assert res.complete and res.nodes[bad].ok and res.nodes[bad].error
    for k in KEYS[:20]:  # the other replicas answered every key the bad node dropped
        assert dht.holders[k] - {bad} <= dht.found.get(k, set())


async def test_nodes_known_from_a_previous_lookup_are_asked_in_the_first_round(autojump_clock):
    """A warm lookup: nodes met before enter the beams at once (one round instead of a seed's answer, then
    them), every replica is still reached, and a seed that is also known is asked each key once."""
    dht = FakeDHT(40, KEYS[:50])
    first = await traverse(dht.find, KEYS[:50], ["peer0"], beam_size=K, max_keys_per_request=1000)
    known = [(v.node_id, v.peer_id) for v in first.contacted]
    dht.calls.clear()
    dht.found.clear()
    t0 = trio.current_time()
    again = await traverse(
        dht.find, KEYS[:50], ["peer0"], beam_size=K, max_keys_per_request=1000, concurrency=64, known=known
    )
    assert again.complete
    assert all(dht.found.get(k) == dht.holders[k] for k in KEYS[:50])
    assert sum(1 for peer, _ in dht.calls if peer == "peer0") == 1
    assert trio.current_time() - t0 < 2 * 0.01  # one round of FINDs (each takes 0.01 s), not more


async def test_a_nodes_chunks_are_asked_side_by_side(autojump_clock):
    """A seed asked 200 keys in chunks of 50: four FINDs at once, one round trip (they were one after another)."""
    dht = FakeDHT(1, KEYS)
    t0 = trio.current_time()
    res = await traverse(dht.find, KEYS, ["peer0"], beam_size=K, max_keys_per_request=50)
    assert res.requests == 4 and sorted(n for _, n in dht.calls) == [50, 50, 50, 50]
    assert trio.current_time() - t0 < 2 * 0.01


async def test_nodes_a_chunks_answer_names_are_asked_before_the_peers_other_chunks_return(autojump_clock):
    keys = KEYS[:4]
    asked_at: dict[str, float] = {}

    async def find(peer: str, key_ids: list[bytes]):
        asked_at.setdefault(peer, trio.current_time())
        if peer == "seed" and key_ids[0] == keys[2]:
            await trio.sleep(1.0)  # the seed's second chunk is slow (a large reply)
        else:
            await trio.sleep(0.01)
        near = [(_id("other"), "other")] if peer == "seed" else []
        return _id(peer), [near for _ in key_ids]

    t0 = trio.current_time()
    await traverse(find, keys, ["seed"], beam_size=K, max_keys_per_request=2)
    assert asked_at["other"] - t0 < 0.1  # named by the fast first chunk: asked at once, not after the slow one


def _holds_alike(dht: FakeDHT, keys: list[bytes], lost: dict[bytes, str] | None = None):
    """``agree`` for a FakeDHT: the nodes' answers for a key are alike when all hold it (nobody holding it is no
    agreement: see ``dht.swarm.answers_agree``); ``lost``: a key -> the one holder that lost it (its answer then
    differs)."""
    lost = lost or {}

    def holds(i: int, peer: str) -> bool:
        return peer in dht.holders[keys[i]] and lost.get(keys[i]) != peer

    return lambda i, peers: all(holds(i, p) for p in peers)


async def test_a_quorum_reads_each_key_from_its_nearest_replicas_only(autojump_clock):
    """hivemind keeps a value on its 5 nearest nodes: with a quorum of 3 that agree, the other 17 nodes of a beam
    of 20 are not asked the key (they were: ~20 reads per key). Every key is still read from 3 of its holders."""
    keys = KEYS[:60]
    full = FakeDHT(120, keys)
    await traverse(full.find, keys, ["peer0"], beam_size=K, max_keys_per_request=1000)
    dht = FakeDHT(120, keys)
    res = await traverse(
        dht.find, keys, ["peer0"], beam_size=K, max_keys_per_request=1000, quorum=3, agree=_holds_alike(dht, keys)
    )
    assert res.complete
    assert all(len(dht.found.get(k, ())) >= 3 for k in keys)
    reads = sum(n for _, n in dht.calls)
    assert reads < sum(n for _, n in full.calls) / 3


async def test_a_key_whose_nearest_replicas_disagree_is_read_from_its_whole_beam(autojump_clock):
    keys = KEYS[:60]
    dht = FakeDHT(120, keys)
    nearest = {k: sorted(dht.holders[k], key=lambda p: int.from_bytes(k, "big") ^ int.from_bytes(_id(p), "big"))
               for k in keys}  # fmt: skip
    lost = {keys[0]: nearest[keys[0]][1], keys[1]: nearest[keys[1]][0]}  # a replica that missed a store
    res = await traverse(
        dht.find, keys, ["peer0"], beam_size=K, max_keys_per_request=1000, quorum=3, agree=_holds_alike(dht, keys, lost)
    )
    assert res.complete
    for k in (keys[0], keys[1]):  # widened: every holder reached
        assert dht.found[k] == dht.holders[k]
    assert sum(1 for k in keys[2:] if dht.found.get(k) == dht.holders[k]) < len(keys) - 2  # the rest: not all 5


async def test_a_key_its_nearest_nodes_do_not_hold_is_read_from_its_whole_beam(autojump_clock):
    """Newer nodes joined nearer the keys than their holders (or hostile nodes chose ids near them): the 3 nearest
    answering "nothing" alike is no quorum, so every key is still found (the reviewer's case: 16 of 20 were)."""
    keys = KEYS[:20]
    dht = FakeDHT(120, keys, ranks=(3, 8))
    fingerprints: dict[bytes, dict[str, int | None]] = {}

    async def find(peer: str, key_ids: list[bytes]):
        reply = await dht.find(peer, key_ids)
        for k in key_ids:
            value = DHTValue(b"record", 100.0) if peer in dht.holders[k] else None
            fingerprints.setdefault(k, {})[peer] = answer_fingerprint(value)
        return reply

    res = await traverse(
        find,
        keys,
        ["peer0"],
        beam_size=K,
        max_keys_per_request=1000,
        quorum=3,
        agree=lambda i, peers: answers_agree(fingerprints.get(keys[i], {}), peers),
    )
    assert res.complete
    assert sum(1 for k in keys if dht.found.get(k)) == len(keys)


class _Lowest(random.Random):
    """Always draws the lowest rank: the witness is the 3rd nearest, the quorum the 3 nearest (as before it)."""

    def randrange(self, start, stop=None, step=1):
        return start


async def test_colluding_nearest_nodes_are_caught_by_the_witness(autojump_clock):
    """The 3 nodes nearest each key are hostile (their ids chosen near it) and agree on a value that omits a server;
    the 4th and 5th nearest are honest holders. The witness is drawn among ranks 2-4, so for about 2 keys in 3 it
    is honest, the answers differ and the key is read from its whole beam, honest holders included. With the 3
    nearest as the quorum (the witness always at rank 2) only keys whose honest holders were met on the way are read.
    """
    keys = KEYS[:60]

    async def search(rng: random.Random) -> int:
        dht = FakeDHT(120, keys)
        rank = {k: sorted(dht.holders[k], key=lambda p: int.from_bytes(k, "big") ^ int.from_bytes(_id(p), "big"))
                for k in keys}  # fmt: skip
        hostile = {k: set(rank[k][:3]) for k in keys}

        def agree(i: int, peers: list[str]) -> bool:  # the hostile nodes answer alike; honest ones differ from them
            return {p in hostile[keys[i]] for p in peers} == {True}

        res = await traverse(
            dht.find, keys, ["peer0"], beam_size=K, max_keys_per_request=1000, quorum=3, agree=agree, rng=rng
        )
        assert res.complete
        return sum(1 for k in keys if dht.found.get(k) == dht.holders[k])  # widened: every holder read

    # keys read whole: without a witness only those whose honest holders were met on the way in (10-11 of 60
    # measured), with one 37-46 of 60 over seeds 0-5 (2/3 of the keys widened, plus those met on the way)
    assert await search(_Lowest()) <= 20
    assert await search(random.Random(7)) >= 30


def test_the_witness_is_drawn_among_the_ranks_after_the_nearest():
    from dht.traverse import _Beams

    keys = KEYS[:300]
    beams = _Beams(keys, 20, quorum=3, rng=random.Random(1))
    assert set(beams.witness) == {2, 3, 4}
    for n in range(30):
        beams.add(_id(f"peer{n}"), f"peer{n}")
    for i in range(len(keys)):
        nearest = [peer for _d, peer in beams.sorted[i]]
        assert beams.beam(i, set(), {}) == [nearest[0], nearest[1], nearest[beams.witness[i]]]
    dead = {beams.sorted[0][beams.witness[0]][1]}  # the witness is gone: the next live node takes its rank
    assert beams.beam(0, dead, {})[-1] == beams.sorted[0][beams.witness[0] + 1][1]
    alone = _Beams(keys, 20, quorum=1, rng=random.Random(1))  # a quorum of one: the nearest node, never a witness
    for n in range(30):
        alone.add(_id(f"peer{n}"), f"peer{n}")
    assert all(alone.beam(i, set(), {}) == [alone.sorted[i][0][1]] for i in range(len(keys)))


async def test_a_node_whose_address_look_up_ran_out_of_time_is_asked_again_not_dropped(autojump_clock):
    """AddressLookupTimeout says our look-up was too slow, nothing about the node: its keys are asked once more."""
    from dht.errors import AddressLookupTimeout

    keys = KEYS[:30]
    dht = FakeDHT(120, keys)
    first_time: set[str] = set()

    async def find(peer: str, key_ids: list[bytes]):
        if peer != "peer0" and peer not in first_time:
            first_time.add(peer)
            raise AddressLookupTimeout(f"the look-up of {peer}'s address left the call too little of its time")
        return await dht.find(peer, key_ids)

    res = await traverse(find, keys, ["peer0"], beam_size=K, max_keys_per_request=1000)
    assert res.complete and not [v for v in res.nodes.values() if v.requests and not v.ok]
    for k in keys:
        assert dht.found.get(k) == dht.holders[k]


def test_a_quorum_needs_a_way_to_compare_answers():
    with pytest.raises(ValueError):
        trio.run(lambda: traverse(FakeDHT(3, KEYS[:1]).find, KEYS[:1], ["peer0"], quorum=3))
