"""HTML pages against a real store file: every page renders, links its JSON twin, shows what it must."""

from __future__ import annotations

import re
from urllib.parse import quote

from web_harness import MIXTRAL, NOW, OTHER_SWARM, SCRIPT, SWARM, served

from monitor.web.templating import STATE_GLYPHS


def html(live, path: str) -> str:
    reply = live.get(path)
    assert reply.status == 200, (path, reply.status, reply.text[:500])
    assert reply.headers["Content-Type"].startswith("text/html")
    return reply.text


def test_overview_shows_every_swarm_model_and_the_failed_last_crawl(live, fx):
    page = html(live, "/")
    last = fx.snapshots[-1]
    for report in last.models:
        assert f'title="DHT prefix: {report.model.dht_prefix}"' in page
        assert f"{report.blocks_covered}/{report.model.num_blocks}" in page
    assert OTHER_SWARM in page and SWARM in page
    assert "The last crawl failed" in page and "Showing the last good crawl" in page
    assert 'href="/models/mistralai/Mixtral-8x22B-Instruct-v0-1' in page
    for state in ("healthy", "degraded", "broken"):
        assert f'class="badge {state}"' in page
    assert 'rel="alternate" type="application/json" href="/api/v1/swarms"' in page
    assert "Stale data" not in page  # the last good crawl is recent at NOW


def test_overview_banner_when_data_is_stale(fx):
    with served(fx.path, clock=lambda: NOW + 3 * 60 + 120) as app:  # > 3 intervals after the last good crawl
        page = html(app, "/")
    assert "Stale data" in page
    assert "The last crawl failed" in page  # both, and the good data still shown
    assert "/models/Llama-2-70b-chat-hf" in page


def test_model_page_has_every_column_glyphs_and_a_grid_per_server(live, fx):
    report = fx.snapshots[-1].models[1]
    page = html(live, f"/models/{report.model.dht_prefix}?swarm={SWARM}")
    for column in ("State", "Server ID", "Contributor", "Version", "Throughput", "Inference", "Forward", "Network"):
        assert f"{column}</" in page, column
    for column in ("Precision", "LoRAs", "Cache", "Avl.", "Pings", "TTL", "Span", "Served blocks"):
        assert column in page, column
    assert page.count('<div class="blocks') >= len(report.servers) + 2  # heatmap rows + one grid per server
    for row in report.servers:
        assert row.peer_id in page  # full id on hover / link
        assert f'href="/servers/{row.peer_id}"' in page
        glyph = STATE_GLYPHS[row.state]
        badge = f'<span class="state {row.state}"><span class="glyph" aria-hidden="true">{glyph}</span> {row.state}'
        assert badge in page
    cells = re.findall(r'<div class="blocks[^"]*" role="img"[^>]*>(.*?)</div>', page)
    assert cells and all(c.count("<span") == report.model.num_blocks for c in cells)
    assert "Legend" in page and "expired" in page and STATE_GLYPHS["expired"] in page
    assert 'href="/api/v1/models/' in page


def test_model_page_reachability_issues_and_invalid_records(live, fx):
    snap = fx.snapshots[-1]
    report = snap.models[0]
    page = html(live, f"/models/{report.model.dht_prefix}?swarm={SWARM}")
    unreachable = [r for r in report.servers if r.reachability and not r.reachability.ok]
    assert unreachable
    assert "Reachability issues" in page
    for row in unreachable:
        assert row.reachability.error.replace('"', "&#34;") in page or row.reachability.error in page
    mine = [r for r in snap.invalid if r.key.rsplit(".", 1)[0] == report.model.dht_prefix]
    if mine:
        assert "Invalid records" in page


def test_model_with_a_slash_in_its_prefix_by_path_and_encoded(live):
    for path in (f"/models/{MIXTRAL}", "/models/" + quote(MIXTRAL, safe="")):
        page = html(live, path + f"?swarm={SWARM}")
        assert "<code>mistralai/Mixtral-8x22B-Instruct-v0-1</code>" in page


def test_model_page_history_ranges_and_table_fallback(live, fx):
    prefix = fx.snapshots[-1].models[0].model.dht_prefix
    for r in ("6h", "24h", "7d", "30d"):
        page = html(live, f"/models/{prefix}?swarm={SWARM}&range={r}")
        assert "Coverage over time" in page
        assert "<polyline" in page and "<table" in page and "Table (" in page
    assert live.get(f"/models/{prefix}?range=1y").status == 400


def test_server_page_shows_spans_uptime_and_history(live, fx):
    snap = fx.snapshots[-1]
    row = snap.models[0].servers[0]
    page = html(live, f"/servers/{row.peer_id}")
    assert row.peer_id in page
    assert "Uptime 24 h" in page and "7 d" in page and "30 d" in page
    assert f"{row.start}:{row.end}" in page
    assert "History" in page and "Changes (" in page
    assert f'href="/api/v1/servers/{row.peer_id}"' in page


