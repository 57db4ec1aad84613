"""What deploy/'s Prometheus rules and Grafana dashboard ask of /metrics (tests/deploy and the demo's test)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "petals-monitor.json"
METRIC = re.compile(r"\b(petals_[a-z_]+)\b")


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    return exprs + [v["definition"] for v in doc["templating"]["list"] if v.get("definition")]


def used_metrics() -> dict[str, set[str]]:
    """{"alerts": names, "dashboard": names}: every petals_ metric their expressions use."""
    return {
        "alerts": {m for rule in alert_rules() for m in METRIC.findall(rule["expr"])},
        "dashboard": {m for e in dashboard_exprs() for m in METRIC.findall(e)},
    }


DOCUMENTED = re.compile(r"^\| `(petals_[a-z_]+)` \|", re.MULTILINE)  # a row of deploy/README.md's metrics table


def exported_names(metrics_text: str) -> set[str]:
    """Names as a query spells them: a counter family ``x`` is exported (and queried) as ``x_total``."""
    return {f.name + ("_total" if f.type == "counter" else "") for f in text_string_to_metric_families(metrics_text)}


def documented_metrics() -> set[str]:
    """The metrics deploy/README.md lists, one table row each."""
    return set(DOCUMENTED.findall((DEPLOY / "README.md").read_text()))


def missing_metrics(exported: set[str]) -> dict[str, list[str]]:
    """Metrics deploy/ uses that ``exported`` lacks (should be none), by file: a renamed gauge fails the tests."""
    missing = {}
    for source, used in used_metrics().items():
        assert used, source
        missing[source] = sorted(used - exported)
    return missing
