"""The benchmark swarms: real hivemind 1.1.12 nodes (in the test harness subprocess), seeded with hivemind's own
``store_many``, and the side configurations that query them.

Every scenario returns the two sides' configs (same keys, same nodes) and what both should find, so a run that
is fast because it found less is caught. Sizes come from :class:`Sizes` (full or ``--quick``).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .measure import REPO, python

TTL = 3600.0
CRAWL_KEYS_PER_REQUEST = 64  # longer than any benchmark run: nothing expires while we measure


@dataclass(frozen=True)
class Sizes:
    keys_one_node: int = 1000
    swarm_nodes: int = 5
    swarm_keys: int = 1000
    crawl_models: int = 3
    crawl_blocks: int = 80
    crawl_servers: int = 60
    crawl_storers: int = 3  # DHT nodes besides the 2 bootstrap peers; they store the announcements
    small_blocks: int = 8
    small_servers: int = 3


FULL = Sizes()
QUICK = Sizes(swarm_nodes=3, swarm_keys=200, crawl_models=2, crawl_blocks=16, crawl_servers=8, crawl_storers=1)


@dataclass
class Scenario:
    name: str
    description: str
    ours: dict[str, Any]
    theirs: dict[str, Any]
    expected: dict[str, Any]
    setup: dict[str, Any] = field(default_factory=dict)  # what was built, for the JSON report


def _maddr(harness: Any, name: str) -> str:
    return harness.nodes[name].maddrs[0]


MAX_STORE_CALL_BYTES = 8_000  # hivemind's DHT.run_coroutine pickles its arguments through a pipe that fails
# with EAGAIN ("Resource temporarily unavailable") on large payloads: the harness's store_many must stay small.


def _store_many(harness: Any, node: str, keys: list, values: list, subkeys: list | None, expiration: float) -> None:
    """hivemind's own ``store_many`` from ``node``, in calls small enough for hivemind's pipe."""
    per_item = max(1, len(json.dumps([keys[0], values[0], subkeys[0] if subkeys else None])))
    chunk = max(1, MAX_STORE_CALL_BYTES // per_item)
    for start in range(0, len(keys), chunk):
        part = slice(start, start + chunk)
        rows = harness.call("store_many", name=node, keys=keys[part], values=values[part],
                            subkeys=subkeys[part] if subkeys else None, expiration=expiration,
                            timeout=120)  # fmt: skip
        failed = [r for r in rows if not r[2]]
        if failed:
            raise RuntimeError(f"hivemind store_many on {node} refused {len(failed)} of {len(rows)}: {failed[:3]}")


# ------------------------------------------------------------------------------------------------ a. dht-1000


def dht_one_node(harness: Any, sizes: Sizes) -> Scenario:
    """``keys_one_node`` regular values on ONE full hivemind node; one FIND (ours) vs hivemind's get_many."""
    harness.start_node("solo")
    now = harness.call("time")
    keys = [f"bench-one.{i}" for i in range(sizes.keys_one_node)]
    values = [f"value {i} " + "x" * 48 for i in range(len(keys))]
    _store_many(harness, "solo", keys, values, None, now + TTL)
    peers = [_maddr(harness, "solo")]
    return Scenario(
        name="dht-1000",
        description=f"{len(keys)} keys from one hivemind node: our SwarmClient.get_many (one FIND) vs hivemind "
        "DHT get_many(keys, latest=True) from a client-mode node",
        ours={"mode": "get_many", "initial_peers": peers, "keys": keys},
        theirs={"mode": "get_many", "initial_peers": peers, "keys": keys},
        expected={"keys_found": len(keys), "entries": len(keys)},
        setup={"nodes": 1, "keys": len(keys)},
    )


# ------------------------------------------------------------------------------------------------ b. dht-swarm


def dht_swarm(harness: Any, sizes: Sizes) -> Scenario:
    """``swarm_keys`` keys stored from every node of a ``swarm_nodes``-node swarm: half regular values, half
    dictionaries with one subkey per storing node pair (so replicas must be merged)."""
    names = [f"sw{i}" for i in range(sizes.swarm_nodes)]
    for i, name in enumerate(names):
        harness.start_node(name, initial_names=[names[0]] if i else [])
    now = harness.call("time")
    keys = [f"bench-swarm.{i}" for i in range(sizes.swarm_keys)]
    entries = 0
    for n, name in enumerate(names):
        mine = keys[n :: len(names)]
        regular = [k for i, k in enumerate(mine) if i % 2 == 0]
        dicts = [k for i, k in enumerate(mine) if i % 2 == 1]
        if regular:
            _store_many(harness, name, regular, [f"r {k}" for k in regular], None, now + TTL)
            entries += len(regular)
        if dicts:  # two entries per dictionary key, stored from two different nodes
            other = names[(n + 1) % len(names)]
            _store_many(harness, name, dicts, [f"d {k} a" for k in dicts], [f"from-{name}"] * len(dicts), now + TTL)
            _store_many(harness, other, dicts, [f"d {k} b" for k in dicts], [f"from-{other}"] * len(dicts), now + TTL)
            entries += 2 * len(dicts)
    peers = [_maddr(harness, names[0]), _maddr(harness, names[1])]
    return Scenario(
        name="dht-swarm",
        description=f"all {len(keys)} keys of a {len(names)}-node hivemind swarm: our SwarmClient.lookup vs "
        "hivemind DHT get_many(keys, latest=True)",
        ours={"mode": "lookup", "initial_peers": peers, "keys": keys},
        theirs={"mode": "lookup", "initial_peers": peers, "keys": keys},
        expected={"keys_found": len(keys), "entries": entries},
        setup={"nodes": len(names), "keys": len(keys), "entries": entries},
    )


