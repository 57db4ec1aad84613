"""HTML pages. Each is server-rendered (works without JavaScript) and links its JSON twin under ``/api/v1``."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web

from .. import insights
from .. import report as rep
from ..geo import swarm_breakdown
from ..route_report import route_document
from ..rules.route import plan_route
from ..rules.versions import is_outdated, row_version
from . import charts, lanes, params, queries, server_table, world_map
from .context import CTX, WebContext
from .documents import Document, document_response, make_document
from .templating import model_url, with_query

# History ranges offered on model and server pages: name -> (seconds, rollup step or None for raw crawls).
RANGES: dict[str, tuple[int, int | None]] = {
    "6h": (6 * 3600, None),
    "24h": (86400, 120),
    "7d": (7 * 86400, 3600),
    "30d": (30 * 86400, 4 * 3600),
}
DEFAULT_RANGE = "24h"
# The model page's block heatmap (``?heatmap=``): name -> (seconds, bucket); the store may coarsen the bucket.
HEATMAP_RANGES: dict[str, tuple[int, int]] = {
    "24h": (86400, 600),
    "7d": (7 * 86400, 3600),
    "30d": (30 * 86400, 4 * 3600),
}
DEFAULT_HEATMAP = "24h"


def _ctx(request: web.Request) -> WebContext:
    return request.app[CTX]


def _at(request: web.Request) -> tuple[str, float] | None:
    return params.at(request.query.get("at"))


def _range(request: web.Request, key: str = "range", choices: dict = RANGES, default: str = DEFAULT_RANGE) -> str:
    name = request.query.get(key, default)
    if name not in choices:
        raise params.ClientError(f"invalid {key}: one of {', '.join(choices)}")
    return name


def _page_data(request: web.Request, data: dict[str, Any]) -> dict[str, Any]:
    ctx = _ctx(request)
    data.setdefault("at", request.query.get("at") or None)
    data.setdefault("json_url", None)
    data.setdefault("refresh", None)
    data.setdefault("title", None)
    data.setdefault("now", ctx.clock())
    data["path"] = request.path
    return data


async def render(request: web.Request, template: str, *, status: int = 200, **data: Any) -> web.Response:
    ctx = _ctx(request)
    data = _page_data(request, data)
    html = await ctx.reader(lambda: ctx.env.get_template(template).render(data))  # compiling one is ~10-60 ms
    return web.Response(text=html, content_type="text/html", status=status)


async def render_document(request: web.Request, template: str, **data: Any) -> Document:
    """A page rendered and encoded once, for the render cache: loading the template (its first use compiles it),
    rendering and encoding all on a read thread, off the event loop."""
    ctx = _ctx(request)
    data = _page_data(request, data)
    return await ctx.reader(lambda: make_document(ctx.env.get_template(template).render(data), "text/html"))


def _refresh(ctx: WebContext, at: object) -> float | None:
    """Pages showing live data ask their JS to look for a new crawl this often (never in a historical view)."""
    if at is not None:
        return None
    return ctx.settings.refresh_seconds or min(ctx.settings.default_interval, 300)


async def overview(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    at = _at(request)
    now = ctx.clock()
    views = await queries.all_swarms(ctx.reader, ctx.settings, now=now, at=at)
    scheduler = scheduler_jobs(ctx)
    running = tuple(sorted(s for s, job in scheduler.items() if job.get("running")))  # "crawling now…"
    firing = await ctx.reader.read_fresh("active_alerts") if at is None else []
    alerts_key = tuple((a.swarm, a.kind, a.subject) for a in firing)

    async def make() -> Document:
        maps = await ctx.reader(_world_maps, views, ctx.static_dir)
        return await render_document(
            request,
            "overview.html",
            world_maps=maps,
            views=views,
            json_url=with_query("/api/v1/swarms", at=request.query.get("at")),
            refresh=_refresh(ctx, at),
            scheduler=scheduler,
            firing=firing,
        )

    doc = await ctx.rendered.get_or_make(("overview", at, queries.views_key(views), running, alerts_key), make)
    return document_response(request, doc)


def _world_maps(views: list[queries.SwarmView], static_dir: Path) -> dict[str, world_map.WorldMap]:
    """Each shown swarm's servers on the world map (the map file is parsed once per process)."""
    shape = world_map.load_shapes(static_dir)
    return {
        v.swarm: world_map.world_map(swarm_breakdown(v.snapshot.models), shape) for v in views if v.snapshot is not None
    }


