"""DHT node handlers, bytes in / bytes out, against hivemind's own responses (vectors `protobuf_builtin`),
plus hostile input. No network here except the two-node test at the end (127.0.0.1 only)."""

from __future__ import annotations

import contextlib
import math

import base58
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dht._pb import dht_pb2
from dht.errors import AddressLookupTimeout, CallTimeout, DecodeError, DHTError
from dht.node import (
    IS_DICTIONARY,
    IS_REGULAR_VALUE,
    RPC_PING,
    DHTNode,
    NodeLimits,
    RequestRejected,
    StoreItem,
    TokenBucket,
)
from dht.serializer import dumps
from dht.storage import DictionaryItem, RegularItem

T0 = 1767225600.0


def unhex(text: str) -> bytes:
    return bytes.fromhex(text)


class FrozenClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def builtin_server(vectors) -> tuple[DHTNode, dict]:
    """SERVER of `protobuf_builtin` with the storage and routing table it had when the vectors were made."""
    builtin = vectors["protobuf_builtin"]
    nodes = builtin["nodes"]
    node = DHTNode(unhex(nodes["SERVER"]["node_id"]), clock=FrozenClock())
    for neighbour in nodes["neighbors_in_SERVER_routing_table"]:
        node.routing.add_or_update(unhex(neighbour["node_id"]), neighbour["peer_id"])
    found = builtin["steps"][0]["client_side_result"]
    for key_hex, (value, _nearest) in found.items():
        if value is None:
            continue
        stored = value["$ValueWithExpiration"]
        key = unhex(key_hex)
        if "$bytes" in stored["value"]:
            assert node.storage.storage.store(key, unhex(stored["value"]["$bytes"]), stored["expiration_time"], T0)
            continue
        for entry in stored["value"]["$DictionaryDHTValue"]["items"]:
            subkey = dumps(entry["subkey"])
            value_bytes = unhex(entry["value"]["$bytes"])
            assert node.storage.storage.store_subkey(key, subkey, value_bytes, entry["expiration_time"], T0)
    return node, nodes


def call_of(vectors, step: int, index: int = -1) -> dict:
    return vectors["protobuf_builtin"]["steps"][step]["calls"][index]


def peer_of(nodes: dict, label: str) -> str:
    return nodes[label]["peer_id"]


def test_builtin_find_store_ping_bytes_match_hivemind(vectors):
    node, nodes = builtin_server(vectors)
    handlers = {
        "DHTProtocol.rpc_find": node.handle_find,
        "DHTProtocol.rpc_store": node.handle_store,
        "DHTProtocol.rpc_ping": node.handle_ping,
    }
    checked = 0
    for step in (0, 1, 2, 3, 4, 5, 7):
        call = call_of(vectors, step)
        assert call["callee"] == "SERVER"
        response = handlers[call["handler"]](peer_of(nodes, call["caller"]), unhex(call["request_hex"]))
        assert response.hex() == call["response_hex"], vectors["protobuf_builtin"]["steps"][step]["description"]
        checked += 1
    assert checked == 7
    # the full node's FIND (step 1) and STOREs put it into the routing table; the client-mode monitor never
    assert node.routing.peer_id(unhex(nodes["FULLNODE"]["node_id"])) == peer_of(nodes, "FULLNODE")
    assert node.routing.node_id(peer_of(nodes, "MONITOR(client_mode)")) is None


