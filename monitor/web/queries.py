"""What pages and their JSON twins show, assembled from store reads (shared by ``views`` and ``api``).

Every read goes through :class:`~monitor.web.reader.ReadExecutor`, off the event loop. ``at`` (from ``?at=``)
selects a past crawl; without it each swarm shows its last good crawl, and its last crawl when that failed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ..rules.vantages import ReachableFrom, VantageVerdicts
from ..snapshot import ModelReport, ServerRow, Snapshot
from ..store.history import CrawlSummary
from . import params
from .params import NotFound
from .reader import Heads, ReadExecutor
from .settings import WebSettings


@dataclass(slots=True)
class SwarmView:
    """One swarm as a page shows it: the snapshot to display and the crawl bookkeeping around it."""

    swarm: str
    snapshot: Snapshot | None  # the last good crawl (or the crawl selected by ``at``)
    last_crawl: CrawlSummary | None  # the most recent crawl of any status (None in a historical view)
    interval: float
    stale: bool = False  # the last good crawl is older than ``stale_after_intervals`` intervals
    as_of: float | None = None  # set in a historical view (``?at=``)
    vantages: VantageVerdicts | None = None  # "reachable from k of n" per server of ``snapshot``

    def reachable_from(self, peer_id: str) -> ReachableFrom | None:
        return None if self.vantages is None else self.vantages.get(peer_id)

    @property
    def last_failed(self) -> bool:
        return self.last_crawl is not None and self.last_crawl.status == "failed"

    @property
    def crawl_running(self) -> bool:
        return self.last_crawl is not None and self.last_crawl.status == "started"


@dataclass(slots=True)
class ModelView:
    swarm: SwarmView
    report: ModelReport


@dataclass(slots=True)
class ServerPlacement:
    """One model span served by a peer, in one swarm's snapshot."""

    swarm: str
    report: ModelReport
    row: ServerRow
    snapshot: Snapshot
    vantages: VantageVerdicts | None = None


def views_key(views: list[SwarmView]) -> tuple:
    """What a page showing ``views`` depends on: each swarm's shown crawl, its last crawl, staleness and what the
    vantage points said of its servers."""
    return tuple(
        (
            v.swarm,
            v.snapshot.crawl_id if v.snapshot else None,
            (v.last_crawl.id, v.last_crawl.status) if v.last_crawl else None,
            v.stale,
            v.vantages.key if v.vantages else None,
        )
        for v in views
    )


async def resolve_at(reads: ReadExecutor, at: tuple[str, float] | None) -> tuple[float | None, CrawlSummary | None]:
    """``?at=`` → (time to view at, the crawl named by id if any). 404 for an unknown crawl id."""
    if at is None:
        return None, None
    kind, value = at
    if kind == "crawl":
        crawl = await reads.read("crawl", int(value))
        if crawl is None:
            raise NotFound("unknown crawl")
        return crawl.finished_at or crawl.started_at, crawl
    return value, None


async def known_swarms(reads: ReadExecutor) -> list[str]:
    """Every swarm with a crawl, sorted (from the shared heads read, not a query of its own)."""
    return list(await reads.heads())


async def chosen_swarm(reads: ReadExecutor, requested: str | None) -> tuple[str, list[str]]:
    """``?swarm=`` (400 if unknown) or the first swarm with a crawl (404 before any); and every known swarm."""
    known = await known_swarms(reads)
    swarm = params.swarm(requested, known) or (known[0] if known else None)
    if swarm is None:
        raise NotFound("no crawl yet")
    return swarm, known


async def swarm_view(
    reads: ReadExecutor,
    settings: WebSettings,
    swarm: str,
    *,
    now: float,
    at: tuple[str, float] | None = None,
    heads: Heads | None = None,
) -> SwarmView:
    interval = settings.interval(swarm)
    if at is not None:
        ts, crawl = await resolve_at(reads, at)
        if crawl is not None and crawl.swarm == swarm:
            snap = await reads.snapshot(crawl.id)
        else:
            snap = await reads.read("snapshot_at", swarm, ts)
        return SwarmView(swarm, snap, None, interval, as_of=ts, vantages=await _vantages(reads, settings, snap))
    if heads is None:
        heads = await reads.heads()
    last, good = heads.get(swarm, (None, None))
    snap = None if good is None else await reads.snapshot(good.id)
    stale = False
    if good is not None:
        stale = now - (good.finished_at or good.started_at) > settings.stale_after_intervals * interval
    elif last is not None:
        stale = True
    return SwarmView(swarm, snap, last, interval, stale=stale, vantages=await _vantages(reads, settings, snap))


async def _vantages(reads: ReadExecutor, settings: WebSettings, snap: Snapshot | None) -> VantageVerdicts | None:
    """The verdicts of every vantage point on ``snap``'s servers: from memory while the store is unchanged (they
    change between crawls, as probe processes write)."""
    if snap is None or snap.crawl_id is None or not hasattr(reads.store, "reachable_from"):
        return None
    return await reads.read_fresh("reachable_from", snap.crawl_id, settings.vantage_max_age)


async def all_swarms(
    reads: ReadExecutor, settings: WebSettings, *, now: float, at: tuple[str, float] | None = None
) -> list[SwarmView]:
    heads = await reads.heads()
    if at is None:  # usually no read at all (snapshots in memory): tasks for a gather would cost more
        return [await swarm_view(reads, settings, s, now=now, heads=heads) for s in heads]
    return list(await asyncio.gather(*(swarm_view(reads, settings, s, now=now, at=at, heads=heads) for s in heads)))


async def model_view(
    reads: ReadExecutor,
    settings: WebSettings,
    dht_prefix: str,
    *,
    now: float,
    swarm: str | None = None,
    at: tuple[str, float] | None = None,
) -> ModelView:
    """The model ``dht_prefix`` in ``swarm`` (or the first swarm that has it). 404 when no swarm has it."""
    views = await all_swarms(reads, settings, now=now, at=at)
    for view in views:
        if swarm is not None and view.swarm != swarm:
            continue
        if view.snapshot is None:
            continue
        for report in view.snapshot.models:
            if report.model.dht_prefix == dht_prefix:
                return ModelView(view, report)
    raise NotFound("unknown model")


async def server_placements(
    reads: ReadExecutor, settings: WebSettings, peer_id: str, *, now: float, at: tuple[str, float] | None = None
) -> tuple[list[SwarmView], list[ServerPlacement]]:
    views = await all_swarms(reads, settings, now=now, at=at)
    found = []
    for view in views:
        if view.snapshot is None:
            continue
        for report in view.snapshot.models:
            for row in report.servers:
                if row.peer_id == peer_id:
                    found.append(ServerPlacement(view.swarm, report, row, view.snapshot, view.vantages))
    return views, found


async def crawl_diff(reads: ReadExecutor, a: int, b: int):
    """The diff of two crawls; 404 when either is unknown or has no snapshot (failed, running, rolled up)."""
    first, second = await asyncio.gather(reads.read("crawl", a), reads.read("crawl", b))
    if first is None or second is None:
        raise NotFound("unknown crawl")
    try:
        diff = await reads.read("diff", a, b)
    except LookupError:
        raise NotFound("no snapshot for one of these crawls (it failed, is running or was rolled up)") from None
    return first, second, diff
