"""On PostgreSQL, the live events of every replica's writes: what the change watch hears, published on this web's hub.

With SQLite the crawl job publishes its own events (one process writes the file). On PostgreSQL several processes
write (``serve`` replicas, ``crawl --once``), and a replica that stands by used to publish nothing: its pages only
noticed a new crawl at their next check. So there, every replica, the crawling one included, publishes from its
change watch (``monitor.web.changes``) the ``crawl`` and ``alert`` events that commits announce
(``monitor.store.notices``), read back by id, in commit order; the crawl job publishes nothing (``monitor.app``),
so no event is published twice. Notices lost while the watch was down (or beyond its bound) become one ``resync``
once it is back: pages then fetch themselves again. A notice replayed (anyone who may connect can NOTIFY) republishes
nothing: a crawl or alert event is published only when its id is above the last one published for its swarm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from ..store.notices import Notice, parse_notice
from .changes import REOPEN_SECONDS, PgChangeWatch
from .events import EventHub, alert_event, crawl_event
from .reader import ReadExecutor

log = logging.getLogger(__name__)

MAX_ALERT_ROWS = 1000  # rows read to find one notice's alert events (its ids are one transaction's, close together)
MISSED = "events may have been missed: the database connection was lost"
MAX_SWARMS = 1024  # swarms whose newest published ids are kept (the oldest one known is forgotten beyond)


class NewestPublished:
    """The highest id published for each swarm. One writer leads a swarm at a time and writes its crawls and
    alert events in id order, so an id at or below it was published already (or is a replay)."""

    def __init__(self, max_swarms: int = MAX_SWARMS) -> None:
        self._max_swarms = max_swarms
        self._ids: dict[str, int] = {}

    def is_new(self, swarm: str, row_id: int) -> bool:
        return row_id > self._ids.get(swarm, 0)

    def mark(self, swarm: str, row_id: int) -> None:
        if swarm not in self._ids and len(self._ids) >= self._max_swarms:
            del self._ids[next(iter(self._ids))]
        self._ids[swarm] = max(row_id, self._ids.get(swarm, 0))


class LiveFeed:
    """Runs on the event loop from :meth:`start` to :meth:`stop` (the app's ``cleanup_ctx``)."""

    def __init__(self, reads: ReadExecutor, watch: PgChangeWatch, hub: EventHub) -> None:
        self._reads = reads
        self._watch = watch
        self._hub = hub
        self._wake = asyncio.Event()
        self._fd: int | None = None
        self._opened = 0  # the watch's ``opened`` when its socket was last followed
        self._missed = False
        self._task: asyncio.Task | None = None
        self._crawls = NewestPublished()
        self._alerts = NewestPublished()

    @classmethod
    def of(cls, reads: ReadExecutor, hub: EventHub) -> LiveFeed | None:
        """The feed for ``reads``' store: one on PostgreSQL, None otherwise."""
        watch = reads.watch
        return cls(reads, watch, hub) if isinstance(watch, PgChangeWatch) else None

    def start(self) -> None:
        self._watch.on_notice = self._wake.set
        self._task = asyncio.create_task(self._run(), name="live-feed")

    async def stop(self) -> None:
        self._watch.on_notice = None
        self._follow(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _follow(self, fd: int | None) -> None:
        """Wake on ``fd`` (the watch's socket) and on nothing else; None: on nothing.

        The loop watches a duplicate the feed owns and closes: the watch closes its old connection on a read
        thread when it reopens, and the number of a closed descriptor can go at once to a socket just accepted."""
        loop = asyncio.get_running_loop()
        if self._fd is not None:
            loop.remove_reader(self._fd)
            os.close(self._fd)
        self._fd = None if fd is None else os.dup(fd)
        if self._fd is not None:
            loop.add_reader(self._fd, self._wake.set)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                busy = await self._pass()
            except Exception as e:  # whatever went wrong, the feed goes on: pages resync once the watch is back
                log.warning("live feed: a pass failed (%s); pages will be told to resync", type(e).__name__)
                self._missed = True
                busy = False
            if not busy:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(REOPEN_SECONDS):  # also how a watch that is down gets reopened
                        await self._wake.wait()

    async def _pass(self) -> bool:
        """Take in what the watch heard and publish it; returns whether there was any (then look again at once)."""
        self._reads.poll_changes()  # drains the socket into the watch's notices; reopens a watch that is down
        up = self._watch.fileno() is not None
        if not up and self._fd is not None:
            self._follow(None)  # a broken connection's socket stays readable: do not spin on it
        elif up and self._watch.opened != self._opened:
            self._opened = self._watch.opened
            self._follow(self._watch.fileno())
        payloads, lost = self._watch.take_notices()
        self._missed |= lost
        for payload in payloads:
            notice = parse_notice(payload)
            if notice is not None:
                await self._publish(notice)
        if self._missed and up:
            self._missed = False
            self._hub.publish("resync", {"reason": MISSED})
        return bool(payloads)

    async def _publish(self, notice: Notice) -> None:
        try:
            if notice.crawl is not None:
                crawl_id, swarm, _ = notice.crawl
                if not self._crawls.is_new(swarm, crawl_id):  # a replay: nothing to read again
                    return
                summary = await self._reads.read("crawl", crawl_id)
                if summary is not None and summary.status != "started" and self._crawls.is_new(summary.swarm, crawl_id):
                    self._crawls.mark(summary.swarm, crawl_id)
                    self._hub.publish("crawl", crawl_event(summary))
                return
            low, high = min(notice.alert_ids), max(notice.alert_ids)
            rows = await self._reads.read("alert_events", None, min(high - low + 1, MAX_ALERT_ROWS), high + 1)
            wanted = set(notice.alert_ids)
            for event_id, event in sorted(rows, key=lambda row: row[0]):
                if event_id in wanted and self._alerts.is_new(event.swarm, event_id):
                    self._alerts.mark(event.swarm, event_id)
                    self._hub.publish("alert", alert_event(event))
        except Exception as e:  # the database is gone again, or slow: say so once the watch is back
            log.warning("live feed: could not read what a commit announced (%s)", type(e).__name__)
            self._missed = True
