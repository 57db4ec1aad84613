"""``GET /api/v1/models/{dht_prefix}/route``: the chain a Petals client would use now (or as of ``?at=``).

Computed from the stored snapshot (``monitor.rules.route``), so any crawl still kept raw has its route; rendered
once per crawl like the model document.
"""

from __future__ import annotations

from aiohttp import web

from ..route_report import route_document
from ..rules.route import plan_route
from . import params, queries
from .api import json_document
from .context import CTX
from .documents import Document, document_response


async def model_route(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    dht_prefix = request.match_info["dht_prefix"]
    known = await queries.known_swarms(ctx.reader)
    swarm = params.swarm(request.query.get("swarm"), known)
    at = params.at(request.query.get("at"))
    mv = await queries.model_view(ctx.reader, ctx.settings, dht_prefix, now=ctx.clock(), swarm=swarm, at=at)
    snap = mv.swarm.snapshot
    assert snap is not None

    def document() -> Document:
        return json_document(
            {
                "swarm": mv.swarm.swarm,
                "dht_prefix": dht_prefix,
                "crawl_id": snap.crawl_id,
                "last_updated": snap.finished_at,
                "as_of": mv.swarm.as_of,
                "stale": mv.swarm.stale,
                **route_document(plan_route(mv.report, ctx.settings.session_tokens)),
            }
        )

    async def make() -> Document:
        return await ctx.reader(document)

    key = ("model_route", mv.swarm.swarm, dht_prefix, at, snap.crawl_id, mv.swarm.stale)
    return document_response(request, await ctx.rendered.get_or_make(key, make))
