"""SwarmClient's address look-ups for peers it has no address for (a fake host, trio's autojump clock): one per
peer at a time, DHT nodes never queued behind servers, servers' look-ups spread over the DHT nodes, and a
look-up that ran out of time told apart from one nobody could answer."""

from __future__ import annotations

import random

import pytest
import trio
from factories import make_peer_id

from dht.client import PingResult
from dht.errors import AddressLookupTimeout, CallTimeout, DialFailed, PeerUnreachable
from dht.swarm import RESOLVE_CONCURRENCY, SwarmClient
from dht.value import DHTValueBuilder

NODES = ["node-a", "node-b", "node-c"]


class FakeHost:
    """Connected to three DHT nodes; a look-up takes one 1 s round trip to the first peer it is told to ask."""

    def __init__(self, answer: str = "found") -> None:
        self.known: dict[str, list[str]] = {}
        self.asked: list[tuple[str, str]] = []  # (target, first peer asked)
        self.answer = answer  # "found"; "unknown": every node answers without it; "silent": nobody answers

    def is_connected(self, peer_id: str) -> bool:
        return peer_id in NODES

    def known_addrs(self, peer_id: str) -> list[str]:
        return self.known.get(peer_id, [])

    async def resolve(self, peer_id: str, *, via=(), timeout: float, on_call=None, refresh=False) -> list[str]:
        self.asked.append((peer_id, via[0] if via else "connected"))
        if on_call is not None:
            on_call()  # one kad FIND_NODE sent
        if self.answer == "silent" or timeout < 1.0:
            await trio.sleep(timeout)  # as the real resolve: its deadline ends the wait, with no address
            return []
        await trio.sleep(1.0)
        if self.answer == "unknown":
            return []
        self.known[peer_id] = ["/ip4/127.0.0.1/tcp/1"]
        return self.known[peer_id]


def _client(timeout: float = 30, answer: str = "found") -> tuple[SwarmClient, FakeHost]:
    host = FakeHost(answer)
    client = SwarmClient(host, timeout=timeout)  # type: ignore[arg-type]
    client._answered = dict.fromkeys(NODES)  # as after the lookup's first answers
    return client, host


async def _resolve_server(client: SwarmClient, peer: str) -> None:
    await client._ensure_addrs(peer, dht_node=False)


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


async def test_a_burst_asks_the_nodes_that_answered_while_it_waited_for_a_slot(autojump_clock):
    """Issue 21: the probes' look-ups start at the lookup's first answer, when one node has answered; whom to ask
    must be chosen once a look-up has its slot, or the whole burst queues on that first node."""
    client, host = _client()
    client._answered = dict.fromkeys(NODES[:1])
    servers = [f"server-{i}" for i in range(4 * RESOLVE_CONCURRENCY)]
    async with trio.open_nursery() as nursery:
        for server in servers:
            nursery.start_soon(_resolve_server, client, server)
        await trio.sleep(0.5)
        client._answered = dict.fromkeys(NODES)  # the other nodes answer during the first wave
    firsts = [first for _, first in host.asked]
    assert set(firsts[:RESOLVE_CONCURRENCY]) == {"node-a"}
    assert set(firsts[RESOLVE_CONCURRENCY:]) == set(NODES)


async def test_time_queued_for_a_slot_does_not_count_against_the_look_up(autojump_clock):
    """Three waves of 1 s look-ups under a 2.5 s timeout: the third waits 2 s for its slot, then needs 1 s."""
    client, _host = _client(timeout=2.5)
    servers = [f"server-{i}" for i in range(3 * RESOLVE_CONCURRENCY)]
    async with trio.open_nursery() as nursery:
        for server in servers:
            nursery.start_soon(_resolve_server, client, server)
    assert client.kad_rpcs == len(servers)


async def test_a_look_up_that_ran_out_of_time_says_so_and_so_do_those_waiting_on_it(autojump_clock):
    client, _host = _client(timeout=2, answer="silent")
    failures: list[BaseException] = []

    async def resolve() -> None:
        try:
            await client._ensure_addrs("server-x", dht_node=False)
        except PeerUnreachable as e:
            failures.append(e)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(resolve)
    assert len(failures) == 3 and all(isinstance(e, AddressLookupTimeout) for e in failures)
    assert client.kad_rpcs == 1


async def test_a_peer_no_node_knows_is_unreachable_not_a_time_out(autojump_clock):
    client, _host = _client(timeout=30, answer="unknown")
    with pytest.raises(PeerUnreachable) as raised:
        await client._ensure_addrs("server-x", dht_node=False)
    assert not isinstance(raised.value, AddressLookupTimeout) and "no address known" in str(raised.value)


