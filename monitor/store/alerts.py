"""Alert events and the version rollout in the store: the writer's insert and the readers' queries (SQLite or
PostgreSQL).

``alert_events`` is append-only (migration 3): a condition is firing while its newest event says ``firing``.
A restarted monitor reads that back (:func:`active_alerts`) together with each swarm's trailing run of failed
crawls (:func:`failure_streaks`), so it resumes exactly where it stopped and never fires a condition twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..alerts.rules import ActiveAlert, AlertEvent
from ..rules.versions import NO_VERSION, VersionPoint
from .dialect import dialect_of
from .rows import insert_row, newest_first

EVENT_COLUMNS = "id, ts, swarm, kind, subject, status, severity, message, crawl_id, fired_at"


def insert_events(conn: Any, events: Iterable[AlertEvent]) -> list[int]:
    """Append ``events`` (the caller owns the transaction); returns their ids in order."""
    return [
        insert_row(
            conn,
            "alert_events",
            {
                "ts": e.ts,
                "swarm": e.swarm,
                "kind": e.kind,
                "subject": e.subject,
                "status": e.status,
                "severity": e.severity,
                "message": e.message,
                "crawl_id": e.crawl_id,
                "fired_at": e.fired_at,
            },
        )
        for e in events
    ]


def event_from_row(row: tuple) -> tuple[int, AlertEvent]:
    id_, ts, swarm, kind, subject, status, severity, message, crawl_id, fired_at = row
    return id_, AlertEvent(swarm, kind, subject, status, severity, ts, message, crawl_id, fired_at)


def events(
    conn: Any, swarm: str | None = None, limit: int = 100, before_id: int | None = None
) -> list[tuple[int, AlertEvent]]:
    """Newest first; page with ``before_id``."""
    rows = newest_first(conn, "alert_events", EVENT_COLUMNS, swarm=swarm, limit=limit, before_id=before_id)
    return [event_from_row(row) for row in rows]


def active_alerts(conn: Any, swarm: str | None = None) -> list[ActiveAlert]:
    """Conditions whose newest event is ``firing``, most severe then oldest first."""
    rows = conn.execute(
        """SELECT e.swarm, e.kind, e.subject, e.severity, e.ts, e.message FROM alert_events e
        JOIN (SELECT max(id) AS id FROM alert_events GROUP BY swarm, kind, subject) latest ON latest.id = e.id
        WHERE e.status = 'firing' AND (CAST(:swarm AS TEXT) IS NULL OR e.swarm = :swarm)
        ORDER BY e.severity = 'critical' DESC, e.ts, e.id""",
        {"swarm": swarm},
    ).fetchall()
    return [ActiveAlert(*row) for row in rows]


def failure_streaks(conn: Any) -> dict[str, int]:
    """swarm -> failed crawls since its last succeeded one (crawls still running do not count)."""
    rows = conn.execute(
        """SELECT c.swarm, count(*) FROM crawls c
        WHERE c.status = 'failed' AND c.id > coalesce(
            (SELECT max(g.id) FROM crawls g WHERE g.swarm = c.swarm AND g.status = 'succeeded'), 0)
        GROUP BY c.swarm"""
    ).fetchall()
    return {swarm: n for swarm, n in rows}


def version_history(conn: Any, swarm: str, since: float, until: float, step: float | None) -> list[VersionPoint]:
    """Distinct servers per version per crawl (``step`` None) or per ``step``-second bucket, raw and rolled up.

    A bucket counts each peer once per version it showed in that bucket. Raw crawls and rollups cover disjoint
    times (``monitor.store.retention``), so their counts add up.
    """
    counts: dict[float, dict[str, int]] = {}
    if step:
        raw = conn.execute(
            f"""SELECT {dialect_of(conn).bucket("s.ts", ":step")}, coalesce(s.version, ''), count(DISTINCT s.peer_id)
            FROM servers s JOIN crawls c ON c.id = s.crawl_id
            WHERE c.swarm = :swarm AND c.status = 'succeeded' AND s.ts BETWEEN :since AND :until
            GROUP BY 1, 2""",
            {"step": step, "swarm": swarm, "since": since, "until": until},
        ).fetchall()
    else:
        raw = conn.execute(
            """SELECT c.finished_at, coalesce(s.version, ''), count(DISTINCT s.peer_id)
            FROM servers s JOIN crawls c ON c.id = s.crawl_id
            WHERE c.swarm = :swarm AND c.status = 'succeeded' AND s.ts BETWEEN :since AND :until
            GROUP BY c.id, c.finished_at, 2""",
            {"swarm": swarm, "since": since, "until": until},
        ).fetchall()
    rolled = conn.execute(
        """SELECT bucket_ts, coalesce(version, ''), count(DISTINCT peer_id) FROM server_rollups
        WHERE swarm = ? AND bucket_ts BETWEEN ? AND ? GROUP BY tier, bucket_ts, 2""",
        (swarm, since, until),
    ).fetchall()
    for ts, version, n in raw + rolled:
        key = (ts // step) * step if step else ts
        bucket = counts.setdefault(float(key), {})
        name = version or NO_VERSION
        bucket[name] = bucket.get(name, 0) + n
    return [VersionPoint(ts, counts[ts]) for ts in sorted(counts)]
