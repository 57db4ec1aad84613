"""History queries over raw crawls *and* rollups (the tiers are disjoint, see ``monitor.store.retention``).

Aggregation choices (the web draws these):

- ``model_history`` buckets by ``step`` seconds (aligned to multiples of ``step`` since the epoch). A bucket is
  *worst case* for health (state: broken if any crawl in it was broken, else degraded if any was; minimum
  ``blocks_covered`` and ``min_online``) and *mean* for capacity (``servers_online`` rounded, ``throughput``).
  A rollup row counts at its bucket start. Empty buckets are omitted (gaps are gaps).
- ``server_history``: one point per raw crawl, one per rollup bucket (``crawl_id=None``, the last state seen).
- ``server_uptime``: online crawls / crawls of the peer's swarm(s) in the window, counted from the peer's first
  sighting (so a new server is not punished for the time before it existed). Rollup buckets count whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..snapshot import ModelInfo
from .history import ModelPoint, ServerModel, ServerPoint
from .rows import SERVER_SELECT, read_probes, server_from_row


@dataclass(slots=True)
class _ModelAgg:
    n: int
    n_healthy: int
    n_degraded: int
    n_broken: int
    num_blocks: int
    min_blocks_covered: int
    min_min_online: int
    sum_servers_online: int
    sum_throughput: float

    def merge(self, other: _ModelAgg) -> None:
        self.n += other.n
        self.n_healthy += other.n_healthy
        self.n_degraded += other.n_degraded
        self.n_broken += other.n_broken
        self.num_blocks = max(self.num_blocks, other.num_blocks)
        self.min_blocks_covered = min(self.min_blocks_covered, other.min_blocks_covered)
        self.min_min_online = min(self.min_min_online, other.min_min_online)
        self.sum_servers_online += other.sum_servers_online
        self.sum_throughput += other.sum_throughput

    def point(self, ts: float) -> ModelPoint:
        state = "broken" if self.n_broken else "degraded" if self.n_degraded else "healthy"
        return ModelPoint(
            ts=ts,
            state=state,
            blocks_covered=self.min_blocks_covered,
            num_blocks=self.num_blocks,
            min_online=self.min_min_online,
            servers_online=round(self.sum_servers_online / self.n),
            throughput=self.sum_throughput / self.n,
        )


def bucket_points(rows: Iterable[tuple[float, _ModelAgg]], step: float | None) -> list[ModelPoint]:
    """Merge ``(ts, aggregate)`` rows into ``step``-wide buckets (``None``: one point per distinct ts)."""
    buckets: dict[float, _ModelAgg] = {}
    for ts, agg in rows:
        key = ts if not step else (ts // step) * step
        if key in buckets:
            buckets[key].merge(agg)
        else:
            buckets[key] = agg
    return [buckets[key].point(key) for key in sorted(buckets)]


def model_history(
    conn: Any, swarm: str, dht_prefix: str, since: float, until: float, step: float | None
) -> list[ModelPoint]:
    rows: list[tuple[float, _ModelAgg]] = []
    for ts, state, num_blocks, covered, min_online, servers_online, throughput in conn.execute(
        """SELECT m.ts, m.state, m.num_blocks, m.blocks_covered, m.min_online, m.servers_online, m.throughput
        FROM models m JOIN crawls c ON c.id = m.crawl_id
        WHERE m.dht_prefix = ? AND m.ts BETWEEN ? AND ? AND c.swarm = ? AND c.status = 'succeeded'""",
        (dht_prefix, since, until, swarm),
    ):
        agg = _ModelAgg(
            1,
            state == "healthy",
            state == "degraded",
            state == "broken",
            num_blocks,
            covered,
            min_online,
            servers_online,
            throughput,
        )
        rows.append((ts, agg))
    for bucket_ts, *values in conn.execute(
        """SELECT bucket_ts, n, n_healthy, n_degraded, n_broken, num_blocks, min_blocks_covered, min_min_online,
            sum_servers_online, sum_throughput
        FROM model_rollups WHERE dht_prefix = ? AND bucket_ts BETWEEN ? AND ? AND swarm = ?""",
        (dht_prefix, since, until, swarm),
    ):
        rows.append((bucket_ts, _ModelAgg(*values)))
    return bucket_points(rows, step)


def server_history(conn: Any, peer_id: str, since: float, until: float) -> list[ServerPoint]:
    points = [
        ServerPoint(ts, crawl_id, prefix, state, start, end, version, throughput)
        for ts, crawl_id, prefix, state, start, end, version, throughput in conn.execute(
            """SELECT s.ts, s.crawl_id, s.dht_prefix, s.state, s.span_start, s.span_end, s.version, s.throughput
            FROM servers s JOIN crawls c ON c.id = s.crawl_id
            WHERE s.peer_id = ? AND s.ts BETWEEN ? AND ? AND c.status = 'succeeded'""",
            (peer_id, since, until),
        )
    ]
    points += [
        ServerPoint(ts, None, prefix, state, start, end, version, throughput)
        for ts, prefix, state, start, end, version, throughput in conn.execute(
            """SELECT bucket_ts, dht_prefix, state, span_start, span_end, version, throughput
            FROM server_rollups WHERE peer_id = ? AND bucket_ts BETWEEN ? AND ?""",
            (peer_id, since, until),
        )
    ]
    points.sort(key=lambda p: (p.ts, p.dht_prefix))
    return points


def _first_seen(conn: Any, peer_id: str) -> dict[str, float]:
    """swarm -> the first time ``peer_id`` was seen in it (raw or rollups)."""
    first: dict[str, float] = {}
    for swarm, ts in conn.execute(
        """SELECT c.swarm, min(s.ts) FROM servers s JOIN crawls c ON c.id = s.crawl_id
        WHERE s.peer_id = ? AND c.status = 'succeeded' GROUP BY c.swarm
        UNION ALL
        SELECT swarm, min(first_ts) FROM peer_rollups WHERE peer_id = ? GROUP BY swarm""",
        (peer_id, peer_id),
    ):
        first[swarm] = min(ts, first.get(swarm, ts))
    return first


def server_uptime(conn: Any, peer_id: str, now: float, windows: Iterable[int]) -> dict[int, float | None]:
    first_seen = _first_seen(conn, peer_id)
    uptime: dict[int, float | None] = {}
    for window in windows:
        crawls = online = 0
        for swarm, first in first_seen.items():
            start = max(now - window, first)
            raw_crawls, raw_online = conn.execute(
                """SELECT count(*), (
                    SELECT count(DISTINCT s.crawl_id) FROM servers s JOIN crawls k ON k.id = s.crawl_id
                    WHERE s.peer_id = :peer AND s.state = 'online' AND s.ts BETWEEN :start AND :now
                      AND k.swarm = :swarm AND k.status = 'succeeded')
                FROM crawls WHERE swarm = :swarm AND status = 'succeeded' AND finished_at BETWEEN :start AND :now""",
                {"peer": peer_id, "start": start, "now": now, "swarm": swarm},
            ).fetchone()
            rolled_crawls, rolled_online = conn.execute(
                """SELECT coalesce(sum(cr.n_crawls), 0), coalesce(sum(pr.n_online), 0)
                FROM crawl_rollups cr LEFT JOIN peer_rollups pr
                  ON pr.tier = cr.tier AND pr.swarm = cr.swarm AND pr.bucket_ts = cr.bucket_ts AND pr.peer_id = ?
                WHERE cr.swarm = ? AND cr.last_ts >= ? AND cr.first_ts <= ?""",
                (peer_id, swarm, start, now),
            ).fetchone()
            crawls += raw_crawls + rolled_crawls
            online += raw_online + rolled_online
        uptime[window] = min(1.0, online / crawls) if crawls else None
    return uptime


def server_models(conn: Any, peer_id: str) -> list[ServerModel]:
    """The peer's rows in the newest succeeded crawl (per swarm) that lists it, in the crawl's model order."""
    latest = conn.execute(
        """SELECT swarm, crawl_id, ts FROM (
            SELECT c.swarm AS swarm, s.crawl_id AS crawl_id, s.ts AS ts,
                row_number() OVER (PARTITION BY c.swarm ORDER BY s.ts DESC, s.crawl_id DESC) AS newest
            FROM servers s JOIN crawls c ON c.id = s.crawl_id
            WHERE s.peer_id = ? AND c.status = 'succeeded') AS seen
        WHERE newest = 1 ORDER BY swarm""",
        (peer_id,),
    ).fetchall()
    result: list[ServerModel] = []
    for swarm, crawl_id, ts in latest:
        probes = read_probes(conn, crawl_id)
        models = {
            model_id: ModelInfo(prefix, num_blocks, repository, name, bool(official))
            for model_id, prefix, num_blocks, repository, name, official in conn.execute(
                "SELECT id, dht_prefix, num_blocks, repository, name, official FROM models WHERE crawl_id = ?",
                (crawl_id,),
            )
        }
        for row in conn.execute(f"{SERVER_SELECT} WHERE crawl_id = ? AND peer_id = ? ORDER BY id", (crawl_id, peer_id)):
            result.append(
                ServerModel(
                    swarm=swarm, crawl_id=crawl_id, ts=ts, model=models[row[0]], server=server_from_row(row, probes)
                )
            )
    return result
