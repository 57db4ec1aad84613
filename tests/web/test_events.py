"""``GET /api/v1/events``: the hub's bounds and resume rules, the stream over HTTP (ids, keep-alives, 503 beyond the
limit, nothing left behind on disconnect or shutdown), and the crawl job as what fires the events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from factories import make_snapshot
from prometheus_client.parser import text_string_to_metric_families
from web_harness import NOW, build_store

from monitor.app import crawl_job
from monitor.config import AlertsConfig, SwarmConfig
from monitor.store.sqlite import Store
from monitor.web import create_app, events_of
from monitor.web.context import CTX
from monitor.web.events import EventHub, TooManyClients, client_key, encode_event

GUARD = 30.0  # seconds: only against a hang; no assertion is about time


def _parse(frame: bytes) -> dict:
    out: dict = {}
    for line in frame.decode().splitlines():
        if not line:
            continue
        if line.startswith(":"):
            out["comment"] = line
            continue
        name, _, value = line.partition(": ")
        out[name] = json.loads(value) if name == "data" else value
    return out


# ---- the hub


def test_a_new_client_gets_hello_with_the_current_id_and_then_each_event():
    hub = EventHub(epoch="e")
    hub.publish("crawl", {"id": 1})
    sub = hub.subscribe(None)
    assert [_parse(f) for f in sub.pending] == [{"id": "e-1", "event": "hello", "data": {"last_event_id": "e-1"}}]
    sub.pending.clear()
    assert hub.publish("alert", {"kind": "broken"}) == "e-2"
    assert [_parse(f) for f in sub.pending] == [{"id": "e-2", "event": "alert", "data": {"kind": "broken"}}]


def test_a_reconnecting_client_gets_what_it_missed_or_one_resync():
    hub = EventHub(epoch="e", replay=3)
    for i in range(5):
        hub.publish("crawl", {"n": i})
    assert [_parse(f)["data"]["n"] for f in hub.catch_up("e-3")] == [3, 4]
    assert hub.catch_up("e-5") == []  # missed nothing
    for stale in ("e-1", "other-4", "e-99", "e-x", "garbage"):  # evicted, another process, future, nonsense
        (frame,) = hub.catch_up(stale)
        assert _parse(frame)["event"] == "resync"
        assert _parse(frame)["id"] == "e-5"


def test_a_client_that_falls_behind_is_dropped_and_its_frames_freed():
    hub = EventHub(queue_size=4)
    slow, fine = hub.subscribe(), hub.subscribe()
    fine.pending.clear()
    for i in range(5):
        hub.publish("crawl", {"n": i})
        fine.pending.clear()  # this one keeps up
    assert slow.dropped and not slow.pending
    assert not fine.dropped
    assert hub.dropped == 1


def test_the_hub_refuses_clients_beyond_its_limit_and_after_close():
    hub = EventHub(max_clients=2)
    a, _b = hub.subscribe(), hub.subscribe()
    with pytest.raises(TooManyClients):
        hub.subscribe()
    hub.unsubscribe(a)
    hub.subscribe()
    hub.close()
    with pytest.raises(TooManyClients):
        hub.subscribe()


def test_one_client_address_cannot_take_every_slot_and_refusals_are_counted_by_reason():
    hub = EventHub(max_clients=4, max_per_client=2)
    a1, _a2 = hub.subscribe(client="10.0.0.1"), hub.subscribe(client="10.0.0.1")
    with pytest.raises(TooManyClients) as refused:
        hub.subscribe(client="10.0.0.1")
    assert refused.value.reason == "per_client" and hub.clients_of("10.0.0.1") == 2
    hub.subscribe(client="10.0.0.2")  # another address still gets in
    hub.unsubscribe(a1)
    hub.unsubscribe(a1)  # twice (a handler's finally after a drop) counts once
    assert hub.clients_of("10.0.0.1") == 1
    hub.subscribe(client="10.0.0.1")
    hub.subscribe(client="10.0.0.3")
    with pytest.raises(TooManyClients) as full:
        hub.subscribe(client="10.0.0.4")
    assert full.value.reason == "max_clients"
    hub.close()
    with pytest.raises(TooManyClients) as closed:
        hub.subscribe(client="10.0.0.4")
    assert closed.value.reason == "shutting_down"
    assert hub.refused == {"per_client": 1, "max_clients": 1, "shutting_down": 1}


def test_frames_dropped_count_what_a_slow_client_never_got():
    hub = EventHub(queue_size=3)
    slow = hub.subscribe()  # holds its hello
    for i in range(3):
        hub.publish("crawl", {"n": i})  # hello + 2 queued, then the third overflows
    assert slow.dropped and (hub.dropped, hub.frames_dropped) == (1, 4)
    hub.publish("crawl", {"n": 3})  # a dropped client is not counted again
    assert (hub.dropped, hub.frames_dropped, hub.published) == (1, 4, 4)


def test_client_keys_count_ipv6_by_its_64_and_mapped_ipv4_as_ipv4():
    assert client_key("127.0.0.1") == "127.0.0.1"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:10.0.0.7") == "10.0.0.7"
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key(None) == "?" and client_key("not an address") == "not an address"


def test_network_text_cannot_break_out_of_its_frame():
    frame = encode_event("alert", {"message": "x\n\nevent: crawl\ndata: {}\r\nid: 9"}, "e-1")
    assert frame.count(b"\n\n") == 1 and frame.endswith(b"\n\n") and b"\r" not in frame
    assert _parse(frame)["data"]["message"].startswith("x\n\nevent: crawl")


# ---- over HTTP


@contextlib.asynccontextmanager
async def _app(path, **web_settings) -> AsyncIterator[tuple[TestClient, EventHub]]:
    """The app over ``path``'s crawls with these ``[web]`` settings, served on 127.0.0.1, and its hub."""
    store = Store(path, create=False)
    client = TestClient(TestServer(create_app({"web": web_settings}, store=store, clock=lambda: NOW), host="127.0.0.1"))
    await client.start_server()
    try:
        yield client, events_of(client.server.app)
    finally:
        await client.close()
        store.close()