async def test_seeds_that_answered_their_ping_share_the_first_burst_of_look_ups(autojump_clock):
    """Before any FIND is answered, the probes' look-ups already have every seed that answered its ping to ask."""
    client, host = _client()
    client._answered = {}
    seeds = [make_peer_id(random.Random(i)) for i in range(3)]
    host.is_connected = lambda peer_id: peer_id in seeds  # type: ignore[method-assign]

    async def connect(address: str, *, timeout=None) -> str:
        return address.rsplit("/", 1)[-1]

    async def ping(peer_id: str, *, timeout=None):
        return PingResult(1, peer_id, b"", 0.0, True), 0.01  # type: ignore[arg-type]

    client.connect, client.ping = connect, ping  # type: ignore[method-assign]
    await client.bootstrap([f"/ip4/127.0.0.1/tcp/{i}/p2p/{seed}" for i, seed in enumerate(seeds, 1)])
    assert set(client._spread_over_nodes("server-x")) == set(seeds)


OLD, NEW = "/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/2"


class MovedServerHost(FakeHost):
    """A server that restarted on another port: its old address refuses; the DHT knows where it is now (``moved``)."""

    def __init__(self, moved: str, answer: str = "found") -> None:
        super().__init__(answer)
        self.known["server"] = [OLD]
        self.moved = moved
        self.dialled: list[str] = []

    def forget_addrs(self, peer_id: str) -> None:
        self.known.pop(peer_id, None)

    async def resolve(self, peer_id: str, *, via=(), timeout: float, on_call=None, refresh=False) -> list[str]:
        if self.known.get(peer_id) and not refresh:
            return self.known[peer_id]  # as the real resolve: the peerstore first
        if not await super().resolve(peer_id, via=via, timeout=timeout, on_call=on_call):
            return []  # as the real resolve: no answer leaves the known addresses alone
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


async def test_a_failed_look_up_for_a_refused_server_keeps_the_addresses_it_had(autojump_clock):
    """The old address was forgotten before the look-up: when that timed out, the peer had no address left."""
    host = MovedServerHost(NEW, answer="silent")
    client = SwarmClient(host, timeout=30)  # type: ignore[arg-type]
    client._answered = dict.fromkeys(NODES)
    with pytest.raises(DialFailed):
        await client.rpc_info("server", timeout=5)
    assert host.known_addrs("server") == [OLD] and host.dialled == [OLD]


async def test_a_refused_servers_look_up_asks_the_nodes_that_answered_while_it_waited_for_a_slot(autojump_clock):
    """As a probe's first look-up: whom to ask is chosen once it holds a slot, and it ends by the probe's deadline."""
    host = MovedServerHost(NEW)
    client = SwarmClient(host, timeout=30)  # type: ignore[arg-type]
    client._answered = dict.fromkeys(NODES[:1])
    host.asked.clear()
    async with trio.open_nursery() as nursery:
        for i in range(RESOLVE_CONCURRENCY):  # a wave of look-ups holds every slot for 1 s
            nursery.start_soon(_resolve_server, client, f"server-{i}")
        await trio.sleep(0.1)
        nursery.start_soon(client.rpc_info, "server")  # refused at 0.6 s, then waits for a slot until 1 s
        await trio.sleep(0.6)
        client._answered = dict.fromkeys(NODES[1:])  # only other nodes answer by then
    assert host.dialled == [OLD, NEW]
    assert [first for target, first in host.asked if target == "server"] != ["node-a"]


# ---- one budget per probe: its address look-up (and the wait for a slot) and its calls share its timeout


class SilentServerHost(FakeHost):
    """Servers whose address a 1 s look-up finds, and that never answer a call (its deadline ends it)."""

    def __init__(self) -> None:
        super().__init__()
        self.call_timeouts: list[float] = []

    async def call_unary(self, peer_id: str, proto_id: str, data: bytes, *, timeout: float) -> bytes:
        self.call_timeouts.append(timeout)
        await trio.sleep(timeout)
        raise CallTimeout(f"no answer from {peer_id} within {timeout} s")


async def test_a_probes_call_gets_what_its_address_look_up_left_of_its_timeout(autojump_clock):
    host = SilentServerHost()
    client = SwarmClient(host, timeout=30)  # type: ignore[arg-type]
    client._answered = dict.fromkeys(NODES)
    t0 = trio.current_time()
    with pytest.raises(CallTimeout):
        await client.rpc_info("server", timeout=5)
    assert trio.current_time() - t0 <= 5 + 1e-6 and host.call_timeouts == [pytest.approx(4)]


async def test_a_probe_queued_behind_a_burst_of_look_ups_ends_at_its_timeout(autojump_clock):
    """Five waves of 1 s look-ups ahead of it: its wait for a slot and its look-up end at its own deadline, not
    the look-ups' (it was: 4.9 s queued, 1 s looking up, then a call with a fresh 5 s)."""
    host = SilentServerHost()
    client = SwarmClient(host, timeout=30)  # type: ignore[arg-type]
    client._answered = dict.fromkeys(NODES)
    outcome: list[BaseException] = []

    async def late_probe() -> None:
        t0 = trio.current_time()
        try:
            await client.rpc_info("late-server", timeout=5)
        except (AddressLookupTimeout, CallTimeout) as e:
            outcome.append(e)
        assert trio.current_time() - t0 <= 5 + 1e-6

    async with trio.open_nursery() as nursery:
        for i in range(5 * RESOLVE_CONCURRENCY):
            nursery.start_soon(_resolve_server, client, f"server-{i}")
        await trio.sleep(0.1)
        nursery.start_soon(late_probe)
    assert len(outcome) == 1 and isinstance(outcome[0], AddressLookupTimeout)  # no verdict on the server
    assert host.call_timeouts == []