def scheduler_jobs(ctx: WebContext) -> dict[str, dict[str, Any]]:
    """``scheduler_info()`` as {swarm: {next_run_time, running}}; tolerant of objects or mappings."""
    if ctx.scheduler_info is None:
        return {}
    try:
        jobs = ctx.scheduler_info()
    except Exception:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for job in jobs or ():
        get = job.get if isinstance(job, dict) else lambda k, j=job: getattr(j, k, None)
        swarm = get("swarm")
        if isinstance(swarm, str):
            out[swarm] = {"next_run_time": get("next_run_time"), "running": bool(get("running"))}
    return out


async def model_page(request: web.Request) -> web.Response:
    """Rendered once per (crawl, range): the history and the grid change only when a crawl lands."""
    ctx = _ctx(request)
    at = _at(request)
    dht_prefix = request.match_info["dht_prefix"]
    swarms = await queries.known_swarms(ctx.reader)
    swarm = params.swarm(request.query.get("swarm"), swarms)
    range_name = _range(request)
    heatmap_name = _range(request, "heatmap", HEATMAP_RANGES, DEFAULT_HEATMAP)
    table = server_table.parse(request.query)
    now = ctx.clock()  # the one clock of this request: the header's "now" and the charts' right edge
    mv = await queries.model_view(ctx.reader, ctx.settings, dht_prefix, now=now, swarm=swarm, at=at)
    span, step = RANGES[range_name]
    until = mv.swarm.as_of if mv.swarm.as_of is not None else now

    async def make() -> Document:
        points = await ctx.reader.read("model_history", mv.swarm.swarm, dht_prefix, until - span, until, step)
        data = await ctx.reader(_model_page_data, mv, points, until=until, span=span)
        data.update(await ctx.reader(_model_insight_data, mv, ctx.settings))
        data.update(await _block_heatmap_data(ctx, mv, heatmap_name, until))
        keep = {name: request.query.get(name) for name in ("swarm", "range", "heatmap", "at", "live")}
        data.update(_table_data(mv, table, model_url(dht_prefix), keep))
        data.update(
            now=now,
            ranges=list(RANGES),
            range_name=range_name,
            default_range=DEFAULT_RANGE,
            multi_swarm=len(swarms) > 1,
            json_url=with_query(
                "/api/v1/models/" + model_url(dht_prefix).removeprefix("/models/"),
                swarm=request.query.get("swarm"),
                at=request.query.get("at"),
            ),
            refresh=_refresh(ctx, at),
        )
        return await render_document(request, "model.html", **data)

    key = (
        "model_page",
        dht_prefix,
        request.query.get("swarm"),
        at,
        range_name,
        heatmap_name,
        request.query.get("live") == "0",  # the table's links keep the off switch
        queries.views_key([mv.swarm]),
        len(swarms) > 1,
    )
    # filtered or re-sorted tables are not cached: any text in ?q= would otherwise evict the pages everyone shares
    doc = await (make() if table.params() else ctx.rendered.get_or_make(key, make))
    return document_response(request, doc)


def _model_page_data(mv: queries.ModelView, points: list, *, until: float, span: float) -> dict[str, Any]:
    snapshot = mv.swarm.snapshot
    assert snapshot is not None
    report = mv.report
    t0 = chart_start(until - span, until, [p.ts for p in points], mv.swarm.interval)
    own_peers = {r.peer_id for r in report.servers}
    return {
        "title": report.model.display_name,
        "view": mv.swarm,
        "snapshot": snapshot,
        "report": report,
        "rows": sorted(report.servers, key=lambda r: (r.start, r.end, r.peer_id)),
        "peak": max((b.throughput for b in report.blocks), default=0.0),
        "official_state": rep.official_state(report),
        "issues": [i for i in rep.reachability_issues(snapshot) if i["peer_id"] in own_peers],
        "invalid": rep.model_invalid_records(snapshot, report.model.dht_prefix),
        "points": points,
        "history": {
            "coverage": charts.step_chart(
                [(p.ts, 100.0 * p.blocks_covered / p.num_blocks if p.num_blocks else 0.0) for p in points],
                t0=t0,
                t1=until,
                y_max=100.0,
            ),
            "redundancy": charts.step_chart([(p.ts, float(p.min_online)) for p in points], t0=t0, t1=until),
            "servers": charts.step_chart([(p.ts, float(p.servers_online)) for p in points], t0=t0, t1=until),
            "states": charts.state_bands([(p.ts, p.state, p.state) for p in points], t0=t0, t1=until),
        },
    }


