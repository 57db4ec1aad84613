"""Alert delivery: every event to the log, and to each configured webhook as a JSON POST (asyncio + aiohttp).

Delivery never blocks a crawl: :meth:`AlertDispatcher.submit` only schedules tasks and returns. Each POST has
its own timeout; failures (network errors, timeouts, 429 and 5xx replies) are retried up to ``max_attempts``
times with exponential backoff; other 4xx replies are final (the receiver will not change its mind). At most
``max_pending`` deliveries wait at once; beyond that new ones are dropped with a warning, so a dead receiver
cannot grow memory without bound. Webhook URLs often carry a secret token in their path or query: logs only ever
show :func:`mask_url`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from .rules import AlertEvent

log = logging.getLogger(__name__)

MAX_BACKOFF = 300.0
USER_AGENT = "petals-swarm-monitor"


def mask_url(url: str) -> str:
    """``https://hooks.example.com/services/T0/B0/secret?x=1`` → ``https://hooks.example.com/***``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    if ":" in host:
        host = f"[{host}]"
    hidden = "/***" if (parts.path not in ("", "/") or parts.query or parts.fragment) else ""
    return f"{parts.scheme}://{host}{port}{hidden}"


def event_text(event: AlertEvent) -> str:
    """One line a person reads in chat: ``[FIRING critical] demo: model X is broken: ...``."""
    label = "FIRING" if event.status == "firing" else "RESOLVED"
    return f"[{label} {event.severity}] {event.swarm}: {event.message}"


def event_document(event: AlertEvent) -> dict[str, Any]:
    """The generic payload (also the shape of ``/api/v1/alerts`` events)."""
    return {
        "swarm": event.swarm,
        "kind": event.kind,
        "subject": event.subject,
        "status": event.status,
        "severity": event.severity,
        "ts": event.ts,
        "message": event.message,
        "crawl_id": event.crawl_id,
        "fired_at": event.fired_at,
    }


def payload(event: AlertEvent, fmt: str) -> dict[str, Any]:
    """``generic``: the event document with ``text``; ``discord``: ``{"content"}``; ``slack``: ``{"text"}``."""
    text = event_text(event)
    if fmt == "discord":
        return {"content": text[:2000]}  # Discord's message limit
    if fmt == "slack":
        return {"text": text}
    return {"text": text, "event": event_document(event)}


def backoff_delay(attempt: int, base: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): base, 2·base, 4·base … capped."""
    return min(MAX_BACKOFF, base * (2 ** (attempt - 1)))


def is_retryable(status: int) -> bool:
    return status == 429 or status >= 500


async def post_with_retries(
    session: Any,
    hook: Any,
    body: dict[str, Any],
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> bool:
    """POST ``body`` to ``hook.url``; True once a 2xx reply came back. ``hook`` has url, timeout, max_attempts,
    backoff_seconds (``monitor.config.WebhookConfig``)."""
    import aiohttp

    target = mask_url(hook.url)
    for attempt in range(1, hook.max_attempts + 1):
        try:
            async with session.post(
                hook.url,
                json=body,
                timeout=aiohttp.ClientTimeout(total=hook.timeout),
                headers={"User-Agent": USER_AGENT},
                allow_redirects=False,
            ) as reply:
                status = reply.status
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            problem = "timed out" if isinstance(e, TimeoutError) else type(e).__name__
        else:
            if 200 <= status < 300:
                return True
            problem = f"HTTP {status}"
            if not is_retryable(status):
                log.warning("webhook %s refused an alert (%s); not retrying", target, problem)
                return False
        if attempt < hook.max_attempts:
            delay = backoff_delay(attempt, hook.backoff_seconds)
            log.info("webhook %s: attempt %d %s; retrying in %.1f s", target, attempt, problem, delay)
            await sleep(delay)
        else:
            log.warning("webhook %s: giving up after %d attempts (%s)", target, attempt, problem)
    return False


def log_event(event: AlertEvent) -> None:
    level = logging.WARNING if event.status == "firing" else logging.INFO
    log.log(level, "alert %s", event_text(event))


class AlertDispatcher:
    """Owns the aiohttp session and the in-flight deliveries. Create, ``start()`` and ``close()`` on one loop."""

    def __init__(
        self,
        webhooks: Iterable[Any],
        *,
        max_pending: int = 1000,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.webhooks = tuple(webhooks)
        self.max_pending = max_pending
        self._sleep = sleep
        self._session: Any = None
        self._tasks: set[asyncio.Task] = set()
        self.delivered = self.failed = self.dropped = 0

    async def start(self) -> None:
        if self.webhooks and self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession()

    def submit(self, events: Iterable[AlertEvent]) -> None:
        """Log each event and schedule its webhook deliveries; returns at once."""
        for event in events:
            log_event(event)
            for hook in self.webhooks:
                if event.status == "resolved" and not hook.send_resolved:
                    continue
                if self._session is None:
                    log.warning("alert dispatcher not started: webhook %s skipped", mask_url(hook.url))
                    continue
                if len(self._tasks) >= self.max_pending:
                    self.dropped += 1
                    log.warning("too many alert deliveries pending: dropped one for %s", mask_url(hook.url))
                    continue
                task = asyncio.ensure_future(self._deliver(hook, event))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(self, hook: Any, event: AlertEvent) -> None:
        try:
            ok = await post_with_retries(self._session, hook, payload(event, hook.format), sleep=self._sleep)
        except Exception:
            log.exception("webhook %s: delivery crashed", mask_url(hook.url))
            ok = False
        if ok:
            self.delivered += 1
        else:
            self.failed += 1

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for pending deliveries; True if none is left."""
        if not self._tasks:
            return True
        _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        return not pending

    async def close(self, grace: float = 5.0) -> None:
        """Give pending deliveries ``grace`` seconds, cancel the rest, close the session."""
        await self.drain(grace)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None
