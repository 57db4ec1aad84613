"""The URL map: pages, their JSON twins under ``/api/v1``, metrics, health and static files."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from . import api, insight_views, metrics, route_api, sse, vantage_views, views
from .openapi import openapi_document


async def openapi_json(request: web.Request) -> web.Response:
    return api.json_response(openapi_document())


async def favicon(request: web.Request) -> web.Response:
    raise web.HTTPMovedPermanently("/static/favicon.svg")


def setup_routes(app: web.Application, static_dir: Path) -> None:
    r = app.router
    # pages
    r.add_get("/", views.overview, name="overview")
    r.add_get("/models/{dht_prefix:.+}", views.model_page, name="model")
    r.add_get("/servers/{peer_id}", views.server_page, name="server")
    r.add_get("/crawls", views.crawls_page, name="crawls")
    r.add_get("/crawls/diff", views.diff_form, name="diff_form")
    r.add_get(r"/crawls/{crawl_id}", views.crawl_page, name="crawl")
    r.add_get(r"/crawls/{a}/diff/{b}", views.diff_page, name="diff")
    r.add_get("/alerts", insight_views.alerts_page, name="alerts")
    r.add_get("/versions", insight_views.versions_page, name="versions")
    r.add_get("/vantages", vantage_views.vantages_page, name="vantages")
    r.add_get("/api", views.api_docs, name="api_docs")
    # JSON twins and the API (the history routes before the catch-all model route: prefixes may contain '/')
    r.add_get("/api/v1/state", api.state, name="api_state")
    r.add_get("/api/v1/swarms", api.swarms, name="api_swarms")
    r.add_get("/api/v1/models/{dht_prefix:.+}/blocks/history", api.block_history, name="api_block_history")
    r.add_get("/api/v1/models/{dht_prefix:.+}/history", api.model_history, name="api_model_history")
    r.add_get("/api/v1/models/{dht_prefix:.+}/route", route_api.model_route, name="api_model_route")
    r.add_get("/api/v1/models/{dht_prefix:.+}", api.model, name="api_model")
    r.add_get("/api/v1/servers/{peer_id}", api.server, name="api_server")
    r.add_get("/api/v1/crawls", api.crawls, name="api_crawls")
    r.add_get("/api/v1/crawls/{crawl_id}/servers.csv", api.export_csv, name="api_export_csv")
    r.add_get("/api/v1/crawls/{crawl_id}/servers.ndjson", api.export_ndjson, name="api_export_ndjson")
    r.add_get("/api/v1/crawls/{crawl_id}", api.crawl, name="api_crawl")
    r.add_get("/api/v1/crawls/{a}/diff/{b}", api.diff, name="api_diff")
    r.add_get("/api/v1/is_reachable/{peer_id}", api.is_reachable, name="api_is_reachable")
    r.add_get("/api/v1/alerts", insight_views.alerts_api, name="api_alerts")
    r.add_get("/api/v1/versions", insight_views.versions_api, name="api_versions")
    r.add_get("/api/v1/vantages", vantage_views.vantages_api, name="api_vantages")
    r.add_get("/api/v1/events", sse.events, name="api_events")
    r.add_get("/api/v1/openapi.json", openapi_json, name="api_openapi")
    r.add_get("/metrics", metrics.metrics, name="metrics")
    r.add_get("/api/prometheus", metrics.metrics, name="metrics_alias")  # health.petals.dev's second path
    r.add_get("/healthz", api.healthz, name="healthz")
    r.add_get("/favicon.ico", favicon)
    # aiohttp's static route resolves paths and refuses anything outside static_dir; no listings, no symlinks out
    r.add_static("/static/", static_dir, name="static", show_index=False, follow_symlinks=False, append_version=False)
