"""The whole app in this process with ``crawl_worker = "thread"`` (the default, a worker process, is what
tests/monitor/test_demo_command.py runs): scheduled crawls of a local demo swarm are crawled, judged, recorded and
served, and stopping ends cleanly."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import urllib.request

import aiohttp

from monitor.app import serve_async
from monitor.demo import background_swarm, demo_config
from monitor.demo.scenario import Scenario, ScenarioParams

DEADLINE = 90.0  # swarm start + first crawl, on a loaded 2-core machine


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as reply:  # 127.0.0.1 only
        return json.loads(reply.read())


def test_scheduled_crawls_are_served_with_the_thread_worker(tmp_path, monkeypatch):
    import monitor.app
    from monitor.crawl.scheduler import CrawlScheduler

    order = []  # an entry point's app freezes its start-up heap once, before the first crawl can start
    monkeypatch.setattr(monitor.app, "freeze_startup_heap", lambda: order.append("freeze"))
    start = CrawlScheduler.start
    monkeypatch.setattr(CrawlScheduler, "start", lambda self: (order.append("scheduler"), start(self))[1])
    scenario = Scenario(ScenarioParams(update_period=4.0))
    expected = {m.dht_prefix for m in scenario.config_models()}
    with background_swarm(scenario) as peers:
        config = demo_config(scenario, peers, port=0, db_path=str(tmp_path / "m.db"), crawl_interval=2.0)
        config = dataclasses.replace(config, crawl_worker="thread")

        async def main() -> dict:
            stop, ready = asyncio.Event(), asyncio.Event()
            urls: list[str] = []

            def on_ready(url: str) -> None:
                urls.append(url)
                ready.set()

            server = asyncio.create_task(serve_async(config, on_ready=on_ready, stop=stop, freeze_heap=True))
            try:
                async with asyncio.timeout(DEADLINE):
                    await ready.wait()
                    # the crawl job announces each stored crawl on /api/v1/events: no polling needed
                    async with aiohttp.ClientSession() as session, session.get(urls[0] + "api/v1/events") as events:
                        while frame := await events.content.readuntil(b"\n\n"):
                            if not frame.startswith(b"id: ") or b"\nevent: crawl\n" not in frame:
                                continue  # retry, hello, keep-alives, alerts
                            try:
                                doc = await asyncio.to_thread(_get_json, urls[0] + "api/v1/state")
                            except Exception:  # that crawl failed: no good crawl yet
                                continue
                            if {m["dht_prefix"] for m in doc.get("model_reports", [])} >= expected:
                                return doc
            finally:
                stop.set()
                async with asyncio.timeout(30):
                    await server

        def stop_handler(signum, frame):  # as monitor.stop_signals installs one
            raise KeyboardInterrupt

        outer = signal.signal(signal.SIGTERM, stop_handler)
        try:
            doc = asyncio.run(main())
            assert signal.getsignal(signal.SIGTERM) is stop_handler  # given back after serving, not SIG_DFL
        finally:
            signal.signal(signal.SIGTERM, outer)
    assert order == ["freeze", "scheduler"]
    reports = {m["dht_prefix"]: m for m in doc["model_reports"]}
    assert any(row["state"] == "online" for m in reports.values() for row in m["server_rows"])
