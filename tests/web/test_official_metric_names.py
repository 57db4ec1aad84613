"""``[web] official_metric_names``: /metrics also speaks health.petals.dev's names, so its dashboards keep working."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from web_harness import NOW, OTHER_SWARM, SWARM, LiveApp, open_store

from monitor.cli import build_parser
from monitor.config import Config, ConfigError, ConfigOverrides, SwarmConfig, WebConfig, load_config
from monitor.web import create_app
from monitor.web.metrics import OFFICIAL_NAMES

# health.petals.dev's exported metric set: each name with its label names. Read from
# github.com/petals-infra/health.petals.dev, metrics.py (get_prometheus_metrics; commit 777a1594), the same as
# its older prometheus.py (get_prometheus_payload). No prefix, no swarm label: it watches one swarm.
OFFICIAL_METRICS: dict[str, frozenset[str]] = {
    "update_duration": frozenset(),
    "peers_per_srv": frozenset(),
    "pings_inf_share": frozenset(),
    "servers_num_total": frozenset(),
    "servers_num_relay": frozenset(),
    "ping_pct": frozenset({"pct"}),
    "server_version": frozenset({"version_number"}),
    "n_blocks": frozenset({"model"}),
    "servers_num": frozenset({"model"}),
    "blocks_total": frozenset({"model"}),
    "blocks_online_min": frozenset({"model"}),
    "blocks": frozenset({"model", "state"}),
    "rps_avg": frozenset({"model", "rps"}),
    "rps_min": frozenset({"model", "rps"}),
}
OFFICIAL_BLOCK_STATES = {"online", "joining", "offline", "unreachable"}
OFFICIAL_RPS = {"network", "inference", "forward"}


def _families(fx, config: Config) -> dict:
    store = open_store(fx.path)
    live = LiveApp(lambda: create_app(config, store=store, clock=lambda: NOW))
    try:
        reply = live.get("/metrics")
    finally:
        live.close()
        store.close()
    assert reply.status == 200
    return {f.name: f for f in text_string_to_metric_families(reply.text)}


def _on(swarm: str = SWARM) -> Config:
    return Config(swarms=(SwarmConfig(name=swarm),), web=WebConfig(official_metric_names=True))


def test_our_list_is_the_official_set():
    assert set(OFFICIAL_NAMES) == set(OFFICIAL_METRICS)


def test_off_by_default_every_name_is_prefixed(fx):
    families = _families(fx, Config(swarms=(SwarmConfig(name=SWARM),)))
    assert all(name.startswith("petals_") for name in families)


def test_on_the_official_names_carry_the_official_labels_and_our_values(fx):
    families = _families(fx, _on())
    for name, labels in OFFICIAL_METRICS.items():
        assert name in families, name
        samples = families[name].samples
        assert samples, name
        for sample in samples:
            assert set(sample.labels) == labels, (name, sample.labels)
    models = {r.model.dht_prefix for r in fx.snapshots[-1].models}
    assert {s.labels["model"] for s in families["n_blocks"].samples} == models  # SWARM's models, not OTHER_SWARM's
    assert {s.labels["state"] for s in families["blocks"].samples} >= OFFICIAL_BLOCK_STATES
    assert {s.labels["rps"] for s in families["rps_min"].samples} == OFFICIAL_RPS
    for name in OFFICIAL_METRICS:  # the same numbers as our prefixed series of that swarm
        ours = {
            tuple(sorted((k, v) for k, v in s.labels.items() if k != "swarm")): s.value
            for s in families[f"petals_{name}"].samples
            if s.labels["swarm"] == SWARM
        }
        theirs = {tuple(sorted(s.labels.items())): s.value for s in families[name].samples}
        assert theirs == ours, name


def test_on_for_another_swarm_shows_that_swarm(fx):
    families = _families(fx, _on(OTHER_SWARM))
    other_models = {s.labels["model"] for s in families["petals_n_blocks"].samples if s.labels["swarm"] == OTHER_SWARM}
    assert {s.labels["model"] for s in families["n_blocks"].samples} == other_models


def test_config_file_and_flag(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[web]\nofficial_metric_names = true\n")
    assert load_config(path, {}).web.official_metric_names is True
    assert load_config(None, {}).web.official_metric_names is False
    args = build_parser().parse_args(["serve", "--official-metric-names"])
    assert args.official_metric_names is True
    assert build_parser().parse_args(["serve"]).official_metric_names is None
    on = load_config(None, {}, ConfigOverrides(official_metric_names=True))
    assert on.web.official_metric_names is True
    path.write_text('[web]\nofficial_metric_names = "yes"\n')
    with pytest.raises(ConfigError, match=r"web\.official_metric_names"):
        load_config(path, {})
