"""The monitor's web surface (aiohttp + jinja2): pages, their JSON twins, ``/metrics``, ``/healthz``.

Modules: ``app`` (the factory), ``routes`` (URL map), ``views`` (HTML pages), ``api`` (JSON), ``route_api`` (what
a client would get: ``/api/v1/models/{p}/route``), ``metrics``
(Prometheus), ``openapi`` (the API's description), ``queries`` (store reads shared by pages and API),
``reader`` (the store's read interface and thread pool), ``live_feed`` (every replica's writes as live events, on
PostgreSQL), ``middleware`` (errors, security headers),
``params`` (input validation), ``templating`` (jinja2 and formatting), ``charts`` (SVG geometry),
``lanes`` (rows of time bands: the block heatmap and the server timeline), ``ratelimit`` (token buckets, TTL
cache), ``events`` (the live-event hub) and ``sse`` (its stream, ``/api/v1/events``), ``settings``.
"""

from __future__ import annotations

from .app import crawl_events_of, create_app, events_of

__all__ = ["crawl_events_of", "create_app", "events_of"]
