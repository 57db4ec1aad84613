"""Run the demo swarm on trio, on 127.0.0.1: our DHT nodes, the simulated servers' announcements and hosts.

What runs (all inside one nursery, so cancelling :func:`run_swarm`'s block stops everything, nothing left over):

* ``num_nodes`` of our :class:`dht.node.DHTNode` full nodes, each on its own py-libp2p host listening on a
  random 127.0.0.1 port, bootstrapped from node 0. Their multiaddrs are the swarm's initial peers.
* **Announcements** go through one client-mode host (empty ``NodeInfo``, so it joins no routing table) as
  ordinary ``DHTProtocol.rpc_store`` calls onto the ``num_replicas`` (5) nodes nearest each key, the placement
  Petals' ``store_many`` reaches once it knows the network. We compute "nearest" directly because the demo
  knows every node's ID, and batch all servers' entries for a node into one StoreRequest per tick (Petals sends
  one per key and server). Why not write into the nodes' storage directly: going over the wire exercises the
  real store handler and hivemind's acceptance rules (expiration, newest wins), and also reaches hivemind nodes
  in a mixed swarm; batching keeps thousands of servers at a handful of RPCs per tick.
* **Server hosts**: each simulated server with ``has_host`` gets its own py-libp2p host with its seeded
  Ed25519 identity, alive while the server is JOINING or ONLINE and closed while it is absent (left or
  crashed: dials fail). It serves ``TransformerConnectionHandler.rpc_info`` only while ONLINE (while JOINING
  the protocol is refused, as Petals' handlers are not up yet); ``Reach.SILENT`` servers accept the stream
  and never answer. A restarted host listens on the port it had before.
* **Peer routing**: the DHT nodes answer kad ``FIND_NODE`` from the swarm's address book (see
  :mod:`.peer_routing`), so a monitor can resolve the PeerIDs it reads in announcements.

**Scale.** Everything shares one process and one trio loop. Simulated servers are just rows in the scenario;
only the first ``ScenarioParams.max_hosts`` (default 64) get a host, the others announce normally but cannot be
dialled (unreachable). With 2000 servers the announcement work is ~10 % of one core.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import trio

from dht import protocol
from dht.errors import DHTError
from dht.ids import dhtid_of
from dht.net.transport import Host, open_host, split_p2p_addr
from dht.node import DHTNode

from . import identity
from .announce import AnnouncementSchedule, StoreOp, store_ops
from .peer_routing import serve_find_node
from .scenario import Reach, Scenario, ServerPlan

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SwarmOptions:
    num_nodes: int = 3
    num_replicas: int = 5
    tick: float = 0.5  # how often due announcements are sent
    store_timeout: float = 5.0
    max_items_per_store: int = 2000
    max_store_bytes: int = 1024 * 1024
    bootstrap_timeout: float = 10.0


@dataclass(slots=True)
class SwarmStats:
    announcements: int = 0
    store_rpcs: int = 0
    store_failures: int = 0
    items_stored: int = 0
    items_rejected: int = 0
    hosts_running: int = 0


@dataclass(slots=True)
class DemoSwarm:
    """A running swarm (valid inside :func:`run_swarm`'s block)."""

    scenario: Scenario
    options: SwarmOptions
    nodes: list[DHTNode]
    node_hosts: list[Host]
    wall_start: float  # DHT time at scenario time 0
    trio_start: float  # trio clock at scenario time 0
    address_book: dict[str, list[str]] = field(default_factory=dict)
    stats: SwarmStats = field(default_factory=SwarmStats)
    first_announcement_stored: trio.Event = field(default_factory=trio.Event)
    server_hosts: dict[str, Host] = field(default_factory=dict)  # peer id -> running host

    @property
    def initial_peers(self) -> list[str]:
        """Multiaddrs of our DHT nodes (``/ip4/127.0.0.1/tcp/N/p2p/<id>``): the swarm's bootstrap peers."""
        return [h.listen_addrs[0] for h in self.node_hosts]

    def now(self) -> float:
        """Scenario time."""
        return trio.current_time() - self.trio_start

    def dht_time(self, t: float | None = None) -> float:
        return self.wall_start + (self.now() if t is None else t)


# ---------------------------------------------------------------------------------------------- placement


def node_key_seed(seed: int, index: int) -> bytes:
    return hashlib.sha256(f"petals-monitor-demo/{seed}/dht-node/{index}".encode()).digest()


def node_id_for(seed: int, index: int) -> int:
    return int.from_bytes(hashlib.sha1(f"petals-monitor-demo/{seed}/node-id/{index}".encode()).digest(), "big")


@lru_cache(maxsize=65536)
def _key_id(key: str) -> bytes:
    return dhtid_of(key)


@lru_cache(maxsize=65536)
def _subkey_tag(subkey: str) -> bytes:
    return protocol.subkey_tag(subkey)


def replica_plan(
    ops: Sequence[StoreOp], nodes: dict[str, int], num_replicas: int
) -> dict[str, list[protocol.StoreItem]]:
    """Which node stores what: every key goes to the ``num_replicas`` nodes XOR-nearest to its DHTID."""
    plan: dict[str, list[protocol.StoreItem]] = {peer: [] for peer in nodes}
    nearest_cache: dict[bytes, list[str]] = {}
    for op in ops:
        key_id = _key_id(op.key)
        nearest = nearest_cache.get(key_id)
        if nearest is None:
            key_int = int.from_bytes(key_id, "big")
            nearest = sorted(nodes, key=lambda peer: nodes[peer] ^ key_int)[:num_replicas]
            nearest_cache[key_id] = nearest
        item = protocol.StoreItem(key_id, _subkey_tag(op.subkey), op.value, op.expiration)
        for peer in nearest:
            plan[peer].append(item)
    return {peer: items for peer, items in plan.items() if items}


def chunks(items: list[protocol.StoreItem], max_items: int, max_bytes: int) -> list[list[protocol.StoreItem]]:
    """Split a node's batch so one StoreRequest stays well under the 4 MiB envelope."""
    out: list[list[protocol.StoreItem]] = []
    current: list[protocol.StoreItem] = []
    size = 0
    for item in items:
        cost = len(item.payload) + len(item.subkey_tag) + 40
        if current and (len(current) >= max_items or size + cost > max_bytes):
            out.append(current)
            current, size = [], 0
        current.append(item)
        size += cost
    if current:
        out.append(current)
    return out


# ---------------------------------------------------------------------------------------------- tasks


async def _store_batch(swarm: DemoSwarm, announcer: Host, peer: str, items: list[protocol.StoreItem]) -> None:
    options = swarm.options
    for chunk in chunks(items, options.max_items_per_store, options.max_store_bytes):
        swarm.stats.store_rpcs += 1
        try:
            raw = await announcer.call_unary(
                peer, protocol.RPC_STORE, protocol.build_store_request(chunk), timeout=options.store_timeout
            )
            oks = protocol.parse_store_response(raw, expected=len(chunk)).store_ok
        except DHTError as e:
            swarm.stats.store_failures += 1
            log.warning("demo: store of %d items on %s failed: %s", len(chunk), peer, e)
            continue
        stored = sum(oks)
        swarm.stats.items_stored += stored
        swarm.stats.items_rejected += len(oks) - stored


async def _announce_loop(swarm: DemoSwarm, announcer: Host, node_ids: dict[str, int]) -> None:
    """Every tick: what is due → store operations → one batch per replica node, sent concurrently."""
    schedule = AnnouncementSchedule(swarm.scenario)
    while True:
        t = swarm.now()
        due = schedule.due(t)
        if due:
            ops = store_ops(swarm.scenario, due, swarm.wall_start)
            swarm.stats.announcements += len(due)
            plan = replica_plan(ops, node_ids, swarm.options.num_replicas)
            async with trio.open_nursery() as nursery:
                for peer, items in plan.items():
                    nursery.start_soon(_store_batch, swarm, announcer, peer, items)
            swarm.first_announcement_stored.set()
        next_due = schedule.next_due
        wait = swarm.options.tick if next_due is None else min(swarm.options.tick, next_due - swarm.now())
        await trio.sleep(max(wait, 0.01))


def _rpc_info_handler(swarm: DemoSwarm, plan: ServerPlan) -> Callable:
    async def rpc_info(_caller: str, data: bytes) -> bytes:
        protocol.parse_info_request(data)
        if plan.reach == Reach.SILENT:
            await trio.sleep_forever()
        noise = swarm.scenario.measurement_noise(plan, swarm.now())
        return protocol.build_info_response(
            {
                "version": plan.version,
                "dht_client_mode": plan.using_relay,
                "cache_tokens_available": int(plan.cache_tokens * noise.uniform(0.2, 1.0)),
            }
        )

    return rpc_info


def _port_of(listen_addrs: list[str]) -> int:
    for addr in listen_addrs:
        parts = addr.split("/")
        if "tcp" in parts:
            return int(parts[parts.index("tcp") + 1])
    return 0


async def _sleep_until(swarm: DemoSwarm, t: float) -> None:
    if math.isinf(t):
        await trio.sleep_forever()
    await trio.sleep(max(0.0, t - swarm.now()))


async def _live_host(swarm: DemoSwarm, plan: ServerPlan, host: Host) -> None:
    """While ``plan`` is JOINING or ONLINE: serve rpc_info only while ONLINE. Returns when it goes absent."""
    swarm.address_book[plan.peer_id] = [split_p2p_addr(a)[1] for a in host.listen_addrs]
    swarm.server_hosts[plan.peer_id] = host
    swarm.stats.hosts_running += 1
    serving = False
    try:
        while True:
            seg = swarm.scenario.status_at(plan, swarm.now())
            if seg.status == "absent":
                return
            want = seg.status == "online"
            if want and not serving:
                host.set_unary_handler(protocol.RPC_INFO, _rpc_info_handler(swarm, plan))
            elif serving and not want:
                host.remove_unary_handler(protocol.RPC_INFO)
            serving = want
            await _sleep_until(swarm, seg.end)
    finally:
        swarm.stats.hosts_running -= 1
        swarm.server_hosts.pop(plan.peer_id, None)
        # The address stays in the book: a monitor still holding fresh records dials it and fails, as in life.


async def _server_life(swarm: DemoSwarm, plan: ServerPlan) -> None:
    """Run ``plan``'s host whenever it is JOINING or ONLINE; a restart reuses the previous port if it can."""
    port = 0
    while True:
        seg = swarm.scenario.status_at(plan, swarm.now())
        if seg.status == "absent":
            await _sleep_until(swarm, seg.end)
            continue
        entered = False
        try:
            async with open_host(
                key_pair=identity.key_pair(plan.key_seed), listen=[f"/ip4/127.0.0.1/tcp/{port}"]
            ) as host:
                entered = True
                port = _port_of(host.listen_addrs)
                await _live_host(swarm, plan, host)
        except Exception as e:
            if entered or port == 0:
                raise
            log.debug("demo: %s cannot listen on port %d again (%s); taking any port", plan.name, port, e)
            port = 0


@contextlib.asynccontextmanager
async def _open_hosts(specs: list[dict]) -> AsyncIterator[list[Host]]:
    """Open several hosts and close them concurrently (py-libp2p takes up to ~1 s per close when peers are
    connected to each other; one after another that adds up)."""
    hosts: list[Host] = []
    release = trio.Event()

    async def hold(spec: dict, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with open_host(**spec) as host:
            hosts.append(host)
            task_status.started()
            await release.wait()

    async with trio.open_nursery() as nursery:
        try:
            for spec in specs:
                await nursery.start(hold, spec)
            yield hosts
        finally:
            release.set()


@contextlib.asynccontextmanager
async def run_swarm(
    scenario: Scenario, options: SwarmOptions | None = None, *, clock: Callable[[], float] = time.time
) -> AsyncIterator[DemoSwarm]:
    """Start the swarm; scenario time 0 is when the DHT nodes are up. Leaving the block stops everything."""
    options = options or SwarmOptions()
    if options.num_nodes < 1:
        raise ValueError("num_nodes must be >= 1")
    seed = scenario.params.seed
    specs = [
        {"key_pair": identity.key_pair(node_key_seed(seed, i)), "listen": True, "max_concurrent_calls": 256}
        for i in range(options.num_nodes)
    ]
    specs.append({"listen": False, "max_concurrent_calls": 256})  # the announcer: client mode
    async with _open_hosts(specs) as all_hosts:
        hosts, announcer = all_hosts[:-1], all_hosts[-1]
        nodes = [
            DHTNode(node_id_for(seed, i), num_replicas=options.num_replicas, clock=clock)
            for i in range(options.num_nodes)
        ]
        async with trio.open_nursery() as nursery:
            for node, host in zip(nodes, hosts, strict=True):
                await nursery.start(node.serve, host)
            swarm = DemoSwarm(scenario, options, nodes, hosts, wall_start=0.0, trio_start=0.0)
            node_peers = [h.peer_id for h in hosts]
            for host in [*hosts, announcer]:
                for other in hosts:
                    if other is not host:
                        host.add_addrs(other.peer_id, [split_p2p_addr(a)[1] for a in other.listen_addrs])
            for host in hosts:
                swarm.address_book[host.peer_id] = [split_p2p_addr(a)[1] for a in host.listen_addrs]
                serve_find_node(host, swarm.address_book, fallback=lambda: node_peers)
            with trio.move_on_after(options.bootstrap_timeout):
                for node in nodes[1:]:
                    await node.bootstrap([swarm.initial_peers[0]], timeout=options.bootstrap_timeout)
            swarm.wall_start, swarm.trio_start = clock(), trio.current_time()
            node_ids = {host.peer_id: node.node_id for node, host in zip(nodes, hosts, strict=True)}
            nursery.start_soon(_announce_loop, swarm, announcer, node_ids)
            for plan in scenario.servers:
                if plan.has_host:
                    nursery.start_soon(_server_life, swarm, plan)
            log.info(
                "demo swarm: %d DHT nodes, %d servers (%d with hosts), initial peers %s",
                len(nodes),
                len(scenario.servers),
                sum(p.has_host for p in scenario.servers),
                " ".join(swarm.initial_peers),
            )
            try:
                yield swarm
            finally:
                nursery.cancel_scope.cancel()
