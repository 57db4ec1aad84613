"""Alerts, versions, places and fix-it hints on the web: pages render and stay inert, JSON twins validate against
the OpenAPI document (a real store file; see web_harness)."""

from __future__ import annotations

import dataclasses
import re

import jsonschema
import pytest
from factories import make_snapshot
from web_harness import NOW, SCRIPT, SWARM, build_store

from monitor.alerts.rules import AlertEvent
from monitor.store.sqlite import StoreWriter

GEO_SWARM = "geo"


def _event(i: int, status: str, **kw) -> AlertEvent:
    base = dict(
        swarm=SWARM,
        kind="broken",
        subject="Llama-2-70b-chat-hf",
        status=status,
        severity="critical",
        ts=NOW - 300 + i,
        message=f"model {SCRIPT} is broken #{i}",
        crawl_id=1,
    )
    return AlertEvent(**{**base, **kw})


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    fixture = build_store(tmp_path_factory.mktemp("insights") / "monitor.db")
    snap = make_snapshot(GEO_SWARM, t=NOW - 50, seed=5, n_models=1, hostile=False)
    report = snap.models[0]
    i, row = next((i, r) for i, r in enumerate(report.servers) if r.state == "online" and r.reachability)
    placed = dataclasses.replace(
        row.reachability, public_ip="1.1.1.1", country="AU", country_name="Australia", asn=f"AS {SCRIPT}"
    )
    report.servers[i] = dataclasses.replace(row, reachability=placed)
    events = [_event(k, "firing", subject=f"m{k}") for k in range(60)]
    events += [_event(60, "resolved", subject="m0", fired_at=NOW - 300)]
    events += [_event(61, "firing", swarm=GEO_SWARM, kind="bootstrap_down", subject="/ip4/1.2.3.4", severity="warning")]
    with StoreWriter(fixture.path) as writer:
        writer.write_snapshot(snap)
        writer.record_alert_events(events)
    fixture.geo_peer = row.peer_id
    fixture.geo_model = report.model.dht_prefix
    return fixture


@pytest.fixture(scope="module")
def spec(live):
    return live.get("/api/v1/openapi.json").json()


def validate(spec, live, path: str, template: str) -> dict:
    reply = live.get(path)
    assert reply.status == 200, (path, reply.status, reply.text[:300])
    schema = spec["paths"][template]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    body = reply.json()
    jsonschema.Draft202012Validator({**schema, "components": spec["components"]}).validate(body)
    return body


def page(live, path: str) -> str:
    reply = live.get(path)
    assert reply.status == 200, (path, reply.status, reply.text[:300])
    return reply.text


def test_alerts_api_lists_active_and_pages_events(spec, live):
    doc = validate(spec, live, "/api/v1/alerts", "/api/v1/alerts")
    assert len(doc["active"]) == 60  # m0 resolved; m1..m59 and the geo swarm's bootstrap peer fire
    assert doc["active"][0]["severity"] == "critical" and doc["active"][-1]["kind"] == "bootstrap_down"
    assert len(doc["events"]) == 50 and doc["events"][0]["id"] > doc["events"][-1]["id"]
    assert doc["events"][1]["status"] == "resolved" and doc["events"][1]["fired_at"] == NOW - 300
    older = validate(spec, live, f"/api/v1/alerts?before={doc['next_before']}", "/api/v1/alerts")
    assert len(older["events"]) == 12 and older["next_before"] is None
    only = validate(spec, live, f"/api/v1/alerts?swarm={GEO_SWARM}", "/api/v1/alerts")
    assert [e["kind"] for e in only["events"]] == ["bootstrap_down"] and len(only["active"]) == 1
    assert live.get("/api/v1/alerts?swarm=nope").status == 404
    assert live.get("/api/v1/alerts?limit=0").status == 400


def test_alerts_page_and_overview_banner_are_inert(live):
    text = page(live, "/alerts")
    assert "Firing now" in text and "resolved" in text and 'href="/api/v1/alerts"' in text
    assert SCRIPT not in text and "&lt;script&gt;" in text
    assert "Older events" in text
    overview = page(live, "/")
    assert "alerts firing" in overview and "and 54 more" in overview
    assert SCRIPT not in overview
    assert re.search(r'<a href="/alerts\?swarm=test">59 alerts firing</a>', overview)


def test_versions_page_and_api(spec, live, fx):
    doc = validate(spec, live, f"/api/v1/versions?swarm={SWARM}&range=6h", "/api/v1/versions")
    assert doc["min_version"] == "2.2.0" and doc["step"] is None
    assert len(doc["points"]) == len(fx.crawl_ids)  # one point per crawl in the 6 h range
    assert all(p["total"] == sum(p["counts"].values()) for p in doc["points"])
    # each peer once now; history counts a peer once per version it showed (one peer may announce two)
    assert 0 < sum(c["servers"] for c in doc["current"]) <= doc["points"][-1]["total"]
    assert any(c["outdated"] is None for c in doc["current"])  # the hostile version string is unreadable
    bucketed = validate(spec, live, f"/api/v1/versions?swarm={SWARM}&range=7d", "/api/v1/versions")
    assert bucketed["step"] == 3600 and len(bucketed["points"]) <= 2
    text = page(live, f"/versions?swarm={SWARM}")
    assert "Rollout over time" in text and '<svg class="stack"' in text
    assert SCRIPT not in text and "&lt;script&gt;" in text
    assert live.get("/api/v1/versions?range=1y").status == 400


def test_model_json_has_hints_places_and_outdated_flags(spec, live, fx):
    doc = validate(spec, live, "/api/v1/models/Llama-2-70b-chat-hf?swarm=test", "/api/v1/models/{dht_prefix}")
    assert {h["problem"] for h in doc["hints"]} & {"unreachable", "no_server", "single_server", "outdated"}
    assert all(set(h) == {"problem", "detail", "hint"} for h in doc["hints"])
    assert all("outdated" in r for r in doc["model"]["server_rows"])
    assert doc["places"]["servers"] == len({r["peer_id"] for r in doc["model"]["server_rows"]})
    geo = validate(spec, live, f"/api/v1/models/{fx.geo_model}?swarm={GEO_SWARM}", "/api/v1/models/{dht_prefix}")
    countries = {c["country"]: c for c in geo["places"]["countries"]}
    assert countries["AU"]["servers"] == 1 and geo["places"]["located"] == 1


def test_server_json_and_page_show_place_and_hints(spec, live, fx):
    doc = validate(spec, live, f"/api/v1/servers/{fx.geo_peer}", "/api/v1/servers/{peer_id}")
    (placement,) = doc["placements"]
    expected = {"scope": "public", "country": "AU", "country_name": "Australia", "asn": f"AS {SCRIPT}"}
    assert placement["place"] == expected
    assert "1.1.1.1" not in live.get(f"/api/v1/servers/{fx.geo_peer}").text  # the IP itself is never published
    text = page(live, f"/servers/{fx.geo_peer}")
    assert "Australia" in text and SCRIPT not in text and "1.1.1.1" not in text


def test_model_page_shows_what_to_fix_and_where(live):
    text = page(live, "/models/Llama-2-70b-chat-hf?swarm=test")
    assert "What to fix" in text and "Where the servers are" in text
    assert "pip install --upgrade petals" in text or "--block_indices" in text or "--port" in text
    assert SCRIPT not in text
