"""dht.net.transport against REAL hivemind 1.1.12 nodes (p2pd daemons) in a subprocess, on 127.0.0.1.

The swarm (full nodes ``a`` and ``b``, client-mode node ``c``) starts once per session; each test opens its
own py-libp2p host in client mode and uses keys of its own. Messages are built with ``dht._pb.dht_pb2``
directly so this file checks the transport, not our request builders.
"""

from __future__ import annotations

import hashlib
import time
import uuid

import msgpack
import pytest
import trio
from interop_fixtures import HivemindHarness, hivemind_harness, hivemind_swarm  # noqa: F401 (fixtures)
from tagged_json import to_json

from dht._pb import dht_pb2, runtime_pb2
from dht.errors import ProtocolNotSupported, RemoteError
from dht.net.transport import LEAN_REAP_EVERY, Host, open_host, peer_id_from_bytes

pytestmark = pytest.mark.interop

TIMEOUT = 5.0
REGULAR_TAG = b"\xc0"  # msgpack nil: a plain value without a subkey
FOUND_REGULAR, FOUND_DICTIONARY, NOT_FOUND = (
    dht_pb2.FOUND_REGULAR,
    dht_pb2.FOUND_DICTIONARY,
    dht_pb2.NOT_FOUND,
)


# ------------------------------------------------------------------ hivemind's encodings, minimal


def _ext_hook(code: int, data: bytes):
    if code == 0x40:
        return tuple(msgpack.unpackb(data, ext_hook=_ext_hook, raw=False))
    if code == 0x50:  # DictionaryDHTValue: [maxsize, latest_expiration, [[subkey, value, expiration], ...]]
        return ("$dict", msgpack.unpackb(data, ext_hook=_ext_hook, raw=False))
    return msgpack.ExtType(code, data)


def _default(obj):
    if isinstance(obj, tuple):
        return msgpack.ExtType(0x40, msgpack.packb(list(obj), use_bin_type=True, default=_default))
    raise TypeError(type(obj))


def packb(value) -> bytes:
    return msgpack.packb(value, use_bin_type=True, strict_types=True, default=_default)


def unpackb(raw: bytes):
    return msgpack.unpackb(raw, ext_hook=_ext_hook, raw=False)


def dht_id(key) -> bytes:
    """DHTID.to_bytes(): SHA-1 of msgpack(key) for non-bytes keys."""
    return hashlib.sha1(packb(key)).digest()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# ------------------------------------------------------------------ fixtures and helpers


@pytest.fixture(scope="session")
def swarm(hivemind_swarm: HivemindHarness) -> HivemindHarness:  # noqa: F811
    if "c" not in hivemind_swarm.nodes:
        hivemind_swarm.start_node("c", client_mode=True, initial_names=["a"])
    return hivemind_swarm


@pytest.fixture
async def host():
    async with open_host() as h:
        yield h


async def ping(host: Host, peer: str) -> dht_pb2.PingResponse:
    request = dht_pb2.PingRequest()
    request.peer.SetInParent()  # NodeInfo present but empty: client mode
    raw = await host.call_unary(peer, "DHTProtocol.rpc_ping", request.SerializeToString(), timeout=TIMEOUT)
    return dht_pb2.PingResponse.FromString(raw)


async def find(host: Host, peer: str, keys: list[bytes], timeout: float = TIMEOUT) -> dht_pb2.FindResponse:
    request = dht_pb2.FindRequest(keys=keys)
    request.peer.SetInParent()
    raw = await host.call_unary(peer, "DHTProtocol.rpc_find", request.SerializeToString(), timeout=timeout)
    response = dht_pb2.FindResponse.FromString(raw)
    assert len(response.results) == len(keys)
    return response


async def store(host: Host, peer: str, items: list[tuple[bytes, bytes, bytes, float, bool]]) -> list[bool]:
    """``items`` = (key id, subkey tag, value bytes, expiration, in_cache)."""
    request = dht_pb2.StoreRequest(
        keys=[i[0] for i in items],
        subkeys=[i[1] for i in items],
        values=[i[2] for i in items],
        expiration_time=[i[3] for i in items],
        in_cache=[i[4] for i in items],
    )
    request.peer.SetInParent()
    raw = await host.call_unary(peer, "DHTProtocol.rpc_store", request.SerializeToString(), timeout=TIMEOUT)
    return list(dht_pb2.StoreResponse.FromString(raw).store_ok)


async def assert_not_in_any_routing_table(swarm: HivemindHarness, peer_id: str) -> None:
    for name in ("a", "b", "c"):
        table = await swarm.acall("routing_table", name=name)
        assert table, f"{name} has an empty routing table: the check would prove nothing"
        assert peer_id not in {entry["peer_id"] for entry in table}, f"{name} put us in its routing table"


# ------------------------------------------------------------------ tests


