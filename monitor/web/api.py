"""The JSON API (``/api/v1``): the twin of every page, plus exports, ``is_reachable`` and ``/healthz``."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .. import insights
from .. import report as rep
from ..snapshot import Reachability
from . import params, queries, server_table
from .context import CTX, WebContext
from .documents import Document, document_response, make_document
from .views import scheduler_jobs

log = logging.getLogger(__name__)

SERVER_HISTORY_SPAN = 7 * 86400
RECORDED_READ = 1.0  # is_reachable: at most this long for what the vantage points recorded (seconds)
MODEL_HISTORY_SPAN = 86400


def dumps(doc: Any) -> str:
    return json.dumps(doc, allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def json_response(doc: Any, *, status: int = 200, text: str | None = None) -> web.Response:
    return web.Response(text=text if text is not None else dumps(doc), status=status, content_type="application/json")


def json_document(doc: Any) -> Document:
    """``doc`` dumped, encoded and compressed once (runs on a read thread: a large state takes milliseconds)."""
    return make_document(dumps(doc), "application/json")


def _ctx(request: web.Request) -> WebContext:
    return request.app[CTX]


def _at(request: web.Request) -> tuple[str, float] | None:
    return params.at(request.query.get("at"))


def swarm_summary(view: queries.SwarmView) -> dict[str, Any]:
    """The overview's twin: one swarm's crawl bookkeeping and each model's health at a glance."""
    snap = view.snapshot
    models = []
    for r in snap.models if snap else ():
        models.append(
            {
                "dht_prefix": r.model.dht_prefix,
                "name": r.model.display_name,
                "repository": r.model.repository,
                "official": r.model.official,
                "num_blocks": r.model.num_blocks,
                "state": rep.official_state(r),
                "health": r.state,
                "blocks_covered": r.blocks_covered,
                "min_online": r.min_online,
                "servers_online": sum(1 for s in r.servers if s.state == "online"),
                "servers_total": len(r.servers),
                "throughput": rep.finite(min((b.throughput for b in r.blocks), default=0.0)),
            }
        )
    return {
        "swarm": view.swarm,
        "update_period": view.interval,
        "stale": view.stale,
        "as_of": view.as_of,
        "crawl_id": snap.crawl_id if snap else None,
        "last_updated": snap.finished_at if snap else None,
        "last_crawl": None if view.last_crawl is None else rep.crawl_summary_document(view.last_crawl),
        "bootstrap_peers": [rep.bootstrap_document(p) for p in snap.bootstrap] if snap else [],
        "top_contributors": dict(snap.top_contributors) if snap else {},
        "models": models,
    }


