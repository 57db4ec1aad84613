"""The demo swarm on 127.0.0.1: starts in bounded time, serves its announcements, answers probes, stops cleanly."""

from __future__ import annotations

import pytest
import trio

from dht import protocol
from dht.errors import CallTimeout, PeerUnreachable, ProtocolNotSupported
from dht.ids import dhtid_of
from dht.net.transport import open_host, split_p2p_addr
from dht.serializer import loads
from dht.value import DictionaryValue
from monitor.demo.scenario import MODELS_KEY, Scenario, ScenarioParams
from monitor.demo.swarm import SwarmOptions, replica_plan, run_swarm

START_DEADLINE = 60.0


async def _find(client, peer: str, keys: list[str]) -> dict[str, protocol.FindResult]:
    ids = [dhtid_of(k) for k in keys]
    raw = await client.call_unary(peer, protocol.RPC_FIND, protocol.build_find_request(ids), timeout=5)
    return dict(zip(keys, protocol.parse_find_response(raw, ids).results, strict=True))


def _holders_announced(scenario: Scenario, block_key: str, t0: float, t1: float) -> set[str]:
    prefix, block = block_key.rsplit(".", 1)
    return {
        scenario.servers[a.server].peer_id
        for a in scenario.announcements(t0, t1)
        if scenario.servers[a.server].dht_prefix == prefix and a.span[0] <= int(block) < a.span[1]
    }


async def test_small_swarm_serves_announcements_and_probes_then_stops() -> None:
    scenario = Scenario(ScenarioParams(seed=4))
    with trio.fail_after(START_DEADLINE):
        async with run_swarm(scenario, SwarmOptions(num_nodes=3)) as swarm:
            await swarm.first_announcement_stored.wait()
            node_addr = swarm.initial_peers[0]
            async with open_host() as client:
                node = await client.connect(node_addr)
                keys = ["demo/TinyLlama-A.0", "demo/Falcon-B.20", MODELS_KEY]
                results = await _find(client, node, keys)
                t_now = swarm.now()

                block0 = results["demo/TinyLlama-A.0"]
                assert block0.type == protocol.ResultType.FOUND_DICTIONARY
                found = loads(block0.value)
                assert isinstance(found, DictionaryValue)
                at_start = _holders_announced(scenario, "demo/TinyLlama-A.0", -1e-9, 0.0)
                ever = _holders_announced(scenario, "demo/TinyLlama-A.0", -1e-9, t_now + 1)
                assert at_start <= set(found) <= ever and len(at_start) >= 3
                for _subkey, item in found.items():
                    state, throughput, extra = item.decode()
                    assert state in (1, 2) and len(extra) == 13 and isinstance(throughput, float)
                    assert item.expiration > swarm.dht_time()

                falcon = loads(results["demo/Falcon-B.20"].value)
                assert set(falcon) == {scenario.server("f3").peer_id}  # the single server of a degraded range

                models = loads(results[MODELS_KEY].value)
                assert {m.dht_prefix for m in scenario.models} <= set(models)  # the hidden model included

                # Reachability: ONLINE answers, JOINING refuses the protocol, SILENT times out, DOWN has no address.
                a1, w6, w9, w7 = (scenario.server(n) for n in ("a1", "w6", "w9", "w7"))
                with trio.fail_after(10):
                    while not all(p.peer_id in swarm.server_hosts for p in (a1, w6, w9)):
                        await trio.sleep(0.05)  # hosts start concurrently with the first announcements
                for plan in (a1, w6, w9, w7):
                    await client.resolve(plan.peer_id, via=[node], timeout=3)
                info = protocol.parse_info_response(
                    await client.call_unary(a1.peer_id, protocol.RPC_INFO, protocol.build_info_request(), timeout=5)
                )
                assert info["version"] == a1.version and info["dht_client_mode"] is False
                assert isinstance(info["cache_tokens_available"], int)
                with pytest.raises(ProtocolNotSupported):
                    await client.call_unary(w6.peer_id, protocol.RPC_INFO, b"", timeout=5)
                with pytest.raises(CallTimeout):
                    await client.call_unary(w9.peer_id, protocol.RPC_INFO, b"", timeout=1)
                with pytest.raises(PeerUnreachable):
                    await client.call_unary(w7.peer_id, protocol.RPC_INFO, b"", timeout=3)
            assert swarm.stats.store_failures == 0 and swarm.stats.items_stored > 0
        assert swarm.stats.hosts_running == 0 and not swarm.server_hosts

    # Nothing listens any more.
    _, transport = split_p2p_addr(node_addr)
    port = int(transport.rsplit("/", 1)[1])
    with trio.fail_after(5), pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_a_larger_swarm_spreads_replicas_and_every_store_lands() -> None:
    params = ScenarioParams(seed=9, extra_models=2, blocks_per_extra_model=40, num_servers=300, max_hosts=4)
    scenario = Scenario(params)
    with trio.fail_after(START_DEADLINE):
        # The whole swarm shares one process: give its first 7 x ~1200-item stores time on a loaded machine.
        async with run_swarm(scenario, SwarmOptions(num_nodes=7, num_replicas=5, store_timeout=30.0)) as swarm:
            await swarm.first_announcement_stored.wait()
            stats = swarm.stats
            assert stats.store_failures == 0 and stats.items_rejected == 0 and stats.items_stored > 1000
            key = "demo/Synth-00.0"
            node_ids = {h.peer_id: n.node_id for n, h in zip(swarm.nodes, swarm.node_hosts, strict=True)}
            holders = set(replica_plan([_op(key)], node_ids, 5))
            async with open_host() as client:
                seen = []
                for host in swarm.node_hosts:
                    peer = await client.connect(host.listen_addrs[0])
                    result = (await _find(client, peer, [key]))[key]
                    seen.append(result.type == protocol.ResultType.FOUND_DICTIONARY)
                    assert (peer in holders) == seen[-1]
            assert sum(seen) == 5  # exactly the 5 nearest of 7 nodes hold the key


def _op(key: str):
    from monitor.demo.announce import StoreOp

    return StoreOp(key, "x", b"\xc0", 1.0)
