"""Swarm-wide lookups against REAL hivemind 1.1.12 nodes: ours must equal hivemind's own get_many(latest=True)."""

from __future__ import annotations

import uuid

import pytest
import trio
from interop_fixtures import HivemindHarness, hivemind_harness, hivemind_swarm  # noqa: F401
from tagged_json import from_json

from dht.net.transport import open_host
from dht.serializer import loads
from dht.swarm import SwarmClient
from dht.value import DictionaryValue

pytestmark = pytest.mark.interop

N_NODES = 5
N_KEYS = 12
FAKE_SERVERS = [f"12D3KooWFake{i:040d}" for i in range(6)]


@pytest.fixture(scope="module")
def five_nodes(hivemind_swarm: HivemindHarness) -> list[str]:  # noqa: F811
    """A swarm of its own (bootstrapped from sw0, not from the shared a/b), so other modules' replicas stay put."""
    names = [f"sw{i}" for i in range(N_NODES)]
    for i, name in enumerate(names):
        if name not in hivemind_swarm.nodes:
            hivemind_swarm.start_node(name, initial_names=[names[0]] if i else [])
    return names


def _announce(swarm: HivemindHarness, names: list[str], prefix: str) -> list[str]:
    """Each hivemind node announces two fake servers' spans, Petals-style (dictionary entries)."""
    keys = [f"{prefix}.{i}" for i in range(N_KEYS)]
    now = swarm.call("time")
    for n, name in enumerate(names):
        for server in FAKE_SERVERS[n % len(FAKE_SERVERS) :][:2]:
            info = (2, 100.0 + n, {"start_block": 0, "end_block": N_KEYS, "public_name": name})
            swarm.call(
                "store_many",
                name=name,
                keys=keys,
                values=[{"$tuple": [info[0], info[1], info[2]]}] * N_KEYS,
                subkeys=[server] * N_KEYS,
                expiration=now + 300 + n,
            )
    return keys


def _as_map(value) -> dict:
    assert isinstance(value, DictionaryValue)
    return {sk: (loads(v.payload), v.expiration) for sk, v in value.items()}


async def test_lookup_equals_hivemind_get_many_latest(hivemind_swarm: HivemindHarness, five_nodes):  # noqa: F811
    swarm = hivemind_swarm
    keys = _announce(swarm, five_nodes, f"lookup-{uuid.uuid4().hex[:8]}")
    if "watcher" not in swarm.nodes:
        swarm.start_node("watcher", client_mode=True, initial_names=["sw1"])
    theirs = {from_json(k): r for k, r in await swarm.acall("get_many", name="watcher", keys=keys, latest=True)}

    async with open_host() as host:
        client = SwarmClient(host, timeout=5)
        boot = await client.bootstrap([swarm.nodes["sw0"].maddrs[0]])
        assert boot[0].ok, boot[0].error
        with trio.fail_after(30):
            ours = await client.lookup(keys, [boot[0].peer_id])
    assert ours.traversal.complete
    assert len(ours.traversal.contacted) >= N_NODES  # it really walked the swarm
    for key in keys:
        expected = theirs[key]
        assert expected is not None and expected["type"] == "dictionary"
        want = {from_json(i["subkey"]): (from_json(i["value"]), i["expiration"]) for i in expected["items"]}
        assert _as_map(ours.values[key]) == want, key
        assert len(want) >= 2


async def test_bootstrap_reports_unreachable_and_bad_addresses(hivemind_swarm: HivemindHarness):  # noqa: F811
    dead = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWD4DGWPgr6GLXxifDvNnm9fyzfBmtKMpUxS8sNNhrZuw8"
    async with open_host() as host:
        client = SwarmClient(host, timeout=2)
        with trio.fail_after(10):
            res = await client.bootstrap([hivemind_swarm.nodes["a"].maddrs[0], dead, "/not/a/multiaddr"])
    assert res[0].ok and res[0].latency is not None and res[0].node_id == hivemind_swarm.nodes["a"].node_id
    assert not res[1].ok and res[1].error
    assert not res[2].ok and res[2].error
