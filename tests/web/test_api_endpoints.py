"""The JSON API against a real store file: every endpoint, validated against /api/v1/openapi.json."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re

import jsonschema
import pytest
from web_harness import MIXTRAL, NOW, OTHER_SWARM, SWARM

from monitor.report import SERVER_ROW_COLUMNS
from monitor.web.context import CTX


@pytest.fixture(scope="module")
def spec(live):
    reply = live.get("/api/v1/openapi.json")
    assert reply.status == 200
    doc = reply.json()
    jsonschema.Draft202012Validator.check_schema({"$defs": doc["components"]["schemas"]})
    return doc


def _template_regex(template: str) -> re.Pattern:
    pattern = re.escape(template)
    pattern = pattern.replace(re.escape("{dht_prefix}"), ".+")
    pattern = re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", pattern)
    return re.compile(pattern + "$")


def check(spec, live, path: str, status: int = 200):
    """GET ``path``, expect ``status``, validate the JSON body against the documented response schema."""
    reply = live.get(path)
    assert reply.status == status, (path, reply.status, reply.text[:300])
    route = path.split("?")[0]
    matches = [t for t in spec["paths"] if _template_regex(t).match(route)]
    assert matches, f"{route} is not documented"
    template = max(matches, key=len) if route.endswith(("/history", "/route")) else min(matches, key=len)
    responses = spec["paths"][template]["get"]["responses"]
    assert str(status) in responses, (template, status)
    content = responses[str(status)]["content"]
    if "application/json" in content:
        assert reply.headers["Content-Type"].startswith("application/json")
        schema = {**content["application/json"]["schema"], "components": spec["components"]}
        body = reply.json()
        jsonschema.Draft202012Validator(schema).validate(body)
        return body
    return reply


def test_every_api_route_is_documented(live, spec):
    documented = set(spec["paths"])
    routes = set()
    for resource in live.app.router.resources():
        info = resource.get_info()
        path = info.get("formatter") or info.get("path")
        if path and (path.startswith("/api/v1") or path in ("/metrics", "/healthz")):
            routes.add(re.sub(r"\{(\w+):[^}]+\}", r"{\1}", path))
    assert routes - documented == set()
    assert documented - routes == set()


def test_state_is_the_official_document_plus_ours(spec, live, fx):
    doc = check(spec, live, "/api/v1/state")
    assert doc["swarm"] == OTHER_SWARM  # the first swarm (sorted) by default
    doc = check(spec, live, f"/api/v1/state?swarm={SWARM}")
    last = fx.snapshots[-1]
    assert doc["crawl_id"] == fx.crawl_ids[-1]
    assert doc["last_crawl"]["status"] == "failed" and doc["last_crawl"]["id"] == fx.failed_id
    assert [m["dht_prefix"] for m in doc["model_reports"]] == [r.model.dht_prefix for r in last.models]
    assert doc["update_period"] == 60
    assert doc["stale"] is False


def test_state_is_cached_per_crawl(live):
    ctx = live.app[CTX]
    live.get(f"/api/v1/state?swarm={SWARM}")
    hits = ctx.rendered.hits
    first = live.get(f"/api/v1/state?swarm={SWARM}").body
    second = live.get(f"/api/v1/state?swarm={SWARM}").body
    assert first == second
    assert ctx.rendered.hits >= hits + 2


def test_state_as_of_a_past_crawl(spec, live, fx):
    doc = check(spec, live, f"/api/v1/state?swarm={SWARM}&at={fx.crawl_ids[0]}")
    assert doc["crawl_id"] == fx.crawl_ids[0]
    assert doc["as_of"] is not None


def test_swarms_is_the_overview_twin(spec, live, fx):
    doc = check(spec, live, "/api/v1/swarms")
    by_name = {s["swarm"]: s for s in doc["swarms"]}
    assert set(by_name) == {SWARM, OTHER_SWARM}
    test = by_name[SWARM]
    assert test["crawl_id"] == fx.crawl_ids[-1] and test["last_crawl"]["status"] == "failed"
    assert [m["health"] for m in test["models"]] == [r.state for r in fx.snapshots[-1].models]


def test_model_and_its_history_including_a_prefix_with_a_slash(spec, live, fx):
    for prefix in (fx.snapshots[-1].models[0].model.dht_prefix, MIXTRAL, MIXTRAL.replace("/", "%2F")):
        doc = check(spec, live, f"/api/v1/models/{prefix}?swarm={SWARM}")
        assert doc["model"]["dht_prefix"] in (prefix, MIXTRAL)
        hist = check(spec, live, f"/api/v1/models/{prefix}/history?swarm={SWARM}&since={NOW - 3600}&until={NOW}")
        assert hist["dht_prefix"] == doc["model"]["dht_prefix"]
        assert len(hist["points"]) == len(fx.crawl_ids)
        assert [p["ts"] for p in hist["points"]] == sorted(p["ts"] for p in hist["points"])
    stepped = check(spec, live, f"/api/v1/models/{MIXTRAL}/history?swarm={SWARM}&since={NOW - 3600}&step=3600")
    assert 1 <= len(stepped["points"]) <= 2


def test_server_twin(spec, live, fx):
    row = fx.snapshots[-1].models[0].servers[0]
    doc = check(spec, live, f"/api/v1/servers/{row.peer_id}")
    assert doc["peer_id"] == row.peer_id
    assert any(p["server_row"]["span"]["start"] == row.start for p in doc["placements"])
    assert set(doc["uptime"]) == {"86400", "604800", "2592000"}
    assert doc["history"]


def test_crawls_crawl_diff_and_paging(spec, live, fx):
    doc = check(spec, live, "/api/v1/crawls")
    ids = [c["id"] for c in doc["crawls"]]
    assert ids == sorted(ids, reverse=True) and fx.failed_id in ids
    page = check(spec, live, f"/api/v1/crawls?swarm={SWARM}&limit=2")
    assert len(page["crawls"]) == 2 and page["next_before"] == page["crawls"][-1]["id"]
    older = check(spec, live, f"/api/v1/crawls?swarm={SWARM}&limit=2&before={page['next_before']}")
    assert all(c["id"] < page["next_before"] for c in older["crawls"])
    one = check(spec, live, f"/api/v1/crawls/{fx.crawl_ids[-1]}")
    assert one["crawl"]["status"] == "succeeded" and one["models"] and one["invalid_records"]
    failed = check(spec, live, f"/api/v1/crawls/{fx.failed_id}")
    assert failed["crawl"]["status"] == "failed" and failed["models"] == []
    diff = check(spec, live, f"/api/v1/crawls/{fx.crawl_ids[0]}/diff/{fx.crawl_ids[-1]}")
    assert diff["a"] == fx.crawl_ids[0] and diff["b"] == fx.crawl_ids[-1]
    assert diff["joined"] or diff["left"] or diff["moved"] or diff["state_changed"]


def test_exports(live, fx):
    crawl_id = fx.crawl_ids[-1]
    snap = fx.snapshots[-1]
    n_rows = sum(len(r.servers) for r in snap.models)
    reply = live.get(f"/api/v1/crawls/{crawl_id}/servers.csv")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(reply.text)))
    assert tuple(rows[0]) == SERVER_ROW_COLUMNS and len(rows) == n_rows + 1
    assert not any(cell.startswith(("=", "+", "@")) for row in rows[1:] for cell in row)  # no spreadsheet formulas
    nd = live.get(f"/api/v1/crawls/{crawl_id}/servers.ndjson")
    assert nd.headers["Content-Type"].startswith("application/x-ndjson")
    lines = nd.text.splitlines()
    assert len(lines) == n_rows and all(tuple(json.loads(line)) == SERVER_ROW_COLUMNS for line in lines)
    assert live.get(f"/api/v1/crawls/{fx.failed_id}/servers.csv").status == 404


def test_healthz(spec, live, fx):
    doc = check(spec, live, "/healthz")
    assert doc["swarms"][SWARM]["last_crawl_id"] == fx.failed_id
    assert doc["swarms"][SWARM]["last_crawl_status"] == "failed"
    assert doc["swarms"][SWARM]["stale"] is False


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/models/no-such-model", 404),
        ("/api/v1/models/no-such-model/history", 404),
        ("/api/v1/models/no-such-model/route", 404),
        ("/api/v1/models/Llama-2-70b-chat-hf/route?at=-5", 400),
        ("/api/v1/models/Llama-2-70b-chat-hf?swarm=nope", 404),
        ("/api/v1/models/Llama-2-70b-chat-hf/history?since=abc", 400),
        ("/api/v1/models/Llama-2-70b-chat-hf/history?since=10&until=5", 400),
        ("/api/v1/models/Llama-2-70b-chat-hf/history?step=0", 400),
        ("/api/v1/models/Llama-2-70b-chat-hf/history?until=nan", 400),
        ("/api/v1/servers/QmNqcDCBdcRjh9nQkdVsfKtTr1GtM4iKJoDKwJzxyFvTQh", 404),
        ("/api/v1/servers/not-base58-0OIl", 400),
        ("/api/v1/servers/12D3KooW", 400),
        ("/api/v1/crawls/0", 400),
        ("/api/v1/crawls/-1", 400),
        ("/api/v1/crawls/99999999", 404),
        ("/api/v1/crawls/1/diff/abc", 400),
        ("/api/v1/crawls/1/diff/99999", 404),
        ("/api/v1/crawls?limit=0", 400),
        ("/api/v1/crawls?limit=100000", 400),
        ("/api/v1/crawls?before=x", 400),
        ("/api/v1/crawls?swarm=nope", 404),
        ("/api/v1/state?swarm=nope", 404),
        ("/api/v1/state?at=-5", 400),
        ("/api/v1/swarms?at=99999", 404),
    ],
)
def test_errors_are_json_with_a_message(spec, live, path, status):
    body = check(spec, live, path, status)
    assert body["error"]["status"] == status and body["error"]["message"]


def test_diff_with_a_failed_crawl_is_a_404(spec, live, fx):
    check(spec, live, f"/api/v1/crawls/{fx.crawl_ids[0]}/diff/{fx.failed_id}", 404)


def test_unknown_api_path_is_json_404(live):
    reply = live.get("/api/v1/nope")
    assert reply.status == 404 and reply.json()["error"]["status"] == 404


def _check_route(doc: dict, report) -> None:
    from monitor.rules.route import plan_route

    assert doc["dht_prefix"] == report.model.dht_prefix and doc["runnable"] == plan_route(report).runnable
    skipped = {s["peer_id"] for s in doc["skipped"]}
    assert skipped | set(doc["usable"]) == {r.peer_id for r in report.servers}
    if report.state == "broken":
        assert not doc["runnable"] and doc["missing_blocks"] and doc["chain"] == []
    if doc["runnable"]:
        chain = doc["chain"]
        assert chain[0]["start"] == 0 and chain[-1]["end"] == report.model.num_blocks
        assert all(a["end"] == b["start"] for a, b in itertools.pairwise(chain))
        assert not {h["peer_id"] for h in chain} & skipped
        assert doc["steps_per_second"] == pytest.approx(1 / doc["seconds_per_step"])
        assert doc["bottleneck"]["seconds"] == max(h["seconds"] for h in chain)
        assert doc["disjoint_chains"] >= 1 and doc["failures_survived"] == doc["disjoint_chains"] - 1
    else:
        assert doc["steps_per_second"] is None and doc["bottleneck"] is None and doc["disjoint_chains"] == 0


def test_route_of_every_model_now_and_as_of_a_past_crawl(spec, live, fx):
    for crawl_index in (-1, 0):
        at = "" if crawl_index == -1 else f"&at={fx.crawl_ids[crawl_index]}"
        for report in fx.snapshots[crawl_index].models:
            doc = check(spec, live, f"/api/v1/models/{report.model.dht_prefix}/route?swarm={SWARM}{at}")
            assert doc["crawl_id"] == fx.crawl_ids[crawl_index]
            _check_route(doc, report)
    other = check(spec, live, f"/api/v1/models/Llama-2-70b-chat-hf/route?swarm={OTHER_SWARM}")
    assert other["runnable"] and other["crawl_id"] == fx.other_ids[0]  # a healthy model a client can run
    slash = check(spec, live, f"/api/v1/models/{MIXTRAL}/route?swarm={SWARM}")
    assert slash["dht_prefix"] == MIXTRAL
