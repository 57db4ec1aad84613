"""``GET /api/v1/events``: the event hub (:mod:`monitor.web.events`) as a Server-Sent Events stream.

A stream starts with ``retry:`` and what :meth:`EventHub.catch_up` gives (``hello``, missed events or ``resync``),
then one frame per event and a ``: keep-alive`` comment after each quiet ``events_keepalive_seconds``. A client
address already holding ``events_max_per_client`` streams gets a 429, a full hub a 503 (both JSON, with
``Retry-After``): the address is the TCP peer's, so behind a reverse proxy every client shares the proxy's. Every write
has a deadline: a client that stops reading is dropped instead of holding a handler and its buffers. A client that
went away is noticed at the next write (at the latest the next keep-alive), which ends its handler and frees its
slot. On shutdown the hub closes first (``on_shutdown``), so every stream ends before the server waits for
handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from .context import CTX
from .events import CLIENT_FULL, EventHub, TooManyClients, client_key

RETRY_MS = 5000  # how long a browser waits before reconnecting
WRITE_TIMEOUT = 30.0  # seconds a single write may wait for a slow client
BUSY_RETRY_AFTER = 60  # seconds, in the 503's Retry-After
KEEPALIVE = b": keep-alive\n\n"


async def events(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    hub = ctx.events
    try:
        sub = hub.subscribe(request.headers.get("Last-Event-ID"), client=client_key(request.remote))
    except TooManyClients as e:
        # the error middleware turns these into {"error": {"status": ..., "message": <reason>}}, Retry-After kept
        retry = {"Retry-After": str(BUSY_RETRY_AFTER)}
        if e.reason == CLIENT_FULL:
            raise web.HTTPTooManyRequests(reason="Too many event streams from your address", headers=retry) from None
        raise web.HTTPServiceUnavailable(reason="Too many event-stream clients, retry later", headers=retry) from None
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
    try:
        await _write(response, request, f"retry: {RETRY_MS}\n\n".encode())
        while True:
            frames = await sub.next_frames(ctx.settings.events_keepalive_seconds)
            if frames == []:
                break  # dropped for falling behind, or shutting down
            await _write(response, request, b"".join(frames) if frames else KEEPALIVE)
    except (ConnectionError, TimeoutError):
        pass  # the client went away or stopped reading: nothing to tell it
    finally:
        hub.unsubscribe(sub)
    return response


async def _write(response: web.StreamResponse, request: web.Request, data: bytes) -> None:
    async with asyncio.timeout(WRITE_TIMEOUT):
        if not response.prepared:
            await response.prepare(request)
        await response.write(data)


async def event_hub(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: the hub lives with the app; closed (again) on the way out, after ``on_shutdown``."""
    try:
        yield
    finally:
        app[CTX].events.close()


async def end_streams(app: web.Application) -> None:
    """``on_shutdown``: end every stream now, so the server's graceful wait for handlers is not spent on them."""
    hub: EventHub = app[CTX].events
    hub.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await hub.wait_for_clients(0)
