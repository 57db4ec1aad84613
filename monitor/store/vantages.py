"""Reachability per vantage point, stored (``vantage_probes``, migration 5; rules in ``monitor.rules.vantages``).

One row per (crawl, vantage, server): the crawl whose servers were probed, so retention deleting a crawl takes its
probes with it and a round repeated on the same crawl updates its rows in place (the table grows with crawls, not
rounds; a round cut short leaves the results it did not reach as they were). The crawling vantage's rows are
written with its crawl, in the crawl's transaction; ``monitor probe`` writes the others, one transaction per round.

A view of crawl C counts, for each server C probed (the servers it judged: one that left is not shown), each
vantage's newest result on C or an earlier crawl of the swarm, checked no more than ``max_age`` before C finished.
Rounds on later crawls never count, so a past crawl's view only changes while it is the newest.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..rules.vantages import ReachableFrom, VantageResult, VantageVerdicts, reachable_from
from ..snapshot import Reachability, Snapshot
from .dialect import dialect_of
from .rows import insert_many, snapshot_probes

_COLUMNS = "vantage, peer_id, ok, checked_at, joining, latency, error"
# the newest successful crawl of a swarm whose servers a probe round would probe
_TARGET = "SELECT id FROM crawls WHERE swarm = ? AND status = 'succeeded' ORDER BY id DESC LIMIT 1"
# a crawl's probe set: the servers its crawler probed, else (probes off) those it found online
_PROBED = "SELECT peer_id FROM reachability WHERE crawl_id = ?"
_ONLINE = "SELECT DISTINCT peer_id FROM servers WHERE crawl_id = ? AND state = 'online'"
_UPSERT = (
    f"INSERT INTO vantage_probes (crawl_id, {_COLUMNS}) "
    "VALUES (:crawl_id, :vantage, :peer_id, :ok, :checked_at, :joining, :latency, :error) "
    "ON CONFLICT (crawl_id, vantage, peer_id) DO UPDATE SET ok = excluded.ok, checked_at = excluded.checked_at, "
    "joining = excluded.joining, latency = excluded.latency, error = excluded.error"
)


class NotProbeable(LookupError):
    """A probe round's results have nowhere to go: the crawl is gone (retention) or never succeeded, or the round
    carries the name of the vantage that crawled it (it would overwrite the crawler's own results)."""


def _result(row: tuple) -> VantageResult:
    vantage, peer_id, ok, checked_at, joining, latency, error = row
    return VantageResult(vantage, peer_id, bool(ok), checked_at, bool(joining), latency, error)


def _rows(crawl_id: int, vantage: str, results: Iterable[Reachability]) -> list[dict[str, Any]]:
    return [
        {
            "crawl_id": crawl_id,
            "vantage": vantage,
            "peer_id": r.peer_id,
            "ok": int(r.ok),
            "checked_at": r.checked_at,
            "joining": int(r.joining),
            "latency": r.latency,
            "error": r.error,
        }
        for r in {r.peer_id: r for r in results}.values()
    ]


def write_crawl_probes(conn: Any, crawl_id: int, vantage: str, snapshot: Snapshot) -> None:
    """The crawling vantage's own results, written with its crawl (the caller's transaction)."""
    insert_many(conn, "vantage_probes", _rows(crawl_id, vantage, snapshot_probes(snapshot)))


def write_probes(conn: Any, crawl_id: int, vantage: str, results: Iterable[Reachability]) -> int:
    """Store a round's results for ``crawl_id`` (a server probed again on the same crawl is updated in place).
    The caller owns the transaction. Returns the number of rows written."""
    lock = " FOR KEY SHARE" if dialect_of(conn).name == "postgresql" else ""  # retention cannot delete it meanwhile
    row = conn.execute(f"SELECT status, vantage FROM crawls WHERE id = ?{lock}", (crawl_id,)).fetchone()
    if row is None or row[0] != "succeeded":
        raise NotProbeable(f"crawl {crawl_id} is {'gone' if row is None else row[0]}: probes not stored")
    if row[1] == vantage:
        raise NotProbeable(
            f"vantage {vantage!r} crawled crawl {crawl_id}: give this probe process a name of its own (--vantage)"
        )
    rows = _rows(crawl_id, vantage, results)
    if rows:
        conn.executemany(_UPSERT, rows)
    return len(rows)


def _probe_set(conn: Any, crawl_id: int) -> list[str]:
    peers = [r[0] for r in conn.execute(_PROBED, (crawl_id,))]
    return sorted(peers or (r[0] for r in conn.execute(_ONLINE, (crawl_id,))))


def probe_targets(conn: Any, swarm: str) -> tuple[int, list[str]] | None:
    """The newest good crawl of ``swarm`` and the servers to probe from another vantage point: those its crawler
    probed (every server announcing an online span), else, when it probed none, those it found online."""
    row = conn.execute(_TARGET, (swarm,)).fetchone()
    return None if row is None else (row[0], _probe_set(conn, row[0]))


def reachable_from_crawl(conn: Any, crawl_id: int, max_age: float) -> VantageVerdicts:
    """ "Reachable from k of n" for every server crawl ``crawl_id`` probed (see the module's docstring)."""
    crawl = conn.execute("SELECT swarm, finished_at FROM crawls WHERE id = ?", (crawl_id,)).fetchone()
    if crawl is None or crawl[1] is None:
        return VantageVerdicts.of({})
    swarm, finished_at = crawl
    since = finished_at - max_age
    peers = _probe_set(conn, crawl_id)
    if not peers:
        return VantageVerdicts.of({})
    # each (server, vantage)'s newest row in the window, picked by the database: the window holds a row per crawl
    # and vantage for every server, and only one of them counts
    rows = conn.execute(
        f"""SELECT {_COLUMNS} FROM (
                SELECT {", ".join(f"v.{c.strip()}" for c in _COLUMNS.split(","))},
                    row_number() OVER (PARTITION BY v.peer_id, v.vantage ORDER BY v.checked_at DESC, v.id DESC) AS rn
                FROM vantage_probes v JOIN crawls c ON c.id = v.crawl_id
                WHERE c.swarm = ? AND c.id <= ? AND v.checked_at >= ?
                    AND v.peer_id IN (SELECT peer_id FROM servers WHERE crawl_id = ?)
            ) newest WHERE rn = 1""",
        (swarm, crawl_id, since, crawl_id),
    ).fetchall()
    wanted = set(peers)
    return VantageVerdicts.of(reachable_from((r for r in map(_result, rows) if r.peer_id in wanted), since=since))


def peer_results(conn: Any, peer_id: str, since: float) -> ReachableFrom | None:
    """One server's newest result per vantage checked since ``since`` (``is_reachable``), None without any."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM vantage_probes WHERE peer_id = ? AND checked_at >= ?", (peer_id, since)
    ).fetchall()
    return reachable_from(map(_result, rows), since=since).get(peer_id)
