"""``python -m monitor serve``: the web app plus scheduled crawls, with every resource owned by the app lifecycle.

Startup order (reversed on shutdown, through aiohttp's ``cleanup_ctx``): the store's writer thread (the only
writer; it marks crawls interrupted by a crash as failed), the alert service (restores what was firing), the
DHT side with the libp2p host (a child process, ``monitor.crawl.worker``, or a trio thread,
``monitor.crawl.bridge``), then the scheduler. Crawls are crawled and judged on the DHT side; this process only
records them. Pages read through read-only connections while a crawl is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio
from aiohttp import web

from dht.errors import DHTError
from dht.net.transport import open_host
from dht.swarm import SwarmClient

from .alerts.rules import AlertEvent
from .alerts.service import AlertService
from .config import Config, SwarmConfig
from .crawl.bridge import TrioBridge
from .crawl.crawler import HOST_CALL_SLOTS, ReachabilityCache, crawl_swarm
from .crawl.pipeline import judge, record
from .crawl.scheduler import CrawlScheduler, make_trigger
from .crawl.worker import ProcessBridge
from .geo import lookup_from_config
from .heap import freeze_startup_heap
from .rules.reachability import parse_rpc_info, reachability_from_error
from .snapshot import Reachability, Snapshot
from .store.history import CrawlSummary
from .store.sqlite import LeadLost, Store, WriterThread
from .web import crawl_events_of, create_app
from .web.events import EventHub, alert_event, crawl_event

Bridge = TrioBridge | ProcessBridge  # the same calls: run(fn, *args), start(), stop()

log = logging.getLogger(__name__)

RETENTION_EVERY = 3600.0  # seconds between retention passes


class DHTRuntime:
    """What lives with the trio loop (a thread, or the DHT worker process): the libp2p host, one client per
    swarm, the reachability caches and the offline GeoIP lookup the judge uses."""

    def __init__(self, host: Any, config: Config) -> None:
        self.host = host
        self.clients = {
            s.name: SwarmClient(host, timeout=s.rpc_timeout, max_keys_per_request=s.max_keys_per_request)
            for s in config.swarms
        }
        first = config.swarms[0]
        self.default_client = self.clients[first.name]
        self.caches = {s.name: ReachabilityCache(s.reachability.cache_ttl) for s in config.swarms}
        self.geo = lookup_from_config(config.geo)


@contextlib.asynccontextmanager
async def _runtime(config: Config) -> AsyncIterator[DHTRuntime]:
    async with open_host(max_concurrent_calls=HOST_CALL_SLOTS) as host:
        yield DHTRuntime(host, config)


async def _crawl_and_judge(rt: DHTRuntime, swarm: SwarmConfig) -> Snapshot:
    """Crawl on trio, then judge on a worker thread of the same process (the loop keeps serving probes)."""
    outcome = await crawl_swarm(rt.clients[swarm.name], swarm, cache=rt.caches[swarm.name])
    return await trio.to_thread.run_sync(functools.partial(judge, outcome, swarm, geo=rt.geo))


async def _probe_in_trio(rt: DHTRuntime, peer_id: str, timeout: float) -> Reachability:
    """``is_reachable``: dial only this peer (addresses from the peerstore or kad, never from the client)."""
    t0 = trio.current_time()
    try:
        reply, rtt = await rt.default_client.rpc_info(peer_id, timeout=timeout)
    except (DHTError, ValueError) as e:
        return reachability_from_error(peer_id, e, time.time(), timeout=timeout, latency=trio.current_time() - t0)
    return parse_rpc_info(reply, peer_id, time.time(), rtt)


def _read_outcome(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def crawl_job(
    swarm: SwarmConfig,
    bridge: Bridge,
    writer: WriterThread,
    *,
    alerts: AlertService | None = None,
    events: EventHub | None = None,
    vantage: str | None = None,
) -> Callable[[], Any]:
    """The scheduled coroutine for one swarm: begin → crawl and judge (DHT side) → record (writer) → alerts.
    ``vantage``: this process's vantage point; the crawl's probes are stored as its results.

    ``events``: the web's live-event hub, told here, once the writer has stored the crawl (``crawl``) and once
    the alert service has recorded what changed (one ``alert`` per event).

    A crawl whose end the writer refuses because this replica lost the swarm's lock meanwhile (``LeadLost``: its
    database connection was replaced, another replica may have taken over) is dropped with one log line: no alert
    evaluation, no event; the next scheduled run asks for the lock again."""

    def tell(summary: CrawlSummary | None, changes: list[AlertEvent]) -> None:
        if events is None:
            return
        if summary is not None:
            events.publish("crawl", crawl_event(summary))
        for change in changes:
            events.publish("alert", alert_event(change))

    standing_by = False

    def taken_over(crawl_id: int, e: LeadLost) -> None:
        nonlocal standing_by
        log.warning("crawl %d of %s taken over, not recorded: %s", crawl_id, swarm.name, e)
        standing_by = True  # leading again later means taking over: the alert state is reloaded then

    async def run() -> None:
        nonlocal standing_by
        if not await asyncio.wrap_future(writer.lead(swarm.name)):  # another replica crawls it (PostgreSQL)
            log.debug("swarm %s: its crawl lock is held by another replica", swarm.name)  # each attempt
            if not standing_by:
                log.info("swarm %s is crawled by another replica; this one stands by", swarm.name)
            standing_by = True
            return
        if standing_by:
            log.info("taking over the crawls of swarm %s", swarm.name)
            if alerts is not None:
                await alerts.reload()
        standing_by = False
        crawl_id = await asyncio.wrap_future(writer.begin_crawl(swarm.name, time.time(), vantage))
        try:
            snapshot = await bridge.run(_crawl_and_judge, swarm)
            summary = await asyncio.wrap_future(writer.submit(record, crawl_id, snapshot))
        except LeadLost as e:
            taken_over(crawl_id, e)
            return
        except BaseException as e:
            error = f"{type(e).__name__}: {e}"
            failed: CrawlSummary | None = None
            ending = asyncio.wrap_future(writer.fail_crawl(crawl_id, error))
            # A second cancel at stop abandons the shield: the writer's answer (e.g. "already succeeded", when the
            # first cancel came while the result was being stored) is still read, so asyncio logs no traceback.
            ending.add_done_callback(_read_outcome)
            try:
                failed = await asyncio.shield(ending)
            except LeadLost as lost:
                taken_over(crawl_id, lost)
                raise e from None
            except Exception:
                pass
            if isinstance(e, Exception):
                changes: list[AlertEvent] = []
                if alerts is not None:
                    changes = await _alerts_after(alerts.after_failure(swarm.name, time.time(), error, crawl_id))
                tell(failed, changes)
            raise
        changes = []
        if alerts is not None:
            if summary.status == "succeeded":
                changes = await _alerts_after(alerts.after_success(snapshot))
            else:
                ts = summary.finished_at or time.time()
                changes = await _alerts_after(alerts.after_failure(swarm.name, ts, summary.error or "failed", crawl_id))
        tell(summary, changes)
        log.info(
            "crawl %d of %s: %s in %.1f s (%s)",
            summary.id,
            swarm.name,
            summary.status,
            snapshot.duration,
            summary.error or f"{summary.records} records",
        )

    return run


async def _alerts_after(step: Any) -> list[AlertEvent]:
    """Run an alert step; its failure is logged, never the crawl's. Returns the events it recorded."""
    try:
        return list(await step or ())
    except Exception:
        log.exception("alert evaluation failed")
        return []