async def _next_frame(response: aiohttp.ClientResponse) -> dict:
    async with asyncio.timeout(GUARD):
        return _parse(await response.content.readuntil(b"\n\n"))


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("events") / "monitor.db").path


def test_the_stream_sends_retry_hello_events_and_keep_alives(db):
    async def main():
        async with _app(db, events_keepalive_seconds=0.05) as (client, hub):
            response = await client.get("/api/v1/events")
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            assert await _next_frame(response) == {"retry": "5000"}
            hello = await _next_frame(response)
            assert hello["event"] == "hello" and hello["id"] == hub.last_id
            hub.publish("crawl", {"id": 7, "status": "succeeded"})
            event = await _next_frame(response)
            while "comment" in event:  # keep-alives may come first
                event = await _next_frame(response)
            assert event == {"id": hub.last_id, "event": "crawl", "data": {"id": 7, "status": "succeeded"}}
            assert await _next_frame(response) == {"comment": ": keep-alive"}
            response.close()

            # a browser reconnecting with the last id it saw gets the events it missed
            hub.publish("crawl", {"id": 8})
            hub.publish("alert", {"kind": "broken"})
            resumed = await client.get("/api/v1/events", headers={"Last-Event-ID": event["id"]})
            await _next_frame(resumed)  # retry
            assert [(await _next_frame(resumed))["event"] for _ in range(2)] == ["crawl", "alert"]
            resumed.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("limit", "status", "message", "reason"),
    [
        ("events_max_clients", 503, "Too many event-stream clients, retry later", "max_clients"),
        ("events_max_per_client", 429, "Too many event streams from your address", "per_client"),  # loopback too
    ],
)
def test_beyond_a_limit_a_refusal_with_retry_after_and_a_json_error(db, limit, status, message, reason):
    async def main():
        async with _app(db, **{limit: 2}) as (client, hub):
            streams = [await client.get("/api/v1/events") for _ in range(2)]
            for s in streams:
                await _next_frame(s)
            refused = await client.get("/api/v1/events")
            assert refused.status == status
            assert refused.headers["Retry-After"].isdigit()
            assert await refused.json() == {"error": {"status": status, "message": message}}
            assert hub.clients == 2 and hub.refused == {reason: 1}
            streams[0].close()
            async with asyncio.timeout(GUARD):
                await hub.wait_for_clients(1)
            again = await client.get("/api/v1/events")  # the slot is free again
            assert again.status == 200
            again.close()
            streams[1].close()
            async with asyncio.timeout(GUARD):
                await hub.wait_for_clients(0)
            assert hub.clients_of("127.0.0.1") == 0

    asyncio.run(main())


