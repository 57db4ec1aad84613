"""monitor.report: the /api/v1/state document keeps health.petals.dev's shape and adds ours; pure functions."""

from __future__ import annotations

import dataclasses
import json
import math

from factories import HOSTILE_STRINGS, make_snapshot

from monitor import report as rep

# The keys health.petals.dev's consumers read (its health.py / state_updater.py / index.html).
OFFICIAL_TOP = {
    "bootstrap_states",
    "top_contributors",
    "model_reports",
    "reachability_issues",
    "last_updated",
    "update_period",
    "update_duration",
}
OFFICIAL_MODEL = {"name", "short_name", "state", "server_rows", "num_blocks", "repository", "dht_prefix", "official"}
OFFICIAL_ROW = {"short_peer_id", "peer_id", "show_public_name", "state", "span", "adapters", "pings_to_me"}
OFFICIAL_SPAN = {"peer_id", "start", "end", "server_info"}
OFFICIAL_INFO = {
    "state",
    "throughput",
    "public_name",
    "version",
    "network_rps",
    "forward_rps",
    "inference_rps",
    "adapters",
    "torch_dtype",
    "quant_type",
    "using_relay",
    "cache_tokens_left",
    "next_pings",
}


def test_state_document_is_a_superset_of_the_official_shape():
    snap = make_snapshot(seed=2, crawl_id=7)
    doc = rep.state_document(snap, update_period=60)
    assert doc.keys() >= OFFICIAL_TOP
    assert doc["update_period"] == 60 and doc["last_updated"] == snap.finished_at
    assert doc["update_duration"] == snap.duration
    assert doc["swarm"] == snap.swarm and doc["crawl_id"] == 7
    assert doc["bootstrap_states"] == ["online", "online", "unreachable"]
    assert len(doc["model_reports"]) == len(snap.models)
    for model, report in zip(doc["model_reports"], snap.models, strict=True):
        assert model.keys() >= OFFICIAL_MODEL
        assert model["state"] in ("healthy", "broken")  # official meaning
        assert model["health"] == report.state  # ours, three levels
        assert len(model["blocks"]) == report.model.num_blocks
        for row in model["server_rows"]:
            assert row.keys() >= OFFICIAL_ROW
            assert row["span"].keys() >= OFFICIAL_SPAN
            assert row["span"]["server_info"].keys() >= OFFICIAL_INFO
            assert row["short_peer_id"] == "..." + row["peer_id"][-6:]
            assert row["span"]["length"] == row["span"]["end"] - row["span"]["start"]
            assert row["span"]["server_info"]["state"] in ("online", "joining", "offline")
            assert "ttl" in row and "expiration" in row


def test_official_state_is_healthy_iff_every_block_has_an_online_server():
    snap = make_snapshot(seed=4)
    by_health = {r.state: r for r in snap.models}
    assert rep.official_state(by_health["healthy"]) == "healthy"
    assert rep.official_state(by_health["degraded"]) == "healthy"  # covered, just thin: still usable
    assert rep.official_state(by_health["broken"]) == "broken"


def test_document_is_strict_json_even_with_infinite_pings():
    snap = make_snapshot(seed=5)
    pings = [v for r in snap.models for s in r.servers for v in (s.info.next_pings or {}).values()]
    assert any(math.isinf(v) for v in pings), "fixture should carry inf pings"
    text = json.dumps(rep.state_document(snap), allow_nan=False)  # raises on inf/nan
    assert "Infinity" not in text


def test_top_contributors_keep_order_and_reachability_issues_are_unique_and_sorted():
    snap = make_snapshot(seed=6)
    doc = rep.state_document(snap)
    assert list(doc["top_contributors"].items()) == list(snap.top_contributors)
    peers = [i["peer_id"] for i in doc["reachability_issues"]]
    assert peers == sorted(set(peers))
    failing = {s.peer_id for r in snap.models for s in r.servers if s.reachability and not s.reachability.ok}
    assert set(peers) == failing


def test_adapter_links_only_for_strict_repo_ids():
    assert rep.adapter_url("artek0chumak/guanaco-65b") == "https://huggingface.co/artek0chumak/guanaco-65b"
    for bad in [*HOSTILE_STRINGS, "a/b/c", "/etc", "a//b", "..a/b", "a/b.", "a--b/c", "user/na me", "", "noslash"]:
        assert rep.adapter_url(bad) is None, bad
        assert not rep.is_repo_id(bad)


def test_safe_http_url_refuses_scripts_and_markup():
    assert rep.safe_http_url("https://example.org/me") == "https://example.org/me"
    for bad in (
        "javascript:alert(1)",
        "JAVASCRIPT:alert(1)",
        "data:text/html,<b>",
        'https://x.org/"><script>',
        "https://x.org/ a",
        "//x.org",
        "https:///x",
        None,
        42,
    ):
        assert rep.safe_http_url(bad) is None, bad


def test_cache_tokens_per_block_as_the_official_monitor_computes():
    snap = make_snapshot(seed=1)
    row = snap.models[0].servers[0]
    bare = dataclasses.replace(row, cache_tokens_left_per_block=None, start=0, end=4)
    bare = dataclasses.replace(bare, info=dataclasses.replace(bare.info, cache_tokens_left=800))
    assert rep.cache_tokens_per_block(bare) == 100  # 800 // (4 blocks * 2 for keys and values)
    assert "cache_tokens_left_per_block" not in rep.server_row_document(
        dataclasses.replace(bare, info=dataclasses.replace(bare.info, cache_tokens_left=None))
    )


def test_model_invalid_records_match_only_this_models_block_keys():
    snap = make_snapshot(seed=1)
    prefix = snap.models[0].model.dht_prefix
    mine = rep.model_invalid_records(snap, prefix)
    assert all(r.key.startswith(prefix + ".") for r in mine)
    assert len(mine) == sum(1 for r in snap.invalid if r.key.rsplit(".", 1)[0] == prefix)


def test_flat_server_rows_cover_every_row_with_every_column():
    snap = make_snapshot(seed=1, crawl_id=3)
    rows = rep.flat_server_rows(snap)
    assert len(rows) == sum(len(r.servers) for r in snap.models)
    assert all(tuple(row) == rep.SERVER_ROW_COLUMNS for row in rows)
    json.dumps(rows, allow_nan=False)
