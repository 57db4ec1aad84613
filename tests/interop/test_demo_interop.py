"""A real hivemind 1.1.12 node bootstraps from the demo swarm and finds its announcements (subprocess harness)."""

from __future__ import annotations

import uuid

import pytest
import trio
from interop_fixtures import HivemindHarness, hivemind_harness  # noqa: F401 (fixture)

from monitor.demo.scenario import MODELS_KEY, Scenario, ScenarioParams
from monitor.demo.swarm import SwarmOptions, run_swarm

pytestmark = pytest.mark.interop

DEADLINE = 120.0  # hivemind node start (p2pd spawn) included


async def test_hivemind_get_many_latest_finds_the_demo_announcements(hivemind_harness: HivemindHarness):  # noqa: F811
    harness = hivemind_harness
    scenario = Scenario(ScenarioParams(seed=11))
    name = f"demo-reader-{uuid.uuid4().hex[:8]}"
    keys = ["demo/TinyLlama-A.0", "demo/Wide-80.70", MODELS_KEY]
    with trio.fail_after(DEADLINE):
        async with run_swarm(scenario, SwarmOptions(num_nodes=3)) as swarm:
            await swarm.first_announcement_stored.wait()
            started = False
            try:
                await harness.acall("start", name=name, initial_peers=swarm.initial_peers[:1], timeout=60)
                started = True
                found = dict(
                    (k, v) for k, v in await harness.acall("get_many", name=name, keys=keys, latest=True, timeout=30)
                )
            finally:
                if started:
                    with trio.move_on_after(20):
                        await harness.acall("shutdown", name=name, timeout=15)

    at_start = {
        scenario.servers[a.server].peer_id
        for a in scenario.announcements(-1e-9, 0.0)
        if scenario.servers[a.server].dht_prefix == "demo/TinyLlama-A" and a.span[0] == 0
    }
    block0 = found["demo/TinyLlama-A.0"]
    assert block0["type"] == "dictionary"
    subkeys = {item["subkey"] for item in block0["items"]}
    assert at_start and at_start <= subkeys
    for item in block0["items"]:
        state, throughput, extra = item["value"]["$tuple"]
        assert state in (1, 2) and isinstance(throughput, float) and len(extra) == 13
    wide = {item["subkey"] for item in found["demo/Wide-80.70"]["items"]}
    assert scenario.server("w3").peer_id in wide
    models = {item["subkey"] for item in found[MODELS_KEY]["items"]}
    assert "demo/Mystery-12" in models