def test_the_streams_numbers_are_on_metrics_and_follow_the_hub(db):
    async def metrics(client: TestClient) -> dict[tuple[str, str], float]:
        response = await client.get("/metrics")
        assert response.status == 200
        return {
            (sample.name, sample.labels.get("reason", "")): sample.value
            for family in text_string_to_metric_families(await response.text())
            for sample in family.samples
            if sample.name.startswith("petals_events_")
        }

    async def main():
        async with _app(db, events_max_per_client=2, events_max_clients=50) as (client, hub):
            slow = hub.subscribe()  # never read: dropped with its hello and 63 events, at the 64th
            for i in range(64):
                hub.publish("crawl", {"n": i})
            assert slow.dropped
            hub.unsubscribe(slow)
            streams = [await client.get("/api/v1/events") for _ in range(2)]
            for s in streams:
                await _next_frame(s)
            assert (await client.get("/api/v1/events")).status == 429
            first = await metrics(client)
            assert first == {
                ("petals_events_clients", ""): 2,
                ("petals_events_max_clients", ""): 50,
                ("petals_events_published_total", ""): 64,
                ("petals_events_clients_dropped_total", ""): 1,
                ("petals_events_frames_dropped_total", ""): 65,
                ("petals_events_clients_refused_total", "max_clients"): 0,
                ("petals_events_clients_refused_total", "per_client"): 1,
                ("petals_events_clients_refused_total", "shutting_down"): 0,
            }
            cached = len(client.server.app[CTX].rendered._items)
            streams[0].close()
            async with asyncio.timeout(GUARD):
                await hub.wait_for_clients(1)
            assert (await metrics(client))[("petals_events_clients", "")] == 1  # not the cached text of before
            assert len(client.server.app[CTX].rendered._items) == cached  # nor a cache entry per scrape
            streams[1].close()

    asyncio.run(main())


def test_clients_that_disconnect_leave_nothing_behind(db):
    async def main():
        async with _app(db, events_keepalive_seconds=0.05, events_max_per_client=25) as (client, hub):
            streams = [await client.get("/api/v1/events") for _ in range(25)]
            async with asyncio.timeout(GUARD):
                await hub.wait_for_clients(25)
            for s in streams:
                s.close()
            async with asyncio.timeout(GUARD):
                await hub.wait_for_clients(0)
            assert hub.clients == 0

    asyncio.run(main())


def test_shutdown_ends_every_stream_cleanly(db):
    """The hub closes in on_shutdown: streams end with a proper end of body, before the server's graceful wait
    (which would otherwise cancel them after a minute and cut their bodies short)."""

    async def main():
        store = Store(db, create=False)
        app = create_app({}, store=store, clock=lambda: NOW)
        runner = web.AppRunner(app, shutdown_timeout=60)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        hub = events_of(app)
        async with aiohttp.ClientSession() as session:
            streams = [await session.get(f"http://{host}:{port}/api/v1/events") for _ in range(3)]
            for s in streams:
                await _next_frame(s)
            async with asyncio.timeout(GUARD):
                await runner.cleanup()
                for s in streams:
                    rest = await s.content.read()  # a cut body raises ClientPayloadError here
                    assert b"event" in rest  # hello
        assert hub.clients == 0 and hub.closed
        store.close()

    asyncio.run(main())