class FakeHost:
    """Plays FULLNODE answering SERVER's validation ping-back with hivemind's recorded bytes."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.calls: list[tuple[str, str, bytes]] = []

    def is_connected(self, peer_id: str) -> bool:
        return True

    def known_addrs(self, peer_id: str) -> list[str]:
        return []

    async def call_unary(self, peer_id: str, proto: str, data: bytes, *, timeout: float) -> bytes:
        self.calls.append((peer_id, proto, data))
        return self.reply


async def test_validating_ping_pings_the_caller_back(vectors):
    node, nodes = builtin_server(vectors)
    ping_back, ping = vectors["protobuf_builtin"]["steps"][6]["calls"]
    assert (ping_back["caller"], ping["caller"]) == ("SERVER", "FULLNODE")
    host = FakeHost(unhex(ping_back["response_hex"]))
    node.host = host  # type: ignore[assignment]
    fullnode = peer_of(nodes, "FULLNODE")
    response = await node.rpc_ping(fullnode, unhex(ping["request_hex"]))
    assert host.calls == [(fullnode, RPC_PING, unhex(ping_back["request_hex"]))]
    assert response.hex() == ping["response_hex"]  # available = true
    assert node.routing.peer_id(unhex(nodes["FULLNODE"]["node_id"])) == fullnode

    # a peer that answers the ping-back with another node id is not "available" and not added
    liar = DHTNode(7, clock=FrozenClock())
    other_id = dht_pb2.PingResponse(peer=dht_pb2.NodeInfo(node_id=b"\x01" * 20)).SerializeToString()
    liar.host = FakeHost(other_id)  # type: ignore[assignment]
    response = dht_pb2.PingResponse.FromString(await liar.rpc_ping("p", unhex(ping["request_hex"])))
    assert response.available is False and len(liar.routing) == 0


class UnaddressedHost:
    """A peer we hold no address for: a look-up of ``lookup`` s finds one (or, ``silent``, runs out of time with
    none); the call itself never answers, so its deadline ends it."""

    def __init__(self, lookup: float = 1.0, silent: bool = False) -> None:
        self.lookup, self.silent = lookup, silent
        self.call_timeouts: list[float] = []

    def is_connected(self, peer_id: str) -> bool:
        return False

    def known_addrs(self, peer_id: str) -> list[str]:
        return []

    async def resolve(self, peer_id: str, *, timeout: float) -> list[str]:
        await trio.sleep(timeout if self.silent else self.lookup)
        return [] if self.silent else ["/ip4/127.0.0.1/tcp/1"]

    async def call_unary(self, peer_id: str, proto: str, data: bytes, *, timeout: float) -> bytes:
        self.call_timeouts.append(timeout)
        await trio.sleep(timeout)
        raise CallTimeout(f"no answer within {timeout} s")


@pytest.mark.parametrize("call", ["ping", "find", "store"])
async def test_a_call_to_a_peer_without_address_shares_one_budget_with_its_look_up(autojump_clock, call):
    """It looked up the address with ``wait_timeout``, then called with a fresh ``wait_timeout``: twice as long."""
    node = DHTNode(7, wait_timeout=3.0, clock=FrozenClock())
    node.host = host = UnaddressedHost(lookup=1.0)  # type: ignore[assignment]
    calls = {
        "ping": lambda: node.ping("peer"),
        "find": lambda: node.call_find("peer", [b"k" * 20]),
        "store": lambda: node.call_store("peer", [StoreItem(b"k" * 20, IS_REGULAR_VALUE, dumps(1), T0 + 60)]),
    }
    t0 = trio.current_time()
    with contextlib.suppress(CallTimeout):  # ping and store report a failure as None
        assert await calls[call]() is None
    assert trio.current_time() - t0 <= 3.0 + 1e-6 and host.call_timeouts == [pytest.approx(2.0)]


async def test_a_look_up_that_finds_no_address_in_time_makes_no_call(autojump_clock):
    node = DHTNode(7, wait_timeout=3.0, clock=FrozenClock())
    node.host = host = UnaddressedHost(silent=True)  # type: ignore[assignment]
    t0 = trio.current_time()
    with pytest.raises(AddressLookupTimeout):
        await node.call_find("peer", [b"k" * 20])
    assert trio.current_time() - t0 <= 3.0 + 1e-6 and host.call_timeouts == []


def find_request(keys: list[bytes], node_id: bytes = b"") -> bytes:
    return dht_pb2.FindRequest(keys=keys, peer=dht_pb2.NodeInfo(node_id=node_id)).SerializeToString()


def store_request(items: list[tuple[bytes, bytes, bytes, float, bool]], node_id: bytes = b"") -> bytes:
    return dht_pb2.StoreRequest(
        keys=[i[0] for i in items],
        subkeys=[i[1] for i in items],
        values=[i[2] for i in items],
        expiration_time=[i[3] for i in items],
        in_cache=[i[4] for i in items],
        peer=dht_pb2.NodeInfo(node_id=node_id),
    ).SerializeToString()


def peer_name(n: int) -> str:
    """A syntactically valid base58 Ed25519 peer id for fake node n."""
    return base58.b58encode(b"\x00\x24\x08\x01\x12\x20" + n.to_bytes(32, "big")).decode()


def test_find_returns_20_nearest_excluding_requester_and_self():
    node = DHTNode(0, clock=FrozenClock())
    ids = [(1 << 159) + n * 977 for n in range(30)] + [n + 1 for n in range(30)]
    for n, node_id in enumerate(ids):
        node.routing.add_or_update(node_id, peer_name(n))
    key = (5).to_bytes(20, "big")
    requester = (5).to_bytes(20, "big")  # node id 5 is in the table: it must not be offered to itself
    response = dht_pb2.FindResponse.FromString(node.handle_find(peer_name(4), find_request([key], requester)))
    (result,) = response.results
    assert result.type == dht_pb2.NOT_FOUND
    returned = [int.from_bytes(n, "big") for n in result.nearest_node_ids]
    assert len(returned) == 20 and 5 not in returned and 0 not in returned
    assert returned == sorted(returned, key=lambda n: n ^ 5)
    assert returned == sorted((i for i in node.routing._peer_of if i != 5), key=lambda n: n ^ 5)[:20]
    assert result.nearest_peer_ids[0] == base58.b58decode(node.routing.peer_id(returned[0]))
    assert response.peer.node_id == bytes(20)


def test_store_alignment_rules():
    node = DHTNode(1, clock=FrozenClock())
    key = (9).to_bytes(20, "big")
    items = [(key, IS_REGULAR_VALUE, b"\x01", T0 + 10, False), (key, dumps("s"), b"\x02", T0 + 20, False)]
    request = dht_pb2.StoreRequest.FromString(store_request(items))
    del request.subkeys[1]  # a short subkeys list silently truncates the batch (hivemind zips)
    response = dht_pb2.StoreResponse.FromString(node.handle_store("p", request.SerializeToString()))
    assert list(response.store_ok) == [True]
    del request.in_cache[1]
    with pytest.raises(RequestRejected):
        node.handle_store("p", request.SerializeToString())
    assert node.storage.find(key, T0) == RegularItem(b"\x01", T0 + 10)


def test_store_then_find_round_trip_with_dictionary_and_cache():
    node = DHTNode(1, clock=FrozenClock())
    key = (9).to_bytes(20, "big")
    subkey = dumps("12D3KooWL8pFAAemHvuV33PomCwHh6E6Ea5Fuu83gomgWLrmBErx")
    ok = node.handle_store(
        "p",
        store_request([(key, subkey, dumps((2, 1.0, {})), T0 + 240, False), (key, dumps(5), b"\xc0", T0 + 100, True)]),
    )
    assert list(dht_pb2.StoreResponse.FromString(ok).store_ok) == [True, True]
    (result,) = dht_pb2.FindResponse.FromString(node.handle_find("q", find_request([key]))).results
    assert result.type == dht_pb2.FOUND_DICTIONARY and result.expiration_time == T0 + 240
    stored = node.storage.find(key, T0)
    assert isinstance(stored, DictionaryItem) and result.value == stored.to_msgpack()
    # a whole dictionary (IS_DICTIONARY) round-trips through STORE into another node's cache
    other = DHTNode(2, clock=FrozenClock())
    ok = other.handle_store("p", store_request([(key, IS_DICTIONARY, result.value, 0.0, True)]))
    assert list(dht_pb2.StoreResponse.FromString(ok).store_ok) == [True]
    assert other.storage.cache.get(key, T0) == stored


# ------------------------------------------------------------------------------------ hostile input


def petals_record(node: DHTNode) -> tuple[bytes, DictionaryItem]:
    key = (77).to_bytes(20, "big")
    ok = node.handle_store("good", store_request([(key, dumps("server"), dumps((2, 1.0, {})), T0 + 240, False)]))
    assert list(dht_pb2.StoreResponse.FromString(ok).store_ok) == [True]
    item = node.storage.find(key, T0)
    assert isinstance(item, DictionaryItem)
    return key, item


def test_hostile_stores_get_false_and_never_corrupt_records():
    node = DHTNode(1, clock=FrozenClock())
    key, before = petals_record(node)
    hostile = [
        (key, b"\x92\x01", b"v", T0 + 300, False),  # truncated msgpack subkey
        (key, dumps([1, 2]), b"v", T0 + 300, False),  # unhashable subkey (hivemind: whole RPC fails)
        (key, b"\xc1", b"v", T0 + 300, False),  # never-used msgpack byte
        (key, IS_DICTIONARY, b"\x01", T0 + 300, False),  # IS_DICTIONARY but not a dictionary
        (key, IS_DICTIONARY, b"\xc7\x01\x50\x00", T0 + 300, False),  # ext 0x50 with a bad payload
        (b"\x01" * 21, IS_REGULAR_VALUE, b"v", T0 + 300, False),  # key longer than 20 bytes
        (key, dumps("server"), b"v", math.nan, False),  # NaN expiration
        (key, dumps("server"), b"v", math.inf, False),  # never-expiring
        (key, dumps("server"), b"v" * (1 << 20), T0 + 300, False),  # over max_value_bytes
        (key, dumps("server"), b"older", T0 + 10, False),  # older than what is stored
    ]
    response = dht_pb2.StoreResponse.FromString(node.handle_store("evil", store_request(hostile)))
    assert list(response.store_ok) == [False] * len(hostile)
    assert node.storage.find(key, T0) == before
    # an unknown ext type as subkey is accepted like hivemind (it decodes to its raw payload bytes)
    response = dht_pb2.StoreResponse.FromString(
        node.handle_store("evil", store_request([(key, b"\xd4\x07\x01", b"v", T0 + 10, False)]))
    )
    assert list(response.store_ok) == [True]
    assert [e.subkey for e in node.storage.find(key, T0).entries] == [dumps("server"), dumps(b"\x01")]


def test_garbage_and_oversize_requests_are_errors_not_crashes():
    node = DHTNode(1, clock=FrozenClock(), limits=NodeLimits(max_keys_per_request=3, max_request_bytes=1000))
    key, before = petals_record(node)
    for handler in (node.handle_find, node.handle_store, node.handle_ping):
        with pytest.raises(DecodeError):
            handler("evil", b"\xff\xff\xff\xff")
        with pytest.raises(RequestRejected):
            handler("evil", b"\x00" * 1001)
    with pytest.raises(RequestRejected):
        node.handle_find("evil", find_request([key] * 4))
    with pytest.raises(RequestRejected):
        node.handle_find("evil", find_request([b"\x01" * 21]))
    with pytest.raises(RequestRejected):
        node.handle_store("evil", store_request([(key, IS_REGULAR_VALUE, b"v", T0 + 999, False)] * 4))
    assert node.storage.find(key, T0) == before
    assert len(node.handle_find("good", find_request([key] * 3))) > 0


def test_flood_from_one_peer_is_rate_limited_others_are_served():
    ticks = FrozenClock(0.0)
    node = DHTNode(1, clock=FrozenClock(), monotonic=ticks, limits=NodeLimits(requests_per_second=10, burst=5))
    request = find_request([bytes(20)])
    for _ in range(5):
        node.handle_find("flooder", request)
    with pytest.raises(RequestRejected, match="rate limit"):
        node.handle_find("flooder", request)
    node.handle_find("polite", request)  # other peers are not affected
    ticks.now += 0.1  # one token back after 0.1 s at 10/s
    node.handle_find("flooder", request)
    with pytest.raises(RequestRejected):
        node.handle_find("flooder", request)


def test_token_bucket_and_tracked_peer_bound():
    bucket = TokenBucket(rate=2, capacity=2, tokens=2, updated=0)
    assert bucket.take(0) and bucket.take(0) and not bucket.take(0)
    assert bucket.take(0.5) and not bucket.take(0.5)
    node = DHTNode(1, limits=NodeLimits(max_tracked_peers=3))
    for n in range(10):
        node.rate_limiter.allow(f"p{n}", 0.0)
    assert len(node.rate_limiter._buckets) == 3


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300), st.sampled_from(["find", "store", "ping"]))
def test_fuzzed_requests_raise_only_dht_errors(data, which):
    node = DHTNode(1, clock=FrozenClock(), limits=NodeLimits(requests_per_second=1e9, burst=1e9))
    key, before = petals_record(node)
    handler = {"find": node.handle_find, "store": node.handle_store, "ping": node.handle_ping}[which]
    with contextlib.suppress(DHTError):  # any other exception fails the test
        handler("fuzzer", data)
    item = node.storage.find(key, T0)
    assert item is not None and item.entries[0] == before.entries[0]


# --------------------------------------------------------------------------------- two real nodes


async def test_two_nodes_on_localhost_ping_store_find():
    from dht.net.transport import open_host

    async with open_host(listen=True) as host_a, open_host(listen=True) as host_b, trio.open_nursery() as nursery:
        node_a, node_b = DHTNode(), DHTNode()
        await nursery.start(node_a.serve, host_a)
        await nursery.start(node_b.serve, host_b)
        with trio.fail_after(20):
            assert await node_b.bootstrap(host_a.listen_addrs, timeout=10) == 1
            assert node_b.routing.peer_id(node_a.node_id) == host_a.peer_id
            # a's table learns b from b's requests (b sends its node id)
            assert node_a.routing.peer_id(node_b.node_id) == host_b.peer_id

            key = (123).to_bytes(20, "big")
            now = node_b.clock()
            items = [StoreItem(key, dumps(host_b.peer_id), dumps((2, 10.0, {})), now + 240)]
            results = await node_b.store_many(items, nodes=[host_a.peer_id])
            assert results == {host_a.peer_id: [True]}
            responder, (answer,) = await node_b.call_find(host_a.peer_id, [key])
            assert responder == node_a.node_id_bytes
            assert isinstance(answer.item, DictionaryItem)
            assert answer.item.entries[0].value == dumps((2, 10.0, {}))
            assert answer.nearest == []  # a knows only b, the requester

            # store_many without explicit nodes: both nodes are among the 5 nearest, both get it
            results = await node_b.store_many([StoreItem((7).to_bytes(20, "big"), IS_REGULAR_VALUE, b"\x01", now + 60)])
            assert results == {host_a.peer_id: [True], host_b.peer_id: [True]}
            assert node_a.storage.find((7).to_bytes(20, "big"), node_a.clock()) is not None
        nursery.cancel_scope.cancel()
