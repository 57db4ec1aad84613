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

The SQL is the same on SQLite and PostgreSQL: booleans are counted with ``CASE``, "the values of the latest row"
come from ``row_number()`` (not SQLite's bare columns beside ``max()``), upserts name the target table's columns,
and only the two-argument min/max and the bucket arithmetic come from the connection's ``Dialect``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import block_history
from .dialect import Dialect, dialect_of

HOUR = 3600.0
DAY = 86400.0
PINGS_WINDOW = 6 * HOUR  # how far behind the pings_days line a pass looks (passes run hourly, or per cron crawl)
ROLLUP_TABLES = ("crawl_rollups", "model_rollups", "server_rollups", "peer_rollups", "block_rollups")

# Each swarm's newest succeeded crawl. A swarm with none gives no row: a NULL in a ``NOT IN`` list would make it
# match nothing, and one never-successful swarm would stop every other swarm's crawls from being rolled up.
_NEWEST_SUCCEEDED = """SELECT newest FROM (
                SELECT (SELECT k.id FROM crawls k WHERE k.swarm = s.swarm AND k.status = 'succeeded'
                        ORDER BY k.finished_at DESC, k.id DESC LIMIT 1) AS newest
                FROM (SELECT DISTINCT swarm FROM crawls) s
            ) AS per_swarm WHERE newest IS NOT NULL"""


@dataclass(frozen=True, slots=True)
class RetentionReport:
    crawls_rolled_up: int  # succeeded crawls aggregated into hourly rows
    crawls_deleted: int  # raw crawls deleted (succeeded and failed)
    hourly_folded: int  # hourly rows (all rollup tables) folded into daily rows and deleted
    daily_deleted: int
    alert_events_deleted: int = 0
    server_pings_cleared: int = 0  # server rows whose ping tables were cleared


def _count_if(condition: str) -> str:
    return f"CASE WHEN {condition} THEN 1 ELSE 0 END"


def _roll_raw_into_hourly(conn: Any) -> None:
    """Aggregate the crawls listed in the temp table ``_expiring`` into hourly rollup rows (merging with existing
    ones)."""
    dialect = dialect_of(conn)
    b = dialect.bucket("c.finished_at", HOUR)
    conn.execute(
        f"""INSERT INTO crawl_rollups (tier, swarm, bucket_ts, n_crawls, first_ts, last_ts)
        SELECT 'hourly', c.swarm, {b} AS bucket, count(*), min(c.finished_at), max(c.finished_at)
        FROM crawls c JOIN _expiring e ON e.id = c.id
        WHERE c.status = 'succeeded' GROUP BY c.swarm, bucket
        ON CONFLICT (tier, swarm, bucket_ts) DO UPDATE SET {_crawl_merge(dialect)}"""
    )
    conn.execute(
        f"""INSERT INTO model_rollups (tier, swarm, dht_prefix, bucket_ts, n, n_healthy, n_degraded, n_broken,
            num_blocks, min_blocks_covered, min_min_online, sum_servers_online, sum_throughput, last_ts)
        SELECT 'hourly', c.swarm, m.dht_prefix, {b} AS bucket, count(*), sum({_count_if("m.state = 'healthy'")}),
            sum({_count_if("m.state = 'degraded'")}), sum({_count_if("m.state = 'broken'")}), max(m.num_blocks),
            min(m.blocks_covered), min(m.min_online), sum(m.servers_online), sum(m.throughput), max(m.ts)
        FROM models m JOIN _expiring e ON e.id = m.crawl_id JOIN crawls c ON c.id = m.crawl_id
        WHERE c.status = 'succeeded' GROUP BY c.swarm, m.dht_prefix, bucket
        ON CONFLICT (tier, swarm, dht_prefix, bucket_ts) DO UPDATE SET {_model_merge(dialect)}"""
    )
    # Counts over each (swarm, peer, model, hour); state, span, version and throughput of its latest row.
    conn.execute(
        f"""INSERT INTO server_rollups (tier, swarm, peer_id, dht_prefix, bucket_ts, n_seen, n_online, last_ts,
            state, span_start, span_end, version, throughput)
        SELECT 'hourly', swarm, peer_id, dht_prefix, bucket, n_seen, n_online, last_ts,
            state, span_start, span_end, version, throughput
        FROM (
            SELECT c.swarm AS swarm, s.peer_id AS peer_id, s.dht_prefix AS dht_prefix, {b} AS bucket,
                count(*) OVER w AS n_seen, sum({_count_if("s.state = 'online'")}) OVER w AS n_online,
                max(s.ts) OVER w AS last_ts, s.state AS state, s.span_start AS span_start, s.span_end AS span_end,
                s.version AS version, s.throughput AS throughput,
                row_number() OVER (w ORDER BY s.ts DESC, s.id DESC) AS newest
            FROM servers s JOIN _expiring e ON e.id = s.crawl_id JOIN crawls c ON c.id = s.crawl_id
            WHERE c.status = 'succeeded'
            WINDOW w AS (PARTITION BY c.swarm, s.peer_id, s.dht_prefix, {b})
        ) AS per_server WHERE newest = 1
        ON CONFLICT (tier, peer_id, dht_prefix, swarm, bucket_ts) DO UPDATE SET {_server_merge(dialect)}"""
    )
    conn.execute(
        f"""INSERT INTO peer_rollups (tier, swarm, peer_id, bucket_ts, n_seen, n_online, first_ts, last_ts)
        SELECT 'hourly', swarm, peer_id, {dialect.bucket("ts", HOUR)} AS bucket, count(*), sum(online), min(ts),
            max(ts)
        FROM (
            SELECT c.swarm AS swarm, s.peer_id AS peer_id, c.finished_at AS ts,
                max({_count_if("s.state = 'online'")}) AS online
            FROM servers s JOIN _expiring e ON e.id = s.crawl_id JOIN crawls c ON c.id = s.crawl_id
            WHERE c.status = 'succeeded' GROUP BY s.crawl_id, s.peer_id, c.swarm, c.finished_at
        ) AS per_crawl WHERE true GROUP BY swarm, peer_id, bucket
        ON CONFLICT (tier, peer_id, swarm, bucket_ts) DO UPDATE SET {_peer_merge(dialect)}"""
    )
    block_history.roll_raw_into_hourly(conn, HOUR)


def _crawl_merge(d: Dialect, t: str = "crawl_rollups") -> str:
    return f"""n_crawls = {t}.n_crawls + excluded.n_crawls, first_ts = {d.least}({t}.first_ts, excluded.first_ts),
    last_ts = {d.greatest}({t}.last_ts, excluded.last_ts)"""


def _model_merge(d: Dialect, t: str = "model_rollups") -> str:
    return f"""
    n = {t}.n + excluded.n, n_healthy = {t}.n_healthy + excluded.n_healthy,
    n_degraded = {t}.n_degraded + excluded.n_degraded, n_broken = {t}.n_broken + excluded.n_broken,
    num_blocks = {d.greatest}({t}.num_blocks, excluded.num_blocks),
    min_blocks_covered = {d.least}({t}.min_blocks_covered, excluded.min_blocks_covered),
    min_min_online = {d.least}({t}.min_min_online, excluded.min_min_online),
    sum_servers_online = {t}.sum_servers_online + excluded.sum_servers_online,
    sum_throughput = {t}.sum_throughput + excluded.sum_throughput,
    last_ts = {d.greatest}({t}.last_ts, excluded.last_ts)"""


def _server_merge(d: Dialect, t: str = "server_rollups") -> str:
    newer = f"excluded.last_ts >= {t}.last_ts"
    latest = ", ".join(
        f"{c} = CASE WHEN {newer} THEN excluded.{c} ELSE {t}.{c} END"
        for c in ("state", "span_start", "span_end", "version", "throughput")
    )
    return f"""n_seen = {t}.n_seen + excluded.n_seen, n_online = {t}.n_online + excluded.n_online, {latest},
    last_ts = {d.greatest}({t}.last_ts, excluded.last_ts)"""


def _peer_merge(d: Dialect, t: str = "peer_rollups") -> str:
    return f"""n_seen = {t}.n_seen + excluded.n_seen, n_online = {t}.n_online + excluded.n_online,
    first_ts = {d.least}({t}.first_ts, excluded.first_ts), last_ts = {d.greatest}({t}.last_ts, excluded.last_ts)"""


def _fold_hourly_into_daily(conn: Any, cutoff: float) -> int:
    """Merge hourly rows whose bucket starts before ``cutoff`` into daily rows; delete them. Returns rows folded."""
    dialect = dialect_of(conn)
    d = dialect.bucket("bucket_ts", DAY)
    old = "tier = 'hourly' AND bucket_ts < :cutoff"
    args = {"cutoff": cutoff}
    conn.execute(
        f"""INSERT INTO crawl_rollups (tier, swarm, bucket_ts, n_crawls, first_ts, last_ts)
        SELECT 'daily', swarm, {d} AS day, sum(n_crawls), min(first_ts), max(last_ts)
        FROM crawl_rollups WHERE {old} GROUP BY swarm, day
        ON CONFLICT (tier, swarm, bucket_ts) DO UPDATE SET {_crawl_merge(dialect)}""",
        args,
    )
    conn.execute(
        f"""INSERT INTO model_rollups (tier, swarm, dht_prefix, bucket_ts, n, n_healthy, n_degraded, n_broken,
            num_blocks, min_blocks_covered, min_min_online, sum_servers_online, sum_throughput, last_ts)
        SELECT 'daily', swarm, dht_prefix, {d} AS day, sum(n), sum(n_healthy), sum(n_degraded), sum(n_broken),
            max(num_blocks), min(min_blocks_covered), min(min_min_online), sum(sum_servers_online),
            sum(sum_throughput), max(last_ts)
        FROM model_rollups WHERE {old} GROUP BY swarm, dht_prefix, day
        ON CONFLICT (tier, swarm, dht_prefix, bucket_ts) DO UPDATE SET {_model_merge(dialect)}""",
        args,
    )
    conn.execute(
        f"""INSERT INTO server_rollups (tier, swarm, peer_id, dht_prefix, bucket_ts, n_seen, n_online, last_ts,
            state, span_start, span_end, version, throughput)
        SELECT 'daily', swarm, peer_id, dht_prefix, day, day_n_seen, day_n_online, day_last_ts,
            state, span_start, span_end, version, throughput
        FROM (
            SELECT swarm, peer_id, dht_prefix, {d} AS day, sum(n_seen) OVER w AS day_n_seen,
                sum(n_online) OVER w AS day_n_online, max(last_ts) OVER w AS day_last_ts, state, span_start, span_end,
                version, throughput, row_number() OVER (w ORDER BY last_ts DESC) AS newest
            FROM server_rollups WHERE {old}
            WINDOW w AS (PARTITION BY swarm, peer_id, dht_prefix, {d})
        ) AS per_day WHERE newest = 1
        ON CONFLICT (tier, peer_id, dht_prefix, swarm, bucket_ts) DO UPDATE SET {_server_merge(dialect)}""",
        args,
    )
    conn.execute(
        f"""INSERT INTO peer_rollups (tier, swarm, peer_id, bucket_ts, n_seen, n_online, first_ts, last_ts)
        SELECT 'daily', swarm, peer_id, {d} AS day, sum(n_seen), sum(n_online), min(first_ts), max(last_ts)
        FROM peer_rollups WHERE {old} GROUP BY swarm, peer_id, day
        ON CONFLICT (tier, peer_id, swarm, bucket_ts) DO UPDATE SET {_peer_merge(dialect)}""",
        args,
    )
    block_history.fold_hourly_into_daily(conn, cutoff, DAY)
    folded = 0
    for table in ROLLUP_TABLES:
        folded += conn.execute(f"DELETE FROM {table} WHERE {old}", args).rowcount
    return folded


def apply_retention(
    conn: Any,
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
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _expiring (id BIGINT PRIMARY KEY)")  # temp: found first
    conn.execute("DELETE FROM _expiring")
    conn.execute(
        f"""INSERT INTO _expiring (id)
        SELECT id FROM crawls
        WHERE status IN ('succeeded', 'failed') AND coalesce(finished_at, started_at) < ?
          AND id NOT IN ({_NEWEST_SUCCEEDED})""",
        (now - raw_days * DAY,),
    )
    rolled = conn.execute(
        "SELECT count(*) FROM crawls JOIN _expiring USING (id) WHERE status = 'succeeded'"
    ).fetchone()[0]
    _roll_raw_into_hourly(conn)
    deleted = conn.execute("DELETE FROM crawls WHERE id IN (SELECT id FROM _expiring)").rowcount
    conn.execute("DELETE FROM _expiring")
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


def _clear_pings(conn: Any, cutoff: float) -> int:
    """Clear the ping tables of the crawls that finished in ``[cutoff - PINGS_WINDOW, cutoff)``."""
    return conn.execute(
        f"""UPDATE servers SET next_pings = NULL, pings_to_me = '{{}}'
        WHERE crawl_id IN (
            SELECT id FROM crawls WHERE coalesce(finished_at, started_at) >= ? AND coalesce(finished_at, started_at) < ?
              AND id NOT IN ({_NEWEST_SUCCEEDED}))
          AND (next_pings IS NOT NULL OR pings_to_me != '{{}}')""",
        (cutoff - PINGS_WINDOW, cutoff),
    ).rowcount
