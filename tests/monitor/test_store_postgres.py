"""PostgreSQL faults: a bad URL at start, credentials that must never show, the database lost and back mid-run."""

from __future__ import annotations

import logging
import socket

import psycopg
import pytest
from factories import T0, make_snapshot
from web_harness import build_store, served

from monitor.cli import EXIT_BAD_CONFIG, main
from monitor.store.location import parse_db, redact, secrets_of
from monitor.store.sqlite import DATABASE_LOST, StoreWriter

pytestmark = pytest.mark.postgres
SECRET = "s3cret-Pa55"
PEER = "/ip4/127.0.0.1/tcp/9/p2p/QmedTaZXmULqwspJXz44SsPZyTNKxhnnFvYRajfH7MGhCY"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def _with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@")


def _never_started(*_args, **_kwargs):
    raise AssertionError("started with a database it cannot use")


def test_redact_hides_passwords_only():
    assert redact(f"postgresql://u:{SECRET}@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact(f"postgres://h/db?user=u&password={SECRET}&sslmode=require") == (
        "postgres://h/db?user=u&password=***&sslmode=require"
    )
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"
    # anywhere in a text (drivers quote the URL mid-message), and a password that itself holds an '@'
    assert redact(f'invalid URI: "postgresql://u:{SECRET}@h/db" (x)') == 'invalid URI: "postgresql://u:***@h/db" (x)'
    assert redact(f"postgresql://u:p@{SECRET}@h/db") == "postgresql://u:***@h/db"
    assert secrets_of(f"postgresql://u:{SECRET}%21@h/db?password=other") == [f"{SECRET}%21", f"{SECRET}!", "other"]
    assert parse_db("sqlite:///tmp/m.db").path.as_posix() == "/tmp/m.db"
    assert parse_db("sqlite:m.db").path.as_posix() == "m.db"


@pytest.mark.parametrize("command", [["crawl", "--once"], ["serve"]])
def test_a_bad_postgres_url_is_one_line_exit_2_without_the_password(pg_cluster, capsys, monkeypatch, command):
    import monitor.app
    import monitor.crawl.oneshot

    for module, name in ((monitor.app, "serve"), (monitor.crawl.oneshot, "crawl_once")):
        monkeypatch.setattr(module, name, _never_started)
    cases = [
        (f"postgresql://mon:{SECRET}@127.0.0.1:{_closed_port()}/monitor", "cannot connect"),
        (f"postgresql://postgres:{SECRET}@127.0.0.1:{pg_cluster.port}/no_such_db", "cannot connect"),
        (f"postgres://127.0.0.1:{pg_cluster.port}/x?password={SECRET}&bogus_option=1", "cannot be used"),
        # URLs the driver cannot parse: its message quotes the URL, or the bad password alone
        (f"postgresql://u:{SECRET}@[::1/db", "cannot be used"),
        (f"postgresql://u:{SECRET}%zz@127.0.0.1:{pg_cluster.port}/db", "cannot be used"),
    ]
    for url, reason in cases:
        with pytest.raises(SystemExit) as exited:
            main([*command, "--db", url, "--initial-peer", PEER])
        assert exited.value.code == EXIT_BAD_CONFIG, url
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"config error: database {redact(url)!r}: {reason}"), err
        assert SECRET not in err and "***" in err


def test_the_web_hides_credentials_answers_503_while_the_database_is_gone_and_recovers(pg_cluster, pg_url, caplog):
    url = _with_password(pg_url)
    build_store(url)
    caplog.set_level(logging.DEBUG)
    with served(url) as live:
        for path in ("/", "/api/v1/state", "/crawls", "/api/v1/crawls", "/metrics", "/models/nope"):
            reply = live.get(path)
            assert reply.status in (200, 404), path
            assert SECRET not in reply.text and pg_url.rsplit("/", 1)[1] not in reply.text, path
        pg_cluster.database_gone(pg_url, True)
        try:
            gone = live.get("/api/v1/state")
            assert gone.status == 503 and gone.json() == {"error": {"status": 503, "message": "Database unavailable"}}
            assert gone.headers["Retry-After"]
            assert live.get("/").status == 503
        finally:
            pg_cluster.database_gone(pg_url, False)
        statuses = []
        for _ in range(10):  # each try is bounded by the pool's timeout
            statuses.append(live.get("/api/v1/state").status)
            if statuses[-1] == 200:
                break
        assert statuses[-1] == 200, statuses
    assert SECRET not in caplog.text


