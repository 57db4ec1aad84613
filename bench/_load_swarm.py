"""A demo swarm (``monitor.demo``) in a process of its own, for the web load and scaling benchmarks.

``python -m bench._load_swarm CONFIG.json``; CONFIG has ``scenario`` (``ScenarioParams`` fields) and optionally
``options`` (``SwarmOptions`` fields) and ``nice`` (a niceness increment: the swarm stands in for other
machines, so it may be told to take the CPU only when the monitor does not). Prints ``PEERS <json list of
multiaddrs>`` once the first announcements are stored (with ``full_period``: once every server has announced),
logs its counters every 5 s, then runs until SIGTERM or SIGINT. Kept apart from the monitor so its CPU is not the
monitor's (a real swarm is other machines).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path

import trio

STARTUP_TIMEOUT = 300.0
log = logging.getLogger("bench.swarm")


async def run(cfg: dict) -> None:
    from monitor.demo.scenario import Scenario, ScenarioParams
    from monitor.demo.swarm import SwarmOptions, run_swarm

    scenario = Scenario(ScenarioParams(**cfg["scenario"]))
    options = SwarmOptions(**cfg.get("options", {}))
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with run_swarm(scenario, options) as swarm:
            with trio.fail_after(STARTUP_TIMEOUT):
                await swarm.first_announcement_stored.wait()
                if cfg.get("full_period"):  # every server's first announcement sent (their phases span a period)
                    while swarm.now() < scenario.params.update_period + 2 * options.tick:
                        await trio.sleep(0.1)
            log.warning("demo swarm ready at t=%.1f s: %s", swarm.now(), swarm.stats)
            print("PEERS " + json.dumps(swarm.initial_peers), flush=True)
            nursery_done = trio.Event()

            async def report() -> None:
                while not nursery_done.is_set():
                    await trio.sleep(5)
                    log.warning("demo swarm at t=%.1f s: %s", swarm.now(), swarm.stats)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(report)
                async for _ in signals:
                    break
                nursery_done.set()
                nursery.cancel_scope.cancel()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = json.loads(Path(argv[0]).read_text())
    if cfg.get("nice"):
        os.nice(int(cfg["nice"]))
    trio.run(run, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
