"""monitor.store.sqlite: round trips, the crawl lifecycle, what readers may and may not see, the writer thread;
on SQLite and on PostgreSQL (``db_location``)."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from concurrent.futures import Future

import pytest
from factories import HOSTILE_STRINGS, T0, make_empty_snapshot, make_snapshot, make_snapshots

from monitor.snapshot import CrawlStats
from monitor.store.dialect import dialect_of
from monitor.store.sqlite import EMPTY_CRAWL, INTERRUPTED, CrawlNotFound, Store, StoreWriter, WriterThread, open_store


@pytest.fixture
def db_path(db_location):
    return db_location


@pytest.fixture
def store(db_path):
    with Store(db_path) as s:
        yield s


@pytest.fixture
def writer(store):
    with StoreWriter(store.location) as w:
        yield w


def stored(snapshot, crawl_id):
    """What reading ``snapshot`` back must give: the same, succeeded, with its id."""
    return dataclasses.replace(snapshot, status="succeeded", crawl_id=crawl_id)


def test_round_trip_equal(store, writer):
    snap = make_snapshot(seed=1)
    summary = writer.write_snapshot(snap)
    assert summary.status == "succeeded"
    assert store.snapshot(summary.id) == stored(snap, summary.id)
    assert store.latest_snapshot("test") == stored(snap, summary.id)


@pytest.mark.parametrize("seed", range(6))
def test_round_trip_many_shapes(store, writer, seed):
    snap = make_snapshot(f"swarm-{seed}", T0 + seed, seed, n_models=1 + seed % 4, servers_per_model=3 + 5 * seed)
    crawl_id = writer.write_snapshot(snap).id
    assert store.snapshot(crawl_id) == stored(snap, crawl_id)


def test_round_trip_keeps_hostile_strings_inf_pings_and_nones(store, writer):
    snap = make_snapshot(seed=7, servers_per_model=40, n_invalid=12)
    texts = {r.info.public_name for m in snap.models for r in m.servers}
    texts |= {r.info.version for m in snap.models for r in m.servers}
    texts |= {a for m in snap.models for r in m.servers for a in r.info.adapters}
    assert texts & set(HOSTILE_STRINGS), "the factory should plant hostile strings"
    assert any("\x00" in t for t in texts if t), "including a NUL byte"
    pings = [p for m in snap.models for r in m.servers for p in (r.info.next_pings or {}).values()]
    assert float("inf") in pings
    crawl_id = writer.write_snapshot(snap).id
    back = store.snapshot(crawl_id)
    assert back == stored(snap, crawl_id)
    hostile_names = [
        r.info.public_name for m in back.models for r in m.servers if r.info.public_name in HOSTILE_STRINGS
    ]
    assert hostile_names, "hostile public names come back verbatim"


@pytest.mark.parametrize("db_location", ["sqlite"], indirect=True)
def test_pragmas(store, writer):
    assert writer.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert writer.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert writer.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    with store._read() as conn:
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("DELETE FROM crawls")


def test_lifecycle_and_crawl_log(store, writer):
    assert store.swarms() == [] and store.latest_snapshot("test") is None and store.last_crawl("test") is None
    crawl_id = writer.begin_crawl("test", T0 - 10)
    running = store.last_crawl("test")
    assert (running.id, running.status, running.finished_at, running.duration) == (crawl_id, "started", None, None)
    assert store.latest_snapshot("test") is None and store.snapshot(crawl_id) is None
    assert store.last_good_crawl("test") is None
    snap = make_snapshot(t=T0)
    summary = writer.finish_crawl(crawl_id, snap)
    assert summary == store.crawl(crawl_id) == store.last_good_crawl("test")
    assert summary.finished_at == T0 and summary.duration == snap.duration
    assert summary.records == snap.stats.records and summary.invalid_by_reason == snap.stats.invalid_by_reason
    assert store.swarms() == ["test"]
    with pytest.raises(ValueError, match="already succeeded"):
        writer.finish_crawl(crawl_id, snap)
    with pytest.raises(ValueError, match="already succeeded"):
        writer.fail_crawl(crawl_id, "late failure")
    with pytest.raises(CrawlNotFound):
        writer.finish_crawl(9999, snap)


def test_failed_and_empty_crawls_never_replace_the_last_good_snapshot(store, writer):
    good = writer.write_snapshot(make_snapshot(t=T0))
    failed_id = writer.begin_crawl("test", T0 + 50)
    stats = CrawlStats(peers_contacted=0, peers_failed=3, rpcs=3)
    failed = writer.fail_crawl(failed_id, "no bootstrap peer answered", stats, finished_at=T0 + 60)
    assert (failed.status, failed.error, failed.peers_failed, failed.finished_at) == (
        "failed",
        "no bootstrap peer answered",
        3,
        T0 + 60,
    )
    empty = writer.write_snapshot(make_empty_snapshot(t=T0 + 120))
    assert (empty.status, empty.error) == ("failed", EMPTY_CRAWL)
    assert store.last_crawl("test").id == empty.id
    assert store.last_good_crawl("test").id == good.id
    assert store.latest_snapshot("test").crawl_id == good.id
    assert store.snapshot(failed_id) is None and store.snapshot(empty.id) is None
    for table in ("models", "servers", "blocks", "bootstrap_peers", "invalid_records", "reachability"):
        with store._read() as conn:
            n = conn.execute(f"SELECT count(*) FROM {table} WHERE crawl_id IN (?, ?)", (failed_id, empty.id))
            assert n.fetchone()[0] == 0, table


def test_snapshot_at_and_crawls_paging(store, writer):
    snaps = make_snapshots(count=5, interval=60)
    ids = [writer.write_snapshot(s).id for s in snaps]
    writer.write_snapshot(make_snapshot("other", T0 + 30, seed=9))
    assert store.swarms() == ["other", "test"]
    assert store.snapshot_at("test", T0 - 1) is None
    assert store.snapshot_at("test", T0).crawl_id == ids[0]
    assert store.snapshot_at("test", T0 + 119.9).crawl_id == ids[1]
    assert store.snapshot_at("test", T0 + 10_000).crawl_id == ids[-1]
    page1 = store.crawls("test", limit=2)
    assert [c.id for c in page1] == ids[::-1][:2]
    page2 = store.crawls("test", limit=2, before_id=page1[-1].id)
    assert [c.id for c in page2] == ids[::-1][2:4]
    assert len(store.crawls()) == 6 and {c.swarm for c in store.crawls()} == {"test", "other"}
    assert store.crawl(12345) is None


def test_finish_rejects_another_swarms_snapshot_and_writes_nothing(store, writer):
    crawl_id = writer.begin_crawl("test", T0)
    with pytest.raises(ValueError, match="swarm"):
        writer.finish_crawl(crawl_id, make_snapshot("elsewhere"))
    assert store.crawl(crawl_id).status == "started"


def test_a_failure_mid_write_rolls_back_everything(store, writer):
    crawl_id = writer.begin_crawl("test", T0)
    snap = make_snapshot(t=T0)
    snap.models[1].servers[3].pings_to_me["x"] = object()  # not JSON: fails after model 0 rows were inserted
    with pytest.raises(TypeError):
        writer.finish_crawl(crawl_id, snap)
    assert store.crawl(crawl_id).status == "started"
    with store._read() as conn:
        assert conn.execute("SELECT count(*) FROM models").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM servers").fetchone()[0] == 0


def test_readers_do_not_see_an_uncommitted_crawl(store, writer):
    first = writer.write_snapshot(make_snapshot(t=T0)).id
    crawl_id = writer.begin_crawl("test", T0 + 50)
    writer.conn.execute(dialect_of(writer.conn).begin_write)
    try:
        from monitor.store.rows import write_snapshot_rows

        write_snapshot_rows(writer.conn, crawl_id, make_snapshot(t=T0 + 60, seed=2))
        writer.conn.execute("UPDATE crawls SET status = 'succeeded', finished_at = ? WHERE id = ?", (T0 + 60, crawl_id))
        assert store.latest_snapshot("test").crawl_id == first  # the writer's transaction is still open
        assert store.crawl(crawl_id).status == "started"
    finally:
        writer.conn.execute("ROLLBACK")


def test_interrupted_crawls_are_failed_when_the_next_writer_opens(db_path):
    store = Store(db_path)
    w = StoreWriter(db_path)
    crawl_id = w.begin_crawl("test", T0)
    w.close()  # as if the process died mid-crawl
    assert store.crawl(crawl_id).status == "started"
    w2 = StoreWriter(db_path)
    assert w2.interrupted == 1
    summary = store.crawl(crawl_id)
    assert (summary.status, summary.error) == ("failed", INTERRUPTED)
    w2.close()
    store.close()


def test_writer_thread_runs_calls_in_one_thread_in_order(store):
    seen_threads: set[int] = set()

    def record(writer, tag):
        seen_threads.add(threading.get_ident())
        return tag

    with store.writer() as wt:
        assert isinstance(wt, WriterThread)
        futures = [wt.submit(record, i) for i in range(20)]
        assert [f.result(timeout=10) for f in futures] == list(range(20))
        summary = wt.write_snapshot(make_snapshot()).result(timeout=10)
        assert store.latest_snapshot("test").crawl_id == summary.id
        crawl_id = wt.begin_crawl("test", T0 + 1).result(timeout=10)
        failed = wt.fail_crawl(crawl_id, "boom", finished_at=T0 + 2).result(timeout=10)
        assert failed.status == "failed"
        boom: Future = wt.submit(lambda w: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            boom.result(timeout=10)
        assert wt.submit(lambda w: "still alive").result(timeout=10) == "still alive"
    assert len(seen_threads) == 1 and threading.get_ident() not in seen_threads
    with pytest.raises(RuntimeError, match="closed"):
        wt.submit(record, 0)


@pytest.mark.parametrize("db_location", ["sqlite"], indirect=True)
def test_writer_connection_refuses_other_threads(writer):
    errors = []

    def use():
        try:
            writer.begin_crawl("test", T0)
        except sqlite3.ProgrammingError as exc:
            errors.append(exc)

    t = threading.Thread(target=use)
    t.start()
    t.join(10)
    assert errors, "the writer must only be used from its own thread"


def test_store_create_false_requires_the_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        Store(tmp_path / "missing.db", create=False)
    assert open_store(tmp_path / "new.db").swarms() == []
    assert Store(tmp_path / "new.db", create=False).swarms() == []


def test_readers_in_many_threads_while_writing(store):
    """Readers in several threads keep answering with whole snapshots while the writer thread writes."""
    snaps = make_snapshots(count=8, interval=60)
    problems: list[str] = []
    stop = threading.Event()

    def read_loop():
        for _ in range(2000):
            if stop.is_set():
                return
            snap = store.latest_snapshot("test")
            if snap is not None and snap != stored(snaps[round((snap.finished_at - T0) / 60)], snap.crawl_id):
                problems.append(f"crawl {snap.crawl_id} read back different")

    readers = [threading.Thread(target=read_loop) for _ in range(3)]
    for t in readers:
        t.start()
    with store.writer() as wt:
        for snap in snaps:
            wt.write_snapshot(snap).result(timeout=30)
    stop.set()
    for t in readers:
        t.join(30)
    assert not problems
    assert store.latest_snapshot("test").finished_at == snaps[-1].finished_at


def test_readers_cannot_write(store, writer):
    writer.write_snapshot(make_snapshot())
    with pytest.raises(Exception, match=r"(?i)read-?only"), store._read() as conn:
        conn.execute("DELETE FROM crawls")
    assert store.latest_snapshot("test") is not None
