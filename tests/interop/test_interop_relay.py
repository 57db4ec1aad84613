"""Peers behind NAT reached through REAL hivemind 1.1.12 circuit relays (p2pd, go-libp2p), on 127.0.0.1.

How the NAT'd nodes get a reservation quickly, and why the test needs four relays:

- A NAT'd Petals server runs ``hivemind.DHT(..., use_auto_relay=True)`` (here plus
  ``force_reachability="private"``, since AutoNAT cannot judge reachability on loopback). hivemind's p2pd then
  feeds its ``trusted_relays`` to go-libp2p's autorelay as a *peer source* (``-relayDiscovery`` defaults to on
  and hivemind offers no flag to turn it off). In that mode autorelay waits until it knows 4 relay candidates,
  or for its 3-minute boot delay, before it reserves. With four trusted relays it reserves at once (< 1 s),
  on two of them.
- Every p2pd runs the circuit v2 hop service (``relay.New`` with go-libp2p's default resources), so any
  hivemind node is a relay: the full nodes ``a``/``b`` of the session swarm plus two client-mode nodes that
  join no DHT (they never show up in a routing table).
- go-libp2p never advertises circuit addresses whose relay has only private or loopback addresses, so on
  127.0.0.1 the NAT'd nodes' ``get_visible_maddrs`` never show ``/p2p-circuit`` (neither does kad or
  identify). The tests build ``/<relay addr>/p2p/<relay>/p2p-circuit/p2p/<peer>`` from the relays' addresses,
  as a monitor learns them on the public swarm.
- Each NAT'd node announces a dead direct address (a closed port), so everyone who learns its addresses from
  the network fails to dial it directly, like a server behind NAT.
"""

from __future__ import annotations

import socket
import time

import pytest
import trio
from interop_fixtures import (  # noqa: F401 (fixtures)
    STANDIN_RPC_INFO,
    HivemindHarness,
    hivemind_harness,
    hivemind_swarm,
)

from dht.errors import CallTimeout, DHTError, PeerUnreachable
from dht.net.circuit import RelayLimit, circuit_addr
from dht.net.transport import Host, open_host
from dht.protocol import RPC_FIND, build_find_request, parse_info_response
from dht.swarm import RELAYED_MAX_KEYS_PER_REQUEST, SwarmClient

pytestmark = pytest.mark.interop

TIMEOUT = 5.0
RESERVATION_DEADLINE = 30.0  # autorelay reserves in < 1 s with 4 candidates; generous for a loaded machine
EXTRA_RELAYS = ("relay-c", "relay-d")
NAT_SERVER = "nat-server"  # client-mode DHT + rpc_info: a Petals server with using_relay=True
NAT_DHT = "nat-dht"  # a full DHT node reachable only through relays
GO_DEFAULT_RELAY_LIMIT = RelayLimit(duration=120, data=128 * 1024)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _transport(maddr: str) -> str:
    return maddr.rsplit("/p2p/", 1)[0]


@pytest.fixture(scope="module")
def relay_swarm(hivemind_swarm: HivemindHarness):  # noqa: F811
    """Four relays (a, b and two DHT-less client nodes) and two NAT'd nodes holding reservations on them."""
    harness = hivemind_swarm
    started: list[str] = []
    try:
        for name in EXTRA_RELAYS:
            harness.start_node(name, client_mode=True)
            started.append(name)
        relays = [harness.nodes[n] for n in ("a", "b", *EXTRA_RELAYS)]
        nat_options = {
            "use_auto_relay": True,
            "force_reachability": "private",
            "trusted_relays": [m for r in relays for m in r.maddrs],
        }
        harness.start_node(
            NAT_SERVER,
            client_mode=True,
            initial_names=["a"],
            p2p_options={**nat_options, "announce_maddrs": [f"/ip4/127.0.0.1/tcp/{_closed_port()}"]},
        )
        started.append(NAT_SERVER)
        harness.call("add_rpc_info", name=NAT_SERVER, info=STANDIN_RPC_INFO)
        harness.start_node(
            NAT_DHT, p2p_options={**nat_options, "announce_maddrs": [f"/ip4/127.0.0.1/tcp/{_closed_port()}"]}
        )
        started.append(NAT_DHT)
        yield harness, relays
    finally:
        for name in reversed(started):
            harness.call("shutdown", name=name)
            harness.nodes.pop(name, None)


def _circuits(relays, peer_id: str) -> list[str]:
    return [circuit_addr(r.peer_id, peer_id, _transport(r.maddrs[0])) for r in relays]


async def _connect_when_reserved(host: Host, peer_id: str, addrs: list[str]) -> float:
    """Dial until the target's reservation exists (the relay answers NO_RESERVATION before); seconds taken."""
    t0 = time.monotonic()
    with trio.fail_after(RESERVATION_DEADLINE):
        while True:
            try:
                await host.connect(peer_id, addrs, timeout=TIMEOUT)
                return time.monotonic() - t0
            except (PeerUnreachable, CallTimeout):
                await trio.sleep(0.25)


