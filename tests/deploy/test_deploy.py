"""deploy/: the Prometheus rules, the Grafana dashboard and the systemd units are valid, and use only our metrics.

Debian's ``promtool`` (``make promtool`` unpacks it from the ``prometheus`` package, without installing the
server) and ``systemd-analyze`` check the files when present; otherwise the test says it was skipped, and the
parse checks below still run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deploy_files import ALERTS, DASHBOARD, DEPLOY, alert_rules, exported_names, missing_metrics
from web_harness import build_store, served

from monitor.cli import build_parser
from monitor.config import ENV_VARS, load_config

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = DEPLOY / "systemd"
UNPACKED_PROMTOOL = Path.home() / ".cache" / "petals-monitor" / "promtool" / "usr" / "bin" / "promtool"
PROMTOOL = shutil.which("promtool") or (str(UNPACKED_PROMTOOL) if UNPACKED_PROMTOOL.exists() else None)
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> set[str]:
    """The metric names our /metrics exports on the factory crawls (the running demo's: test_demo_command.py)."""
    fx = build_store(tmp_path_factory.mktemp("deploy") / "monitor.db")
    with served(fx.path) as live:
        reply = live.get("/metrics")
    assert reply.status == 200
    return exported_names(reply.text)


def test_alerts_cover_what_operators_need():
    rules = {r["alert"]: r for r in alert_rules()}
    for name in (
        "PetalsModelBroken",
        "PetalsModelNotRunnable",
        "PetalsRedundancyBelowN",
        "PetalsCrawlStale",
        "PetalsBootstrapDown",
        "PetalsMonitorDown",  # every other rule needs /metrics
        "PetalsMonitorMetricsAbsent",
    ):
        assert name in rules, name
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["expr"]


def test_dashboard_is_grafana_json_with_template_variables():
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["panels"]
    assert {v["name"] for v in doc["templating"]["list"]} == {"datasource", "swarm", "model"}
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    provisioning = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/petals-monitor.yml").read_text())
    assert provisioning["providers"][0]["type"] == "file"
    yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())


def test_every_metric_used_is_one_we_export(exported):
    assert missing_metrics(exported) == {"alerts": [], "dashboard": []}


def test_a_renamed_route_gauge_fails_rather_than_warns(exported):
    """The route gauges are exported now: losing one is an error like any other metric, not a pending warning."""
    gone = exported - {"petals_model_runnable", "petals_model_disjoint_chains"}
    missing = missing_metrics(gone)
    assert "petals_model_runnable" in missing["alerts"] and "petals_model_disjoint_chains" in missing["alerts"]
    assert "petals_model_runnable" in missing["dashboard"]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not found (make promtool unpacks Debian's)")
def test_promtool_checks_and_unit_tests_the_rules():
    check = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in check.stdout
    tests = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts_test.yml"],
        cwd=ALERTS.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not found (make promtool unpacks Debian's)")
def test_promtool_checks_the_scrape_config(tmp_path):
    config = DEPLOY / "prometheus" / "prometheus.yml"
    check = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_systemd_units_parse():
    units = sorted(SYSTEMD.glob("petals-monitor*.service")) + sorted(SYSTEMD.glob("*.timer"))
    assert {u.name for u in units} == {
        "petals-monitor.service",
        "petals-monitor-crawl.service",
        "petals-monitor-crawl.timer",
        "petals-monitor-probe.service",
    }
    for unit in units:
        sections = re.findall(r"^\[(\w+)\]$", unit.read_text(), re.M)
        assert sections[0] == "Unit" and ("Service" in sections or "Timer" in sections), unit.name
    for name in ("petals-monitor.service", "petals-monitor-crawl.service", "petals-monitor-probe.service"):
        text = (SYSTEMD / name).read_text()
        for hardening in ("User=petals-monitor", "StateDirectory=petals-monitor", "NoNewPrivileges=yes"):
            assert hardening in text, (name, hardening)
    assert "crawl --once" in (SYSTEMD / "petals-monitor-crawl.service").read_text()


@pytest.mark.parametrize(
    "name", ["petals-monitor.service", "petals-monitor-crawl.service", "petals-monitor-probe.service"]
)
def test_systemd_units_run_a_command_and_environment_the_monitor_accepts(name, tmp_path):
    """The unit's arguments parse, and its environment (with the example config in place of /etc's) loads."""
    text = (SYSTEMD / name).read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.+)$", text, re.M)
    program, *args = exec_start.split()
    assert program.endswith("/petals-monitor")  # pyproject's [project.scripts] entry point
    assert build_parser().parse_args(args).command in ("serve", "crawl", "probe")
    env = dict(line.split("=", 1) for line in re.findall(r"^Environment=(.+)$", text, re.M))
    assert set(env) <= set(ENV_VARS)
    assert env["PETALS_MONITOR_DB"].startswith("/var/lib/petals-monitor/")  # inside StateDirectory=
    env["PETALS_MONITOR_CONFIG"] = str(REPO / "config.example.toml")
    env["PETALS_MONITOR_DB"] = str(tmp_path / "monitor.db")
    assert load_config(None, env).db_path == str(tmp_path / "monitor.db")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze not found")
def test_systemd_analyze_verifies_the_units(tmp_path):
    """Verified as installed, with ExecStart pointing at this checkout's entry point (systemd-analyze checks
    that it exists); any warning (an unknown directive, say) fails the test."""
    script = Path(sys.executable).parent / "petals-monitor"
    assert script.exists(), script
    for unit in list(SYSTEMD.glob("*.service")) + list(SYSTEMD.glob("*.timer")):
        text = unit.read_text().replace("/opt/petals-monitor/.venv/bin/petals-monitor", str(script))
        (tmp_path / unit.name).write_text(text)
    units = sorted(str(p) for p in tmp_path.iterdir())
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", *units], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stdout + result.stderr
