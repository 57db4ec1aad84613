"""Server-rendered SVG charts (no JavaScript needed, no inline style): geometry only, the template draws it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 1000.0, 100.0


@dataclass(frozen=True, slots=True)
class Band:
    x: float
    width: float
    css: str
    title: str


@dataclass(frozen=True, slots=True)
class Chart:
    """A step line in a ``WIDTH`` × ``HEIGHT`` box (y grows upward), with its axis bounds for the labels."""

    points: str  # the SVG polyline ``points`` attribute
    t0: float
    t1: float
    y_max: float
    last: float | None
    empty: bool = False


def _x(ts: float, t0: float, t1: float) -> float:
    return 0.0 if t1 <= t0 else (ts - t0) / (t1 - t0) * WIDTH


def step_chart(series: Sequence[tuple[float, float]], *, t0: float, t1: float, y_max: float | None = None) -> Chart:
    """``series`` of (time, value) drawn as steps (each value holds until the next point)."""
    clean = sorted((t, v) for t, v in series if math.isfinite(t) and math.isfinite(v))
    if not clean:
        return Chart("", t0, t1, y_max or 1.0, None, empty=True)
    top = max(y_max if y_max is not None else max(v for _, v in clean), 1.0)

    def y(v: float) -> float:
        return HEIGHT - max(0.0, min(v, top)) / top * (HEIGHT - 2) - 1

    coords: list[str] = []
    for i, (t, v) in enumerate(clean):
        x = _x(t, t0, t1)
        if i:
            coords.append(f"{x:.1f},{y(clean[i - 1][1]):.1f}")
        coords.append(f"{x:.1f},{y(v):.1f}")
    coords.append(f"{_x(t1, t0, t1):.1f},{y(clean[-1][1]):.1f}")
    return Chart(" ".join(coords), t0, t1, top, clean[-1][1])


def state_bands(
    series: Sequence[tuple[float, str, str] | tuple[float, str, str, float | None]],
    *,
    t0: float,
    t1: float,
    hold: float | None = None,
) -> list[Band]:
    """``series`` of (time, css class, title[, the point's own width]): one rectangle per point, lasting until the
    next point (at most ``hold`` seconds, or the point's width when wider: a bucket's width, so missing data stays a
    hole). Touching neighbours alike are one rectangle."""
    ordered = sorted(series, key=lambda point: point[:3])
    spans: list[list] = []  # [x0, x1, css, title]
    for i, (t, css, title, *own) in enumerate(ordered):
        end = ordered[i + 1][0] if i + 1 < len(ordered) else t1
        lasts = max(hold, own[0]) if hold is not None and own and own[0] else hold
        if lasts is not None:
            end = min(end, t + lasts)
        x0, x1 = _x(max(t, t0), t0, t1), _x(min(end, t1), t0, t1)
        if x1 <= x0:
            continue
        if spans and spans[-1][2:] == [css, title] and x0 - spans[-1][1] < 0.05:
            spans[-1][1] = x1
        else:
            spans.append([x0, x1, css, title])
    return [Band(round(x0, 1), round(max(x1 - x0, 0.5), 1), css, title) for x0, x1, css, title in spans]
