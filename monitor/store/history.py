"""Read-side shapes for history: crawl summaries, diffs and time series (what the store answers with).

These are the contract between ``monitor.store.sqlite`` (the only writer, and the readers' queries) and the web.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..snapshot import CrawlStatus, ModelInfo, ModelState, ServerRow, ServerState


@dataclass(frozen=True, slots=True)
class CrawlSummary:
    """One row of the crawl log."""

    id: int
    swarm: str
    status: CrawlStatus
    started_at: float
    finished_at: float | None
    peers_contacted: int = 0
    peers_failed: int = 0
    rpcs: int = 0
    keys: int = 0
    records: int = 0
    invalid_by_reason: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    vantage: str | None = None  # the vantage point (``[vantage] name``) of the process that crawled

    @property
    def duration(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at


@dataclass(frozen=True, slots=True)
class ServerChange:
    """A server that differs between two crawls of one model."""

    dht_prefix: str
    peer_id: str
    before: tuple[ServerState, int, int] | None  # (state, start, end), None if absent
    after: tuple[ServerState, int, int] | None


@dataclass(frozen=True, slots=True)
class CrawlDiff:
    """What changed from crawl ``a`` to crawl ``b``: servers that joined, left, moved spans or changed state."""

    a: int
    b: int
    joined: list[ServerChange]
    left: list[ServerChange]
    moved: list[ServerChange]
    state_changed: list[ServerChange]
    model_state_changed: list[tuple[str, ModelState | None, ModelState | None]]  # (dht_prefix, before, after)


@dataclass(frozen=True, slots=True)
class ModelPoint:
    """A model at one time (a raw crawl or a rollup bucket): coverage and redundancy over time."""

    ts: float
    state: ModelState
    blocks_covered: int
    num_blocks: int
    min_online: int
    servers_online: int
    throughput: float  # sum over online servers


@dataclass(frozen=True, slots=True)
class ServerPoint:
    """A server in one model at one time."""

    ts: float
    crawl_id: int | None  # None for rollup rows
    dht_prefix: str
    state: ServerState
    start: int
    end: int
    version: str | None
    throughput: float


@dataclass(frozen=True, slots=True)
class ServerModel:
    """A server's row in one model, from the newest succeeded crawl of ``swarm`` that lists it (server pages)."""

    swarm: str
    crawl_id: int
    ts: float  # that crawl's finished_at: "last seen" when older than the latest crawl
    model: ModelInfo
    server: ServerRow


@dataclass(frozen=True, slots=True)
class BlockPoint:
    """Online servers of one block in one bucket (a raw crawl, or merged crawls and rollup rows)."""

    ts: float  # the bucket's start (a raw crawl's time when not bucketed)
    min_online: int
    max_online: int
    mean_online: float
    crawls: int
    dark_crawls: int  # crawls that saw the block with no online server
    width: float | None = None  # seconds it covers when a rollup tier wider than the step is in it (a daily row)


@dataclass(frozen=True, slots=True)
class DarkPeriod:
    """A block without any online server, as observed: from the first crawl that saw it dark to the first that saw
    it lit again (``end`` None: still dark at the last crawl of the range, ``last_dark``). Inside a rollup bucket
    only the first and last dark crawl are kept, so two dark spells within one bucket read as one."""

    block: int
    start: float
    end: float | None
    last_dark: float
    approximate: bool = False  # a rollup bucket is in it: its bounds are the bucket's envelope, not exact crawls

    @property
    def duration(self) -> float:
        return (self.end if self.end is not None else self.last_dark) - self.start


@dataclass(frozen=True, slots=True)
class BlockHistory:
    """Per block of a model, online servers over ``[since, until]`` and the periods each block was dark."""

    since: float
    until: float
    step: float | None  # the step used (None: one point per crawl)
    coarsened: bool  # True when ``step`` is coarser than asked, to bound the number of points
    num_blocks: int
    series: list[list[BlockPoint]]  # index: block; empty buckets are left out
    dark: list[list[DarkPeriod]]  # index: block; oldest first
    dark_truncated: bool = False  # some block had more periods than listed: its newest are kept