def test_server_seen_only_in_the_past_still_has_a_page(live, fx):
    first, last = fx.snapshots[0], fx.snapshots[-1]
    now_ids = {s.peer_id for r in last.models for s in r.servers}
    gone = [s.peer_id for r in first.models for s in r.servers if s.peer_id not in now_ids]
    assert gone, "churn should have removed someone"
    page = html(live, f"/servers/{gone[0]}")
    assert "Not in the latest crawl" in page
    assert "Last seen" in page  # from the store's server_models


def test_crawl_log_crawl_page_and_diff(live, fx):
    page = html(live, "/crawls")
    for crawl_id in fx.crawl_ids:
        assert f'href="/crawls/{crawl_id}"' in page
    assert "failed" in page and "succeeded" in page
    a, b = fx.crawl_ids[-2], fx.crawl_ids[-1]
    assert f'href="/crawls/{a}/diff/{b}"' in page
    assert f"/diff/{fx.failed_id}" not in page and f"/crawls/{fx.failed_id}/diff" not in page  # no dead links
    crawl = html(live, f"/crawls/{b}")
    assert "Invalid records" in crawl and f"/api/v1/crawls/{b}/servers.csv" in crawl
    assert f'href="/crawls/{a}/diff/{b}"' in crawl
    diff = html(live, f"/crawls/{a}/diff/{b}")
    for title in ("Joined", "Left", "Moved", "State changed"):
        assert title in diff
    failed = html(live, f"/crawls/{fx.failed_id}")
    assert "bootstrap unreachable" in failed and SCRIPT not in failed


def test_diff_form_redirects_and_validates(live, fx):
    a, b = fx.crawl_ids[0], fx.crawl_ids[1]
    reply = live.get(f"/crawls/diff?a={a}&b={b}")
    assert reply.status == 302 and reply.headers["Location"] == f"/crawls/{a}/diff/{b}"
    assert live.get("/crawls/diff?a=x&b=1").status == 400


def test_any_page_as_of_a_past_crawl(live, fx):
    first = fx.snapshots[0]
    page = html(live, f"/?at={fx.crawl_ids[0]}")
    assert "Viewing a past state" in page
    assert first.finished_at and "The last crawl failed" not in page
    by_time = html(live, f"/?at={first.finished_at + 1}")
    assert "Viewing a past state" in by_time
    prefix = first.models[0].model.dht_prefix
    model = html(live, f"/models/{prefix}?swarm={SWARM}&at={fx.crawl_ids[0]}")
    for row in first.models[0].servers:
        assert row.peer_id in model
    assert live.get("/?at=999999").status == 404  # unknown crawl id
    assert live.get("/?at=abc").status == 400


def test_api_docs_page_lists_every_documented_endpoint(live):
    page = html(live, "/api")
    for path in ("/api/v1/state", "/api/v1/is_reachable/{peer_id}", "/metrics", "/healthz"):
        assert path in page


def test_not_found_and_bad_input_are_html_pages_without_traces(live):
    for path, status in (
        ("/models/no-such-model", 404),
        ("/servers/QmNqcDCBdcRjh9nQkdVsfKtTr1GtM4iKJoDKwJzxyFvTQh", 404),
        ("/servers/not-a-peer-id", 400),
        ("/crawls/999999", 404),
        ("/crawls/abc", 400),
        ("/crawls/1/diff/999999", 404),
        (f"/models/Llama-2-70b-chat-hf?swarm=nope{SCRIPT}", 404),
        ("/nope", 404),
    ):
        reply = live.get(path)
        assert reply.status == status, path
        assert reply.headers["Content-Type"].startswith("text/html"), path
        assert "Traceback" not in reply.text and "File " not in reply.text
        assert SCRIPT not in reply.text


def test_method_not_allowed_and_large_bodies(live):
    reply = live.get("/", method="POST", data=b"x" * 10)
    assert reply.status == 405
    big = live.get("/", method="POST", data=b"x" * (1 << 20))
    assert big.status in (405, 413)


def test_templates_are_compiled_at_start_up_and_pages_never_load_one_on_the_event_loop(fx):
    """A template's first use compiles it (10-60 ms): that must not stall the loop, nor the first request."""
    import threading

    from monitor.web.context import CTX

    with served(fx.path) as app:
        env = app.app[CTX].env
        html_templates = {n for n in env.list_templates() if n.endswith(".html")}
        assert html_templates and {key[1] for key in env.cache} >= html_templates  # loaded before any request
        loaded_on = []
        load = env.get_template
        env.get_template = lambda name, *a, **kw: (loaded_on.append(threading.current_thread().name), load(name))[1]
        report = fx.snapshots[-1].models[1]
        for path in ("/", f"/models/{report.model.dht_prefix}?swarm={SWARM}", "/crawls"):
            html(app, path)
    assert loaded_on and "web-test-loop" not in loaded_on  # the loop's thread, in web_harness.LiveApp