async def swarms(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    at = _at(request)
    views = await queries.all_swarms(ctx.reader, ctx.settings, now=ctx.clock(), at=at)

    async def make() -> Document:
        return await ctx.reader(json_document, {"swarms": [swarm_summary(v) for v in views]})

    return document_response(request, await ctx.rendered.get_or_make(("swarms", at, queries.views_key(views)), make))


async def state(request: web.Request) -> web.Response:
    """health.petals.dev's document (a superset), for one swarm: ``?swarm=`` or the first configured.

    Served from bytes rendered once per crawl: under load a request costs one shared "newest crawls?" read."""
    ctx = _ctx(request)
    known = await queries.known_swarms(ctx.reader)
    swarm = params.swarm(request.query.get("swarm"), known) or (known[0] if known else None)
    if swarm is None:
        return json_response({"error": {"status": 503, "message": "no crawl yet"}}, status=503)
    at = _at(request)
    view = await queries.swarm_view(ctx.reader, ctx.settings, swarm, now=ctx.clock(), at=at)
    if view.snapshot is None:
        return json_response({"error": {"status": 503, "message": "no successful crawl yet"}}, status=503)
    last = view.last_crawl

    async def make() -> Document:
        doc = rep.state_document(view.snapshot, update_period=view.interval, last_crawl=last, stale=view.stale)
        doc["as_of"] = view.as_of
        return await ctx.reader(json_document, doc)

    key = ("state", swarm, at, view.snapshot.crawl_id, (last.id, last.status) if last else None, view.stale)
    return document_response(request, await ctx.rendered.get_or_make(key, make))


async def model(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    dht_prefix = request.match_info["dht_prefix"]
    known = await queries.known_swarms(ctx.reader)
    swarm = params.swarm(request.query.get("swarm"), known)
    at = _at(request)
    table = server_table.parse(request.query)
    mv = await queries.model_view(ctx.reader, ctx.settings, dht_prefix, now=ctx.clock(), swarm=swarm, at=at)
    snap = mv.swarm.snapshot
    assert snap is not None

    min_version = ctx.settings.min_version
    min_redundancy = ctx.settings.min_redundancy.get(mv.swarm.swarm, 2)

    def document() -> Document:
        peers = {r.peer_id for r in mv.report.servers}
        rows = server_table.apply(mv.report.servers, table)  # the table's rows: the report's, as asked
        model_doc = rep.model_report_document(
            dataclasses.replace(mv.report, servers=rows), min_version=min_version, vantages=mv.swarm.vantages
        )
        return json_document(
            {
                "swarm": mv.swarm.swarm,
                "crawl_id": snap.crawl_id,
                "last_updated": snap.finished_at,
                "as_of": mv.swarm.as_of,
                "stale": mv.swarm.stale,
                "model": model_doc,
                "server_table": {**table.document(), "matched": len(rows), "total": len(mv.report.servers)},
                "reachability_issues": [i for i in rep.reachability_issues(snap) if i["peer_id"] in peers],
                "invalid_records": [rep.invalid_document(r) for r in rep.model_invalid_records(snap, dht_prefix)],
                **insights.model_insights(mv.report, snap, min_version, min_redundancy),
            }
        )

    async def make() -> Document:
        return await ctx.reader(document)

    key = ("model", queries.views_key([mv.swarm]), dht_prefix, at)
    doc = await (make() if table.params() else ctx.rendered.get_or_make(key, make))  # as the page: see views
    return document_response(request, doc)


async def _history(
    request: web.Request, method: str, is_empty: Callable[[Any], bool]
) -> tuple[dict[str, Any], float | None, Any]:
    """A model's history routes: the store's ``method`` answer for the asked range, with the document's head and
    the asked step. Unknown swarm or model: 404 (an empty range is fine for a model we know)."""
    ctx = _ctx(request)
    dht_prefix = request.match_info["dht_prefix"]
    known = await queries.known_swarms(ctx.reader)
    swarm = params.swarm(request.query.get("swarm"), known)
    now = ctx.clock()
    since, until = params.time_range(
        request.query.get("since"), request.query.get("until"), now=now, default_span=MODEL_HISTORY_SPAN
    )
    step = params.step(request.query.get("step"))
    if swarm is None:
        mv = await queries.model_view(ctx.reader, ctx.settings, dht_prefix, now=now)
        swarm = mv.swarm.swarm
    answer = await ctx.reader.read(method, swarm, dht_prefix, since, until, step)
    if is_empty(answer):
        await queries.model_view(ctx.reader, ctx.settings, dht_prefix, now=now, swarm=swarm)
    return {"swarm": swarm, "dht_prefix": dht_prefix, "since": since, "until": until}, step, answer


async def model_history(request: web.Request) -> web.Response:
    head, step, points = await _history(request, "model_history", lambda points: not points)
    return json_response({**head, "step": step, "points": [rep.model_point_document(p) for p in points]})


async def block_history(request: web.Request) -> web.Response:
    """Online servers per block over time, and when each block was dark (``monitor.store.block_history``)."""
    head, step, history = await _history(request, "block_history", lambda history: not history.num_blocks)
    return json_response(
        {
            **head,
            "requested_step": step,
            "step": history.step,
            "coarsened": history.coarsened,
            "num_blocks": history.num_blocks,
            "dark_truncated": history.dark_truncated,
            "blocks": [
                {
                    "block": block,
                    "series": [
                        {
                            "ts": p.ts,
                            "min_online": p.min_online,
                            "max_online": p.max_online,
                            "mean_online": round(p.mean_online, 3),
                            "crawls": p.crawls,
                            "dark_crawls": p.dark_crawls,
                            "width": p.width,
                        }
                        for p in points
                    ],
                    "dark": [
                        {
                            "start": d.start,
                            "end": d.end,
                            "last_dark": d.last_dark,
                            "duration": d.duration,
                            "approximate": d.approximate,
                        }
                        for d in history.dark[block]
                    ],
                }
                for block, points in enumerate(history.series)
            ],
        }
    )


async def server(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    peer_id = params.peer_id(request.match_info["peer_id"])
    at = _at(request)
    now = ctx.clock()
    ts = (await queries.resolve_at(ctx.reader, at))[0] if at else None
    since, until = params.time_range(
        request.query.get("since"), request.query.get("until"), now=ts or now, default_span=SERVER_HISTORY_SPAN
    )
    (_views, placements), history, uptime = await asyncio.gather(
        queries.server_placements(ctx.reader, ctx.settings, peer_id, now=now, at=at),
        ctx.reader.read("server_history", peer_id, since, until),
        ctx.reader.read("server_uptime", peer_id, ts or now),
    )
    if not placements and not history:
        raise params.NotFound("unknown server")
    return json_response(
        {
            "peer_id": peer_id,
            "placements": [
                {
                    "swarm": p.swarm,
                    "dht_prefix": p.report.model.dht_prefix,
                    "crawl_id": p.snapshot.crawl_id,
                    "server_row": rep.server_row_document(
                        p.row, min_version=ctx.settings.min_version, vantages=p.vantages
                    ),
                    **insights.server_row_insights(p.row, p.snapshot, ctx.settings.min_version),
                }
                for p in placements
            ],
            "uptime": {str(window): rep.finite(value) for window, value in sorted(uptime.items())},
            "since": since,
            "until": until,
            "history": [rep.server_point_document(p) for p in history],
        }
    )


async def crawls(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    known = await queries.known_swarms(ctx.reader)
    swarm = params.swarm(request.query.get("swarm"), known)
    limit = params.limit(request.query.get("limit"))
    before = request.query.get("before")
    before_id = params.crawl_id(before) if before else None
    items = await ctx.reader.read("crawls", swarm, limit, before_id)
    return json_response(
        {
            "crawls": [rep.crawl_summary_document(c) for c in items],
            "next_before": items[-1].id if len(items) == limit else None,
        }
    )


async def crawl(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    crawl_id = params.crawl_id(request.match_info["crawl_id"])
    summary = await ctx.reader.read("crawl", crawl_id)
    if summary is None:
        raise params.NotFound("unknown crawl")
    snap = await ctx.reader.snapshot(crawl_id)
    models = []
    for r in snap.models if snap else ():
        models.append(
            {
                "dht_prefix": r.model.dht_prefix,
                "state": rep.official_state(r),
                "health": r.state,
                "blocks_covered": r.blocks_covered,
                "num_blocks": r.model.num_blocks,
                "min_online": r.min_online,
                "servers": len(r.servers),
            }
        )
    return json_response(
        {
            "crawl": rep.crawl_summary_document(summary),
            "models": models,
            "invalid_records": [rep.invalid_document(r) for r in snap.invalid] if snap else [],
        }
    )


async def diff(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    a = params.crawl_id(request.match_info["a"])
    b = params.crawl_id(request.match_info["b"])
    _first, _second, result = await queries.crawl_diff(ctx.reader, a, b)
    return json_response(rep.diff_document(result))


async def _export_rows(request: web.Request) -> tuple[int, list[dict[str, Any]]]:
    ctx = _ctx(request)
    crawl_id = params.crawl_id(request.match_info["crawl_id"])
    snap = await ctx.reader.snapshot(crawl_id)
    if snap is None:
        raise params.NotFound("unknown crawl")
    return crawl_id, rep.flat_server_rows(snap)


def _csv_cell(value: Any) -> Any:
    """Lists as ``;``-joined text; text that a spreadsheet would run as a formula gets a leading quote."""
    if isinstance(value, list):
        value = ";".join(map(str, value))
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


async def export_csv(request: web.Request) -> web.Response:
    crawl_id, rows = await _export_rows(request)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(rep.SERVER_ROW_COLUMNS)
    for row in rows:
        writer.writerow([_csv_cell(row[c]) for c in rep.SERVER_ROW_COLUMNS])
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="crawl-{crawl_id}-servers.csv"'},
    )


async def export_ndjson(request: web.Request) -> web.Response:
    _crawl_id, rows = await _export_rows(request)
    text = "".join(dumps(row) + "\n" for row in rows)
    return web.Response(text=text, content_type="application/x-ndjson")


# ---- is_reachable


def _reach_body(request: web.Request, success: bool, message: str | None, **extra: Any) -> dict[str, Any]:
    return {"success": success, "message": message, "your_ip": request.remote, **extra}


async def _probe(ctx: WebContext, peer_id: str) -> tuple[Reachability | None, str | None]:
    """Probe once per peer at a time (concurrent callers share it); (result, error message if it blew up)."""
    assert ctx.prober is not None
    prober = ctx.prober
    future = ctx.probes_in_flight.get(peer_id)
    if future is None:

        async def run() -> Reachability:
            return await asyncio.wait_for(prober(peer_id), ctx.settings.reachability_timeout)

        future = asyncio.ensure_future(run())
        ctx.probes_in_flight[peer_id] = future
        future.add_done_callback(lambda _f: ctx.probes_in_flight.pop(peer_id, None))
    try:
        result = await asyncio.shield(future)
    except TimeoutError:
        return None, f"Failed to connect in {ctx.settings.reachability_timeout:g} sec"
    except Exception as e:
        log.warning("reachability probe of %s failed: %r", peer_id, e)
        return None, f"probe failed ({type(e).__name__})"
    ctx.reach_cache.put(peer_id, result)
    return result, None


async def is_reachable(request: web.Request) -> web.Response:
    """health.petals.dev's ``{success, message, your_ip}``: can the monitor reach this peer now?"""
    ctx = _ctx(request)
    raw = request.match_info["peer_id"]
    if not params.is_peer_id(raw):
        message = "invalid peer id: expected a base58 libp2p PeerID"
        return json_response(_reach_body(request, False, message), status=400)
    if ctx.prober is None:
        return json_response(_reach_body(request, False, "reachability checks are not enabled here"), status=503)
    cached = ctx.reach_cache.get(raw)
    if cached is None:
        wait = ctx.limiter.take(request.remote or "?")
        if wait > 0:
            response = json_response(_reach_body(request, False, "too many checks: try again later"), status=429)
            response.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
            return response
        result, error = await _probe(ctx, raw)
        if result is None:
            return json_response(_reach_body(request, False, error, cached=False, **await _vantages(ctx, raw)))
    else:
        result = cached
    success = result.ok or result.joining
    return json_response(
        _reach_body(
            request,
            success,
            None if result.ok else (result.error or ("joining" if result.joining else "unreachable")),
            joining=result.joining,
            latency=rep.finite(result.latency),
            checked_at=result.checked_at,
            cached=cached is not None,
            **await _vantages(ctx, raw),
        )
    )


async def _vantages(ctx: WebContext, peer_id: str) -> dict[str, Any]:
    """Which vantage point answered (this process's), and what the others recorded of the server lately (their
    probes of the crawls it was in; none for a server not crawled yet). The store being gone costs only the latter."""
    recorded = None
    if not ctx.reader.store_down():  # the answer is the probe's: a store that is away must not delay or fail it
        since = ctx.clock() - ctx.settings.vantage_max_age
        try:
            recorded = await asyncio.wait_for(ctx.reader.read("peer_vantage_results", peer_id, since), RECORDED_READ)
        except Exception as e:
            log.info("is_reachable: vantage results not read: %s", type(e).__name__)
    return {"vantage": ctx.settings.vantage_name, "recorded": rep.reachable_from_document(recorded)}


# ---- health


async def healthz(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    now = ctx.clock()
    out = {}
    for swarm, (last, good) in (await ctx.reader.heads()).items():
        good_at = None if good is None else (good.finished_at or good.started_at)
        interval = ctx.settings.interval(swarm)
        out[swarm] = {
            "last_crawl_id": last.id if last else None,
            "last_crawl_status": last.status if last else None,
            "last_success_at": good_at,
            "stale": good_at is None or now - good_at > ctx.settings.stale_after_intervals * interval,
        }
    jobs = scheduler_jobs(ctx)
    return json_response({"status": "ok", "time": now, "swarms": out, "scheduler": jobs})
