"""A full crawl of a REAL hivemind 1.1.12 swarm carrying Petals-style announcements, with churn."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest
import trio
from interop_fixtures import REPO, HivemindHarness, hivemind_harness, hivemind_swarm  # noqa: F401

from dht.net.transport import open_host
from dht.swarm import SwarmClient
from monitor.config import ReachabilityConfig, SwarmConfig
from monitor.crawl.crawler import crawl_swarm
from monitor.crawl.pipeline import judge
from monitor.snapshot import ModelInfo

pytestmark = pytest.mark.interop

NUM_BLOCKS = 8
UNREACHABLE = "12D3KooWD4DGWPgr6GLXxifDvNnm9fyzfBmtKMpUxS8sNNhrZuw8"
OFFLINE = "QmedTaZXmULqwspJXz44SsPZyTNKxhnnFvYRajfH7MGhCY"
CRASHED = "12D3KooWL8pFAAemHvuV33PomCwHh6E6Ea5Fuu83gomgWLrmBErx"


def _info(state: int, start: int, end: int, name: str | None = None) -> dict:
    extra = {
        "start_block": start,
        "end_block": end,
        "public_name": name,
        "version": "2.3.0.dev2",
        "network_rps": 100.0,
        "forward_rps": 200.0,
        "inference_rps": 50.0,
        "adapters": {"$tuple": []},
        "torch_dtype": "bfloat16",
        "quant_type": "nf4",
        "using_relay": False,
        "cache_tokens_left": 16384,
        "next_pings": None,
    }
    return {"$tuple": [state, 1234.5, extra]}


def _announce(swarm: HivemindHarness, node: str, prefix: str, server: str, info: dict, start: int, end: int, exp):
    keys = [f"{prefix}.{i}" for i in range(start, end)]
    ok = swarm.call("store_many", name=node, keys=keys, values=[info] * len(keys), subkeys=[server] * len(keys),
                    expiration=exp)  # fmt: skip
    assert all(row[2] for row in ok)


@pytest.fixture(scope="module")
def announced(hivemind_swarm: HivemindHarness):  # noqa: F811
    swarm = hivemind_swarm
    prefix = f"itest-{uuid.uuid4().hex[:8]}"
    online = swarm.nodes["a"].peer_id  # node a serves a stand-in rpc_info: reachable
    now = swarm.call("time")
    _announce(swarm, "a", prefix, online, _info(2, 0, 4, "alice"), 0, 4, now + 300)
    _announce(swarm, "b", prefix, UNREACHABLE, _info(2, 3, 8), 3, 8, now + 300)
    _announce(swarm, "b", prefix, OFFLINE, _info(0, 6, 8), 6, 8, now + 300)  # left: OFFLINE announced once
    crash_exp = now + 1.5
    _announce(swarm, "a", prefix, CRASHED, _info(2, 4, 8), 4, 8, crash_exp)  # crashed: never refreshed
    deadline = time.monotonic() + 10
    while swarm.call("time") <= crash_exp + 0.2:  # wait for the DHT's clock to pass its expiration
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return prefix, online


def _swarm_config(swarm: HivemindHarness, prefix: str) -> SwarmConfig:
    return SwarmConfig(
        name="itest",
        initial_peers=(swarm.nodes["a"].maddrs[0], swarm.nodes["b"].maddrs[0]),
        models=(ModelInfo(prefix, NUM_BLOCKS, official=True),),
        discover_models=False,
        crawl_timeout=30,
        rpc_timeout=3,
        reachability=ReachabilityConfig(timeout=3),
    )


async def test_crawl_equals_what_was_announced(hivemind_swarm, announced):  # noqa: F811
    prefix, online = announced
    cfg = _swarm_config(hivemind_swarm, prefix)
    async with open_host() as host:
        with trio.fail_after(60):
            outcome = await crawl_swarm(SwarmClient(host, timeout=3), cfg)
    snap = judge(outcome, cfg)
    assert snap.status == "succeeded", snap.error
    assert [b.state for b in snap.bootstrap] == ["online", "online"]
    assert snap.stats.peers_contacted >= 2
    (model,) = snap.models
    rows = {r.peer_id: r for r in model.servers}
    assert set(rows) == {online, UNREACHABLE, OFFLINE}  # the crashed server's records expired and vanished
    assert (rows[online].state, rows[online].start, rows[online].end) == ("online", 0, 4)
    assert rows[online].reachability is not None and rows[online].reachability.ok
    assert (rows[UNREACHABLE].state, rows[UNREACHABLE].start, rows[UNREACHABLE].end) == ("unreachable", 3, 8)
    assert (rows[OFFLINE].state, rows[OFFLINE].start, rows[OFFLINE].end) == ("offline", 6, 8)
    assert 200 < rows[online].ttl <= 300
    assert [b.online for b in model.blocks] == [1, 1, 1, 1, 0, 0, 0, 0]
    assert model.state == "broken"  # blocks 4..7 have no reachable online server


def test_crawl_once_cli_writes_and_prints_the_state(hivemind_swarm, announced, tmp_path):  # noqa: F811
    prefix, online = announced
    db = tmp_path / "m.db"
    args = [sys.executable, "-m", "monitor", "crawl", "--once", "--json", "--db", str(db), "--model", f"{prefix}:8"]
    for node in ("a", "b"):
        args += ["--initial-peer", hivemind_swarm.nodes[node].maddrs[0]]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    doc = json.loads(proc.stdout)
    (report,) = [m for m in doc["model_reports"] if m["dht_prefix"] == prefix]
    rows = {r["peer_id"]: r for r in report["server_rows"]}
    assert rows[online]["state"] == "online"
    assert rows[online]["span"]["start"] == 0 and rows[online]["span"]["end"] == 4
    assert rows[online]["span"]["server_info"]["public_name"] == "alice"
    assert db.exists()


def test_crawl_once_cli_exit_codes(tmp_path):
    bad = subprocess.run(
        [sys.executable, "-m", "monitor", "crawl", "--once", "--initial-peer", "not-a-multiaddr"],
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert bad.returncode == 2 and b"initial" in bad.stderr.lower()
    dead = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWD4DGWPgr6GLXxifDvNnm9fyzfBmtKMpUxS8sNNhrZuw8"
    failed = subprocess.run(
        [sys.executable, "-m", "monitor", "crawl", "--once", "--db", str(tmp_path / "x.db"), "--initial-peer", dead],
        cwd=REPO,
        capture_output=True,
        timeout=120,
    )
    assert failed.returncode == 1, failed.stderr.decode()[-2000:]
