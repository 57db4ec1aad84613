"""Replicas on one PostgreSQL database: exactly one crawls a swarm; SIGKILL it and another takes over.

In-process first (two writers, the lock and what happens to a dead leader's crawl, the writes a replica that lost
its lock may no longer make, ``crawl --once`` beside a leader), then real processes: two ``monitor demo`` replicas
(each with its own embedded demo swarm, both named "demo") on one database; and live events on a standby.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from factories import T0, make_snapshot
from pg_cluster import terminate

from bench._load_procs import interrupt
from monitor.alerts.rules import AlertEvent
from monitor.store.sqlite import INTERRUPTED, LeadLost, Store, StoreWriter

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[2]
PERIOD = 3.0  # the demo's announce period; its crawl interval is 2/3 of it: 2 s
WAIT = 90.0  # bound on every wait for a replica's log line (a loaded 2-core machine starts them slowly)


def test_one_writer_leads_a_swarm_and_the_next_takes_over_when_it_is_gone(pg_url):
    first = StoreWriter(pg_url)
    second = StoreWriter(pg_url)
    try:
        assert first.lead("demo") and first.lead("demo")  # held, and asked again: still ours
        assert not second.lead("demo")
        assert second.lead("other")  # locks are per swarm
        in_flight = first.begin_crawl("demo", T0)
        with StoreWriter(pg_url) as third:
            assert third.interrupted == 0  # a third process opening leaves a live leader's crawl alone
        # the leader dies: its connection, and with it the lock, goes (waiting until the server has let go)
        leader = first.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        assert second.conn.execute("SELECT pg_terminate_backend(?, 10000)", (leader,)).fetchone()[0]
        assert second.lead("demo")
        with Store(pg_url) as store:
            crawl = store.crawl(in_flight)
        assert (crawl.status, crawl.error) == ("failed", INTERRUPTED)
        assert second.write_snapshot(make_snapshot("demo", T0 + 60)).status == "succeeded"
    finally:
        first.close()
        second.close()


def test_a_leader_killed_while_its_backend_waits_lets_go_of_the_lock_without_waiting_for_the_statement(pg_url):
    """The real race behind "takeover within one interval": a backend notices its client died only when it next
    reads from it. A replica killed while its retention pass waited for another replica's kept the swarm's crawl
    lock until that wait ended (a long statement likewise), and the next replica stood by meanwhile."""
    from monitor.store.pg import cut
    from monitor.store.sqlite import RETENTION_LOCK, crawl_lock_key

    with StoreWriter(pg_url) as a, psycopg.connect(pg_url, autocommit=True) as other:
        assert a.lead("demo")
        pid = a.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        other.execute("BEGIN")
        other.execute("SELECT pg_advisory_xact_lock(%s)", (RETENTION_LOCK,))  # another replica's retention pass
        retention = threading.Thread(target=_quietly, args=(a.apply_retention, T0))
        retention.start()
        deadline = time.monotonic() + 30
        while not other.execute(  # a's pass waits for it (server state: no event to wait on)
            "SELECT 1 FROM pg_locks WHERE pid = %s AND locktype = 'advisory' AND NOT granted", (pid,)
        ).fetchone():
            assert time.monotonic() < deadline, "a's retention pass never waited"
            time.sleep(0.05)
        cut(a.conn.raw)  # a dies: its end of the connection closes, the backend is still waiting
        retention.join(30)
        with psycopg.connect(pg_url, autocommit=True) as b:
            b.execute("SET lock_timeout = '60s'")  # only a guard: released at once, or never (old code)
            b.execute("SELECT pg_advisory_lock(%s)", (crawl_lock_key("demo"),))
            b.execute("SELECT pg_advisory_unlock_all()")
        other.execute("ROLLBACK")


def _quietly(fn, *args) -> None:
    with contextlib.suppress(psycopg.Error):  # its connection was cut: expected
        fn(*args)


def _drop_connection(writer: StoreWriter, admin: StoreWriter) -> None:
    """End ``writer``'s session (as a network cut or a server restart does) and let it notice."""
    pid = writer.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    assert admin.conn.execute("SELECT pg_terminate_backend(?, 10000)", (pid,)).fetchone()[0]
    with pytest.raises(psycopg.OperationalError):
        writer.conn.execute("SELECT 1")


def _alert(swarm: str) -> AlertEvent:
    return AlertEvent(swarm, "broken", "m", "firing", "critical", T0 + 60, "model m is broken")


