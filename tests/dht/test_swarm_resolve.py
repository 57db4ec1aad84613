"""SwarmClient's address look-ups for peers it has no address for (a fake host, trio's autojump clock): one per
peer at a time, DHT nodes never queued behind servers, servers' look-ups spread over the DHT nodes."""

from __future__ import annotations

import pytest
import trio

from dht.errors import DialFailed
from dht.swarm import RESOLVE_CONCURRENCY, SwarmClient

NODES = ["node-a", "node-b", "node-c"]


class FakeHost:
    """Connected to three DHT nodes; a look-up takes one 1 s round trip to the first peer it is told to ask."""

    def __init__(self) -> None:
        self.known: dict[str, list[str]] = {}
        self.asked: list[tuple[str, str]] = []  # (target, first peer asked)

    def is_connected(self, peer_id: str) -> bool:
        return peer_id in NODES

    def known_addrs(self, peer_id: str) -> list[str]:
        return self.known.get(peer_id, [])

    async def resolve(self, peer_id: str, *, via=(), timeout: float, on_call=None) -> list[str]:
        self.asked.append((peer_id, via[0] if via else "connected"))
        if on_call is not None:
            on_call()  # one kad FIND_NODE sent
        await trio.sleep(1.0)
        self.known[peer_id] = ["/ip4/127.0.0.1/tcp/1"]
        return self.known[peer_id]


def _client() -> tuple[SwarmClient, FakeHost]:
    host = FakeHost()
    client = SwarmClient(host, timeout=30)  # type: ignore[arg-type]
    client._answered = dict.fromkeys(NODES)  # as after the lookup's first answers
    return client, host


async def test_concurrent_callers_share_one_look_up_of_a_peer(autojump_clock):
    client, host = _client()
    async with trio.open_nursery() as nursery:
        for _ in range(4):  # a node's four FIND chunks
            nursery.start_soon(client._ensure_addrs, "node-d")
    assert [target for target, _ in host.asked] == ["node-d"]


async def test_a_dht_nodes_look_up_never_waits_behind_a_burst_of_servers(autojump_clock):
    client, host = _client()
    servers = [f"server-{i}" for i in range(4 * RESOLVE_CONCURRENCY)]
    done: dict[str, float] = {}

    async def resolve(peer: str, dht_node: bool) -> None:
        await client._ensure_addrs(peer, dht_node=dht_node)
        done[peer] = trio.current_time()

    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        for server in servers:
            nursery.start_soon(resolve, server, False)
        await trio.sleep(0.1)
        nursery.start_soon(resolve, "node-d", True)
    assert done["node-d"] - t0 < 1.2  # one round trip, not behind four waves of servers
    assert max(done.values()) - t0 >= 4.0
    firsts = {first for target, first in host.asked if target.startswith("server-")}
    assert firsts == set(NODES)  # the servers' look-ups were spread over every DHT node that answered


async def test_a_dht_nodes_look_up_never_waits_behind_a_probes_look_up_of_the_same_peer(autojump_clock):
    """In Petals every server is a DHT node too: a probe's look-up of a server, queued behind a burst on the
    servers' slots, must not hold up the lookup's own look-up of that peer as a DHT node."""
    client, _host = _client()
    servers = [f"server-{i}" for i in range(4 * RESOLVE_CONCURRENCY)]
    done: dict[tuple[str, bool], float] = {}

    async def resolve(peer: str, dht_node: bool) -> None:
        await client._ensure_addrs(peer, dht_node=dht_node)
        done[peer, dht_node] = trio.current_time()

    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        for server in servers:
            nursery.start_soon(resolve, server, False)
        await trio.sleep(0.1)
        nursery.start_soon(resolve, "both", False)  # the probe's look-up: behind four waves of servers
        await trio.sleep(0.1)
        nursery.start_soon(resolve, "both", True)  # the lookup's look-up of the same peer
    assert done["both", True] - t0 < 1.3  # one round trip on the DHT nodes' slots


async def test_each_kad_look_up_counts_as_an_rpc_the_crawl_sent(autojump_clock):
    """The load a crawl puts on the swarm includes its address look-ups (they were not counted)."""
    client, host = _client()
    await client._ensure_addrs("server-x", dht_node=False)
    await client._ensure_addrs("server-x", dht_node=False)  # its address is known now: nobody is asked again
    assert (client.rpcs, client.kad_rpcs) == (1, 1) and len(host.asked) == 1


OLD, NEW = "/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/2"


class MovedServerHost(FakeHost):
    """A server that restarted on another port: its old address refuses; the DHT knows where it is now (``moved``)."""

    def __init__(self, moved: str) -> None:
        super().__init__()
        self.known["server"] = [OLD]
        self.moved = moved
        self.dialled: list[str] = []

    def forget_addrs(self, peer_id: str) -> None:
        self.known.pop(peer_id, None)

    async def resolve(self, peer_id: str, *, via=(), timeout: float, on_call=None) -> list[str]:
        await super().resolve(peer_id, via=via, timeout=timeout, on_call=on_call)
        self.known[peer_id] = [self.moved]
        return self.known[peer_id]

    async def call_unary(self, peer_id: str, proto_id: str, data: bytes, *, timeout: float) -> bytes:
        addr = self.known[peer_id][0]
        self.dialled.append(addr)
        await trio.sleep(0.5)
        if addr == OLD:
            raise DialFailed(f"cannot dial {peer_id}: connection refused")
        return b"info"


async def test_a_probe_refused_at_a_servers_old_address_asks_the_dht_where_it_is_now(autojump_clock):
    host = MovedServerHost(NEW)
    client = SwarmClient(host, timeout=30)  # type: ignore[arg-type]
    client._answered = dict.fromkeys(NODES)
    reply, _rtt = await client.rpc_info("server", timeout=5)
    assert reply == b"info" and host.dialled == [OLD, NEW]
    assert (client.rpcs, client.kad_rpcs) == (3, 1)  # two rpc_info calls and the look-up between them
    assert [target for target, _ in host.asked] == ["server"]


async def test_no_second_dial_when_the_dht_knows_no_other_address_or_the_deadline_is_spent(autojump_clock):
    host = MovedServerHost(OLD)  # it did not move: it is down
    client = SwarmClient(host, timeout=30)  # type: ignore[arg-type]
    client._answered = dict.fromkeys(NODES)
    with pytest.raises(DialFailed):
        await client.rpc_info("server", timeout=5)
    assert host.dialled == [OLD] and (client.rpcs, client.kad_rpcs) == (2, 1)
    host = MovedServerHost(NEW)
    client = SwarmClient(host, timeout=30)  # type: ignore[arg-type]
    t0 = trio.current_time()
    with pytest.raises(DialFailed):
        await client.rpc_info("server", timeout=1.2)  # the look-up takes 1 s of the 0.7 s left
    assert trio.current_time() - t0 <= 1.2 + 1e-6 and host.dialled == [OLD]
