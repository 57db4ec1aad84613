"""Block history, "when did block N go dark": online servers per block over time, from raw crawls (the ``blocks``
table) and ``block_rollups`` (the tiers are disjoint, see ``monitor.store.retention``).

- Write side: :class:`BlockAgg` is one block's mergeable aggregate over some crawls (counts, sums, min/max, the
  last value, and when it was dark). :func:`roll_raw_into_hourly` and :func:`fold_hourly_into_daily` fill
  ``block_rollups`` with it inside retention's transaction. The fold runs in Python over rows read in time order
  (an hourly pass at one crawl a minute: ~5,000 rows per 80-block model), so the SQL is plain SELECTs and one
  ``INSERT ... ON CONFLICT ... DO UPDATE``.
- Read side: :func:`block_history` (the API and the model page's heatmap): per block, bucketed points (worst and
  best case, mean, crawls, dark crawls) and the dark periods, with the number of points bounded by coarsening the
  step. Dark periods of raw crawls are exact (runs of consecutive crawls, found with window functions); inside a
  rollup bucket only the first and last dark crawl and the first lit one after them survive.

Portability: window functions and ``ON CONFLICT`` are standard; the bucket arithmetic comes from the connection's
``Dialect`` (SQLite's CAST truncates, PostgreSQL's rounds).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from dataclasses import astuple, dataclass

from .dialect import dialect_of
from .history import BlockHistory, BlockPoint, DarkPeriod

MAX_CELLS = 20_000  # points over all blocks of one answer (a 126-block model: 158 per block)
MAX_POINTS = 1_000  # points per block
MAX_DARK = 100  # dark periods listed per block (the newest)
NICE_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 14400, 21600, 43200, 86400)

_AGG_COLUMNS = (
    "n, n_dark, min_online, max_online, sum_online, first_ts, last_ts, last_online, first_dark_ts, last_dark_ts, "
    "lit_after_ts"
)
_KEY = "tier = ? AND swarm = ? AND dht_prefix = ? AND block = ? AND bucket_ts = ?"
_UPSERT = f"""INSERT INTO block_rollups (tier, swarm, dht_prefix, block, bucket_ts, {_AGG_COLUMNS})
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (tier, swarm, dht_prefix, block, bucket_ts) DO UPDATE SET
        n = excluded.n, n_dark = excluded.n_dark, min_online = excluded.min_online,
        max_online = excluded.max_online, sum_online = excluded.sum_online, first_ts = excluded.first_ts,
        last_ts = excluded.last_ts, last_online = excluded.last_online, first_dark_ts = excluded.first_dark_ts,
        last_dark_ts = excluded.last_dark_ts, lit_after_ts = excluded.lit_after_ts"""

Key = tuple[str, str, int, float]  # (swarm, dht_prefix, block, bucket_ts)


@dataclass(slots=True)
class BlockAgg:
    """One block over some crawls. ``merge`` is order-free, so a bucket filled in several passes equals one pass."""

    n: int
    n_dark: int  # crawls that saw no online server for the block
    min_online: int
    max_online: int
    sum_online: int
    first_ts: float
    last_ts: float
    last_online: int  # at ``last_ts``
    first_dark_ts: float | None
    last_dark_ts: float | None
    lit_after_ts: float | None  # the first lit crawl after ``last_dark_ts`` (None: dark at ``last_ts``, or never)

    @classmethod
    def of_crawl(cls, ts: float, online: int) -> BlockAgg:
        dark = ts if online == 0 else None
        return cls(1, int(online == 0), online, online, online, ts, ts, online, dark, dark, None)

    def append(self, ts: float, online: int) -> None:
        """Add a crawl newer than every one in the aggregate (the fast path: rows read in time order)."""
        self.n += 1
        self.sum_online += online
        self.min_online = min(self.min_online, online)
        self.max_online = max(self.max_online, online)
        self.last_ts = ts
        self.last_online = online
        if online == 0:
            self.n_dark += 1
            if self.first_dark_ts is None:
                self.first_dark_ts = ts
            self.last_dark_ts = ts
            self.lit_after_ts = None
        elif self.last_dark_ts is not None and self.lit_after_ts is None:
            self.lit_after_ts = ts

    def merge(self, other: BlockAgg) -> None:
        darks = [t for t in (self.last_dark_ts, other.last_dark_ts) if t is not None]
        last_dark = max(darks, default=None)
        lit_after = None
        if last_dark is not None:
            # lit crawls known on each side: its lit_after, its last crawl once past every dark one, and all of it
            # when it was never dark
            known = [
                t
                for side in (self, other)
                for t in (side.lit_after_ts, side.last_ts, side.first_ts if side.n_dark == 0 else None)
                if t is not None and t > last_dark
            ]
            lit_after = min(known, default=None)
        first_darks = [t for t in (self.first_dark_ts, other.first_dark_ts) if t is not None]
        if other.last_ts >= self.last_ts:
            self.last_online = other.last_online
        self.n += other.n
        self.n_dark += other.n_dark
        self.min_online = min(self.min_online, other.min_online)
        self.max_online = max(self.max_online, other.max_online)
        self.sum_online += other.sum_online
        self.first_ts = min(self.first_ts, other.first_ts)
        self.last_ts = max(self.last_ts, other.last_ts)
        self.first_dark_ts = min(first_darks, default=None)
        self.last_dark_ts = last_dark
        self.lit_after_ts = lit_after

    def events(self) -> list[tuple[float, bool]]:
        """What the aggregate still tells about darkness: ``(ts, dark)`` observations, for :func:`dark_periods`."""
        if self.first_dark_ts is None or self.last_dark_ts is None:
            return [(self.first_ts, False), (self.last_ts, False)]
        seen = [(self.first_dark_ts, True), (self.last_dark_ts, True)]
        if self.first_ts < self.first_dark_ts:
            seen.append((self.first_ts, False))
        if self.lit_after_ts is not None:
            seen.append((self.lit_after_ts, False))
        if self.last_ts > self.last_dark_ts:
            seen.append((self.last_ts, False))
        return seen


def floor_to(ts: float, width: float) -> float:
    return math.floor(ts / width) * width


def _add(aggs: dict[Key, BlockAgg], key: Key, agg: BlockAgg) -> None:
    if key in aggs:
        aggs[key].merge(agg)
    else:
        aggs[key] = agg


def _upsert(conn: sqlite3.Connection, tier: str, aggs: dict[Key, BlockAgg]) -> None:
    """Merge ``aggs`` into the ``tier`` rows (a bucket may already hold crawls of an earlier pass)."""
    rows = []
    for (swarm, prefix, block, bucket), agg in aggs.items():
        key = (tier, swarm, prefix, block, bucket)
        old = conn.execute(f"SELECT {_AGG_COLUMNS} FROM block_rollups WHERE {_KEY}", key).fetchone()
        if old is not None:
            merged = BlockAgg(*old)
            merged.merge(agg)
            agg = merged
        rows.append((*key, *astuple(agg)))
    conn.executemany(_UPSERT, rows)


def roll_raw_into_hourly(conn: sqlite3.Connection, width: float) -> None:
    """Aggregate the block rows of the crawls listed in retention's temp table ``_expiring`` into ``width`` buckets."""
    aggs: dict[Key, BlockAgg] = {}
    for swarm, prefix, block, ts, online in conn.execute(
        """SELECT c.swarm, m.dht_prefix, b.block, m.ts, b.online
        FROM blocks b JOIN _expiring e ON e.id = b.crawl_id JOIN crawls c ON c.id = b.crawl_id
        JOIN models m ON m.id = b.model_id
        WHERE c.status = 'succeeded' ORDER BY c.swarm, m.dht_prefix, b.block, m.ts"""
    ):
        key = (swarm, prefix, block, floor_to(ts, width))
        agg = aggs.get(key)
        if agg is None:
            aggs[key] = BlockAgg.of_crawl(ts, online)
        else:
            agg.append(ts, online)
    _upsert(conn, "hourly", aggs)


