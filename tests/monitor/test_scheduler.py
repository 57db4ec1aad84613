"""The crawl scheduler: no overlapping crawls of one swarm, next run visible, failures don't stop the schedule."""

from __future__ import annotations

import asyncio

import pytest

from monitor.crawl.scheduler import CrawlScheduler, make_trigger


def test_make_trigger_validates():
    assert make_trigger(interval_seconds=60)
    assert make_trigger(cron="*/5 * * * *")
    with pytest.raises(ValueError):
        make_trigger()
    with pytest.raises(ValueError):
        make_trigger(interval_seconds=60, cron="* * * * *")
    with pytest.raises(ValueError):
        make_trigger(interval_seconds=-1)
    with pytest.raises(ValueError):
        make_trigger(cron="not a cron")


def test_never_two_crawls_of_one_swarm_at_once():
    async def main():
        release = asyncio.Event()
        running = 0
        max_running = 0
        runs = 0

        async def crawl():
            nonlocal running, max_running, runs
            running += 1
            runs += 1
            max_running = max(max_running, running)
            await release.wait()
            running -= 1

        sched = CrawlScheduler()
        sched.add_swarm("a", make_trigger(interval_seconds=3600), crawl, run_now=False)
        sched.start()
        try:
            first = asyncio.ensure_future(sched.run_once("a"))
            await asyncio.sleep(0)  # let it take the lock
            assert sched.info()[0].running
            assert await sched.run_once("a") is False  # skipped, not queued
            release.set()
            assert await first is True
            assert runs == 1 and max_running == 1
        finally:
            await sched.stop()

    asyncio.run(main())


def test_scheduled_first_run_and_next_run_time():
    async def main():
        ran = asyncio.Event()

        async def crawl():
            ran.set()

        sched = CrawlScheduler()
        sched.add_swarm("a", make_trigger(interval_seconds=600), crawl, run_now=True)
        sched.add_swarm("b", make_trigger(interval_seconds=600), crawl, run_now=False)
        sched.start()
        try:
            await asyncio.wait_for(ran.wait(), 10)
            info = {j.swarm: j for j in sched.info()}
            import time

            assert info["b"].next_run_time is not None
            assert info["b"].next_run_time > time.time() + 500  # first run waits for the interval
            assert info["a"].next_run_time is not None
            assert not info["a"].running
        finally:
            await sched.stop()

    asyncio.run(main())


def test_a_failing_crawl_does_not_break_the_schedule():
    async def main():
        calls = 0

        async def crawl():
            nonlocal calls
            calls += 1
            raise RuntimeError("network down")

        sched = CrawlScheduler()
        sched.add_swarm("a", make_trigger(interval_seconds=3600), crawl, run_now=False)
        sched.start()
        try:
            assert await sched.run_once("a") is True
            assert await sched.run_once("a") is True
            assert calls == 2
        finally:
            await sched.stop()

    asyncio.run(main())


def test_stop_cancels_a_running_crawl_and_waits_for_it():
    async def main():
        started = asyncio.Event()
        cleaned_up = False

        async def crawl():
            nonlocal cleaned_up
            started.set()
            try:
                await asyncio.Event().wait()  # a crawl that would run forever
            finally:
                cleaned_up = True  # e.g. recording the crawl as failed

        sched = CrawlScheduler()
        sched.add_swarm("a", make_trigger(interval_seconds=3600), crawl, run_now=False)
        sched.start()
        job = asyncio.ensure_future(sched.run_once("a"))
        await asyncio.wait_for(started.wait(), 10)
        await asyncio.wait_for(sched.stop(), 10)
        assert cleaned_up
        assert await job is False  # cancelled quietly, no exception escapes to the scheduler

    asyncio.run(main())
