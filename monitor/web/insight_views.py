"""The alerts and version-rollout pages and their JSON twins (``/alerts``, ``/versions``, ``/api/v1/...``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .. import insights
from ..alerts.rules import ActiveAlert
from ..rules.versions import NO_VERSION, VersionPoint, is_outdated, version_counts, version_sort_key
from . import params, queries
from .api import json_response
from .charts import WIDTH
from .context import CTX, WebContext
from .templating import with_query
from .views import RANGES, _range, _refresh, chart_start, render

MAX_SERIES = 6  # versions drawn with their own colour; the rest are stacked as "other"
OTHER = "other"


def _ctx(request: web.Request) -> WebContext:
    return request.app[CTX]


async def active_alerts(ctx: WebContext) -> list[ActiveAlert]:
    """The alerts firing now (answered from memory until the store changes)."""
    return await ctx.reader.read_fresh("active_alerts")


# ---- alerts


async def _alerts_data(request: web.Request) -> dict[str, Any]:
    ctx = _ctx(request)
    known = await queries.known_swarms(ctx.reader)
    swarm = params.swarm(request.query.get("swarm"), known)
    limit = params.limit(request.query.get("limit"), default=50, maximum=500)
    before = request.query.get("before")
    before_id = params.crawl_id(before) if before else None
    active = await active_alerts(ctx)
    events = await ctx.reader.read("alert_events", swarm, limit, before_id)
    return {
        "known": known,
        "swarm": swarm,
        "limit": limit,
        "before": before,
        "active": [a for a in active if swarm is None or a.swarm == swarm],
        "events": events,
        "next_before": events[-1][0] if len(events) == limit else None,
    }


async def alerts_page(request: web.Request) -> web.Response:
    data = await _alerts_data(request)
    ctx = _ctx(request)
    older = None
    if data["next_before"] is not None:
        older = with_query("/alerts", swarm=data["swarm"], limit=data["limit"], before=data["next_before"])
    return await render(
        request,
        "alerts.html",
        title="Alerts",
        swarms=data["known"],
        swarm=data["swarm"],
        active=data["active"],
        events=data["events"],
        older=older,
        enabled=ctx.settings.alerts_enabled,
        json_url=with_query(
            "/api/v1/alerts", swarm=data["swarm"], limit=request.query.get("limit"), before=data["before"]
        ),
        refresh=_refresh(ctx, None),
    )


async def alerts_api(request: web.Request) -> web.Response:
    data = await _alerts_data(request)
    return json_response(
        {
            "active": [insights.active_alert_document(a) for a in data["active"]],
            "events": [insights.alert_event_document(i, e) for i, e in data["events"]],
            "next_before": data["next_before"],
        }
    )


# ---- versions


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str


def series_names(points: Sequence[VersionPoint], current: Sequence[str]) -> list[str]:
    """The versions that get their own colour: today's, then the most-seen, newest first; at most MAX_SERIES."""
    seen: dict[str, int] = {}
    for p in points:
        for v, n in p.counts.items():
            seen[v] = seen.get(v, 0) + n
    ranked = list(dict.fromkeys([*current, *sorted(seen, key=lambda v: -seen[v])]))[:MAX_SERIES]
    return sorted(ranked, key=version_sort_key, reverse=True)


def stacked_bars(
    points: Sequence[VersionPoint], names: Sequence[str], *, t0: float, t1: float, height: float = 100.0
) -> list[Bar]:
    """One column per point (crawl or bucket), its versions stacked bottom-up in ``names`` order, then "other"."""
    if not points or t1 <= t0:
        return []
    top = max(p.total for p in points) or 1
    ordered = sorted(points, key=lambda p: p.ts)
    bars: list[Bar] = []
    for i, p in enumerate(ordered):
        end = ordered[i + 1].ts if i + 1 < len(ordered) else t1
        x0 = max(0.0, (p.ts - t0) / (t1 - t0) * WIDTH)
        x1 = min(WIDTH, (end - t0) / (t1 - t0) * WIDTH)
        if x1 <= x0 or not math.isfinite(x0):
            continue
        width = max(0.5, (x1 - x0) * 0.9)
        y = height
        stacks = [(v, p.counts.get(v, 0), f"s{k}") for k, v in enumerate(names)]
        stacks.append((OTHER, sum(n for v, n in p.counts.items() if v not in names), "sother"))
        for version, n, css in stacks:
            if n <= 0:
                continue
            h = n / top * (height - 2)
            y -= h
            bars.append(Bar(round(x0, 1), round(y, 2), round(width, 1), round(h, 2), css, f"{version}: {n}"))
    return bars


async def _versions_data(request: web.Request) -> dict[str, Any]:
    ctx = _ctx(request)
    swarm, known = await queries.chosen_swarm(ctx.reader, request.query.get("swarm"))
    range_name = _range(request)
    span, step = RANGES[range_name]
    now = ctx.clock()
    view = await queries.swarm_view(ctx.reader, ctx.settings, swarm, now=now)
    points = await ctx.reader.read("version_history", swarm, now - span, now, step)
    min_version = ctx.settings.min_version
    current = version_counts(view.snapshot, min_version) if view.snapshot else []
    return {
        "swarm": swarm,
        "known": known,
        "range_name": range_name,
        "since": now - span,
        "until": now,
        "step": step,
        "min_version": min_version,
        "snapshot": view.snapshot,
        "current": current,
        "points": points,
    }


async def versions_page(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    data = await _versions_data(request)
    names = series_names(data["points"], [c.version for c in data["current"]])
    interval = data["step"] or ctx.settings.interval(data["swarm"])
    t0 = chart_start(data["since"], data["until"], [p.ts for p in data["points"]], interval)
    bars = stacked_bars(data["points"], names, t0=t0, t1=data["until"])
    outdated_total = sum(c.servers for c in data["current"] if c.outdated)
    return await render(
        request,
        "versions.html",
        title="Petals versions",
        swarm=data["swarm"],
        swarms=data["known"],
        snapshot=data["snapshot"],
        current=data["current"],
        outdated_total=outdated_total,
        min_version=data["min_version"],
        points=data["points"],
        names=names,
        series={name: f"s{k}" for k, name in enumerate(names)},
        bars=bars,
        t0=t0,
        t1=data["until"],
        ranges=list(RANGES),
        range_name=data["range_name"],
        other_count=lambda p: p.total - sum(p.counts.get(n, 0) for n in names),
        is_outdated=lambda v: is_outdated(None if v == NO_VERSION else v, data["min_version"]),
        json_url=with_query("/api/v1/versions", swarm=request.query.get("swarm"), range=request.query.get("range")),
        refresh=_refresh(ctx, None),
    )


async def versions_api(request: web.Request) -> web.Response:
    data = await _versions_data(request)
    snap = data["snapshot"]
    return json_response(
        {
            "swarm": data["swarm"],
            "min_version": data["min_version"],
            "crawl_id": snap.crawl_id if snap else None,
            "current": [insights.version_count_document(c) for c in data["current"]],
            "since": data["since"],
            "until": data["until"],
            "step": data["step"],
            "points": [insights.version_point_document(p) for p in data["points"]],
        }
    )
