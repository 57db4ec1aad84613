"""One measured crawl of a demo swarm, in a fresh process (its peak RSS is the crawl's): ``bench.scaling``'s side.

``python -m bench._load_crawl CONFIG.json``; CONFIG has ``peers``, ``scenario`` (``ScenarioParams`` fields, for
the configured models), ``db`` (a store file to record into) and ``reachability`` (probe servers or not).
Prints one JSON line: wall time of the crawl (bootstrap + lookups [+ probes]; the host is opened and the start-up
heap frozen before, as in the monitor's DHT worker), of judging it and of storing it, CPU time, peak RSS, and what
was found (keys, records, servers, RPCs).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import resource
import sys
import time
from pathlib import Path

import trio


def _measured_crawl(cfg: dict) -> dict:
    from dht.net.transport import open_host
    from dht.swarm import SwarmClient
    from monitor.crawl.crawler import crawl_swarm
    from monitor.crawl.pipeline import judge, record
    from monitor.demo import demo_config
    from monitor.demo.scenario import Scenario, ScenarioParams
    from monitor.heap import freeze_startup_heap
    from monitor.store.sqlite import Store

    scenario = Scenario(ScenarioParams(**cfg["scenario"]))
    config = demo_config(scenario, cfg["peers"], port=0, db_path=cfg["db"], crawl_interval=60)
    swarm = config.swarms[0]
    swarm = dataclasses.replace(
        swarm,
        crawl_timeout=float(cfg.get("crawl_timeout", 600)),
        rpc_timeout=float(cfg.get("rpc_timeout", 30)),
        reachability=dataclasses.replace(swarm.reachability, enabled=bool(cfg.get("reachability", False))),
    )
    store = Store(cfg["db"])
    writer = store.writer()
    try:
        crawl_id = writer.begin_crawl(swarm.name, time.time()).result()

        async def crawl():
            async with open_host() as host:
                freeze_startup_heap()  # as the monitor's DHT worker does once its host is open (monitor.crawl.worker)
                client = SwarmClient(host, timeout=swarm.rpc_timeout, max_keys_per_request=swarm.max_keys_per_request)
                started = time.process_time(), time.perf_counter()
                return await crawl_swarm(client, swarm), started

        outcome, (cpu0, t0) = trio.run(crawl)
        t1 = time.perf_counter()
        snapshot = judge(outcome, swarm)
        t2 = time.perf_counter()
        summary = writer.submit(record, crawl_id, snapshot).result()
        t3 = time.perf_counter()
        cpu = time.process_time() - cpu0
    finally:
        writer.close()
        store.close()
    servers = {row.peer_id for report in snapshot.models for row in report.servers}
    return {
        "crawl_s": t1 - t0,
        "judge_s": t2 - t1,
        "store_s": t3 - t2,
        "total_s": t3 - t0,
        "cpu_s": cpu,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "status": summary.status,
        "error": summary.error,
        "keys": outcome.raw.stats.keys,
        "records": outcome.raw.stats.records,
        "rpcs": outcome.raw.stats.rpcs,
        "models": len(snapshot.models),
        "blocks": sum(r.model.num_blocks for r in snapshot.models),
        "servers_found": len(servers),
        "peers_contacted": outcome.raw.stats.peers_contacted,
    }


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    result = _measured_crawl(json.loads(Path(argv[0]).read_text()))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