def make_bridge(config: Config) -> Bridge:
    """Where the DHT runs: a child process (``crawl_worker = "process"``, the default: crawls use the other
    core and never hold the web's GIL) or a thread of this process (``"thread"``: one process, less memory)."""
    factory = functools.partial(_runtime, config)
    if config.crawl_worker == "process":
        return ProcessBridge(factory, name="petals-monitor-dht")
    return TrioBridge(factory, name="dht")


def build_app(
    config: Config, *, bridge_factory: Callable[[], Bridge] | None = None, freeze_heap: bool = False
) -> web.Application:
    """The full application: web + scheduler + DHT. Nothing starts until the app does. ``freeze_heap``: once the
    DHT is up and before the first crawl, freeze this process's start-up heap (:mod:`monitor.heap`; only for a
    process the app owns, never inside a test runner)."""
    store = Store(config.db_path)
    holder: dict[str, Any] = {}

    async def prober(peer_id: str) -> Reachability:
        bridge: Bridge = holder["bridge"]
        timeout = config.swarms[0].reachability.timeout
        return await bridge.run(_probe_in_trio, peer_id, timeout)

    scheduler = CrawlScheduler()
    app = create_app(config, store=store, prober=prober, scheduler_info=scheduler.info)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        writer = await asyncio.to_thread(store.writer)
        if writer.interrupted:
            log.warning("%d crawl(s) were interrupted by a crash and are now marked failed", writer.interrupted)
        bridge = bridge_factory() if bridge_factory else make_bridge(config)
        alerts = await AlertService.open(config.alerts, store, writer, config.route) if config.alerts.enabled else None
        try:
            await asyncio.to_thread(bridge.start)
            holder["bridge"] = bridge
            for swarm in config.swarms:
                trigger = make_trigger(interval_seconds=swarm.interval_seconds, cron=swarm.cron)
                scheduler.add_swarm(
                    swarm.name,
                    trigger,
                    crawl_job(
                        swarm, bridge, writer, alerts=alerts, events=crawl_events_of(app), vantage=config.vantage.name
                    ),
                )
            retention = asyncio.create_task(_retention_loop(config, writer))
            if freeze_heap:
                freeze_startup_heap()
            scheduler.start()
            try:
                yield
            finally:
                await scheduler.stop()
                retention.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await retention
        finally:
            await asyncio.to_thread(bridge.stop)
            if alerts is not None:
                await alerts.close()
            await asyncio.to_thread(writer.close)
            store.close()

    app.cleanup_ctx.append(lifecycle)
    return app