# ---- one budget per DHT call (ping, store, find): the address look-up and the dial are part of it, not added


class SilentNodeHost(FakeHost):
    """DHT nodes whose address a 1 s look-up finds, whose dial takes ``dial`` s, and that never answer a call."""

    def __init__(self, answer: str = "found", dial: float = 0.0) -> None:
        super().__init__(answer)
        self.dial = dial
        self.connected: set[str] = set()
        self.call_timeouts: list[float] = []
        self.dial_timeouts: list[float] = []

    def is_connected(self, peer_id: str) -> bool:
        return peer_id in NODES or peer_id in self.connected

    def is_relayed(self, peer_id: str) -> bool:
        return False

    async def connect(self, target: str, *, timeout: float) -> str:
        self.dial_timeouts.append(timeout)
        await trio.sleep(min(self.dial, timeout))
        peer_id = target.rsplit("/", 1)[-1]
        self.connected.add(peer_id)
        return peer_id

    async def call_unary(self, peer_id: str, proto_id: str, data: bytes, *, timeout: float, **_: object) -> bytes:
        self.call_timeouts.append(timeout)
        await trio.sleep(timeout)
        raise CallTimeout(f"no answer from {peer_id} within {timeout} s")


@pytest.mark.parametrize("call", ["ping", "store", "get_many"])
async def test_a_dht_call_gets_what_its_address_look_up_left_of_its_timeout(autojump_clock, call):
    host = SilentNodeHost()
    client = SwarmClient(host, timeout=30)  # type: ignore[arg-type]
    client._answered = dict.fromkeys(NODES)
    calls = {
        "ping": lambda: client.ping("node-x", timeout=5),
        "store": lambda: client.store(
            "node-x", "key", DHTValueBuilder.from_object(1).expiration_time(9).build(), timeout=5
        ),
        "get_many": lambda: client.get_many("node-x", ["key"], timeout=5),
    }
    t0 = trio.current_time()
    with pytest.raises(CallTimeout):
        await calls[call]()
    assert trio.current_time() - t0 <= 5 + 1e-6 and host.call_timeouts == [pytest.approx(4)]


async def test_a_dht_call_whose_look_up_never_ends_stops_at_its_timeout_without_calling(autojump_clock):
    """It waited up to the client's timeout for a look-up slot, as long again for the look-up, then called with a
    fresh timeout: 30 + 30 + 5 s for a ping of 5 s."""
    host = SilentNodeHost(answer="silent")
    client = SwarmClient(host, timeout=30)  # type: ignore[arg-type]
    client._answered = dict.fromkeys(NODES)
    t0 = trio.current_time()
    with pytest.raises(AddressLookupTimeout):
        await client.ping("node-x", timeout=5)
    assert trio.current_time() - t0 <= 5 + 1e-6 and host.call_timeouts == []


async def test_a_find_on_a_peer_to_dial_shares_its_budget_with_the_look_up_and_the_dial(autojump_clock):
    host = SilentNodeHost(dial=1.5)
    client = SwarmClient(host, timeout=30)  # type: ignore[arg-type]
    client._answered = dict.fromkeys(NODES)
    with pytest.raises(CallTimeout):
        await client.get_many("node-x", ["key"], timeout=5)
    assert host.dial_timeouts == [pytest.approx(4)] and host.call_timeouts == [pytest.approx(2.5)]


async def test_a_bootstrap_peers_dial_and_ping_share_one_timeout(autojump_clock):
    host = SilentNodeHost(dial=2)
    client = SwarmClient(host, timeout=30)  # type: ignore[arg-type]
    seed = make_peer_id(random.Random(1))
    t0 = trio.current_time()
    (result,) = await client.bootstrap([f"/ip4/127.0.0.1/tcp/1/p2p/{seed}"], timeout=5)
    assert not result.ok and "timeout" in (result.error or "")
    assert trio.current_time() - t0 <= 5 + 1e-6 and host.call_timeouts == [pytest.approx(3)]


async def test_a_look_up_that_leaves_the_call_too_little_time_makes_no_call(autojump_clock):
    """The look-up (1 s) leaves 0.05 s of a 1.05 s ping: a call that short would only time out and count against
    the peer (a traversal drops it, a node evicts it), when the time went to our look-up."""
    host = SilentNodeHost()
    client = SwarmClient(host, timeout=30)  # type: ignore[arg-type]
    client._answered = dict.fromkeys(NODES)
    with pytest.raises(AddressLookupTimeout, match="too little"):
        await client.ping("node-x", timeout=1.05)
    assert host.call_timeouts == []