async def _block_heatmap_data(ctx: WebContext, mv: queries.ModelView, name: str, until: float) -> dict[str, Any]:
    """The block x time heatmap and its dark periods (``templates/_block_heatmap.html``)."""
    span, step = HEATMAP_RANGES[name]
    prefix = mv.report.model.dht_prefix
    history = await ctx.reader.read("block_history", mv.swarm.swarm, prefix, until - span, until, step)
    times = [p.ts for points in history.series for p in points]
    t0 = chart_start(until - span, until, times, mv.swarm.interval)
    if until - t0 < span / 4:  # a young history: every crawl (the store coarsens if that is too many)
        history = await ctx.reader.read("block_history", mv.swarm.swarm, prefix, t0, until, None)
    heatmap, dark = await ctx.reader(  # a few thousand bands for a wide model: off the event loop
        lambda: (lanes.block_heatmap(history, t0=t0, t1=until, interval=mv.swarm.interval), lanes.dark_list(history))
    )
    return {
        "heatmap": heatmap,
        "heatmap_ranges": list(HEATMAP_RANGES),
        "heatmap_name": name,
        "heatmap_step": history.step,
        "heatmap_coarsened": history.coarsened,
        "dark_periods": dark,
        "dark_truncated": history.dark_truncated,
    }


def _table_data(mv: queries.ModelView, table: server_table.TableQuery, path: str, keep: dict) -> dict[str, Any]:
    """The server table's rows as ``?q=&state=&version=&sort=&order=`` ask (``monitor.web.server_table``), then the
    rest, which the page renders ``hidden``: static/js/table.js re-filters in place from the JSON twin and needs
    every row the server drew."""
    shown = server_table.apply(mv.report.servers, table)
    return {
        "table": table,
        "table_rows": shown,
        "table_hidden": server_table.left_out(mv.report.servers, shown),
        "table_facets": server_table.facets(mv.report.servers),
        "table_links": server_table.sort_links(path, table, keep),
        "table_keep": {k: v for k, v in keep.items() if v},
    }


def _model_insight_data(mv: queries.ModelView, settings: Any) -> dict[str, Any]:
    """Fix-it hints, where the servers are, the version rule (``monitor.insights``) and the route panel."""
    snapshot = mv.swarm.snapshot
    assert snapshot is not None
    min_redundancy = settings.min_redundancy.get(mv.swarm.swarm, 2)
    extra = insights.model_insights(mv.report, snapshot, settings.min_version, min_redundancy)
    return {
        "hints": extra["hints"],
        "places": extra["places"],
        "min_version": settings.min_version,
        "outdated": {row.peer_id: is_outdated(row_version(row), settings.min_version) for row in mv.report.servers},
        "route": route_document(plan_route(mv.report, settings.session_tokens)),
    }


def chart_start(t0: float, until: float, times: list[float], interval: float) -> float:
    """Charts start at the first point when history is younger than the range (a new monitor): no empty left."""
    if not times:
        return t0
    first = min(times)
    return max(t0, min(first - interval, until - 10 * interval))


def compress_history(points: list) -> list:
    """Server history rows where something visible changed (state, span, version), per model."""
    out, last = [], {}
    for p in sorted(points, key=lambda p: p.ts):
        sig = (p.state, p.start, p.end, p.version)
        if last.get(p.dht_prefix) != sig:
            out.append(p)
            last[p.dht_prefix] = sig
    return out