async def _retention_loop(config: Config, writer: WriterThread) -> None:
    r = config.retention
    while True:
        try:
            await asyncio.wrap_future(writer.apply_retention(time.time(), **dataclasses.asdict(r)))
        except Exception:
            log.exception("retention pass failed")
        await asyncio.sleep(RETENTION_EVERY)


def serve(config: Config, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Run until interrupted: Ctrl-C or SIGTERM stop the scheduler, the DHT and the writer cleanly.

    This is a process's entry point (the CLI, the demo), so the start-up heap is frozen before the first crawl
    (:mod:`monitor.heap`); :func:`serve_async`, which tests run inside pytest's process, leaves it alone."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_async(config, on_ready=on_ready, freeze_heap=True))


async def serve_async(
    config: Config,
    *,
    on_ready: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    freeze_heap: bool = False,
) -> None:
    """Serve ``build_app(config)`` until ``stop`` is set or SIGINT or SIGTERM arrives (both alike: a clean stop,
    also when SIGINT was inherited as ignored). ``on_ready`` gets the real URL (port 0 picks a free port)."""
    app = build_app(config, freeze_heap=freeze_heap)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.web.host, config.web.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        url = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
        log.info("serving on %s", url)
        if on_ready is not None:
            on_ready(url)
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        handled = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread, or no signals
                before = signal.getsignal(signum)
                loop.add_signal_handler(signum, stop.set)
                handled.append((signum, before))
        try:
            await stop.wait()
        finally:
            for signum, before in handled:
                loop.remove_signal_handler(signum)
                # the handlers from before (monitor.stop_signals): a second signal during the clean-up below
                # stops it as KeyboardInterrupt, not as SIGTERM's default, which kills the process unwound
                signal.signal(signum, before)
    finally:
        await runner.cleanup()