# ------------------------------------------------------------------------------------------------ c. crawl

BOOTSTRAP_NODES = ("boot0", "boot1")


def start_bootstrap_peers(harness: Any) -> list[str]:
    """The crawl swarm's two bootstrap peers (hivemind full DHT nodes in the harness)."""
    harness.start_node(BOOTSTRAP_NODES[0])
    harness.start_node(BOOTSTRAP_NODES[1], initial_names=[BOOTSTRAP_NODES[0]])
    return [_maddr(harness, b) for b in BOOTSTRAP_NODES]


def crawl_spec(sizes: Sizes, initial_peers: list[str]) -> dict[str, Any]:
    """What :mod:`bench.petals_servers` builds: the models, the servers and the nodes that announce them."""
    models = [{"dht_prefix": f"bench-model-{m}", "num_blocks": sizes.crawl_blocks} for m in range(sizes.crawl_models)]
    small = {"dht_prefix": "bench-small", "num_blocks": sizes.small_blocks, "servers": sizes.small_servers}
    return {"initial_peers": initial_peers, "servers": sizes.crawl_servers, "storers": sizes.crawl_storers,
            "models": models, "small": small, "ttl": TTL}  # fmt: skip


@contextlib.contextmanager
def petals_swarm(spec: dict[str, Any], log_dir: Path) -> Iterator[dict[str, Any]]:
    """The stand-in servers and the announcing DHT nodes (:mod:`bench.petals_servers`) for the block's duration."""
    config = log_dir / "servers.json"
    config.write_text(json.dumps(spec))
    with open(log_dir / "servers.log", "wb") as log:
        proc = subprocess.Popen([python(), "-m", "bench.petals_servers", str(config)], cwd=REPO,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                start_new_session=True)  # fmt: skip
        try:
            timeout = 120 + 3 * spec["servers"]
            line = _read_line(proc, timeout)
            if not line:
                tail = (log_dir / "servers.log").read_bytes()[-2000:].decode(errors="replace")
                raise RuntimeError(f"the seeded Petals swarm did not start within {timeout} s:\n{tail}")
            yield json.loads(line)
        finally:
            _stop(proc)


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    import threading

    box: list[bytes] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0].decode() if box else ""


def _stop(proc: subprocess.Popen) -> None:
    import os
    import signal

    with contextlib.suppress(OSError, ValueError):
        proc.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def crawl_scenario(spec: dict[str, Any], seeded: dict[str, Any]) -> Scenario:
    """Both sides crawl the seeded swarm from its two bootstrap peers; what they must find follows from ``spec``."""
    from .petals_servers import small_span

    if seeded["stored"] != seeded["announced"]:
        raise RuntimeError(f"hivemind stored only {seeded['stored']} of {seeded['announced']} announcements")
    servers = seeded["servers"]
    online = [i for i in range(len(servers)) if i % 10 != 9]
    small = spec["small"]
    small_servers = list(range(min(small["servers"], len(servers))))
    expected_models = {m["dht_prefix"]: {"servers": len(servers), "online": len(online),
                                         "blocks_covered": m["num_blocks"]} for m in spec["models"]}  # fmt: skip
    expected_models[small["dht_prefix"]] = {
        "servers": len(small_servers),
        "online": sum(1 for i in small_servers if i % 10 != 9),
        "blocks_covered": small["num_blocks"],
    }
    records = sum(m["num_blocks"] for m in spec["models"]) * len(servers)
    records += sum(e - s for s, e in (small_span(i, small["num_blocks"]) for i in small_servers))
    models = [{"dht_prefix": m["dht_prefix"], "num_blocks": m["num_blocks"]} for m in [*spec["models"], small]]
    # repeat: each side then crawls once more in the same process (connections kept, probes redone), timed apart:
    # what a long-running monitor pays per crawl after its first
    config = {"mode": "crawl", "initial_peers": spec["initial_peers"], "models": models, "probe_timeout": 5.0,
              "repeat": True}  # fmt: skip
    return Scenario(
        name="crawl",
        description=f"{len(spec['models'])} models × {spec['models'][0]['num_blocks'] if spec['models'] else 0} "
        f"blocks × {len(servers)} servers + a small model, {2 + spec['storers']} hivemind DHT nodes: our "
        "crawl_swarm + judge vs the health.petals.dev method on hivemind",
        # 64 keys per FIND: with the default (1000) a node's reply for every block key holds ~60 entries per key
        # and exceeds hivemind's 4 MiB message limit at full size; such replies are never sent (see README).
        ours={**config, "max_keys_per_request": CRAWL_KEYS_PER_REQUEST},
        theirs=dict(config),
        expected={"models": expected_models, "records": records, "probes": len(online)},
        setup={
            "dht_nodes": 2 + spec["storers"],
            "servers": len(servers),
            "records": records,
            "keys": sum(m["num_blocks"] for m in models) + 1,
        },
    )