async def server_page(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    peer_id = params.peer_id(request.match_info["peer_id"])
    at = _at(request)
    range_name = _range(request)
    now = ctx.clock()
    span, _step = RANGES[range_name]
    _views, placements = await queries.server_placements(ctx.reader, ctx.settings, peer_id, now=now, at=at)
    until = now if at is None else (await queries.resolve_at(ctx.reader, at))[0] or now
    history, uptime = await asyncio.gather(
        ctx.reader.read("server_history", peer_id, until - span, until),
        ctx.reader.read("server_uptime", peer_id, until),
    )
    last_seen = [] if placements or at is not None else await ctx.reader.read("server_models", peer_id)
    if not placements and not history and not last_seen:
        raise params.NotFound("unknown server")
    t0 = chart_start(until - span, until, [p.ts for p in history], ctx.settings.default_interval)
    timeline = lanes.server_timeline(history, t0=t0, t1=until)
    throughput = charts.step_chart([(p.ts, p.throughput) for p in history], t0=t0, t1=until)
    names = Counter(p.row.info.public_name for p in placements if p.row.show_public_name and p.row.info.public_name)
    extras = [insights.server_row_insights(p.row, p.snapshot, ctx.settings.min_version) for p in placements]
    hints = list({(h["problem"], h["detail"]): h for x in extras for h in x["hints"]}.values())
    return await render(
        request,
        "server.html",
        extras=extras,
        hints=hints,
        place=next((x["place"] for x in extras if x["place"]["scope"] != "unknown"), None),
        min_version=ctx.settings.min_version,
        title=f"Server {rep.short_peer_id(peer_id)}",
        peer_id=peer_id,
        placements=placements,
        vantage_verdicts={
            p.swarm: p.vantages.get(peer_id) for p in placements if p.vantages and p.vantages.get(peer_id)
        },
        last_seen=last_seen,
        contributor_name=names.most_common(1)[0][0] if names else None,
        uptime=uptime,
        history=compress_history(history),
        history_count=len(history),
        timeline=timeline,
        now=now,
        throughput=throughput,
        ranges=list(RANGES),
        range_name=range_name,
        json_url=with_query(f"/api/v1/servers/{peer_id}", at=request.query.get("at")),
        refresh=_refresh(ctx, at),
    )


async def crawls_page(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    swarms = await queries.known_swarms(ctx.reader)
    swarm = params.swarm(request.query.get("swarm"), swarms)
    limit = params.limit(request.query.get("limit"), default=50, maximum=500)
    before = request.query.get("before")
    before_id = params.crawl_id(before) if before else None
    crawls = await ctx.reader.read("crawls", swarm, limit, before_id)
    previous_good: dict[int, int] = {}  # crawl id -> the previous succeeded crawl of its swarm on this page
    for i, crawl in enumerate(crawls):
        if crawl.status != "succeeded":
            continue
        for older in crawls[i + 1 :]:
            if older.swarm == crawl.swarm and older.status == "succeeded":
                previous_good[crawl.id] = older.id
                break
    return await render(
        request,
        "crawls.html",
        title="Crawl log",
        crawls=crawls,
        previous_good=previous_good,
        swarms=swarms,
        swarm=swarm,
        limit=limit,
        older=with_query("/crawls", swarm=swarm, limit=limit, before=crawls[-1].id) if len(crawls) == limit else None,
        json_url=with_query("/api/v1/crawls", swarm=swarm, limit=request.query.get("limit"), before=before),
    )


async def crawl_page(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    crawl_id = params.crawl_id(request.match_info["crawl_id"])
    crawl = await ctx.reader.read("crawl", crawl_id)
    if crawl is None:
        raise params.NotFound("unknown crawl")
    snapshot, previous = await asyncio.gather(
        ctx.reader.snapshot(crawl_id), ctx.reader.read("crawls", crawl.swarm, 1, crawl_id)
    )
    return await render(
        request,
        "crawl.html",
        title=f"Crawl {crawl_id}",
        crawl=crawl,
        snapshot=snapshot,
        previous=previous[0] if previous else None,
        json_url=f"/api/v1/crawls/{crawl_id}",
    )


async def diff_page(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    a = params.crawl_id(request.match_info["a"])
    b = params.crawl_id(request.match_info["b"])
    ca, cb, diff = await queries.crawl_diff(ctx.reader, a, b)
    return await render(
        request,
        "diff.html",
        title=f"Crawl {a} → {b}",
        a=ca,
        b=cb,
        diff=diff,
        json_url=f"/api/v1/crawls/{a}/diff/{b}",
    )


async def diff_form(request: web.Request) -> web.Response:
    """``/crawls/diff?a=&b=``: the crawl log's compare form (a GET form, no JS) redirects to the diff page."""
    a = params.crawl_id(request.query.get("a", ""))
    b = params.crawl_id(request.query.get("b", ""))
    raise web.HTTPFound(f"/crawls/{a}/diff/{b}")


async def api_docs(request: web.Request) -> web.Response:
    from .openapi import openapi_document

    return await render(request, "api.html", title="API", doc=openapi_document(), json_url="/api/v1/openapi.json")
