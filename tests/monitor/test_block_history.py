"""Block history (``monitor.store.block_history``): per-block series, dark periods, and both surviving retention."""

from __future__ import annotations

import dataclasses

import pytest
from factories import make_block_snapshot

from monitor.snapshot import Snapshot
from monitor.store import block_history as bh
from monitor.store.history import DarkPeriod
from monitor.store.retention import DAY, HOUR
from monitor.store.sqlite import Store, StoreWriter

START = 1_699_920_000.0  # a UTC midnight
MINUTE = 60.0
EVERY = 10 * MINUTE
TIMES = [START + k * EVERY for k in range(36)]  # 00:00 .. 05:50, one crawl every 10 minutes
NUM_BLOCKS = 4


def at(hours: int, minutes: int = 0) -> float:
    return START + hours * HOUR + minutes * MINUTE


# block -> the crawl times at which it had no online server
DARK = {
    1: {at(0, 50), at(1, 0), at(1, 10)},  # across an hour boundary; lit again at 01:20
    2: {at(3, 0), at(3, 30)},  # two short spells inside one hour
    3: {at(5, 40), at(5, 50)},  # still dark at the last crawl
}


def crawl(t: float) -> Snapshot:
    return make_block_snapshot(t, DARK, num_blocks=NUM_BLOCKS)


def stored(location) -> Store:
    with StoreWriter(location) as writer:
        for t in TIMES:
            writer.write_snapshot(crawl(t))
    return Store(location)


@pytest.fixture
def store(db_location):
    """The crawls above in a store of each backend (the block SQL must mean the same on both)."""
    store = stored(db_location)
    yield store
    store.close()


def prefix_of(store: Store) -> str:
    snap = store.latest_snapshot("test")
    assert snap is not None
    return snap.models[0].model.dht_prefix


def test_raw_crawls_give_one_point_per_crawl_and_exact_dark_periods(store):
    history = store.block_history("test", prefix_of(store), START, TIMES[-1])
    assert (history.num_blocks, history.step, history.coarsened) == (NUM_BLOCKS, None, False)
    assert [len(points) for points in history.series] == [len(TIMES)] * NUM_BLOCKS
    point = history.series[1][5]  # 00:50, dark
    assert (point.ts, point.min_online, point.dark_crawls, point.crawls) == (at(0, 50), 0, 1, 1)
    assert history.dark[0] == []
    assert history.dark[1] == [DarkPeriod(1, at(0, 50), at(1, 20), at(1, 10))]
    assert history.dark[1][0].duration == 30 * MINUTE
    assert history.dark[2] == [
        DarkPeriod(2, at(3, 0), at(3, 10), at(3, 0)),
        DarkPeriod(2, at(3, 30), at(3, 40), at(3, 30)),
    ]
    assert history.dark[3] == [DarkPeriod(3, at(5, 40), None, at(5, 50))]


def test_buckets_merge_crawls_worst_best_and_mean(store):
    history = store.block_history("test", prefix_of(store), START, TIMES[-1], HOUR)
    assert history.step == HOUR and not history.coarsened
    first, second = history.series[1][:2]  # block 1 serves 2 when lit: dark at 00:50, 01:00, 01:10
    assert (first.ts, first.crawls, first.dark_crawls, first.min_online, first.max_online) == (START, 6, 1, 0, 2)
    assert first.mean_online == pytest.approx(10 / 6)
    assert (second.ts, second.crawls, second.dark_crawls) == (at(1), 6, 2)


