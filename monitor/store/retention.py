"""Retention: raw crawls → hourly rollups → daily rollups, so the file stays bounded and history keeps working.

Each crawl's data lives in exactly one tier at a time, which is what lets readers simply add the tiers up:

1. raw crawls older than ``raw_days`` are aggregated into *hourly* rows, then deleted (children cascade);
   the newest succeeded crawl of each swarm is never touched, so the dashboard always has a snapshot;
2. hourly rows older than ``hourly_days`` are folded into *daily* rows, then deleted;
3. daily rows older than ``daily_days`` are deleted (``None``: kept forever);
4. alert events older than ``hourly_days`` are deleted, except each condition's newest one (what is firing now
   is read from it);
5. with ``pings_days``, the ping tables of raw crawls older than that (each swarm's newest succeeded crawl
   excepted) are cleared: ``next_pings`` NULL, ``pings_to_me`` empty. Only crawls that crossed the line in the
   last ``PINGS_WINDOW`` are visited, so a pass costs the same however many days are stored; crawls a long
   downtime let through keep their pings until they are rolled up.

Rollup rows are mergeable aggregates (counts, sums, minimums, and the values of the row with the latest
``last_ts``; per block also when it was dark, see ``monitor.store.block_history``), so a bucket filled over several
passes is exactly the bucket filled at once. Buckets are aligned to UTC hours and days. The caller
(``StoreWriter.apply_retention``) runs all of it in one transaction.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from . import block_history

HOUR = 3600.0
DAY = 86400.0
PINGS_WINDOW = 6 * HOUR  # how far behind the pings_days line a pass looks (passes run hourly, or per cron crawl)
ROLLUP_TABLES = ("crawl_rollups", "model_rollups", "server_rollups", "peer_rollups", "block_rollups")

_NEWEST_SUCCEEDED = """SELECT (SELECT k.id FROM crawls k WHERE k.swarm = s.swarm AND k.status = 'succeeded'
                    ORDER BY k.finished_at DESC, k.id DESC LIMIT 1)
            FROM (SELECT DISTINCT swarm FROM crawls) s"""


@dataclass(frozen=True, slots=True)
class RetentionReport:
    crawls_rolled_up: int  # succeeded crawls aggregated into hourly rows
    crawls_deleted: int  # raw crawls deleted (succeeded and failed)
    hourly_folded: int  # hourly rows (all rollup tables) folded into daily rows and deleted
    daily_deleted: int
    alert_events_deleted: int = 0
    server_pings_cleared: int = 0  # server rows whose ping tables were cleared


def _bucket(column: str, width: float) -> str:
    # CAST truncates toward zero, which is floor() for the positive Unix times we store.
    return f"CAST({column} / {width} AS INTEGER) * {width}"


def _roll_raw_into_hourly(conn: sqlite3.Connection) -> None:
    """Aggregate the crawls listed in ``temp._expiring`` into hourly rollup rows (merging with existing ones)."""
    b = _bucket("c.finished_at", HOUR)
    conn.execute(
        f"""INSERT INTO crawl_rollups (tier, swarm, bucket_ts, n_crawls, first_ts, last_ts)
        SELECT 'hourly', c.swarm, {b} AS bucket, count(*), min(c.finished_at), max(c.finished_at)
        FROM crawls c JOIN temp._expiring e ON e.id = c.id
        WHERE c.status = 'succeeded' GROUP BY c.swarm, bucket
        ON CONFLICT (tier, swarm, bucket_ts) DO UPDATE SET
            n_crawls = n_crawls + excluded.n_crawls,
            first_ts = min(first_ts, excluded.first_ts),
            last_ts = max(last_ts, excluded.last_ts)"""
    )
    conn.execute(
        f"""INSERT INTO model_rollups (tier, swarm, dht_prefix, bucket_ts, n, n_healthy, n_degraded, n_broken,
            num_blocks, min_blocks_covered, min_min_online, sum_servers_online, sum_throughput, last_ts)
        SELECT 'hourly', c.swarm, m.dht_prefix, {b} AS bucket, count(*), sum(m.state = 'healthy'),
            sum(m.state = 'degraded'), sum(m.state = 'broken'), max(m.num_blocks), min(m.blocks_covered),
            min(m.min_online), sum(m.servers_online), sum(m.throughput), max(m.ts)
        FROM models m JOIN temp._expiring e ON e.id = m.crawl_id JOIN crawls c ON c.id = m.crawl_id
        WHERE c.status = 'succeeded' GROUP BY c.swarm, m.dht_prefix, bucket
        ON CONFLICT (tier, swarm, dht_prefix, bucket_ts) DO UPDATE SET {_MODEL_MERGE}"""
    )
    # With a single max() aggregate, SQLite takes the bare columns from the row holding the max: the last seen.
    conn.execute(
        f"""INSERT INTO server_rollups (tier, swarm, peer_id, dht_prefix, bucket_ts, n_seen, n_online, last_ts,
            state, span_start, span_end, version, throughput)
        SELECT 'hourly', c.swarm, s.peer_id, s.dht_prefix, {b} AS bucket, count(*), sum(s.state = 'online'),
            max(s.ts), s.state, s.span_start, s.span_end, s.version, s.throughput
        FROM servers s JOIN temp._expiring e ON e.id = s.crawl_id JOIN crawls c ON c.id = s.crawl_id
        WHERE c.status = 'succeeded' GROUP BY c.swarm, s.peer_id, s.dht_prefix, bucket
        ON CONFLICT (tier, peer_id, dht_prefix, swarm, bucket_ts) DO UPDATE SET {_SERVER_MERGE}"""
    )
    conn.execute(
        f"""INSERT INTO peer_rollups (tier, swarm, peer_id, bucket_ts, n_seen, n_online, first_ts, last_ts)
        SELECT 'hourly', swarm, peer_id, {_bucket("ts", HOUR)} AS bucket, count(*), sum(online), min(ts), max(ts)
        FROM (
            SELECT c.swarm AS swarm, s.peer_id AS peer_id, c.finished_at AS ts, max(s.state = 'online') AS online
            FROM servers s JOIN temp._expiring e ON e.id = s.crawl_id JOIN crawls c ON c.id = s.crawl_id
            WHERE c.status = 'succeeded' GROUP BY s.crawl_id, s.peer_id
        ) WHERE true GROUP BY swarm, peer_id, bucket
        ON CONFLICT (tier, peer_id, swarm, bucket_ts) DO UPDATE SET {_PEER_MERGE}"""
    )
    block_history.roll_raw_into_hourly(conn, HOUR)


_MODEL_MERGE = """
    n = n + excluded.n, n_healthy = n_healthy + excluded.n_healthy, n_degraded = n_degraded + excluded.n_degraded,
    n_broken = n_broken + excluded.n_broken, num_blocks = max(num_blocks, excluded.num_blocks),
    min_blocks_covered = min(min_blocks_covered, excluded.min_blocks_covered),
    min_min_online = min(min_min_online, excluded.min_min_online),
    sum_servers_online = sum_servers_online + excluded.sum_servers_online,
    sum_throughput = sum_throughput + excluded.sum_throughput, last_ts = max(last_ts, excluded.last_ts)"""

_NEWER = "excluded.last_ts >= last_ts"
_SERVER_MERGE = f"""
    n_seen = n_seen + excluded.n_seen, n_online = n_online + excluded.n_online,
    state = CASE WHEN {_NEWER} THEN excluded.state ELSE state END,
    span_start = CASE WHEN {_NEWER} THEN excluded.span_start ELSE span_start END,
    span_end = CASE WHEN {_NEWER} THEN excluded.span_end ELSE span_end END,
    version = CASE WHEN {_NEWER} THEN excluded.version ELSE version END,
    throughput = CASE WHEN {_NEWER} THEN excluded.throughput ELSE throughput END,
    last_ts = max(last_ts, excluded.last_ts)"""

_PEER_MERGE = """
    n_seen = n_seen + excluded.n_seen, n_online = n_online + excluded.n_online,
    first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts)"""


def _fold_hourly_into_daily(conn: sqlite3.Connection, cutoff: float) -> int:
    """Merge hourly rows whose bucket starts before ``cutoff`` into daily rows; delete them. Returns rows folded."""
    d = _bucket("bucket_ts", DAY)
    old = "tier = 'hourly' AND bucket_ts < :cutoff"
    args = {"cutoff": cutoff}
    conn.execute(
        f"""INSERT INTO crawl_rollups (tier, swarm, bucket_ts, n_crawls, first_ts, last_ts)
        SELECT 'daily', swarm, {d} AS day, sum(n_crawls), min(first_ts), max(last_ts)
        FROM crawl_rollups WHERE {old} GROUP BY swarm, day
        ON CONFLICT (tier, swarm, bucket_ts) DO UPDATE SET
            n_crawls = n_crawls + excluded.n_crawls,
            first_ts = min(first_ts, excluded.first_ts),
            last_ts = max(last_ts, excluded.last_ts)""",
        args,
    )
    conn.execute(
        f"""INSERT INTO model_rollups (tier, swarm, dht_prefix, bucket_ts, n, n_healthy, n_degraded, n_broken,
            num_blocks, min_blocks_covered, min_min_online, sum_servers_online, sum_throughput, last_ts)
        SELECT 'daily', swarm, dht_prefix, {d} AS day, sum(n), sum(n_healthy), sum(n_degraded), sum(n_broken),
            max(num_blocks), min(min_blocks_covered), min(min_min_online), sum(sum_servers_online),
            sum(sum_throughput), max(last_ts)
        FROM model_rollups WHERE {old} GROUP BY swarm, dht_prefix, day
        ON CONFLICT (tier, swarm, dht_prefix, bucket_ts) DO UPDATE SET {_MODEL_MERGE}""",
        args,
    )
    conn.execute(
        f"""INSERT INTO server_rollups (tier, swarm, peer_id, dht_prefix, bucket_ts, n_seen, n_online, last_ts,
            state, span_start, span_end, version, throughput)
        SELECT 'daily', swarm, peer_id, dht_prefix, {d} AS day, sum(n_seen), sum(n_online), max(last_ts),
            state, span_start, span_end, version, throughput
        FROM server_rollups WHERE {old} GROUP BY swarm, peer_id, dht_prefix, day
        ON CONFLICT (tier, peer_id, dht_prefix, swarm, bucket_ts) DO UPDATE SET {_SERVER_MERGE}""",
        args,
    )
    conn.execute(
        f"""INSERT INTO peer_rollups (tier, swarm, peer_id, bucket_ts, n_seen, n_online, first_ts, last_ts)
        SELECT 'daily', swarm, peer_id, {d} AS day, sum(n_seen), sum(n_online), min(first_ts), max(last_ts)
        FROM peer_rollups WHERE {old} GROUP BY swarm, peer_id, day
        ON CONFLICT (tier, peer_id, swarm, bucket_ts) DO UPDATE SET {_PEER_MERGE}""",
        args,
    )
    block_history.fold_hourly_into_daily(conn, cutoff, DAY)
    folded = 0
    for table in ROLLUP_TABLES:
        folded += conn.execute(f"DELETE FROM {table} WHERE {old}", args).rowcount
    return folded


def apply_retention(
    conn: sqlite3.Connection,
    now: float,
    raw_days: float = 7.0,
    hourly_days: float = 30.0,
    daily_days: float | None = None,
    pings_days: float | None = None,
) -> RetentionReport:
    """Roll up and delete what fell out of each window. Run inside the caller's write transaction."""
    if not 0 < raw_days <= hourly_days:
        raise ValueError("retention windows must satisfy 0 < raw_days <= hourly_days")
    if pings_days is not None and not pings_days > 0:
        raise ValueError("pings_days must be > 0 (None keeps ping tables)")
    pings_cleared = 0 if pings_days is None else _clear_pings(conn, now - pings_days * DAY)
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _expiring (id INTEGER PRIMARY KEY)")
    conn.execute("DELETE FROM temp._expiring")
    conn.execute(
        f"""INSERT INTO temp._expiring (id)
        SELECT id FROM crawls
        WHERE status IN ('succeeded', 'failed') AND coalesce(finished_at, started_at) < ?
          AND id NOT IN ({_NEWEST_SUCCEEDED})""",
        (now - raw_days * DAY,),
    )
    rolled = conn.execute(
        "SELECT count(*) FROM crawls JOIN temp._expiring USING (id) WHERE status = 'succeeded'"
    ).fetchone()[0]
    _roll_raw_into_hourly(conn)
    deleted = conn.execute("DELETE FROM crawls WHERE id IN (SELECT id FROM temp._expiring)").rowcount
    conn.execute("DELETE FROM temp._expiring")
    folded = _fold_hourly_into_daily(conn, now - hourly_days * DAY)
    daily_deleted = 0
    if daily_days is not None:
        for table in ROLLUP_TABLES:
            daily_deleted += conn.execute(
                f"DELETE FROM {table} WHERE tier = 'daily' AND bucket_ts < ?", (now - daily_days * DAY,)
            ).rowcount
    alerts_deleted = conn.execute(
        """DELETE FROM alert_events WHERE ts < ? AND id NOT IN (
            SELECT max(id) FROM alert_events GROUP BY swarm, kind, subject)""",
        (now - hourly_days * DAY,),
    ).rowcount
    return RetentionReport(rolled, deleted, folded, daily_deleted, alerts_deleted, pings_cleared)


def _clear_pings(conn: sqlite3.Connection, cutoff: float) -> int:
    """Clear the ping tables of the crawls that finished in ``[cutoff - PINGS_WINDOW, cutoff)``."""
    return conn.execute(
        f"""UPDATE servers SET next_pings = NULL, pings_to_me = '{{}}'
        WHERE crawl_id IN (
            SELECT id FROM crawls WHERE coalesce(finished_at, started_at) >= ? AND coalesce(finished_at, started_at) < ?
              AND id NOT IN ({_NEWEST_SUCCEEDED}))
          AND (next_pings IS NOT NULL OR pings_to_me != '{{}}')""",
        (cutoff - PINGS_WINDOW, cutoff),
    ).rowcount
