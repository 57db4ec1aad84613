"""When crawls run: one APScheduler job per swarm, inside the app's asyncio loop.

Never two crawls of one swarm at once (``max_instances=1`` for scheduled runs, plus a per-swarm lock for crawls
started by hand), misfires coalesced into one run, and the next run time is visible to the web.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger(__name__)

CrawlFn = Callable[[], Awaitable[object]]


def make_trigger(*, interval_seconds: float | None = None, cron: str | None = None) -> BaseTrigger:
    """An interval or a crontab expression (UTC). Exactly one must be given."""
    if (interval_seconds is None) == (cron is None):
        raise ValueError("give exactly one of interval_seconds / cron")
    if cron is not None:
        return CronTrigger.from_crontab(cron, timezone=UTC)
    if not interval_seconds or interval_seconds <= 0:
        raise ValueError(f"interval_seconds must be positive, got {interval_seconds}")
    return IntervalTrigger(seconds=interval_seconds, timezone=UTC)


@dataclass(frozen=True, slots=True)
class JobInfo:
    swarm: str
    next_run_time: float | None  # Unix seconds
    running: bool


class CrawlScheduler:
    """Owns the APScheduler instance; started and stopped by the app's lifecycle."""

    def __init__(self, *, misfire_grace_time: float = 60.0) -> None:
        self._scheduler: AsyncIOScheduler | None = None
        self._jobs: dict[str, tuple[BaseTrigger, CrawlFn, bool]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._running: set[asyncio.Task] = set()
        self._grace = misfire_grace_time

    def add_swarm(self, swarm: str, trigger: BaseTrigger, crawl: CrawlFn, *, run_now: bool = True) -> None:
        """Register ``crawl`` for ``swarm``; with ``run_now`` the first crawl starts right after :meth:`start`."""
        if swarm in self._jobs:
            raise ValueError(f"swarm {swarm!r} is already scheduled")
        self._jobs[swarm] = (trigger, crawl, run_now)
        self._locks[swarm] = asyncio.Lock()

    def start(self) -> None:
        """Start on the running asyncio loop."""
        self._scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone=UTC)
        now = datetime.now(UTC)
        for swarm, (trigger, _crawl, run_now) in self._jobs.items():
            self._scheduler.add_job(
                self.run_once,
                trigger=trigger,
                args=[swarm],
                id=swarm,
                name=f"crawl {swarm}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=int(self._grace),
                next_run_time=now if run_now else None,
                replace_existing=True,
            )
            if not run_now:  # next_run_time=None would pause the job: let the trigger decide instead
                job = self._scheduler.get_job(swarm)
                if job is not None:
                    job.reschedule(trigger)
        self._scheduler.start()

    async def stop(self) -> None:
        """Stop scheduling, cancel running crawls and wait for them (each records itself as failed)."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        running = list(self._running)
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def run_once(self, swarm: str) -> bool:
        """Run one crawl of ``swarm`` now unless one is already running. Returns whether it ran."""
        lock = self._locks[swarm]
        if lock.locked():
            log.info("crawl of %s skipped: the previous one is still running", swarm)
            return False
        task = asyncio.current_task()
        async with lock:
            if task is not None:
                self._running.add(task)
            try:
                await self._jobs[swarm][1]()
            except asyncio.CancelledError:
                log.info("crawl of %s cancelled: shutting down", swarm)
                return False
            except Exception:  # recorded by the crawl itself; the schedule goes on
                log.exception("crawl of %s failed", swarm)
            finally:
                self._running.discard(task)  # type: ignore[arg-type]
        return True

    def info(self) -> list[JobInfo]:
        out = []
        for swarm in self._jobs:
            job = self._scheduler.get_job(swarm) if self._scheduler else None
            nrt = job.next_run_time.timestamp() if job is not None and job.next_run_time else None
            out.append(JobInfo(swarm=swarm, next_run_time=nrt, running=self._locks[swarm].locked()))
        return out
