"""`python -m bench`: hivemind's side finding fewer records is a failure, unless its own FINDs say why (they timed out
under load and it banned the nodes): then the run says so and does not fail. Our side short is always a failure."""

from __future__ import annotations

import bench.__main__ as bench_main
from bench.measure import SideRun
from bench.scenarios import Scenario
from bench.summary import _side_by_side

MODELS = {"m-a": {"servers": 60, "online": 54, "blocks_covered": 80}}
EXPECTED = {"records": 14416, "probes": 54, "models": MODELS}
NO_LOSS = {"failed": {}, "keys_failed": 0, "slowest_failed": 0.0, "skipped_banned": 0, "keys_skipped": 0}
TIMED_OUT = {"failed": {"timeout": 7}, "keys_failed": 7, "slowest_failed": 3.002, "skipped_banned": 12,
             "keys_skipped": 180}  # fmt: skip


def _run(ours: dict, theirs: dict, monkeypatch, tmp_path) -> dict:
    digests = {"ours": ours, "hivemind": theirs}

    def fake_run_side(side, module, config, *, timeout, log_dir):
        return SideRun(side, 1.0, 1.0, 0.1, 20_000, 20_000, 2.0, 2.0, dict(digests[side]))

    monkeypatch.setattr(bench_main, "run_side", fake_run_side)
    scenario = Scenario("crawl", "a fake crawl", ours={"mode": "crawl"}, theirs={"mode": "crawl"}, expected=EXPECTED)
    return bench_main.run_benchmark(scenario, 1, tmp_path, lambda _text: None)


def test_hivemind_short_by_its_own_find_timeouts_is_said_not_failed(monkeypatch, tmp_path):
    short = {"records": 13456, "probes": 54, "models": MODELS, "find_failures": TIMED_OUT}
    doc = _run(dict(EXPECTED), short, monkeypatch, tmp_path)
    assert doc["same_result"] is True and doc["problems"] == []
    (shortfall,) = doc["reference_shortfalls"]
    assert "7 timeout, 7 keys" in shortfall and "12 FINDs (180 keys)" in shortfall
    assert "records 13456 of 14416" in shortfall
    assert any("its own FIND timeouts" in row and "13456" in row for row in _side_by_side("crawl", doc))


def test_hivemind_short_without_failed_finds_is_a_mismatch(monkeypatch, tmp_path):
    """Nothing in hivemind's client explains it: the harness or the swarm may be at fault, so the run fails."""
    short = {"records": 13456, "probes": 54, "models": MODELS, "find_failures": NO_LOSS}
    doc = _run(dict(EXPECTED), short, monkeypatch, tmp_path)
    assert doc["same_result"] is False and doc["reference_shortfalls"] == []
    assert doc["problems"] == ["hivemind run 1: records: expected 14416, got 13456"]


def test_failed_finds_do_not_excuse_other_differences_or_our_side(monkeypatch, tmp_path):
    probes_short = {"records": 14416, "probes": 50, "models": MODELS, "find_failures": TIMED_OUT}  # rpc_info
    assert _run(dict(EXPECTED), probes_short, monkeypatch, tmp_path)["same_result"] is False
    ours_short = {"records": 13456, "probes": 54, "models": MODELS, "find_failures": TIMED_OUT}
    doc = _run(ours_short, dict(EXPECTED), monkeypatch, tmp_path)
    assert doc["same_result"] is False and doc["reference_shortfalls"] == []


def test_failed_finds_excuse_no_more_than_their_keys_could_hold_nor_more_servers(monkeypatch, tmp_path):
    """One failed FIND of one key cannot explain 14,416 missing records; nor can a timeout show servers, or models,
    that were never stored."""
    one = {"failed": {"timeout": 1}, "keys_failed": 1, "slowest_failed": 3.0, "skipped_banned": 0, "keys_skipped": 0}
    cases = [
        {"records": 0, "probes": 54, "models": MODELS, "find_failures": one},  # 60 records at most per key
        {"records": 14416, "probes": 54, "models": {"m-a": {**MODELS["m-a"], "servers": 61}}, "find_failures": one},
        {"records": 14416, "probes": 54, "models": {**MODELS, "m-z": {"servers": 1}}, "find_failures": one},
    ]
    for theirs in cases:
        doc = _run(dict(EXPECTED), theirs, monkeypatch, tmp_path)
        assert doc["same_result"] is False and doc["reference_shortfalls"] == [], theirs
    fewer = {
        "records": 14416 - 60,
        "probes": 54,
        "models": {"m-a": {**MODELS["m-a"], "online": 53}},
        "find_failures": one,
    }
    assert _run(dict(EXPECTED), fewer, monkeypatch, tmp_path)["same_result"] is True  # within one key's worth