def test_a_block_that_goes_dark_and_comes_back_survives_hourly_then_daily_rollups(store):
    prefix = prefix_of(store)
    raw = store.block_history("test", prefix, START - DAY, START + 60 * DAY, HOUR)
    raw_daily = store.block_history("test", prefix, START - DAY, START + 60 * DAY, DAY)

    with StoreWriter(store.location) as writer:
        writer.apply_retention(START + 3 * DAY, raw_days=1, hourly_days=30)
    assert len(store.crawls("test", limit=100)) == 1  # only the newest crawl is still raw
    hourly = store.block_history("test", prefix, START - DAY, START + 60 * DAY, HOUR)
    assert hourly.series == raw.series  # mergeable: the same buckets, however they were stored
    assert hourly.dark[1] == raw.dark[1]  # start, end (the first lit crawl) and last dark crawl, exactly
    assert hourly.dark[3] == raw.dark[3]  # dark into the newest (raw) crawl: still open
    # two spells inside one rolled-up hour read as one, from the first dark crawl to the first lit one after both
    assert hourly.dark[2] == [DarkPeriod(2, at(3, 0), at(3, 40), at(3, 30))]

    with StoreWriter(store.location) as writer:
        writer.apply_retention(START + 40 * DAY, raw_days=1, hourly_days=2)
    with store._read() as conn:
        tiers = dict(conn.execute("SELECT tier, count(*) FROM block_rollups GROUP BY tier").fetchall())
    assert tiers == {"daily": NUM_BLOCKS}
    daily = store.block_history("test", prefix, START - DAY, START + 60 * DAY, DAY)
    assert daily.series == raw_daily.series
    assert daily.dark[1] == raw.dark[1] and daily.dark[3] == raw.dark[3]


def test_many_retention_passes_store_what_one_pass_stores(tmp_path):
    stored(tmp_path / "b.db").close()  # SQLite: the file is copied to replay the passes

    def rollup_rows(path):
        with Store(path) as s, s._read() as conn:
            return conn.execute("SELECT * FROM block_rollups ORDER BY tier, block, bucket_ts").fetchall()

    path, copy = tmp_path / "b.db", tmp_path / "copy.db"
    copy.write_bytes(path.read_bytes())
    with StoreWriter(path) as writer:
        writer.apply_retention(START + 3 * DAY, raw_days=1, hourly_days=30)
    with StoreWriter(copy) as writer:
        for minute in range(25, 6 * 60, 25):  # every 25 minutes: passes split the hours
            writer.apply_retention(START + DAY + minute * MINUTE, raw_days=1, hourly_days=30)
        writer.apply_retention(START + 3 * DAY, raw_days=1, hourly_days=30)
    assert rollup_rows(copy) == rollup_rows(path) != []


def test_merge_is_order_free():
    crawls = [bh.BlockAgg.of_crawl(t, online) for t, online in [(1, 2), (2, 0), (3, 0), (4, 1), (5, 0), (6, 3)]]
    forward, backward = dataclasses.replace(crawls[0]), dataclasses.replace(crawls[-1])
    for agg in crawls[1:]:
        forward.merge(agg)
    for agg in reversed(crawls[:-1]):
        backward.merge(agg)
    assert forward == backward
    appended = bh.BlockAgg.of_crawl(1, 2)  # the fast path retention takes over rows in time order
    for agg in crawls[1:]:
        appended.append(agg.first_ts, agg.last_online)
    assert appended == forward
    assert (forward.first_dark_ts, forward.last_dark_ts, forward.lit_after_ts, forward.last_online) == (2, 5, 6, 3)
    assert bh.dark_periods(0, forward.events()) == [DarkPeriod(0, 2, 6, 5)]


def test_points_are_bounded_and_the_answer_says_it_was_coarsened(store):
    prefix = prefix_of(store)
    with store._read() as conn:
        history = bh.block_history(conn, "test", prefix, START, TIMES[-1], None, max_cells=40)
        asked = bh.block_history(conn, "test", prefix, START, TIMES[-1], 60.0, max_cells=40)
    assert history.coarsened and history.step == HOUR  # at most 10 points per block: half hours make 12
    assert all(len(points) <= 10 for points in history.series)
    assert sum(p.crawls for p in history.series[0]) == len(TIMES)  # every crawl is still counted
    assert history.dark[1] == [DarkPeriod(1, at(0, 50), at(1, 20), at(1, 10))]  # dark periods keep their times
    assert asked.coarsened and asked.step == HOUR


def test_unknown_model_and_empty_range_give_no_blocks(store):
    assert store.block_history("test", "no-such-model", START, TIMES[-1]).num_blocks == 0
    assert store.block_history("test", prefix_of(store), START - 2 * DAY, START - DAY).series == []