def fold_hourly_into_daily(conn: sqlite3.Connection, cutoff: float, width: float) -> None:
    """Merge hourly rows whose bucket starts before ``cutoff`` into ``width`` buckets (retention deletes them)."""
    aggs: dict[Key, BlockAgg] = {}
    for swarm, prefix, block, bucket_ts, *values in conn.execute(
        f"SELECT swarm, dht_prefix, block, bucket_ts, {_AGG_COLUMNS} FROM block_rollups "
        "WHERE tier = 'hourly' AND bucket_ts < ?",
        (cutoff,),
    ):
        _add(aggs, (swarm, prefix, block, floor_to(bucket_ts, width)), BlockAgg(*values))
    _upsert(conn, "daily", aggs)


# -- read side


def dark_periods(block: int, events: Iterable[tuple[float, bool]]) -> list[DarkPeriod]:
    """Dark periods from ``(ts, dark)`` observations in any order: dark from the first dark one to the next lit."""
    periods: list[DarkPeriod] = []
    start = last = None
    for ts, dark in sorted(set(events)):
        if dark:
            start = ts if start is None else start
            last = ts
        elif start is not None and last is not None:
            periods.append(DarkPeriod(block, start, ts, last))
            start = last = None
    if start is not None and last is not None:
        periods.append(DarkPeriod(block, start, None, last))
    return periods


def choose_step(since: float, until: float, step: float | None, columns: int, per_block: int) -> float | None:
    """``step``, or the smallest nice step that keeps the points per block at most ``per_block``."""
    if columns <= per_block:
        return step
    span = max(until - since, 1.0)
    for nice in (*NICE_STEPS, *(86400 * d for d in range(2, 10_000))):
        if nice >= (step or 0) and math.floor(until / nice) - math.floor(since / nice) + 1 <= per_block:
            return float(nice)
    return span + 1


_RAW_WHERE = """m.dht_prefix = :prefix AND m.ts BETWEEN :since AND :until AND c.swarm = :swarm
    AND c.status = 'succeeded'"""