async def test_ping_returns_node_id_and_dht_time(swarm, host):
    a = swarm.nodes["a"]
    peer = await host.connect(a.maddrs[0], timeout=TIMEOUT)
    before = time.time()
    response = await ping(host, peer)
    assert response.peer.node_id == a.node_id
    assert before - 3 <= response.dht_time <= time.time() + 3
    assert not response.available  # we sent no node_id, so there was nothing to validate


async def test_find_returns_regular_and_petals_dictionary_values(swarm, host):
    a = swarm.nodes["a"]
    now = await swarm.acall("time")
    regular_key, block_key = unique("regular"), unique("Petals-model-hf") + ".0"
    server_peer = "12D3KooWHv9JtiqVnSkzTu92nbFXsMvyDnbv6Vd3beJjEHuSVhxX"
    server_info = (2, 1234.5, {"start_block": 0, "end_block": 4, "public_name": "x", "adapters": ()})
    assert await swarm.acall("store", name="b", key=regular_key, value="hello", expiration=now + 120)
    assert await swarm.acall(
        "store",
        name="b",
        key=block_key,
        subkey=server_peer,
        value=to_json(server_info),
        expiration=now + 240,
    )
    peer = await host.connect(a.maddrs[0], timeout=TIMEOUT)
    response = await find(host, peer, [dht_id(regular_key), dht_id(block_key), dht_id(unique("missing"))])
    regular, block, missing = response.results
    assert response.peer.node_id == a.node_id

    assert regular.type == FOUND_REGULAR
    assert unpackb(regular.value) == "hello"
    assert regular.expiration_time == pytest.approx(now + 120)

    assert block.type == FOUND_DICTIONARY
    tag, (maxsize, latest, entries) = unpackb(block.value)
    assert tag == "$dict" and maxsize == float("inf") and latest == pytest.approx(now + 240)
    assert [(sk, unpackb(v)) for sk, v, _exp in entries] == [(server_peer, server_info)]
    assert block.expiration_time == pytest.approx(now + 240)

    assert missing.type == NOT_FOUND and not missing.value
    # Every result names b (the responder's routing table), never a itself, never us.
    b = swarm.nodes["b"]
    for result in response.results:
        peers = [peer_id_from_bytes(p) for p in result.nearest_peer_ids]
        assert b.peer_id in peers
        assert a.peer_id not in peers and host.peer_id not in peers
        assert len(result.nearest_node_ids) == len(result.nearest_peer_ids)


async def test_store_regular_subkey_and_in_cache_values_read_back_by_hivemind(swarm, host):
    a = swarm.nodes["a"]
    now = await swarm.acall("time")
    reg_key, dict_key, cache_key = unique("ours-regular"), unique("ours-dict"), unique("ours-cache")
    peer = await host.connect(a.maddrs[0], timeout=TIMEOUT)
    ok = await store(
        host,
        peer,
        [
            (dht_id(reg_key), REGULAR_TAG, packb((1, 2.5, "three")), now + 100, False),
            (dht_id(dict_key), packb("server-1"), packb({"state": 2}), now + 200, False),
            (dht_id(cache_key), REGULAR_TAG, packb(b"cached"), now + 300, True),
            (dht_id(unique("expired")), REGULAR_TAG, packb(0), now - 10, False),  # rejected: expired
        ],
    )
    assert ok == [True, True, True, False]

    # hivemind's own get, from node b: it finds the values on a through its own DHT traversal.
    got_reg = await swarm.acall("get", name="b", key=reg_key, latest=True)
    assert got_reg == {
        "type": "regular",
        "value": {"$tuple": [1, 2.5, "three"]},
        "expiration": pytest.approx(now + 100),
    }
    got_dict = await swarm.acall("get", name="b", key=dict_key, latest=True)
    assert got_dict["type"] == "dictionary"
    assert got_dict["items"] == [{"subkey": "server-1", "value": {"state": 2}, "expiration": pytest.approx(now + 200)}]
    got_cache = await swarm.acall("get", name="b", key=cache_key, latest=True)
    assert got_cache == {
        "type": "regular",
        "value": {"$bytes": b"cached".hex()},
        "expiration": pytest.approx(now + 300),
    }


async def test_thousand_keys_in_one_find(swarm, host):
    a = swarm.nodes["a"]
    now = await swarm.acall("time")
    keys = [unique(f"bulk{i}") for i in range(1000)]
    stored = keys[::50]  # 20 of them hold a value
    status = await swarm.acall(
        "store_many", name="a", keys=stored, values=[f"v-{k}" for k in stored], expiration=now + 120, timeout=60
    )
    assert all(ok for _k, _s, ok in status)
    peer = await host.connect(a.maddrs[0], timeout=TIMEOUT)
    ids = [dht_id(k) for k in keys]
    started = time.perf_counter()
    response = await find(host, peer, ids, timeout=10)
    elapsed = time.perf_counter() - started
    print(f"\none rpc_find of 1000 keys from a real hivemind node: {elapsed * 1000:.1f} ms")
    found = {keys[i]: r for i, r in enumerate(response.results) if r.type != NOT_FOUND}
    assert set(found) == set(stored)
    assert all(unpackb(found[k].value) == f"v-{k}" for k in stored)


