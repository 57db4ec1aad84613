"""Our side of a benchmark, in its own process: ``python -m bench.side_ours CONFIG.json``.

Modes (``config["mode"]``):

- ``get_many``: one :meth:`SwarmClient.get_many` of all keys from one node (one FIND of up to 1000 keys);
- ``lookup``: :meth:`SwarmClient.lookup` of all keys across the swarm, merged like ``get_many(latest=True)``;
- ``crawl``: :func:`monitor.crawl.crawler.crawl_swarm` (bootstrap, lookup, reachability probes) + ``judge``.

``config["stack"]`` (``python -m bench --stack``): ``lean`` (default) dials with our Noise + yamux, ``libp2p`` with
py-libp2p's, to re-measure what the lean stack saves.

Setup (starting the host; dialling or pinging the initial peers for the two DHT modes) is timed apart from the
operation, as hivemind's side times creating its DHT apart from its query. Prints one JSON line: the timings,
this process's CPU over the operation, its peak RSS (VmHWM) and a digest of what it found, for cross-checking.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections import Counter
from typing import Any

from bench.proctree import cpu_seconds, status_kb


def _value_digest(values: dict[Any, Any]) -> dict[str, int]:
    from dht.value import DictionaryValue

    found = [v for v in values.values() if v is not None]
    entries = sum(len(v) if isinstance(v, DictionaryValue) else 1 for v in found)
    return {"keys_found": len(found), "entries": entries}


def _crawl_digest(snapshot: Any) -> dict[str, Any]:
    models = {}
    for report in snapshot.models:
        rows = report.servers
        models[report.model.dht_prefix] = {
            "servers": len(rows),
            "online": sum(1 for r in rows if r.state == "online"),
            "blocks_covered": report.blocks_covered,
        }
    return {"status": snapshot.status, "models": models}


async def _run(config: dict[str, Any]) -> dict[str, Any]:
    import trio

    from dht.net.transport import open_host
    from dht.swarm import SwarmClient

    mode = config["mode"]
    timeout = float(config.get("rpc_timeout", 5.0))
    host_options = {}
    if mode == "crawl":  # a running monitor has these imported long before it crawls: not part of the timing
        import monitor.crawl.crawler
        import monitor.crawl.pipeline

        host_options["max_concurrent_calls"] = monitor.crawl.crawler.HOST_CALL_SLOTS  # as the monitor opens its host
    t_setup = time.perf_counter()
    async with open_host(lean=config.get("stack", "lean") == "lean", **host_options) as host:
        options = {}
        if "max_keys_per_request" in config:  # to try other batch sizes; by default, SwarmClient's own
            options["max_keys_per_request"] = int(config["max_keys_per_request"])
        client = SwarmClient(host, timeout=timeout, **options)
        if mode == "get_many":
            peer = await client.connect(config["initial_peers"][0])
        elif mode == "lookup":
            boot = await client.bootstrap(config["initial_peers"])
            seeds = [b.peer_id for b in boot if b.ok]
            if not seeds:
                raise SystemExit(f"no initial peer answered: {[b.error for b in boot]}")
        if mode == "crawl":  # as the monitor's DHT worker does once started (monitor.crawl.worker)
            from monitor.heap import freeze_startup_heap

            freeze_startup_heap()
        setup = time.perf_counter() - t_setup

        _trace()
        profiler = _profiler()
        caches: dict[str, Any] = {}  # kept between the crawls of this process
        windows = {"cold": [time.time(), 0.0]}  # wall-clock windows: the WAN relays count bytes inside them
        cpu0, t0 = cpu_seconds([os.getpid()]), time.perf_counter()
        with trio.fail_after(float(config.get("deadline", 300))):
            if mode == "get_many":
                data = await client.get_many(peer, config["keys"])
                digest = _value_digest({k: f.value for k, f in data.results.items()})
            elif mode == "lookup":
                lookup = await client.lookup(config["keys"], seeds)
                digest = {**_value_digest(lookup.values), "nodes_contacted": len(lookup.traversal.contacted)}
            elif mode == "crawl":
                digest = await _crawl(client, config, caches)
            else:
                raise SystemExit(f"unknown mode {mode!r}")
        op_wall, op_cpu = time.perf_counter() - t0, cpu_seconds([os.getpid()]) - cpu0
        windows["cold"][1] = time.time()
        if profiler is not None:
            _save_profile(profiler, mode)
        peak = status_kb(os.getpid(), "VmHWM")
        digest["rpcs"] = client.rpcs
        digest["kad_rpcs"] = client.kad_rpcs
        digest["probe_rpcs"] = digest.get("probes", 0)
        if mode == "crawl" and config.get("repeat"):  # the next crawl of a long-running monitor
            rpcs0, kad0, windows["warm"] = client.rpcs, client.kad_rpcs, [time.time(), 0.0]
            cpu1, t1 = cpu_seconds([os.getpid()]), time.perf_counter()
            with trio.fail_after(float(config.get("deadline", 300))):
                # the reachability cache kept, as the monitor keeps it (monitor/app.py); every probe is still redone:
                # a cached success is re-checked each crawl, and no server here fails to leave a failure cached
                again = await _crawl(client, config, caches)
            digest["next_crawl"] = {"wall": time.perf_counter() - t1, "cpu": cpu_seconds([os.getpid()]) - cpu1,
                                    "records": again["records"], "probes_ok": again["probes_ok"],
                                    "rpcs": client.rpcs - rpcs0, "probe_rpcs": again["probes"],
                                    "kad_rpcs": client.kad_rpcs - kad0,
                                    "probe_errors": again.get("probe_errors", {})}  # fmt: skip
            windows["warm"][1] = time.time()
        digest["windows"] = windows
    return {
        "setup_wall": setup,
        "op_wall": op_wall,
        "op_cpu": op_cpu,
        "peak_rss_kb": peak,
        "rss_by_process": {f"{os.getpid()} python (ours)": peak},
        "digest": digest,
    }


def _trace() -> None:
    """``BENCH_TRACE=1``: one stderr line per network step (dial, call, kad lookup) and crawl phase, with its
    start and end in ms since the first, to read a crawl's critical path (bench/README.md)."""
    if not os.environ.get("BENCH_TRACE"):
        return
    import functools

    import trio

    import dht.net.lean
    import dht.net.transport
    import monitor.crawl.crawler
    from dht.swarm import SwarmClient

    t0 = [None]

    def wrap(owner: Any, name: str, label: Any) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        async def traced(*args: Any, **kwargs: Any) -> Any:
            start = trio.current_time()
            t0[0] = t0[0] if t0[0] is not None else start
            ok = "ok"
            try:
                return await original(*args, **kwargs)
            except BaseException as e:
                ok = type(e).__name__
                raise
            finally:
                end = trio.current_time()
                sys.stderr.write(f"TRACE {(start - t0[0]) * 1000:8.0f} {(end - t0[0]) * 1000:8.0f} {ok:10} "
                                 f"{label(*args, **kwargs)}\n")  # fmt: skip

        setattr(owner, name, traced)

    wrap(dht.net.transport.Host, "call_unary", lambda self, peer, proto, *a, **k: f"call {proto} {peer[-6:]}")
    wrap(
        dht.net.transport.Host,
        "find_peer",
        lambda self, via, target, **k: f"kad FIND_NODE {target[-6:]} via {via[-6:]}",
    )
    wrap(dht.net.lean, "dial", lambda identity, host, port, peer, **k: f"dial {host}:{port} {peer[-6:]}")
    wrap(SwarmClient, "bootstrap", lambda *a, **k: "PHASE bootstrap")
    wrap(SwarmClient, "lookup", lambda self, keys, *a, **k: f"PHASE lookup of {len(keys)} keys")
    wrap(monitor.crawl.crawler.Prober, "wait", lambda self, peers: f"PHASE waiting for the probes of {len(peers)}")
    wrap(monitor.crawl.crawler, "crawl_swarm", lambda *a, **k: "PHASE crawl")