def test_a_writer_that_lost_its_connection_writes_nothing_more_for_the_swarm_it_led(pg_url):
    """Its connection replaced, the lock went with it: the crawl it began, and alert events, are refused (another
    replica may have taken over meanwhile), until it leads again; swarms it never led are not concerned."""
    with StoreWriter(pg_url) as crawler, StoreWriter(pg_url) as admin:
        assert crawler.lead("demo")
        in_flight = crawler.begin_crawl("demo", T0)
        _drop_connection(crawler, admin)
        with pytest.raises(LeadLost):
            crawler.finish_crawl(in_flight, make_snapshot("demo", T0))
        with pytest.raises(LeadLost):
            crawler.fail_crawl(in_flight, "boom")
        with pytest.raises(LeadLost):
            crawler.record_alert_events([_alert("demo")])
        assert crawler.record_alert_events([_alert("other")])  # never led: a single-writer tool's write
        with Store(pg_url) as store:
            assert store.crawl(in_flight).status == "started" and store.alert_events("demo") == []
        assert crawler.lead("demo")  # free again: it leads anew and fails what it left started
        with Store(pg_url) as store:
            assert (store.crawl(in_flight).status, store.crawl(in_flight).error) == ("failed", INTERRUPTED)
        assert crawler.write_snapshot(make_snapshot("demo", T0 + 60)).status == "succeeded"


def test_a_crawl_job_whose_lock_was_lost_records_nothing_and_fires_no_alert(pg_url, caplog):
    import asyncio

    from monitor.alerts.service import AlertService
    from monitor.app import crawl_job
    from monitor.config import AlertsConfig, SwarmConfig
    from monitor.web.events import EventHub

    class CutMidCrawl:  # the crawl succeeds; meanwhile the writer's database connection is cut
        def __init__(self, writer):
            self.writer = writer

        async def run(self, fn, *args):
            def cut(w: StoreWriter) -> None:
                with StoreWriter(pg_url) as admin:
                    _drop_connection(w, admin)

            await asyncio.wrap_future(self.writer.submit(cut))
            return make_snapshot("test", T0)

    async def main(store: Store) -> list[str]:
        writer = store.writer()
        hub = EventHub()
        seen = hub.subscribe()
        seen.pending.clear()
        try:
            alerts = await AlertService.open(AlertsConfig(min_online=99), store, writer)  # a success would fire
            try:
                await crawl_job(SwarmConfig(name="test"), CutMidCrawl(writer), writer, alerts=alerts, events=hub)()
            finally:
                await alerts.close()
        finally:
            writer.close()
        return list(seen.pending)

    caplog.set_level("INFO", logger="monitor.app")
    with Store(pg_url) as store:
        published = asyncio.run(main(store))
        assert [c.status for c in store.crawls("test")] == ["started"]  # left to the next leader to fail
        assert store.alert_events("test") == [] and published == []
    assert [r.getMessage() for r in caplog.records if "taken over" in r.getMessage()] == [
        "crawl 1 of test taken over, not recorded: swarm test: this replica's crawl lock was lost with its database"
        " connection"
    ]


def _crawl_once(url: str, config: Path) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "monitor", "crawl", "--once", "--json", "--config", str(config), "--db", url]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*args, "--log-level", "ERROR"], capture_output=True, text=True, env=env, timeout=120)


def test_crawl_once_skips_a_swarm_another_process_leads_and_says_so(pg_url, tmp_path):
    with socket.socket() as s:  # a 127.0.0.1 port nothing listens on: the crawl it does run fails at once
        s.bind(("127.0.0.1", 0))
        dead = f"/ip4/127.0.0.1/tcp/{s.getsockname()[1]}/p2p/QmedTaZXmULqwspJXz44SsPZyTNKxhnnFvYRajfH7MGhCY"
    both, led_only = tmp_path / "both.toml", tmp_path / "led.toml"
    led_only.write_text(f'[[swarms]]\nname = "led"\ninitial_peers = ["{dead}"]\n')
    both.write_text(led_only.read_text() + f'[[swarms]]\nname = "free"\ninitial_peers = ["{dead}"]\n')
    skipped = "swarm led skipped: crawled by another process (it holds the swarm's crawl lock)"
    with StoreWriter(pg_url) as serving:  # a `serve` replica crawling swarm "led"
        assert serving.lead("led")
        alone = _crawl_once(pg_url, led_only)
        assert (alone.returncode, alone.stderr) == (0, skipped + "\n")  # skipped is not failed
        assert json.loads(alone.stdout) == {
            "swarm": "led",
            "crawl_id": None,
            "crawl": {"id": None, "status": "skipped", "reason": skipped.split(": ", 1)[1]},
        }
        mixed = _crawl_once(pg_url, both)
        assert mixed.returncode == 1  # the crawl it made of "free" failed (nobody answers)
        assert mixed.stderr.splitlines()[0] == skipped and "of free failed: " in mixed.stderr
        assert [doc["crawl"]["status"] for doc in json.loads(mixed.stdout)["swarms"]] == ["skipped", "failed"]
        with Store(pg_url) as store:
            assert store.crawls("led") == [] and [c.status for c in store.crawls("free")] == ["failed"]
        assert serving.lead("led")  # still ours: crawl --once neither took nor released it
    after = _crawl_once(pg_url, led_only)  # nobody leads it now: crawled (and failed, nobody answers)
    assert after.returncode == 1 and "skipped" not in after.stderr