# Runs of consecutive crawls of the model in which a block had no online server (gaps and islands): ``i`` numbers
# the model's crawls in the range, so a run is where ``i`` minus the block's own dark count stays the same.
_DARK_RUNS = f"""
WITH seq AS (
    SELECT m.id AS model_id, m.ts AS ts, row_number() OVER (ORDER BY m.ts, m.id) AS i
    FROM models m JOIN crawls c ON c.id = m.crawl_id WHERE {_RAW_WHERE}
), dark AS (
    SELECT b.block AS block, s.ts AS ts, s.i AS i, s.i - row_number() OVER (PARTITION BY b.block ORDER BY s.i) AS run
    FROM blocks b JOIN seq s ON s.model_id = b.model_id WHERE b.online = 0
)
SELECT block, min(ts), max(ts), min(i), max(i) FROM dark GROUP BY block, run"""


def block_history(
    conn: sqlite3.Connection,
    swarm: str,
    dht_prefix: str,
    since: float,
    until: float,
    step: float | None,
    *,
    max_cells: int = MAX_CELLS,
) -> BlockHistory:
    args = {"prefix": dht_prefix, "since": since, "until": until, "swarm": swarm}
    crawls = conn.execute(
        f"SELECT m.ts, m.num_blocks FROM models m JOIN crawls c ON c.id = m.crawl_id WHERE {_RAW_WHERE} ORDER BY m.ts",
        args,
    ).fetchall()
    rollups = [
        (block, bucket_ts, BlockAgg(*values))
        for block, bucket_ts, *values in conn.execute(
            f"""SELECT block, bucket_ts, {_AGG_COLUMNS} FROM block_rollups
            WHERE swarm = :swarm AND dht_prefix = :prefix AND bucket_ts BETWEEN :since AND :until""",
            args,
        )
    ]
    num_blocks = max([n for _, n in crawls] + [block + 1 for block, _, _ in rollups], default=0)
    if not num_blocks:
        return BlockHistory(since, until, step, False, 0, [], [])
    per_block = max(1, min(MAX_POINTS, max_cells // num_blocks))
    if step is None:
        columns = len({ts for ts, _ in crawls} | {bucket for _, bucket, _ in rollups})
    else:
        columns = math.floor(until / step) - math.floor(since / step) + 1
    used = choose_step(since, until, step, columns, per_block)

    cells: list[dict[float, list]] = [{} for _ in range(num_blocks)]

    def add(block: int, key: float, n: int, n_dark: int, low: int, high: int, total: int) -> None:
        if not 0 <= block < num_blocks:
            return
        cell = cells[block].get(key)
        if cell is None:
            cells[block][key] = [n, n_dark, low, high, total]
        else:
            cell[0] += n
            cell[1] += n_dark
            cell[2] = min(cell[2], low)
            cell[3] = max(cell[3], high)
            cell[4] += total

    bucket = "m.ts" if used is None else dialect_of(conn).bucket("m.ts", ":step")
    for block, key, *counts in conn.execute(
        f"""SELECT b.block, {bucket} AS bucket, count(*), sum(CASE WHEN b.online = 0 THEN 1 ELSE 0 END),
            min(b.online), max(b.online), sum(b.online)
        FROM blocks b JOIN models m ON m.id = b.model_id JOIN crawls c ON c.id = m.crawl_id
        WHERE {_RAW_WHERE} GROUP BY b.block, bucket""",
        {**args, "step": used},
    ):
        add(block, key, *counts)
    for block, bucket_ts, agg in rollups:
        key = bucket_ts if used is None else floor_to(bucket_ts, used)
        add(block, key, agg.n, agg.n_dark, agg.min_online, agg.max_online, agg.sum_online)
    series = [
        [BlockPoint(key, low, high, total / n, n, n_dark) for key, (n, n_dark, low, high, total) in sorted(c.items())]
        for c in cells
    ]

    times = [ts for ts, _ in crawls]
    runs: dict[int, list[tuple[float, float, int, int]]] = {}
    for block, *run in conn.execute(_DARK_RUNS, args):
        runs.setdefault(block, []).append(tuple(run))
    events: dict[int, list[tuple[float, bool]]] = {}
    for block in runs.keys() | {block for block, _, agg in rollups if agg.n_dark}:
        block_runs = runs.get(block, [])
        seen = events[block] = [(times[0], any(first_i == 1 for _, _, first_i, _ in block_runs))] if times else []
        for start, last, _first_i, last_i in block_runs:
            seen += [(start, True), (last, True)]
            if last_i < len(times):
                seen.append((times[last_i], False))  # ``i`` counts from 1: the crawl after the run
    for block, _, agg in rollups:
        if block in events:
            events[block] += agg.events()
    dark: list[list[DarkPeriod]] = [[] for _ in range(num_blocks)]
    truncated = False
    for block, seen in events.items():
        if 0 <= block < num_blocks:
            periods = dark_periods(block, seen)
            truncated |= len(periods) > MAX_DARK
            dark[block] = periods[-MAX_DARK:]
    return BlockHistory(since, until, used, used != step, num_blocks, series, dark, truncated)
