"""Lanes: rows of time bands in one SVG, the one drawing behind the model page's block heatmap (a lane per block)
and the server page's timeline (a lane per model). Geometry and words only; ``templates/_lanes.html`` draws it.

A chart with fewer than :data:`MIN_TIMES` distinct times says so in words instead of drawing a mostly empty axis,
and its right edge is the request's one "now" (the time the page's header shows), passed in as ``t1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..store.history import BlockHistory, DarkPeriod, ServerPoint
from .charts import Band, state_bands
from .templating import fmt_duration, fmt_utc, redundancy_class

MIN_TIMES = 2
LANE = 10  # a lane's height in SVG units (the SVG is 1000 wide)
TICK_EVERY = 10  # many lanes: label every tenth
MAX_LISTED = 200  # dark periods listed under the heatmap (the newest)

_ONLINE = {"r0": "a crawl saw no online server", "r1": "1 online server", "r2": "2 online servers"}


@dataclass(frozen=True, slots=True)
class Lane:
    label: str
    tick: bool  # show the label (every lane when there are few)
    bands: list[Band]
    gaps: list[Band]  # drawn over the bands: when there was nothing (a dark block)
    y: int


@dataclass(frozen=True, slots=True)
class Lanes:
    lanes: list[Lane]
    t0: float
    t1: float
    times: int  # distinct times with data
    label: str  # what the chart shows, for screen readers

    @property
    def too_little(self) -> bool:
        return self.times < MIN_TIMES

    @property
    def wide_labels(self) -> bool:
        """Names (models), not block numbers: a wider label column that cuts them with an ellipsis."""
        return any(len(lane.label) > 4 for lane in self.lanes)

    @property
    def height(self) -> int:
        return LANE * len(self.lanes)

    @property
    def pixels(self) -> int:
        """The SVG's height on screen: 12 px lanes when few, at least 3 px when many."""
        return len(self.lanes) * max(3, min(12, 480 // max(len(self.lanes), 1)))


def lanes(
    rows: Sequence[
        tuple[
            str,
            Sequence[tuple[float, str, str] | tuple[float, str, str, float | None]],
            Sequence[tuple[float, float, str]],
        ]
    ],
    *,
    t0: float,
    t1: float,
    label: str,
    hold: float | None = None,
) -> Lanes:
    """``rows`` of (label, points as (time, css class, title[, width]), gaps as (start, end, title))."""
    few = len(rows) <= 2 * TICK_EVERY
    least = (t1 - t0) / 500  # a gap of one crawl at the right edge is still drawn, 2 units wide
    out = []
    for i, (name, points, gaps) in enumerate(rows):
        holes = [
            band
            for start, end, title, *css in sorted(gaps)
            for band in state_bands(
                [(min(start, t1 - least), css[0] if css else "gap", title)], t0=t0, t1=t1, hold=max(end - start, least)
            )
        ]
        bands = state_bands(points, t0=t0, t1=t1, hold=hold)
        out.append(Lane(name, few or i % TICK_EVERY == 0, bands, holes, i * LANE))
    times = len({point[0] for _, points, _ in rows for point in points})
    return Lanes(out, t0, t1, times, label)


def dark_title(period: DarkPeriod) -> str:
    start = fmt_utc(period.start, "%Y-%m-%d %H:%M")
    about = (
        " (approximate: from rollups, which keep a bucket's first and last dark crawl)" if period.approximate else ""
    )
    if period.end is None:
        so_far = f" ({fmt_duration(period.duration)} so far)" if period.duration > 0 else ""
        return f"block {period.block} dark since {start}, still dark at the last crawl{so_far}{about}"
    end = fmt_utc(period.end, "%Y-%m-%d %H:%M")
    return f"block {period.block} dark from {start} to {end} ({fmt_duration(period.duration)}){about}"


def block_heatmap(history: BlockHistory, *, t0: float, t1: float, interval: float = 0.0) -> Lanes:
    """A lane per block: each bucket coloured by its fewest online servers, each dark period a gap with a title.
    A bucket lasts its step, or the crawl ``interval`` when crawls are sparser than buckets (no stripes); a crawl
    (no step) lasts at most two intervals, so a stopped monitor's downtime is a hole, not the previous state."""
    rows = []
    for block, points in enumerate(history.series):
        cells = []
        for p in points:
            css = redundancy_class(p.min_online)
            dark = f"; dark at {p.dark_crawls} of {p.crawls} crawls" if p.dark_crawls else ""
            cells.append((p.ts, css, f"block {block}: {_ONLINE.get(css, '3+ online servers')}{dark}", p.width))
        gaps = [
            (d.start, d.end if d.end is not None else t1, dark_title(d), "gap approx" if d.approximate else "gap")
            for d in history.dark[block]
        ]
        rows.append((str(block), cells, gaps))
    hold = max(history.step, interval) if history.step else (2 * interval or None)
    return lanes(rows, t0=t0, t1=t1, hold=hold, label="online servers per block over time")


def dark_list(history: BlockHistory) -> list[DarkPeriod]:
    """Every dark period of the range, newest first (at most :data:`MAX_LISTED`): the heatmap's text twin."""
    periods = [d for per_block in history.dark for d in per_block]
    return sorted(periods, key=lambda d: (-d.start, d.block))[:MAX_LISTED]


def server_timeline(points: Sequence[ServerPoint], *, t0: float, t1: float) -> Lanes:
    """A lane per model the server was seen in: its state over time, with its span in each band's title."""
    by_model: dict[str, list[tuple[float, str, str]]] = {}
    for p in points:
        by_model.setdefault(p.dht_prefix, []).append((p.ts, p.state, f"{p.dht_prefix}: {p.state} {p.start}:{p.end}"))
    rows = [(prefix, cells, ()) for prefix, cells in sorted(by_model.items())]
    return lanes(rows, t0=t0, t1=t1, label="the server's state in each model over time")
