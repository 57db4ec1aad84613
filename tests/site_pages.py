"""Every kind of page the monitor serves, listed from its own JSON API: for tests that visit all of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote


def every_page(get_json: Callable[[str], Any], *, max_servers: int = 40) -> list[str]:
    """Paths of the overview, each model page, each server page (up to ``max_servers``), the crawl log, a crawl,
    a diff, alerts, versions, the API page, a past view (``?at=``) and an error page."""
    state = get_json("/api/v1/state")
    models = [m["dht_prefix"] for m in state["model_reports"]]
    peers = list(dict.fromkeys(r["peer_id"] for m in state["model_reports"] for r in m["server_rows"]))
    crawls = [c["id"] for c in get_json("/api/v1/crawls")["crawls"] if c["status"] == "succeeded"]
    paths = ["/", "/crawls", "/alerts", "/versions", "/api", "/no-such-page"]
    paths += [f"/models/{quote(m, safe='/')}" for m in models]
    paths += [f"/servers/{p}" for p in peers[:max_servers]]
    if crawls:
        paths += [f"/crawls/{crawls[0]}", f"/?at={crawls[-1]}"]
    if len(crawls) > 1:
        paths.append(f"/crawls/{crawls[1]}/diff/{crawls[0]}")
    return paths