async def test_rpc_info_reaches_a_client_mode_server_known_only_by_circuit_addresses(relay_swarm):
    harness, relays = relay_swarm
    server = harness.nodes[NAT_SERVER]
    calls_before = await harness.acall("rpc_info_calls", name=NAT_SERVER)
    async with open_host() as host:
        assert host.known_addrs(server.peer_id) == []
        await _connect_when_reserved(host, server.peer_id, _circuits(relays, server.peer_id))

        reply, rtt = await SwarmClient(host, timeout=TIMEOUT).rpc_info(server.peer_id)

        assert parse_info_response(reply) == STANDIN_RPC_INFO
        assert host.is_relayed(server.peer_id)
        assert host.relay_limit(server.peer_id) == GO_DEFAULT_RELAY_LIMIT
        assert 0 < rtt < TIMEOUT
    assert await harness.acall("rpc_info_calls", name=NAT_SERVER) == calls_before + 1


async def test_the_advertised_direct_address_fails_and_the_relay_is_used(relay_swarm):
    """What the monitor meets: the address the node announces does not work; a relay does."""
    harness, relays = relay_swarm
    server = harness.nodes[NAT_SERVER]
    advertised = [_transport(m) for m in (await harness.acall("info", name=NAT_SERVER, latest=True))["maddrs"]]
    assert advertised and not any("/p2p-circuit" in a for a in advertised)  # no circuit address on loopback

    async with open_host() as host:
        with pytest.raises(PeerUnreachable):
            await host.connect(server.peer_id, advertised, timeout=TIMEOUT)
        await _connect_when_reserved(host, server.peer_id, _circuits(relays, server.peer_id))
        reply, _ = await SwarmClient(host, timeout=TIMEOUT).rpc_info(server.peer_id)
        assert parse_info_response(reply) == STANDIN_RPC_INFO
        assert host.is_relayed(server.peer_id)


async def test_dht_ping_to_a_full_node_reachable_only_through_relays(relay_swarm):
    harness, relays = relay_swarm
    node = harness.nodes[NAT_DHT]
    async with open_host() as host:
        client = SwarmClient(host, timeout=TIMEOUT)
        host.add_addrs(node.peer_id, [_transport(m) for m in node.maddrs] + _circuits(relays, node.peer_id))
        await _connect_when_reserved(host, node.peer_id, [])

        ping, _ = await client.ping(node.peer_id)

        assert ping.node_id == node.node_id
        assert host.is_relayed(node.peer_id)


async def test_a_relayed_connection_ends_after_the_relay_data_limit_and_is_dialled_again(relay_swarm):
    """go-libp2p relays reset a circuit after 128 KiB in one direction: a big request dies, the next call
    builds a fresh circuit. (So requests to relayed peers must stay small: see Host.is_relayed.)"""
    harness, relays = relay_swarm
    node = harness.nodes[NAT_DHT]
    async with open_host() as host:
        client = SwarmClient(host, timeout=TIMEOUT)
        await _connect_when_reserved(host, node.peer_id, _circuits(relays, node.peer_id))
        limit = host.relay_limit(node.peer_id)
        assert limit is not None and limit.data is not None
        too_big = build_find_request([i.to_bytes(20, "big") for i in range(limit.data // 20 + 1)])
        assert len(too_big) > limit.data

        with pytest.raises(DHTError):
            await host.call_unary(node.peer_id, RPC_FIND, too_big, timeout=TIMEOUT)
        with trio.fail_after(TIMEOUT):
            while host.is_connected(node.peer_id):  # the reset reaches our side of the circuit
                await trio.sleep(0.05)

        ping, _ = await client.ping(node.peer_id)
        assert ping.node_id == node.node_id and host.is_relayed(node.peer_id)


async def test_finds_to_a_relayed_node_are_split_into_small_requests(relay_swarm):
    """SwarmClient keeps FINDs over a relay under RELAYED_MAX_KEYS_PER_REQUEST keys, so replies fit the circuit."""
    harness, relays = relay_swarm
    node = harness.nodes[NAT_DHT]
    async with open_host() as host:
        client = SwarmClient(host, timeout=TIMEOUT)
        await _connect_when_reserved(host, node.peer_id, _circuits(relays, node.peer_id))
        keys = [f"relayed-find-{i}" for i in range(RELAYED_MAX_KEYS_PER_REQUEST + 12)]
        before = client.rpcs
        found = await client.get_many(node.peer_id, keys)
        assert set(found.results) == set(keys)
        assert client.rpcs - before == 2
        assert host.is_relayed(node.peer_id)
