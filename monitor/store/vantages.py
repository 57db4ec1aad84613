"""Reachability per vantage point, stored (``vantage_probes``, migration 5; rules in ``monitor.rules.vantages``).

One row per (crawl, vantage, server): the crawl whose servers were probed, so retention deleting a crawl takes its
probes with it and a round repeated on the same crawl replaces its rows (the table grows with crawls, not with
rounds). The crawling vantage's rows are written with its crawl, in the crawl's transaction; ``monitor probe``
writes the others later, one transaction per round.

A view of crawl C counts the rows of C and of the swarm's previous good crawl (a probe process may not have
reached C yet), each vantage's newest result per server, and none older than ``max_age`` before C finished.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..rules.vantages import ReachableFrom, VantageResult, VantageVerdicts, reachable_from
from ..snapshot import Reachability, Snapshot
from .rows import insert_many, snapshot_probes

_COLUMNS = "vantage, peer_id, ok, checked_at, joining, latency, error"
# the newest successful crawl of a swarm whose servers a probe round would probe
_TARGET = "SELECT id FROM crawls WHERE swarm = ? AND status = 'succeeded' ORDER BY id DESC LIMIT 1"


class NotProbeable(LookupError):
    """The crawl named by a probe round is gone (retention) or never succeeded: its results have nowhere to go."""


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
    """Store a round's results for ``crawl_id``, replacing that vantage's earlier round on the same crawl.
    The caller owns the transaction. Returns the number of rows written."""
    row = conn.execute("SELECT status FROM crawls WHERE id = ?", (crawl_id,)).fetchone()
    if row is None or row[0] != "succeeded":
        raise NotProbeable(f"crawl {crawl_id} is {'gone' if row is None else row[0]}: probes not stored")
    rows = _rows(crawl_id, vantage, results)
    conn.execute("DELETE FROM vantage_probes WHERE crawl_id = ? AND vantage = ?", (crawl_id, vantage))
    insert_many(conn, "vantage_probes", rows)
    return len(rows)


def probe_targets(conn: Any, swarm: str) -> tuple[int, list[str]] | None:
    """The newest good crawl of ``swarm`` and the servers to probe from another vantage point: those its crawler
    probed (every server announcing an online span), else, when it probed none, those it found online."""
    row = conn.execute(_TARGET, (swarm,)).fetchone()
    if row is None:
        return None
    crawl_id = row[0]
    peers = [
        r[0] for r in conn.execute("SELECT peer_id FROM reachability WHERE crawl_id = ? ORDER BY peer_id", (crawl_id,))
    ]
    if not peers:
        peers = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT peer_id FROM servers WHERE crawl_id = ? AND state = 'online' ORDER BY peer_id",
                (crawl_id,),
            )
        ]
    return crawl_id, peers


def reachable_from_crawl(conn: Any, crawl_id: int, max_age: float) -> VantageVerdicts:
    """ "Reachable from k of n" for every server with a vantage result, as of crawl ``crawl_id``."""
    crawl = conn.execute("SELECT swarm, finished_at FROM crawls WHERE id = ?", (crawl_id,)).fetchone()
    if crawl is None or crawl[1] is None:
        return VantageVerdicts.of({})
    swarm, finished_at = crawl
    previous = conn.execute(
        "SELECT max(id) FROM crawls WHERE swarm = ? AND status = 'succeeded' AND id < ?", (swarm, crawl_id)
    ).fetchone()[0]
    ids = (crawl_id, crawl_id if previous is None else previous)
    rows = conn.execute(f"SELECT {_COLUMNS} FROM vantage_probes WHERE crawl_id IN (?, ?)", ids).fetchall()
    return VantageVerdicts.of(reachable_from(map(_result, rows), since=finished_at - max_age))


def peer_results(conn: Any, peer_id: str, since: float) -> ReachableFrom | None:
    """One server's newest result per vantage checked since ``since`` (``is_reachable``), None without any."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM vantage_probes WHERE peer_id = ? AND checked_at >= ?", (peer_id, since)
    ).fetchall()
    return reachable_from(map(_result, rows), since=since).get(peer_id)
