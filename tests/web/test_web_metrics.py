"""/metrics: Prometheus text with HELP/TYPE, petals_ names, the official metric set, per-app registries."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from web_harness import OTHER_SWARM, SWARM, build_store, served

from monitor.snapshot import SERVER_STATES
from monitor.web.metrics import OFFICIAL_NAMES, percentile

OFFICIAL = OFFICIAL_NAMES  # checked against health.petals.dev's own set in test_official_metric_names.py


@pytest.fixture(scope="module")
def families(live):
    reply = live.get("/metrics")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/plain")
    text = reply.text
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")  # counters are exported as x_total
        assert family.type in ("gauge", "counter"), family
        assert f"# HELP {name} " in text and f"# TYPE {name} {family.type}" in text
    return {f.name: f for f in text_string_to_metric_families(text)}


def _value(families, name, **labels):
    for sample in families[name].samples:
        if all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    raise KeyError((name, labels))


def test_every_metric_is_prefixed_and_the_official_set_is_there(families):
    assert all(name.startswith("petals_") for name in families)
    for name in OFFICIAL:
        assert f"petals_{name}" in families, name
    for name in ("crawl_duration_seconds", "last_success_timestamp_seconds", "invalid_records", "last_crawl_success"):
        assert f"petals_{name}" in families, name


def test_values_match_the_snapshot(families, fx):
    snap = fx.snapshots[-1]
    for report in snap.models:
        labels = {"swarm": SWARM, "model": report.model.dht_prefix}
        assert _value(families, "petals_n_blocks", **labels) == report.model.num_blocks
        assert _value(families, "petals_blocks_online_min", **labels) == report.min_online
        assert _value(families, "petals_servers_num", **labels) == len(report.servers)
        for state in SERVER_STATES:
            expected = sum(getattr(b, state) for b in report.blocks)
            assert _value(families, "petals_blocks", state=state, **labels) == expected
        assert _value(families, "petals_model_state", state=report.state, **labels) == 1
    for reason, count in snap.stats.invalid_by_reason.items():
        assert _value(families, "petals_invalid_records", swarm=SWARM, reason=reason) == count
    assert _value(families, "petals_last_crawl_success", swarm=SWARM) == 0  # the last crawl failed
    assert _value(families, "petals_last_crawl_success", swarm=OTHER_SWARM) == 1
    assert _value(families, "petals_last_success_timestamp_seconds", swarm=SWARM) == snap.finished_at
    pcts = [_value(families, "petals_ping_pct", swarm=SWARM, pct=str(p)) for p in (25, 50, 75, 90, 95)]
    assert pcts == sorted(pcts) and pcts[0] > 0


def test_hostile_label_values_are_escaped(families, fx):
    versions = {s.labels["version_number"] for s in families["petals_server_version"].samples}
    assert any("<script>" in v for v in versions)  # present, but as a quoted, escaped label value


def test_alias_path_and_no_global_registry(live):
    assert live.get("/api/prometheus").body == live.get("/metrics").body
    assert not any(name.startswith("petals_") for name in REGISTRY._names_to_collectors)


def test_percentile_matches_linear_interpolation():
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert percentile([5.0], 90) == 5.0


def test_alerts_firing_are_metrics_and_follow_new_events(tmp_path):
    from monitor.alerts.rules import AlertEvent
    from monitor.store.sqlite import StoreWriter

    store = build_store(tmp_path / "m.db")

    def event(kind, subject, status, severity, ts):
        return AlertEvent(SWARM, kind, subject, status, severity, ts, f"{kind} {status}", crawl_id=None)

    with StoreWriter(store.path) as writer:
        writer.record_alert_events([event("broken", "m", "firing", "critical", 1.0)])
    with served(store.path) as app:

        def alerts():
            text = app.get("/metrics").text
            families = {f.name: f for f in text_string_to_metric_families(text)}
            counts = {
                (s.labels["swarm"], s.labels["severity"]): s.value for s in families["petals_alerts_firing"].samples
            }
            firing = {(s.labels["kind"], s.labels["subject"]) for s in families["petals_alert"].samples}
            return counts, firing

        counts, firing = alerts()
        assert counts[(SWARM, "critical")] == 1 and counts[(SWARM, "warning")] == 0
        assert counts[(OTHER_SWARM, "critical")] == 0  # a swarm with nothing firing still has its zeros
        assert firing == {("broken", "m")}
        with StoreWriter(store.path) as writer:  # resolved after the document was cached: not served stale
            writer.record_alert_events([event("broken", "m", "resolved", "critical", 2.0)])
        counts, firing = alerts()
        assert counts[(SWARM, "critical")] == 0 and firing == set()


def test_route_gauges_per_model(families, fx):
    """petals_model_runnable / _steps_per_second / _disjoint_chains (deploy/prometheus/alerts.yml uses these
    names): what the route planner says of each model's snapshot."""
    from monitor.rules.route import plan_route

    for report in fx.snapshots[-1].models:
        route = plan_route(report)
        labels = {"swarm": SWARM, "model": report.model.dht_prefix}
        assert _value(families, "petals_model_runnable", **labels) == (1 if route.runnable else 0)
        assert _value(families, "petals_model_steps_per_second", **labels) == (route.steps_per_second or 0)
        assert _value(families, "petals_model_disjoint_chains", **labels) == route.disjoint_chains
    labels = {"swarm": OTHER_SWARM, "model": "Llama-2-70b-chat-hf"}
    assert _value(families, "petals_model_runnable", **labels) == 1  # a healthy model a client can run
    assert _value(families, "petals_model_steps_per_second", **labels) > 0
    assert _value(families, "petals_model_disjoint_chains", **labels) >= 1