# ``python -m monitor`` with the crawl job's DEBUG lines (one per attempt to lead that finds the lock held) shown
EACH_ATTEMPT_LOGGED = (
    "import logging, sys; logging.getLogger('monitor.app').setLevel(logging.DEBUG); "
    "from monitor.cli import main; sys.exit(main())"
)
HELD = "its crawl lock is held by another replica"


class Replica:
    """A ``monitor demo`` process on the shared database; its log lines are collected by a thread."""

    def __init__(self, url: str, seed: int) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                EACH_ATTEMPT_LOGGED,
                "demo",
                "--db",
                url,
                "--port",
                "0",
                "--period",
                str(PERIOD),
                "--seed",
                str(seed),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append((time.monotonic(), line.rstrip()))
                self._changed.notify_all()
        with self._changed:
            self.lines.append((time.monotonic(), "<EOF>"))
            self._changed.notify_all()

    def wait_for(self, text: str, after: float = 0.0, count: int = 1) -> float:
        """When the ``count``-th line containing ``text`` logged after ``after`` (monotonic) came."""

        def found() -> list[float]:
            return [t for t, line in self.lines if t >= after and text in line]

        with self._changed:
            ok = self._changed.wait_for(lambda: len(found()) >= count or self._ended(), WAIT)
            hits = found()
        assert ok and len(hits) >= count, f"no {text!r} in: {[line for _, line in self.lines][-15:]}"
        return hits[count - 1]

    def _ended(self) -> bool:
        return bool(self.lines) and self.lines[-1][1] == "<EOF>"

    def crawled(self, after: float = 0.0) -> list[str]:
        return [line for t, line in self.lines if t >= after and " of demo: succeeded" in line]

    def stop(self) -> None:
        interrupt(self.proc)
        self._reader.join(timeout=10)


@pytest.mark.timeout(300)
def test_sigkill_of_the_crawling_replica_hands_its_swarm_to_another(pg_url):
    a = Replica(pg_url, seed=1)
    b = None
    try:
        a.wait_for(" of demo: succeeded")
        b = Replica(pg_url, seed=2)
        b.wait_for("is crawled by another replica")
        a.wait_for(" of demo: succeeded", after=time.monotonic(), count=2)  # both up: A still crawls
        assert b.crawled() == []
        killed_at = time.monotonic()
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(timeout=10)
        took_over = b.wait_for("taking over the crawls of swarm demo", after=killed_at)
        b.wait_for(" of demo: succeeded", after=took_over)
        stood_by = [line for t, line in b.lines if killed_at <= t <= took_over and HELD in line]
        print(f"\ntakeover {took_over - killed_at:.1f} s after SIGKILL (crawl interval {PERIOD * 2 / 3:.1f} s)")
        # within one interval: an attempt at the very moment of the kill may still find the lock held (the server
        # needs a moment, at most CLIENT_CHECK_MS when the dead one's backend was busy); the next one takes it
        assert len(stood_by) <= 1, stood_by
        assert [line for _, line in b.lines if HELD in line], "no attempt logged: the count above means nothing"
    finally:
        a.stop()
        if b is not None:
            b.stop()
    with Store(pg_url) as store:
        crawls = sorted(store.crawls("demo", limit=10_000), key=lambda c: c.id)
    assert [c for c in crawls if c.status == "started"] == []  # B stopped cleanly; A's in-flight crawl was failed
    assert len([c for c in crawls if c.error == INTERRUPTED]) <= 1  # only the crawl A was killed in
    for earlier, later in itertools.pairwise(crawls):  # one crawler at a time: no overlapping crawls
        if earlier.finished_at is not None and earlier.error != INTERRUPTED:
            assert earlier.finished_at <= later.started_at, (earlier, later)


# ---- live events on every replica


class _SameCrawl:
    """A bridge whose every crawl finds the same swarm "test" (no DHT)."""

    def __init__(self) -> None:
        self.crawls = itertools.count()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    async def run(self, fn, *args):
        return make_snapshot("test", t=T0 + 60 * next(self.crawls))


def _frame(raw: bytes) -> tuple[str | None, dict | None]:
    fields = dict(line.split(": ", 1) for line in raw.decode().splitlines() if ": " in line and line[0] != ":")
    return fields.get("event"), json.loads(fields["data"]) if "data" in fields else None