def test_the_writer_reconnects_and_fails_the_crawl_it_lost(pg_cluster, pg_url):
    with StoreWriter(pg_url) as writer:
        first = writer.write_snapshot(make_snapshot(t=T0)).id
        lost = writer.begin_crawl("test", T0 + 55)
        pg_cluster.database_gone(pg_url, True)
        try:
            with pytest.raises(psycopg.OperationalError):
                writer.finish_crawl(lost, make_snapshot(t=T0 + 60))
            with pytest.raises(psycopg.OperationalError):  # still gone: the new connection is refused
                writer.fail_crawl(lost, "the crawl job's own report of the failure")
            with pytest.raises(psycopg.OperationalError):  # the next scheduled crawl cannot start either
                writer.begin_crawl("test", T0 + 115)
        finally:
            pg_cluster.database_gone(pg_url, False)
        summary = writer.write_snapshot(make_snapshot(t=T0 + 120))  # the retry, once it is back
        assert summary.status == "succeeded" and summary.id > lost
    crawls = {c.id: c for c in _crawls(pg_url)}
    assert [crawls[i].status for i in (first, lost, summary.id)] == ["succeeded", "failed", "succeeded"]
    assert crawls[lost].error.startswith(DATABASE_LOST)
    assert len(crawls) == 3  # nothing half-written, no crawl left "started"


def _crawls(url):
    from monitor.store.sqlite import Store

    with Store(url) as store:
        return store.crawls("test")


def test_the_change_watch_sees_every_replicas_commits_and_nothing_else(pg_url):
    import select

    from monitor.store.sqlite import Store
    from monitor.web.changes import PgChangeWatch, open_watch

    with Store(pg_url) as store, StoreWriter(pg_url) as one, StoreWriter(pg_url) as other:
        watch = open_watch(store)
        assert isinstance(watch, PgChangeWatch)
        try:
            before = watch.version()
            store.latest_snapshot("test")  # reads notify nobody
            assert watch.version() == before
            for writer, t in ((one, T0), (other, T0 + 60)):
                seen = watch.version()
                writer.write_snapshot(make_snapshot(t=t))
                assert select.select([watch._conn.fileno()], [], [], 10)[0], "no notification within 10 s"
                assert watch.version() > seen
        finally:
            watch.close()


