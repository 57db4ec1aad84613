"""The monitor's web app in a process of its own, for ``bench.web_load`` (and ``tests/web/test_load.py``).

``python -m bench._load_server CONFIG.json``; CONFIG has ``db`` (a store file) and optionally ``peers`` +
``scenario`` (demo swarm parameters) + ``interval``: then the full app runs (``monitor.app.build_app``: the
scheduler crawls those peers every ``interval`` seconds), else only the web over the existing file (with
``fake_prober``: ``is_reachable`` answers from an instant stand-in prober).

Prints one line ``READY <url>`` on stdout once serving. SIGTERM stops it. Besides the app's routes it answers
``GET /_bench/stats[?reset=1]``: the event loop's lag (how late a 5 ms timer fires, i.e. the longest stretch the
loop was busy) since the last reset, the process's RSS, the crawls stored, as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

TICK = 0.005  # the lag probe's timer


class LagProbe:
    """Fires a ``TICK`` timer forever and records how late each one is (the loop's stalls)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.max_lag = 0.0

    def reset(self) -> None:
        self.samples, self.max_lag = [], 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(TICK)
            lag = max(0.0, loop.time() - t0 - TICK)
            self.max_lag = max(self.max_lag, lag)
            if len(self.samples) < 1_000_000:
                self.samples.append(lag)

    def summary(self) -> dict[str, float | int]:
        ordered = sorted(self.samples)
        pick = (lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000) if ordered else (lambda q: 0.0)
        return {"lag_max_ms": self.max_lag * 1000, "lag_p50_ms": pick(0.5), "lag_p99_ms": pick(0.99),
                "lag_samples": len(ordered)}  # fmt: skip


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _count_crawls(db: str) -> dict[str, int]:
    """Crawls by status, read by a store of its own (an SQLite file or a PostgreSQL URL)."""
    from monitor.store.sqlite import Store

    with Store(db, create=False) as store, store._read() as conn:
        return dict(conn.execute("SELECT status, COUNT(*) FROM crawls GROUP BY status").fetchall())


async def _instant_prober(peer_id: str):
    """``fake_prober``: every peer answers in 10 ms (is_reachable's rate limit and cache, without a DHT)."""
    import time

    from monitor.snapshot import Reachability

    await asyncio.sleep(0.01)
    return Reachability(peer_id, ok=True, checked_at=time.time(), latency=0.01)


def _make_app(cfg: dict[str, Any]) -> web.Application:
    from monitor.config import Config

    if cfg.get("peers"):
        from monitor.app import build_app
        from monitor.demo import demo_config
        from monitor.demo.scenario import Scenario, ScenarioParams

        scenario = Scenario(ScenarioParams(**cfg["scenario"]))
        config = demo_config(scenario, cfg["peers"], port=0, db_path=cfg["db"], crawl_interval=cfg["interval"])
        if cfg.get("crawl_worker"):
            config = dataclasses.replace(config, crawl_worker=cfg["crawl_worker"])
        return build_app(config)
    from monitor.store.sqlite import Store
    from monitor.web import create_app

    store = Store(cfg["db"], create=False)
    app = create_app(Config(), store=store, prober=_instant_prober if cfg.get("fake_prober") else None)

    async def close_store(_app: web.Application):
        yield
        store.close()

    app.cleanup_ctx.append(close_store)
    return app


async def serve(cfg: dict[str, Any]) -> None:
    app = _make_app(cfg)
    probe = LagProbe()

    async def stats(request: web.Request) -> web.Response:
        doc = {**probe.summary(), "rss_kb": rss_kb(), "crawls": await asyncio.to_thread(_count_crawls, cfg["db"])}
        if request.query.get("reset"):
            probe.reset()
        return web.json_response(doc)

    app.router.add_get("/_bench/stats", stats)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    lag_task = asyncio.create_task(probe.run())
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        host, port = runner.addresses[0][:2]
        print(f"READY http://{host}:{port}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
    finally:
        lag_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lag_task
        await runner.cleanup()


def main(argv: list[str]) -> int:
    cfg = json.loads(Path(argv[0]).read_text())
    if cfg.get("switch_interval"):  # an experiment knob: how fast the GIL is handed to the event loop
        sys.setswitchinterval(float(cfg["switch_interval"]))
    logging.basicConfig(level=cfg.get("log_level", "WARNING"), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
