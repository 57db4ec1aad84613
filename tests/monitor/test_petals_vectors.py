"""The rules on the real monitor FIND replies recorded from hivemind 1.1.12 (sim: fake transport, frozen clock;
live: real p2pd daemons): our spans must equal what Petals' own compute_spans gave for the same announcements."""

from __future__ import annotations

import pytest
from petals_fixtures import MODELS_KEY, PREFIX, raw_crawl_from_calls

from monitor.rules.petals import build_snapshot, classify_entries, peers_to_probe
from monitor.rules.reachability import parse_rpc_info
from monitor.snapshot import ModelInfo

KEYS = [MODELS_KEY] + [f"{PREFIX}.{i}" for i in range(6)]
SIM_TIME = 1767225600.0  # the sim's frozen clock


def _sim_raw(vectors):
    return raw_crawl_from_calls(vectors["sim"]["monitor_calls"], KEYS, SIM_TIME)


def _live_raw(live_trace):
    calls = live_trace["calls"][live_trace["monitor_calls_start"] :]
    finds = [c for c in calls if c["handler"].endswith("rpc_find")]
    return raw_crawl_from_calls(calls, KEYS, max(c["t"] for c in finds))


def _spans(snapshot):
    (report,) = snapshot.models
    return {row.peer_id: {"start": row.start, "end": row.end, "state": row.state.upper()} for row in report.servers}


def test_sim_monitor_view(vectors):
    expected = vectors["sim"]["phase_summaries"][3]["result"]["spans"]
    snapshot = build_snapshot(_sim_raw(vectors), [], {})
    assert _spans(snapshot) == expected
    (report,) = snapshot.models
    # discovered from _petals.models: a Hugging Face repository, so kept under the default policy
    assert report.model == ModelInfo(
        PREFIX, 6, "https://huggingface.co/meta-llama/Meta-Llama-3.1-405B-Instruct", official=False
    )
    assert [b.online for b in report.blocks] == [1, 1, 2, 2, 1, 1]
    assert report.state == "degraded"
    assert all(row.ttl == 240.0 for row in report.servers)
    assert snapshot.invalid == [] and snapshot.status == "succeeded"


def test_sim_with_min_redundancy_one_is_healthy_like_health_petals_dev(vectors):
    snapshot = build_snapshot(_sim_raw(vectors), [], {}, min_redundancy=1)
    assert snapshot.models[0].state == "healthy"


def test_sim_configured_model_with_unknown_block_count_learns_it(vectors):
    configured = [ModelInfo(PREFIX, 0, official=True)]
    _records, _invalid, models = classify_entries(_sim_raw(vectors), configured)
    assert [(m.dht_prefix, m.num_blocks, m.official) for m in models] == [(PREFIX, 6, True)]


def test_sim_policy_none_reports_no_custom_model(vectors):
    assert build_snapshot(_sim_raw(vectors), [], {}, custom_model_policy="none").models == []


def test_sim_peers_to_probe(vectors):
    expected = sorted(vectors["sim"]["phase_summaries"][3]["result"]["spans"])
    assert peers_to_probe(_sim_raw(vectors), []) == expected


def test_sim_records_expire_after_their_ttl(vectors):
    raw = _sim_raw(vectors)
    raw.dht_time = SIM_TIME + 241
    snapshot = build_snapshot(raw, [ModelInfo(PREFIX, 6, official=True)], {})
    (report,) = snapshot.models
    assert {row.state for row in report.servers} == {"expired"}
    assert all(row.ttl == pytest.approx(-1.0) for row in report.servers)
    assert report.state == "broken" and report.min_online == 0
    assert [b.expired for b in report.blocks] == [1, 1, 2, 2, 1, 1]
    assert snapshot.stats.invalid_by_reason == {"expired": 9}  # 4 + 4 block entries and the index entry
    assert peers_to_probe(raw, [ModelInfo(PREFIX, 6, official=True)]) == []


def test_live_monitor_view(vectors, live_trace):
    view = vectors["live"]["monitor_view"]["spans"]
    nodes = vectors["live"]["nodes"]
    expected = {nodes[name]["peer_id"]: span for name, span in view.items()}
    snapshot = build_snapshot(_live_raw(live_trace), [], {})
    assert _spans(snapshot) == expected


def test_live_rpc_info_reply(vectors):
    call = vectors["live"]["selected_calls"]["rpc_info"]
    peer = vectors["live"]["nodes"]["SERVER_S"]["peer_id"]
    reach = parse_rpc_info(bytes.fromhex(call["response_hex"]), peer, now=call["t"], latency=0.01)
    assert reach.ok and not reach.joining
    assert (reach.version, reach.dht_client_mode, reach.cache_tokens_available) == ("2.3.0.dev2", False, 1310720)
