"""Retention with synthetic times: raw → hourly → daily, and history/uptime answers survive the roll-ups."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
from factories import make_snapshot
from pg_cluster import BACKENDS

from monitor.store.retention import DAY, HOUR
from monitor.store.sqlite import Store, StoreWriter

START = 1_699_920_000.0  # a UTC midnight
DAYS = 40
CRAWL_HOURS = (1, 1.5, 7, 13, 19)  # five crawls a day, two in one hour
NOW = START + DAYS * DAY + 0.5 * HOUR  # windows then start at 00:30, never splitting a bucket that holds a crawl


def crawl_times() -> list[float]:
    return [START + d * DAY + h * HOUR for d in range(DAYS) for h in CRAWL_HOURS]


def fill(path) -> list:
    snaps = [
        make_snapshot("test", t, seed=5, step=k, n_models=2, servers_per_model=8, n_invalid=1, hostile=False)
        for k, t in enumerate(crawl_times())
    ]
    with StoreWriter(path) as writer:
        for snap in snaps:
            snap.crawl_id = writer.write_snapshot(snap).id
        old_failed = writer.begin_crawl("test", START + 3 * DAY)
        writer.fail_crawl(old_failed, "timeout", finished_at=START + 3 * DAY + 5)
        writer.write_snapshot(make_snapshot("stale", START + 2 * DAY, seed=6, n_models=1, servers_per_model=4))
    return snaps


def answers(store: Store, snaps) -> dict:
    """Everything history readers ask, at day resolution (what must not change when raw rows are rolled up)."""
    prefixes = [r.model.dht_prefix for r in snaps[0].models]
    peers = sorted({x.peer_id for s in snaps for r in s.models for x in r.servers})
    out = {}
    for prefix in prefixes:
        out[prefix] = [
            dataclasses.replace(p, throughput=round(p.throughput, 6))
            for p in store.model_history("test", prefix, START - DAY, NOW, DAY)
        ]
        out[f"{prefix} blocks"] = store.block_history("test", prefix, START - DAY, NOW, DAY).series
    for peer in peers:
        out[peer] = store.server_uptime(peer, NOW, (DAY, 7 * DAY, 30 * DAY, 100 * DAY))
    return out


def table_count(store: Store, sql: str) -> int:
    with store._read() as conn:
        return conn.execute(sql).fetchone()[0]


@pytest.fixture(scope="module", params=BACKENDS)
def template(request, tmp_path_factory):
    """The 40-day database, written once per backend; each test works on its own copy (``copy_of``)."""
    if request.param == "sqlite":
        db = tmp_path_factory.mktemp("retention") / "template.db"
    else:
        cluster = request.getfixturevalue("pg_cluster")
        db = cluster.new_database()
    Store(db).close()
    yield db, fill(db)  # the writer closed: the WAL is checkpointed into the main file
    if request.param != "sqlite":
        cluster.drop_database(db)


@pytest.fixture
def copy_of(request, tmp_path):
    """``copy_of(template_db)``: a copy of a closed database (a file copy, or PostgreSQL's CREATE ... TEMPLATE)."""
    made = []

    def copy(db):
        if isinstance(db, str):
            made.append(request.getfixturevalue("pg_cluster").new_database(template=db))
            return made[-1]
        path = tmp_path / f"copy{len(made)}.db"
        shutil.copyfile(db, path)
        made.append(path)
        return path

    yield copy
    for db in made:
        if isinstance(db, str):
            request.getfixturevalue("pg_cluster").drop_database(db)


@pytest.fixture
def filled(template, copy_of):
    db, snaps = template
    store = Store(copy_of(db))
    yield store, snaps
    store.close()


def test_retention_rolls_up_without_changing_answers(filled):
    store, snaps = filled
    before = answers(store, snaps)
    assert all(before.values())
    with StoreWriter(store.location) as writer:
        report = writer.apply_retention(NOW, raw_days=7, hourly_days=30)
    raw_cutoff, hourly_cutoff = NOW - 7 * DAY, NOW - 30 * DAY
    old = [s for s in snaps if s.finished_at < raw_cutoff]
    assert report.crawls_rolled_up == len(old)
    assert report.crawls_deleted == len(old) + 1  # and the old failed crawl; "stale"'s only crawl is kept
    assert report.hourly_folded > 0 and report.daily_deleted == 0

    kept = [c.finished_at for c in store.crawls("test", limit=10_000)]
    assert min(kept) >= raw_cutoff and len(kept) == len(snaps) - len(old)
    assert store.latest_snapshot("stale") is not None  # the last good snapshot of a swarm survives any age
    assert store.snapshot(old[0].crawl_id) is None
    assert table_count(store, "SELECT count(*) FROM servers WHERE crawl_id NOT IN (SELECT id FROM crawls)") == 0
    assert table_count(store, "SELECT count(*) FROM blocks WHERE crawl_id NOT IN (SELECT id FROM crawls)") == 0
    assert (
        table_count(store, f"SELECT count(*) FROM model_rollups WHERE tier = 'hourly' AND bucket_ts < {hourly_cutoff}")
        == 0
    )
    assert (
        table_count(store, f"SELECT count(*) FROM model_rollups WHERE tier = 'hourly' AND bucket_ts >= {raw_cutoff}")
        == 0
    )
    assert table_count(store, "SELECT min(bucket_ts) FROM model_rollups WHERE tier = 'hourly'") >= hourly_cutoff - HOUR
    assert table_count(store, "SELECT count(*) FROM model_rollups WHERE tier = 'daily'") > 0
    assert table_count(store, "SELECT sum(n_crawls) FROM crawl_rollups WHERE swarm = 'test'") == len(old)

    assert answers(store, snaps) == before

    peer = snaps[0].models[0].servers[0].peer_id
    history = store.server_history(peer, START, NOW)
    assert any(p.crawl_id is None for p in history) and any(p.crawl_id is not None for p in history)
    assert all(p.crawl_id is None for p in history if p.ts < raw_cutoff)

    with StoreWriter(store.location) as writer:  # running it again changes nothing
        again = writer.apply_retention(NOW, raw_days=7, hourly_days=30)
    assert (again.crawls_rolled_up, again.crawls_deleted, again.hourly_folded) == (0, 0, 0)
    assert answers(store, snaps) == before


def test_daily_passes_equal_one_big_pass(copy_of, template, filled):
    store, snaps = filled
    with StoreWriter(store.location) as writer:
        writer.apply_retention(NOW, raw_days=7, hourly_days=30)
    once = answers(store, snaps)

    path2 = copy_of(template[0])
    store2 = Store(path2)
    with StoreWriter(path2) as writer:
        # as a long-running monitor would: many passes, at times that split hours and days between passes
        for now in range(int(START + 7 * DAY + 1.25 * HOUR), int(NOW), int(5 * HOUR)):
            writer.apply_retention(float(now), raw_days=7, hourly_days=30)
        writer.apply_retention(NOW, raw_days=7, hourly_days=30)
    assert answers(store2, snaps) == once
    store2.close()


def test_daily_rows_expire_when_asked(filled):
    store, snaps = filled
    prefix = snaps[0].models[0].model.dht_prefix
    with StoreWriter(store.location) as writer:
        writer.apply_retention(NOW, raw_days=7, hourly_days=30)
        points = store.model_history("test", prefix, START, NOW, DAY)
        assert points[0].ts == START
        report = writer.apply_retention(NOW, raw_days=7, hourly_days=30, daily_days=35)
    assert report.daily_deleted > 0
    points = store.model_history("test", prefix, START, NOW, DAY)
    assert points[0].ts >= NOW - 35 * DAY - DAY and points[-1].ts == START + (DAYS - 1) * DAY


def test_windows_must_be_ordered(filled):
    store, _ = filled
    with StoreWriter(store.location) as writer, pytest.raises(ValueError):
        writer.apply_retention(NOW, raw_days=30, hourly_days=7)


def _with_pings(store: Store, crawl_id: int) -> int:
    pinged = "next_pings IS NOT NULL OR pings_to_me != '{}'"
    return table_count(store, f"SELECT count(*) FROM servers WHERE crawl_id = {crawl_id} AND ({pinged})")


def _other_columns(store: Store, crawl_id: int) -> list:
    with store._read() as conn:
        return conn.execute(
            "SELECT peer_id, state, span_start, span_end, expiration, throughput, public_name, version "
            "FROM servers WHERE crawl_id = ? ORDER BY id",
            (crawl_id,),
        ).fetchall()


def test_ping_tables_are_cleared_after_pings_days_and_nothing_else(db_location):
    now = NOW
    times = {
        "long_ago": now - 3 * DAY,  # past the line before the last PINGS_WINDOW: left to the roll-up
        "just_past": now - DAY - HOUR,  # crossed the line within the window: cleared
        "recent": now - 2 * HOUR,  # younger than pings_days: kept
    }
    path = db_location
    Store(path).close()
    ids = {}
    with StoreWriter(path) as writer:
        for name, t in times.items():
            ids[name] = writer.write_snapshot(make_snapshot("test", t, seed=3, n_models=1, servers_per_model=8)).id
        ids["stale_newest"] = writer.write_snapshot(
            make_snapshot("stale", now - DAY - 2 * HOUR, seed=4, n_models=1, servers_per_model=8)
        ).id  # the newest crawl of its swarm: what its dashboard shows, kept whole
    store = Store(path)
    try:
        before = {name: (_with_pings(store, i), _other_columns(store, i)) for name, i in ids.items()}
        assert all(n > 0 for n, _ in before.values()), before  # the factory's servers carry pings
        with StoreWriter(path) as writer:
            report = writer.apply_retention(now, raw_days=7, hourly_days=30, pings_days=1)
            assert writer.apply_retention(now, raw_days=7, hourly_days=30, pings_days=1).server_pings_cleared == 0
        after = {name: (_with_pings(store, i), _other_columns(store, i)) for name, i in ids.items()}
        assert after["just_past"][0] == 0
        assert report.server_pings_cleared == before["just_past"][0]
        for name in ("long_ago", "recent", "stale_newest"):
            assert after[name][0] == before[name][0], name
        assert all(after[name][1] == before[name][1] for name in ids)  # every other column as it was
        assert store.snapshot(ids["just_past"]) is not None  # the crawl still reads back, without its pings
    finally:
        store.close()


def test_pings_days_must_be_positive(filled):
    store, _ = filled
    with StoreWriter(store.location) as writer, pytest.raises(ValueError, match="pings_days"):
        writer.apply_retention(NOW, pings_days=0)


def test_a_swarm_that_never_succeeded_does_not_stop_the_others_rolling_up(db_location):
    """Each swarm's newest succeeded crawl is kept raw; a swarm with none must not turn that list into a NULL
    (``id NOT IN (..., NULL)`` matches nothing, so no crawl of any swarm was ever rolled up)."""
    path = db_location
    Store(path).close()
    with StoreWriter(path) as writer:
        ids = [writer.write_snapshot(make_snapshot("test", START + d * DAY, seed=7, n_models=1)).id for d in range(3)]
        broken = writer.begin_crawl("never-ok", START)
        writer.fail_crawl(broken, "bootstrap peers unreachable", finished_at=START + 5)
        report = writer.apply_retention(START + 30 * DAY, raw_days=7, hourly_days=30)
    store = Store(path)
    try:
        assert report.crawls_rolled_up == 2  # the two older crawls of "test"; its newest stays whole
        assert [c.id for c in store.crawls("test")] == [ids[-1]]
        assert store.crawls("never-ok") == []  # its failed crawl was old: deleted
    finally:
        store.close()