def test_a_standby_replicas_event_stream_carries_what_the_leader_stored_once(pg_url):
    """The standby (a web on the same database, no crawl of its own) streams the crawls and alert changes the
    leader (a whole app: scheduler, writer, alerts) stored; the leader streams each of them once."""
    import asyncio

    import aiohttp
    from aiohttp.test_utils import TestServer

    from monitor.app import build_app
    from monitor.config import AlertsConfig, Config, SwarmConfig
    from monitor.web import create_app, events_of

    config = Config(
        db_path=pg_url,
        swarms=(SwarmConfig(name="test", interval_seconds=0.5),),
        alerts=AlertsConfig(min_online=99),  # the first crawl fires alerts, later ones change nothing
    )

    async def main() -> None:
        store = Store(pg_url)
        standby = TestServer(create_app(config, store=store), host="127.0.0.1")
        await standby.start_server()
        leader_app = build_app(config, bridge_factory=_SameCrawl)
        leader_hub = events_of(leader_app)
        on_leader = leader_hub.subscribe(f"{leader_hub.epoch}-0")  # everything it publishes
        leader = TestServer(leader_app, host="127.0.0.1")
        seen: list[tuple[str | None, dict | None]] = []
        published: list[tuple[str | None, dict | None]] = []
        try:
            async with asyncio.timeout(90), aiohttp.ClientSession() as session:
                stream = await session.get(standby.make_url("/api/v1/events"))
                assert _frame(await stream.content.readuntil(b"\n\n"))[0] is None  # retry:
                assert _frame(await stream.content.readuntil(b"\n\n"))[0] == "hello"
                await leader.start_server()  # its first crawl starts now
                while len([kind for kind, _ in seen if kind == "crawl"]) < 2:  # the 2nd: the 1st job has ended
                    frame = _frame(await stream.content.readuntil(b"\n\n"))
                    if frame != (None, None):  # a keep-alive comment: the hub never published it
                        seen.append(frame)
                stream.close()
                while len([kind for kind, _ in published if kind == "crawl"]) < 2:
                    published += [_frame(f) for f in await on_leader.next_frames(60) or ()]
        finally:
            await leader.close()
            await standby.close()
            store.close()
        crawls = [data for kind, data in seen if kind == "crawl"]
        alerts = [data for kind, data in seen if kind == "alert"]
        with Store(pg_url) as stored:
            first = min(c.id for c in stored.crawls("test"))
            assert [c["id"] for c in crawls] == [first, first + 1] and crawls[0]["status"] == "succeeded"
            fired = stored.alert_events("test")
        assert alerts and {a["status"] for a in alerts} == {"firing"}
        assert sorted((a["kind"], a["subject"]) for a in alerts) == sorted((e.kind, e.subject) for _, e in fired)
        assert [kind for kind, _ in seen][: 1 + len(alerts)] == ["crawl"] + ["alert"] * len(alerts)  # commit order
        assert published == seen  # the crawling replica too, each event once

    asyncio.run(main())


def _crawl_once_in_process(url: str, tmp_path: Path, monkeypatch, during_crawl) -> int:
    """``crawl --once`` of swarm "test" in this process; its crawl is ``during_crawl(url)`` then a made-up snapshot."""
    from monitor import cli
    from monitor.crawl import oneshot

    async def crawl_all(swarms):
        during_crawl(url)
        return [None for _ in swarms]

    monkeypatch.setattr(oneshot, "_crawl_all", crawl_all)
    monkeypatch.setattr(oneshot, "judge", lambda outcome, swarm, geo: make_snapshot(swarm.name, t=time.time()))
    config = tmp_path / "once.toml"
    config.write_text('[[swarms]]\nname = "test"\n')
    return cli.main(["crawl", "--once", "--config", str(config), "--db", url, "--log-level", "ERROR"])


def _terminate_writer(url: str) -> None:
    assert terminate(url, "writer") == 1


def test_crawl_once_whose_connection_drops_mid_run_skips_the_swarm_in_one_line(pg_url, tmp_path, monkeypatch, capsys):
    code = _crawl_once_in_process(pg_url, tmp_path, monkeypatch, _terminate_writer)
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err
    assert "swarm test skipped: lock lost mid-run" in err
    with Store(pg_url) as store:  # failed once the writer reconnected, not left `started`
        assert [(c.status, c.error.split(" (")[0]) for c in store.crawls("test")] == [
            ("failed", "database connection lost")
        ]


def test_crawl_once_that_loses_the_database_says_so_in_one_line_and_exits_3(
    pg_cluster, pg_url, tmp_path, monkeypatch, capsys
):
    from monitor.cli import EXIT_DATABASE_LOST

    try:
        code = _crawl_once_in_process(pg_url, tmp_path, monkeypatch, lambda url: pg_cluster.database_gone(url, True))
    finally:
        pg_cluster.database_gone(pg_url, False)
    err = capsys.readouterr().err
    assert code == EXIT_DATABASE_LOST and "Traceback" not in err
    assert err.startswith("crawl --once: the database was lost mid-run: ") and err.count("\n") == 1, err