def _keepalives(raw) -> tuple[list[str], tuple[int, ...]]:
    """What PostgreSQL says its end of ``raw`` uses, and what our end's socket is set to."""
    server = [raw.execute(f"SHOW tcp_keepalives_{name}").fetchone()[0] for name in ("idle", "interval", "count")]
    with socket.fromfd(raw.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:  # a dup: closing it is harmless
        client = tuple(
            sock.getsockopt(socket.IPPROTO_TCP, opt)
            for opt in (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT, socket.TCP_USER_TIMEOUT)
        )
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
    return server, client


def test_both_ends_of_the_writers_and_readers_connections_notice_a_silent_peer_within_a_minute(pg_url):
    """A replica whose machine vanished loses its session (and crawl lock) in ~25 s, not the kernel's ~2 h; a
    call on a connection to a vanished server fails within ~30 s instead of blocking the writer or a reader."""
    from monitor.store.sqlite import Store

    want = (["10", "5", "3"], (10, 5, 3, 30_000))
    with Store(pg_url) as store, StoreWriter(pg_url) as writer:
        assert _keepalives(writer.conn.raw) == want
        with store._read() as reader:
            assert _keepalives(reader.raw) == want


def test_a_read_after_the_server_dropped_every_session_gets_a_fresh_connection(pg_cluster, pg_url):
    """As after a restart of PostgreSQL: the pooled reader connections are all dead, and no read may fail for it."""
    from monitor.store.sqlite import Store

    with StoreWriter(pg_url) as writer:
        writer.write_snapshot(make_snapshot(t=T0))
    with Store(pg_url) as store:
        assert store.swarms() == ["test"]  # the pool now holds a connection
        pg_cluster.end_sessions(pg_url)
        assert [store.swarms() for _ in range(3)] == [["test"]] * 3


def test_the_change_watch_reopens_rate_limited_when_the_database_comes_back(pg_cluster, pg_url):
    from monitor.web.changes import REOPEN_SECONDS, PgChangeWatch

    now = [1000.0]
    pg_cluster.database_gone(pg_url, True)
    try:
        watch = PgChangeWatch.open(pg_url, clock=lambda: now[0])  # down at start
        assert watch.version() is None and not watch.reopen_due()
    finally:
        pg_cluster.database_gone(pg_url, False)
    try:
        now[0] += REOPEN_SECONDS - 1
        assert not watch.reopen_due()  # rate-limited
        now[0] += 1
        assert watch.reopen_due() and watch.reopen()
        first = watch.version()
        assert first is not None and not watch.reopen_due()
        pg_cluster.database_gone(pg_url, True)  # its session is terminated
        try:
            # the first poll may only read the server's goodbye; the next finds the socket closed
            assert [watch.version() for _ in range(2)][-1] is None
            now[0] += REOPEN_SECONDS
            assert watch.reopen_due() and not watch.reopen()
            assert not watch.reopen_due()
        finally:
            pg_cluster.database_gone(pg_url, False)
        now[0] += REOPEN_SECONDS
        assert watch.reopen()
        assert watch.version() not in (None, first)  # notifications were lost while it was down: not "unchanged"
    finally:
        watch.close()


def test_the_webs_change_watch_starts_once_the_database_that_was_down_at_start_is_back(pg_cluster, pg_url, monkeypatch):
    import asyncio

    import monitor.web.changes
    from monitor.store.sqlite import Store
    from monitor.web.reader import ReadExecutor

    monkeypatch.setattr(monitor.web.changes, "REOPEN_SECONDS", 0.0)
    with StoreWriter(pg_url) as writer:
        writer.write_snapshot(make_snapshot(t=T0))

    async def scenario(store):
        reads = ReadExecutor(store)
        pg_cluster.database_gone(pg_url, True)
        try:
            await reads.start()
        finally:
            pg_cluster.database_gone(pg_url, False)
        try:
            assert (await reads.heads())["test"][0].status == "succeeded"  # read, the watch being down
            if reads._reopening is not None:  # that read let the reopening (on a read thread) start, maybe end
                await reads._reopening
            assert reads._watch is not None and reads._watch.version() is not None, "the watch was not reopened"
            heads = await reads.heads()  # read once more, now with the watch's number
            assert reads._heads is not None and await reads.heads() is heads  # then from memory
        finally:
            reads.close()

    with Store(pg_url) as store:
        asyncio.run(scenario(store))


def _state(pid: int) -> str:
    """A process's state letter in /proc (``T``: stopped)."""
    from pathlib import Path

    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_reads_of_a_frozen_backend_answer_503_at_their_deadline_and_never_hold_the_read_threads(pg_cluster, pg_url):
    """SIGSTOP the backends of the web's pooled reader connections (the kernel still ACKs: no keepalive fires, and
    a stopped backend enforces no statement_timeout): each read stuck on one answers 503 at the read deadline and
    is cut off, so the app keeps answering (from fresh connections) while they are still stopped."""
    import os
    import signal

    from monitor.config import Config, WebConfig
    from monitor.web.settings import WebSettings

    build_store(pg_url)
    workers = WebSettings().read_workers
    config = Config(web=WebConfig(read_timeout_seconds=1.0))
    with served(pg_url, config=config) as live:
        assert live.get("/api/v1/crawls").status == 200  # the pool holds a connection now
        with psycopg.connect(pg_cluster.url(pg_url.rsplit("/", 1)[1]), autocommit=True) as admin:
            frozen = [
                pid
                for (pid,) in admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = 'petals-monitor reader'"
                )
            ]
            assert frozen and all(admin.execute("SELECT pg_backend_pid()").fetchone()[0] != p for p in frozen)
            for pid in frozen:  # backends of the cluster this test session started, and only those
                os.kill(pid, signal.SIGSTOP)
            try:
                replies = []
                for _ in range(len(frozen) + workers + 2):  # bounded: each answer comes within the deadline
                    replies.append(live.get("/api/v1/crawls"))
                    if replies[-1].status == 200:
                        break
                still_stopped = [pid for pid in frozen if _state(pid) == "T"]
            finally:
                for pid in frozen:
                    os.kill(pid, signal.SIGCONT)
    first = replies[0]
    assert first.status == 503 and first.json() == {"error": {"status": 503, "message": "Database unavailable"}}
    assert first.headers["Retry-After"]
    assert replies[-1].status == 200, [r.status for r in replies]  # served while the frozen ones were stopped
    assert still_stopped == frozen