# ---- what fires them


class _Bridge:
    def __init__(self, outcome):
        self.outcome = outcome

    async def run(self, fn, *args):
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def test_the_crawl_job_tells_the_hub_once_the_crawl_and_its_alert_changes_are_stored(tmp_path):
    from monitor.alerts.service import AlertService

    async def main():
        store = Store(tmp_path / "m.db")
        writer = store.writer()
        hub = EventHub(epoch="e")
        sub = hub.subscribe()
        sub.pending.clear()
        try:
            alerts = await AlertService.open(AlertsConfig(min_online=99), store, writer)
            swarm = SwarmConfig(name="test")
            await crawl_job(swarm, _Bridge(make_snapshot("test", t=NOW)), writer, alerts=alerts, events=hub)()
            events = [_parse(f) for f in sub.pending]
            crawl, *changes = events
            assert crawl["event"] == "crawl" and crawl["data"]["status"] == "succeeded"
            stored = store.last_good_crawl("test")
            assert crawl["data"]["id"] == stored.id  # published after the writer stored it
            assert changes and {c["event"] for c in changes} == {"alert"}
            assert {c["data"]["status"] for c in changes} == {"firing"}
            sub.pending.clear()

            with pytest.raises(RuntimeError):
                await crawl_job(swarm, _Bridge(RuntimeError("boom")), writer, alerts=alerts, events=hub)()
            (failed,) = [_parse(f) for f in sub.pending]
            assert failed["data"]["status"] == "failed" and "boom" in failed["data"]["error"]
            await alerts.close()
        finally:
            writer.close()
            store.close()

    asyncio.run(main())


def test_a_crawl_cancelled_twice_at_stop_leaves_no_writer_answer_unread(tmp_path, monkeypatch):
    """At stop, a crawl can be cancelled while the writer stores its result, then again while it marks itself
    failed. The writer's answer to that (here "already succeeded") must still be read: an unread one made asyncio
    log "exception was never retrieved" at exit (the stop-signal test saw it now and then)."""
    import gc
    import threading

    import monitor.app as app_module

    gate, storing = threading.Event(), threading.Event()
    real_record = app_module.record

    def slow_record(*args, **kwargs):  # running on the writer thread: too late to cancel
        storing.set()
        assert gate.wait(10)
        return real_record(*args, **kwargs)

    monkeypatch.setattr(app_module, "record", slow_record)
    reported: list[dict] = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: reported.append(context))
        store = Store(tmp_path / "m.db")
        writer = store.writer()
        try:
            job = crawl_job(SwarmConfig(name="test"), _Bridge(make_snapshot("test", t=NOW)), writer)
            task = asyncio.create_task(job())
            await asyncio.to_thread(storing.wait, 10)
            task.cancel()  # while the result is being stored
            for _ in range(20):  # until the job waits for fail_crawl
                await asyncio.sleep(0)
            task.cancel()  # and again while it marks itself failed
            with pytest.raises(asyncio.CancelledError):
                await task
            gate.set()
            await asyncio.wrap_future(writer.submit(lambda _w: None))  # the writer has answered both
            for _ in range(5):
                await asyncio.sleep(0)
            gc.collect()
            assert store.last_good_crawl("test") is not None  # the result was stored whole
        finally:
            gate.set()
            writer.close()
            store.close()

    asyncio.run(main())
    gc.collect()
    assert not [c for c in reported if "never retrieved" in str(c.get("message"))], reported
