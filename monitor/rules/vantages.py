"""Reachability seen from several places: "reachable from k of n vantage points".

A server behind a NAT may answer a probe from one network and not from another, so one monitor's probe is one
opinion. Every process writing to one database probes from a named vantage point (``[vantage] name``): the
crawling replica as part of its crawl, ``monitor probe --vantage NAME`` processes between crawls. Each stores one
result per server per round (:class:`VantageResult`); this module turns them into one verdict per server.

Rules (pure, so they are easy to test):

* only a vantage's newest result for a server counts, and only when it is at most ``max_age`` old at the time the
  view is of (a vantage that stopped probing drops out of *n*);
* *reached* means the probe got an answer: ``rpc_info`` replied, or the peer said "protocol not supported"
  (a server still joining is up and reachable: :mod:`monitor.rules.reachability`);
* the server's own state (online / unreachable) stays the crawl's verdict, from the crawling vantage: the others
  are shown beside it, never folded into coverage, so a crawl's stored judgement never changes afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class VantageResult:
    """One server's probe from one vantage point."""

    vantage: str
    peer_id: str
    ok: bool  # it answered (a joining server counts: it is up)
    checked_at: float
    joining: bool = False
    latency: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ReachableFrom:
    """Each vantage's newest fresh result for one server, sorted by vantage name."""

    results: tuple[VantageResult, ...]

    @property
    def reachable(self) -> int:
        return sum(1 for r in self.results if r.ok)

    @property
    def of(self) -> int:
        return len(self.results)

    @property
    def split(self) -> bool:
        """Some vantage points reach it and some do not: the NAT/firewall case worth an operator's look."""
        return 0 < self.reachable < self.of

    def text(self) -> str:
        return f"reachable from {self.reachable} of {self.of}"


def reachable_from(results: Iterable[VantageResult], *, since: float) -> dict[str, ReachableFrom]:
    """Per peer id: each vantage's newest result checked at or after ``since`` (older ones do not count)."""
    newest: dict[tuple[str, str], VantageResult] = {}
    for r in results:
        if r.checked_at < since:
            continue
        key = (r.peer_id, r.vantage)
        held = newest.get(key)
        if held is None or r.checked_at > held.checked_at:
            newest[key] = r
    by_peer: dict[str, list[VantageResult]] = {}
    for (peer, _), r in newest.items():
        by_peer.setdefault(peer, []).append(r)
    return {peer: ReachableFrom(tuple(sorted(rs, key=lambda r: r.vantage))) for peer, rs in by_peer.items()}


@dataclass(frozen=True, slots=True)
class VantageVerdicts:
    """The verdicts shown with one crawl, and a key that changes whenever any of them does (pages rendered from
    them are cached under it: results arrive between crawls)."""

    by_peer: dict[str, ReachableFrom]
    key: int

    @classmethod
    def of(cls, by_peer: dict[str, ReachableFrom]) -> VantageVerdicts:
        content = sorted((r.peer_id, r.vantage, r.ok, r.checked_at) for v in by_peer.values() for r in v.results)
        return cls(by_peer, hash(tuple(content)))

    def get(self, peer_id: str) -> ReachableFrom | None:
        return self.by_peer.get(peer_id)


@dataclass(frozen=True, slots=True)
class VantageSummary:
    """What one vantage point saw of a swarm's servers (the ``/vantages`` page)."""

    vantage: str
    servers: int  # servers it has a fresh result for
    reached: int
    last_checked_at: float


def summarize_vantages(reach: dict[str, ReachableFrom]) -> list[VantageSummary]:
    """Per vantage point, from the per-server verdicts; sorted by name."""
    counts: dict[str, list[float]] = {}  # vantage -> [servers, reached, newest]
    for verdict in reach.values():
        for r in verdict.results:
            c = counts.setdefault(r.vantage, [0, 0, r.checked_at])
            c[0] += 1
            c[1] += r.ok
            c[2] = max(c[2], r.checked_at)
    return [VantageSummary(v, int(c[0]), int(c[1]), c[2]) for v, c in sorted(counts.items())]
