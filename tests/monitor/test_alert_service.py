"""monitor.alerts.service: alert state survives a restart (nothing fires twice), events go through the one writer,
failure streaks come back from the crawl log, and webhooks get the events."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from test_alerts import report, snap

from monitor.alerts.rules import AlertRules, AlertState
from monitor.alerts.service import AlertService
from monitor.config import AlertsConfig, WebhookConfig
from monitor.store.sqlite import Store

T0 = 1_700_000_000.0


async def _receiver() -> tuple[web.AppRunner, str, list[dict]]:
    bodies: list[dict] = []

    async def handle(request: web.Request) -> web.Response:
        bodies.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}/hook", bodies


def test_events_are_stored_restored_and_posted(tmp_path):
    path = tmp_path / "m.db"

    async def main() -> list[dict]:
        runner, url, bodies = await _receiver()
        config = AlertsConfig(crawl_failures=3, min_online=3, webhooks=(WebhookConfig(url=url, format="slack"),))
        store = Store(path)
        writer = store.writer()
        try:
            service = await AlertService.open(config, store, writer)
            first = await service.after_success(snap(T0, report("m", [0, 2])))
            assert sorted(e.kind for e in first) == ["broken", "low_redundancy"]
            assert await service.after_success(snap(T0 + 60, report("m", [0, 2]))) == []
            assert await service.dispatcher.drain(10)
            await service.close()

            # a restart: what was firing comes back from the store, so the same crawl says nothing
            service = await AlertService.open(config, store, writer)
            assert {k[1] for k in service.state.active} == {"broken", "low_redundancy"}
            assert await service.after_success(snap(T0 + 120, report("m", [0, 2]))) == []
            resolved = await service.after_success(snap(T0 + 180, report("m", [3, 3])))
            assert sorted((e.kind, e.status) for e in resolved) == [
                ("broken", "resolved"),
                ("low_redundancy", "resolved"),
            ]
            assert await service.dispatcher.drain(10)
            await service.close()
            assert store.active_alerts() == []
            assert [e.status for _, e in store.alert_events()] == ["resolved", "resolved", "firing", "firing"]
        finally:
            writer.close()
            store.close()
            await runner.cleanup()
        return bodies

    bodies = asyncio.run(main())
    texts = sorted(b["text"] for b in bodies)
    assert len(texts) == 4 and sum(t.startswith("[FIRING") for t in texts) == 2


def test_reload_continues_from_what_another_replica_recorded(tmp_path):
    path = tmp_path / "m.db"

    async def main() -> None:
        store = Store(path)
        writer = store.writer()
        try:
            service = await AlertService.open(AlertsConfig(crawl_failures=2), store, writer)
            assert service.state.failures == {}
            for i in range(2):  # meanwhile the crawling replica failed twice and alerted
                crawl_id = writer.begin_crawl("s", T0 + i).result()
                writer.fail_crawl(crawl_id, "boom", finished_at=T0 + i).result()
            other = await AlertService.open(AlertsConfig(crawl_failures=2), store, writer)
            await other.after_failure("s", T0 + 1, "boom", 2)
            await other.close()
            await service.reload()
            assert service.state.failures == {"s": 2}
            assert await service.after_failure("s", T0 + 2, "boom", 3) == []  # firing already: not twice
            await service.close()
        finally:
            writer.close()
            store.close()

    asyncio.run(main())


def test_failure_streak_survives_a_restart(tmp_path):
    path = tmp_path / "m.db"

    async def main() -> None:
        store = Store(path)
        writer = store.writer()
        try:
            for i in range(2):  # two failed crawls logged before the restart
                crawl_id = writer.begin_crawl("s", T0 + i).result()
                writer.fail_crawl(crawl_id, "boom", finished_at=T0 + i).result()
            service = await AlertService.open(AlertsConfig(crawl_failures=3), store, writer)
            assert service.state.failures == {"s": 2}
            events = await service.after_failure("s", T0 + 2, "boom again", 3)
            assert [(e.kind, e.status) for e in events] == [("crawl_failing", "firing")]
            await service.close()
            assert [a.kind for a in store.active_alerts()] == ["crawl_failing"]
        finally:
            writer.close()
            store.close()

    asyncio.run(main())


class _Sent:
    """A dispatcher that keeps what it was given."""

    def __init__(self) -> None:
        self.events: list = []

    def submit(self, events) -> None:
        self.events.extend(events)


@pytest.mark.postgres
def test_events_the_store_could_not_commit_are_neither_sent_nor_kept_as_firing(pg_cluster, pg_url):
    """The database is gone when a crawl's alerts are recorded: nothing is sent (webhooks, and the live events the
    crawl job publishes from the returned list) and nothing is kept as firing, so the next crawl fires them."""

    async def main() -> None:
        store = Store(pg_url)
        writer = store.writer()
        sent = _Sent()
        rules = AlertRules.from_config(AlertsConfig(crawl_failures=2, min_online=3))
        service = AlertService(rules, writer, sent, AlertState(), store)
        try:
            pg_cluster.database_gone(pg_url, True)
            try:
                assert await service.after_success(snap(T0, report("m", [0, 2]))) == []
                assert await service.after_failure("s", T0 + 30, "refused", None) == []
                assert await service.after_failure("s", T0 + 40, "refused", None) == []  # would fire crawl_failing
                assert sent.events == [] and service.state.active == {}
                assert service.state.failures == {"s": 2}  # the failures still count
            finally:
                pg_cluster.database_gone(pg_url, False)
            again = await service.after_success(snap(T0 + 60, report("m", [0, 2])))
            assert sorted(e.kind for e in again) == ["broken", "low_redundancy"] and sent.events == again
            assert sorted(a.kind for a in store.active_alerts()) == ["broken", "low_redundancy"]
        finally:
            writer.close()
            store.close()

    asyncio.run(main())


def test_events_refused_because_the_lock_was_lost_are_one_warning_line(caplog):
    """A replica that lost its swarm's lock (``LeadLost``) says so in one line: expected, not a bug to trace."""
    from concurrent.futures import Future

    from monitor.store.sqlite import LeadLost

    class LostWriter:
        def record_alert_events(self, events):
            future = Future()
            future.set_exception(LeadLost("swarm m: this replica's crawl lock was lost with its database connection"))
            return future

    async def main() -> None:
        sent = _Sent()
        rules = AlertRules.from_config(AlertsConfig(min_online=3))
        service = AlertService(rules, LostWriter(), sent, AlertState())
        assert await service.after_success(snap(T0, report("m", [0, 2]))) == [] and sent.events == []

    caplog.set_level("INFO", logger="monitor.alerts.service")
    asyncio.run(main())
    records = [r for r in caplog.records if r.name == "monitor.alerts.service"]
    assert [(r.levelname, r.exc_info) for r in records] == [("WARNING", None)]
    assert "not stored: swarm m: this replica's crawl lock was lost" in records[0].getMessage()