async def test_nearest_peer_id_is_resolved_by_kad_and_called(swarm, host):
    a, b = swarm.nodes["a"], swarm.nodes["b"]
    peer = await host.connect(a.maddrs[0], timeout=TIMEOUT)
    response = await find(host, peer, [dht_id(unique("anything"))])
    nearest = [peer_id_from_bytes(p) for p in response.results[0].nearest_peer_ids]
    assert b.peer_id in nearest
    assert host.known_addrs(b.peer_id) == []  # nothing told us where b is yet
    addrs = await host.resolve(b.peer_id, timeout=TIMEOUT)  # kad FIND_NODE against a
    assert addrs and all(addr.startswith("/ip4/127.0.0.1/tcp/") for addr in addrs)
    assert (await ping(host, b.peer_id)).peer.node_id == b.node_id


async def test_identify_reports_p2pd_listen_addrs(swarm, host):
    a = swarm.nodes["a"]
    peer = await host.connect(a.maddrs[0], timeout=TIMEOUT)
    identity = await host.identify(peer, timeout=TIMEOUT)
    assert identity.agent_version  # p2pd's agent string: py-libp2p would not keep it for us
    assert "/ipfs/kad/1.0.0" in identity.protocols and "DHTProtocol.rpc_find" in identity.protocols
    assert a.maddrs[0].split("/p2p/")[0] in identity.listen_addrs


async def test_client_mode_node_refuses_dht_rpcs(swarm, host):
    c = swarm.nodes["c"]
    peer = await host.connect(c.maddrs[0], timeout=TIMEOUT)
    with pytest.raises(ProtocolNotSupported, match="protocols not supported"):
        await ping(host, peer)


async def test_rpc_info_probe_and_its_absence(swarm, host):
    a, b = swarm.nodes["a"], swarm.nodes["b"]
    peer_a = await host.connect(a.maddrs[0], timeout=TIMEOUT)
    raw = await host.call_unary(peer_a, "TransformerConnectionHandler.rpc_info", b"", timeout=TIMEOUT)
    info = unpackb(runtime_pb2.ExpertInfo.FromString(raw).serialized_info)
    assert info == {"version": "2.3.0.dev2", "dht_client_mode": False, "cache_tokens_available": 4096}
    peer_b = await host.connect(b.maddrs[0], timeout=TIMEOUT)
    with pytest.raises(ProtocolNotSupported):
        await host.call_unary(peer_b, "TransformerConnectionHandler.rpc_info", b"", timeout=TIMEOUT)


async def test_undecodable_request_gets_hivemind_error_reply(swarm, host):
    a = swarm.nodes["a"]
    peer = await host.connect(a.maddrs[0], timeout=TIMEOUT)
    with pytest.raises(RemoteError, match="DecodeError") as info:
        await host.call_unary(peer, "DHTProtocol.rpc_find", b"\xff\xff\xff", timeout=TIMEOUT)
    assert type(info.value) is RemoteError
    assert (await ping(host, peer)).peer.node_id == a.node_id  # the connection is still good


async def test_concurrent_calls_share_one_connection(swarm, host):
    a = swarm.nodes["a"]
    peer = await host.connect(a.maddrs[0], timeout=TIMEOUT)
    node_ids = []

    async def one() -> None:
        node_ids.append((await ping(host, peer)).peer.node_id)

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(one)
    assert node_ids == [a.node_id] * 20


async def test_hivemind_daemons_answer_our_keepalive_ping(swarm, host):
    """go-yamux in p2pd answers our PING, so the host's keepalive sweep keeps a live connection (and reuses it)."""
    peers = [await host.connect(swarm.nodes[name].maddrs[0], timeout=TIMEOUT) for name in ("a", "b")]
    lean = [host._lean_connection(p) for p in peers]
    assert all(conn is not None for conn in lean)  # the client-mode host dialled them with the lean stack
    for conn in lean:
        conn.last_received -= 2 * LEAN_REAP_EVERY  # long quiet: the sweep pings them
    with trio.fail_after(2 * TIMEOUT):
        assert await host._close_silent_lean(TIMEOUT) == 0
    assert [host._lean_connection(p) for p in peers] == lean
    assert (await ping(host, peers[0])).peer.node_id == swarm.nodes["a"].node_id


async def test_we_stay_out_of_every_routing_table(swarm, host):
    """After pings, finds and stores (all with an empty NodeInfo), no hivemind node lists our peer id."""
    a, b = swarm.nodes["a"], swarm.nodes["b"]
    now = await swarm.acall("time")
    for node in (a, b):
        peer = await host.connect(node.maddrs[0], timeout=TIMEOUT)
        await ping(host, peer)
        await find(host, peer, [dht_id(unique("k"))])
        assert await store(host, peer, [(dht_id(unique("k")), REGULAR_TAG, packb(1), now + 60, False)]) == [True]
    await assert_not_in_any_routing_table(swarm, host.peer_id)
