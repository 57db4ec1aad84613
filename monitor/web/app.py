"""The app factory: ``create_app(config, store=...)`` wires settings, templates, routes and resources.

The store is opened and closed by its owner (the CLI or a test); the app owns only its read threads, which its
``cleanup_ctx`` starts and stops. ``prober`` (async, peer id → Reachability) backs ``/api/v1/is_reachable``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from .context import CTX, Prober, SchedulerInfo, WebContext
from .events import EventHub
from .live_feed import LiveFeed
from .metrics import COLLECTOR, METRICS_LOCK, make_registry
from .middleware import error_middleware, security_headers
from .ratelimit import TokenBuckets, TTLCache
from .reader import ReadExecutor, StoreReader
from .routes import setup_routes
from .settings import WebSettings
from .sse import end_streams, event_hub
from .templating import asset_dirs, compile_templates, make_environment


async def _read_threads(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CTX]
    ctx.reads = ReadExecutor(ctx.store, workers=ctx.settings.read_workers, deadline=ctx.settings.read_timeout_seconds)
    feed: LiveFeed | None = None
    try:
        await ctx.reads.start()
        feed = LiveFeed.of(ctx.reads, ctx.events)  # PostgreSQL: every replica's crawls and alerts, live
        if feed is not None:
            feed.start()
        await asyncio.get_running_loop().run_in_executor(None, compile_templates, ctx.env)
        yield
    finally:
        if feed is not None:
            await feed.stop()
        for future in list(ctx.probes_in_flight.values()):
            future.cancel()
        reads, ctx.reads = ctx.reads, None
        await asyncio.get_running_loop().run_in_executor(None, reads.close)


def create_app(
    config: Any,
    *,
    store: StoreReader,
    prober: Prober | None = None,
    scheduler_info: SchedulerInfo | None = None,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> web.Application:
    """Build the web application. ``clock`` (Unix time) and ``monotonic`` (rate limits) are injectable for tests."""
    settings = WebSettings.from_config(config)
    templates, static = asset_dirs()
    registry, collector = make_registry(settings.official_metrics_swarm, settings.session_tokens)
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.client_max_size)
    app[CTX] = WebContext(
        store=store,
        settings=settings,
        env=make_environment(templates),
        static_dir=static,
        clock=clock,
        monotonic=monotonic,
        prober=prober,
        scheduler_info=scheduler_info,
        limiter=TokenBuckets(burst=settings.reachability_burst, rate=settings.reachability_per_second, clock=monotonic),
        reach_cache=TTLCache(settings.reachability_cache_seconds, clock=monotonic),
        registry=registry,
        events=EventHub(max_clients=settings.events_max_clients, max_per_client=settings.events_max_per_client),
    )
    app[COLLECTOR] = collector
    app[METRICS_LOCK] = asyncio.Lock()  # binds to a loop only when first used
    app.cleanup_ctx.append(_read_threads)
    app.cleanup_ctx.append(event_hub)
    app.on_shutdown.append(end_streams)
    app.on_response_prepare.append(security_headers)
    setup_routes(app, static)
    return app


def events_of(app: web.Application) -> EventHub:
    """The app's live-event hub: what stores crawls and alert changes publishes to it (``monitor.app``)."""
    return app[CTX].events


def crawl_events_of(app: web.Application) -> EventHub | None:
    """The hub a crawl job of this process should tell, or None where the web publishes every writer's events
    itself (PostgreSQL: ``monitor.web.live_feed``), so that none is published twice."""
    location = getattr(app[CTX].store, "location", None)
    return None if getattr(location, "is_postgres", False) else events_of(app)