def _profiler() -> Any:
    """A running pyinstrument profiler when ``BENCH_PROFILE`` names a directory (``pip install pyinstrument``)."""
    if not os.environ.get("BENCH_PROFILE"):
        return None
    from pyinstrument import Profiler

    profiler = Profiler(interval=float(os.environ.get("BENCH_PROFILE_INTERVAL", "0.0005")))
    profiler.start()
    return profiler


def _save_profile(profiler: Any, mode: str) -> None:
    profiler.stop()
    out = os.path.join(os.environ["BENCH_PROFILE"], f"ours-{mode}-{os.getpid()}")
    os.makedirs(os.environ["BENCH_PROFILE"], exist_ok=True)
    with open(out + ".txt", "w") as f:
        f.write(profiler.output_text(unicode=True, color=False, show_all=False))
    with open(out + ".html", "w") as f:
        f.write(profiler.output_html())
    profiler.last_session.save(out + ".pyisession")  # `pyinstrument --load FILE --show-all` for the hidden frames


async def _crawl(client: Any, config: dict[str, Any], caches: dict[str, Any]) -> dict[str, Any]:
    """One crawl and judgement, as the monitor's; ``caches`` keeps the reachability cache between crawls."""
    from monitor.config import ReachabilityConfig, SwarmConfig
    from monitor.crawl.crawler import ReachabilityCache, crawl_swarm
    from monitor.crawl.pipeline import judge
    from monitor.rules.petals import MODELS_KEY
    from monitor.snapshot import ModelInfo

    models = tuple(ModelInfo(m["dht_prefix"], m["num_blocks"], official=True) for m in config["models"])
    swarm = SwarmConfig(
        name="bench",
        initial_peers=tuple(config["initial_peers"]),
        models=models,
        discover_models=True,
        crawl_timeout=float(config.get("deadline", 300)),
        rpc_timeout=float(config.get("rpc_timeout", 5.0)),
        reachability=ReachabilityConfig(enabled=True, timeout=float(config.get("probe_timeout", 5.0))),
    )
    cache = caches.setdefault("reachability", ReachabilityCache(swarm.reachability.cache_ttl))
    outcome = await crawl_swarm(client, swarm, cache=cache)
    snapshot = judge(outcome, swarm)
    digest = _crawl_digest(snapshot)
    digest["records"] = sum(1 for e in outcome.raw.entries if e.key != MODELS_KEY)  # block records only
    digest["probes"] = len(outcome.reachability)
    digest["probes_ok"] = sum(1 for r in outcome.reachability.values() if r.ok)
    # why probes failed, when some did (a run that found less says why in its JSON): error text without peer ids
    failures = Counter(
        re.sub(r"\w{40,}", "<peer>", r.error or "?")[:120] for r in outcome.reachability.values() if not r.ok
    )
    if failures:
        digest["probe_errors"] = dict(failures.most_common(5))
    digest["error"] = snapshot.error
    return digest


def main() -> int:
    with open(sys.argv[1]) as f:
        config = json.load(f)
    import logging

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    import trio

    result = trio.run(_run, config)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
