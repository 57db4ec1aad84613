"""The live feed on PostgreSQL: it publishes what commits announce, survives hostile payloads and failed passes,
and tells pages to resync once its change watch is back from a lost connection."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from factories import T0, make_snapshot
from pg_cluster import terminate

from monitor.store.pg import CHANGES_CHANNEL
from monitor.store.sqlite import Store, StoreWriter
from monitor.web import live_feed
from monitor.web.events import EventHub
from monitor.web.live_feed import LiveFeed
from monitor.web.reader import ReadExecutor

pytestmark = pytest.mark.postgres
WAIT = 60.0  # bound on every wait for an event (a loaded 2-core machine)


def _kind(frame: bytes) -> str | None:
    for line in frame.decode().splitlines():
        if line.startswith("event: "):
            return line[len("event: ") :]
    return None


async def _until(sub, kind: str) -> list[str | None]:
    """The kinds of the events ``sub`` got (but its ``hello``), up to and including the first of ``kind``."""
    kinds: list[str | None] = []
    async with asyncio.timeout(WAIT):
        while kind not in kinds:
            kinds += [k for k in map(_kind, await sub.next_frames(WAIT) or ()) if k != "hello"]
    return kinds


def _write_crawl(url: str, t: float) -> int:
    with StoreWriter(url) as writer:
        return writer.write_snapshot(make_snapshot("test", t=t)).id


def _run_feed(url: str, body) -> None:
    async def main(store: Store) -> None:
        reads = ReadExecutor(store, deadline=10)
        await reads.start()  # the change watch LISTENs from here on
        hub = EventHub()
        feed = LiveFeed.of(reads, hub)
        feed.start()
        try:
            await body(url, hub.subscribe(), feed)
            assert not feed._task.done()
        finally:
            await feed.stop()  # raises if the task died with an error
            reads.close()

    with Store(url) as store:
        asyncio.run(main(store))


def _notify(url: str, payload: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, %s)", (CHANGES_CHANNEL, payload))


def test_a_hostile_payload_is_ignored_and_the_feed_goes_on(pg_url):
    async def body(url, sub, feed):
        _notify(url, "[" * 3999 + "]" * 3999)  # json.loads: RecursionError, not a ValueError
        _notify(url, f'{{"crawl": [{2**62}, "x", "y"]}}')  # not a crawl of ours: nothing to read back
        assert await _until(sub, "crawl") == ["crawl"]  # the next real crawl is published, and nothing else

    _run_feed(pg_url, _then_crawl(body))


def _then_crawl(body):
    """``body``, with one crawl written after its notices were sent (so it is taken in after them)."""

    async def wrapped(url, sub, feed):
        async def crawl_later():
            await asyncio.to_thread(_write_crawl, url, T0)

        writing = asyncio.ensure_future(crawl_later())
        await body(url, sub, feed)
        await writing

    return wrapped


def test_a_pass_that_fails_is_logged_and_pages_are_told_to_resync(pg_url, monkeypatch, caplog):
    real = live_feed.parse_notice
    calls = []

    def fails_once(payload):
        calls.append(payload)
        if len(calls) == 1:
            raise RuntimeError("a bug in a pass")
        return real(payload)

    monkeypatch.setattr(live_feed, "parse_notice", fails_once)

    async def body(url, sub, feed):
        _notify(url, "anything")  # its pass raises
        kinds = await _until(sub, "resync")  # on the next pass: a real crawl wakes it
        kinds += await _until(sub, "crawl") if "crawl" not in kinds else []
        assert sorted(set(kinds)) == ["crawl", "resync"]

    _run_feed(pg_url, _then_crawl(body))
    assert "live feed: a pass failed (RuntimeError)" in caplog.text


def test_pages_are_told_to_resync_once_the_watch_is_back_from_a_lost_connection(pg_url):
    async def body(url, sub, feed):
        assert terminate(url, "watch") == 1
        assert "resync" in await _until(sub, "resync")  # reopened (within REOPEN_SECONDS), then resync
        crawl_id = await asyncio.to_thread(_write_crawl, url, T0)
        assert await _until(sub, "crawl") == ["crawl"]  # and what commits announce is published again
        assert crawl_id

    _run_feed(pg_url, body)


def test_a_replayed_notice_republishes_nothing(pg_url):
    from monitor.alerts.rules import AlertEvent
    from monitor.store.notices import alert_notices, crawl_notice

    def crawl_with_alert(url: str, t: float) -> tuple[int, list[int]]:
        with StoreWriter(url) as writer:
            crawl_id = writer.write_snapshot(make_snapshot("test", t=t)).id
            alert = AlertEvent("test", "broken", "m", "firing", "critical", t, "model m is broken")
            return crawl_id, writer.record_alert_events([alert])

    async def body(url, sub, feed):
        first, alert_ids = await asyncio.to_thread(crawl_with_alert, url, T0)
        assert await _until(sub, "alert") == ["crawl", "alert"]
        for _ in range(3):  # anyone who may connect can replay what a commit announced
            _notify(url, crawl_notice(first, "test", "succeeded"))
            _notify(url, crawl_notice(first, "another", "succeeded"))
            _notify(url, alert_notices(alert_ids)[0])
        second = await asyncio.to_thread(_write_crawl, url, T0 + 60)
        frames = []
        async with asyncio.timeout(WAIT):
            while not any(b'"id": %d' % second in f or b'"id":%d' % second in f for f in frames):
                frames += [f for f in await sub.next_frames(WAIT) or () if _kind(f) != "hello"]
        assert [_kind(f) for f in frames] == ["crawl"]  # the new crawl only: no replay republished

    _run_feed(pg_url, body)


def test_the_feed_follows_a_descriptor_of_its_own_that_the_watch_closing_its_connection_leaves_valid(pg_url):
    import os

    async def main(store: Store) -> None:
        reads = ReadExecutor(store, deadline=10)
        await reads.start()
        feed = LiveFeed.of(reads, EventHub())
        try:
            feed._follow(reads.watch.fileno())
            followed = feed._fd
            reads.watch._conn.close()  # what a reopen does to the old connection, on a read thread
            os.fstat(followed)  # still ours: no accepted socket can have taken its number
            feed._follow(None)
            with pytest.raises(OSError):
                os.fstat(followed)  # and the feed closed it
        finally:
            await feed.stop()
            reads.close()

    with Store(pg_url) as store:
        asyncio.run(main(store))
