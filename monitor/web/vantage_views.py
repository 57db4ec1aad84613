"""The vantage points page (``/vantages``) and its JSON twin: who probes the swarm from where, and the servers
that are reachable from some vantage points and not others (``monitor.rules.vantages``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import report as rep
from ..rules.vantages import ReachableFrom, summarize_vantages
from . import params, queries
from .api import json_response
from .context import CTX, WebContext
from .templating import with_query
from .views import _refresh, render


def _ctx(request: web.Request) -> WebContext:
    return request.app[CTX]


async def _vantages_data(request: web.Request) -> dict[str, Any]:
    ctx = _ctx(request)
    swarm, known = await queries.chosen_swarm(ctx.reader, request.query.get("swarm"))
    view = await queries.swarm_view(
        ctx.reader, ctx.settings, swarm, now=ctx.clock(), at=params.at(request.query.get("at"))
    )
    verdicts = view.vantages.by_peer if view.vantages else {}
    servers = sorted(verdicts.items(), key=lambda item: (not item[1].split, item[1].reachable, item[0]))
    return {
        "swarm": swarm,
        "known": known,
        "view": view,
        "summaries": summarize_vantages(verdicts),
        "servers": servers,
        "split": sum(1 for _, v in servers if v.split),
    }


def _server_document(peer_id: str, verdict: ReachableFrom) -> dict[str, Any]:
    return {"peer_id": peer_id, "split": verdict.split, **(rep.reachable_from_document(verdict) or {})}


async def vantages_api(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    data = await _vantages_data(request)
    snap = data["view"].snapshot
    return json_response(
        {
            "swarm": data["swarm"],
            "crawl_id": snap.crawl_id if snap else None,
            "vantage": ctx.settings.vantage_name,
            "max_age": ctx.settings.vantage_max_age,
            "vantages": [
                {"vantage": s.vantage, "servers": s.servers, "reached": s.reached, "last_checked_at": s.last_checked_at}
                for s in data["summaries"]
            ],
            "split": data["split"],
            "servers": [_server_document(peer, verdict) for peer, verdict in data["servers"]],
        }
    )


async def vantages_page(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    data = await _vantages_data(request)
    return await render(
        request,
        "vantages.html",
        title="Vantage points",
        this_vantage=ctx.settings.vantage_name,
        max_age=ctx.settings.vantage_max_age,
        names=[s.vantage for s in data["summaries"]],
        json_url=with_query("/api/v1/vantages", swarm=request.query.get("swarm"), at=request.query.get("at")),
        refresh=_refresh(ctx, request.query.get("at")),
        now=ctx.clock(),
        **data,
    )
