"""build_snapshot on hand-made crawls with a fake clock: row states, coverage, model health, invalid records,
model discovery and the health.petals.dev extras."""

from __future__ import annotations

import pytest
from petals_fixtures import server_info_bytes

from dht.serializer import dumps
from monitor.rules.health import model_state
from monitor.rules.petals import (
    MODELS_KEY,
    block_uids,
    build_snapshot,
    classify,
    classify_entries,
    parse_block_key,
    peers_to_probe,
)
from monitor.snapshot import BlockStat, ModelInfo, RawCrawl, RawEntry, Reachability

T = 1_767_225_600.0
P1 = "12D3KooWD4DGWPgr6GLXxifDvNnm9fyzfBmtKMpUxS8sNNhrZuw8"
P2 = "12D3KooWL8pFAAemHvuV33PomCwHh6E6Ea5Fuu83gomgWLrmBErx"
P3 = "QmedTaZXmULqwspJXz44SsPZyTNKxhnnFvYRajfH7MGhCY"
P4 = "QmQGTqmM7NKjV6ggU1ZCap8zWiyKR89RViDXiqehSiCpY5"
MODEL = ModelInfo("m", 4, "https://huggingface.co/org/m", official=True)


def announce(peer, start, end, *, prefix="m", state=2, expiration=T + 240, throughput=10.0, **extra):
    """The entries a Petals server writes: one per block of its span, each naming the whole span."""
    value = server_info_bytes(state, throughput, start_block=start, end_block=end, **extra)
    return [RawEntry(f"{prefix}.{i}", peer, value, expiration) for i in range(start, end)]


def crawl(*groups, regular_values=None, error=None) -> RawCrawl:
    entries = [entry for group in groups for entry in group]
    return RawCrawl("test", T - 2, T, T, [], entries, regular_values=regular_values or {}, error=error)


def report_of(snapshot, prefix="m"):
    return next(r for r in snapshot.models if r.model.dht_prefix == prefix)


def states(report):
    return {row.peer_id: row.state for row in report.servers}


# ---- model health


def test_healthy_degraded_broken():
    healthy = build_snapshot(crawl(announce(P1, 0, 4), announce(P2, 0, 4)), [MODEL], {})
    assert report_of(healthy).state == "healthy" and report_of(healthy).min_online == 2
    degraded = build_snapshot(crawl(announce(P1, 0, 4), announce(P2, 0, 2)), [MODEL], {})
    assert report_of(degraded).state == "degraded"
    assert [b.online for b in report_of(degraded).blocks] == [2, 2, 1, 1]
    broken = build_snapshot(crawl(announce(P1, 0, 3), announce(P2, 0, 2)), [MODEL], {})
    assert report_of(broken).state == "broken" and report_of(broken).blocks_covered == 3
    assert build_snapshot(crawl(announce(P1, 0, 4)), [MODEL], {}, min_redundancy=1).models[0].state == "healthy"


def test_model_state_edge_cases():
    assert model_state([], 2) == "broken"
    assert model_state([BlockStat(0, online=3)], 3) == "healthy"
    assert model_state([BlockStat(0, online=3), BlockStat(1, online=2, joining=5)], 3) == "degraded"


def test_model_without_servers_is_broken_and_listed():
    snapshot = build_snapshot(crawl(), [MODEL], {})
    report = report_of(snapshot)
    assert report.state == "broken" and report.servers == [] and len(report.blocks) == 4


def test_min_redundancy_must_be_positive():
    with pytest.raises(ValueError, match="min_redundancy"):
        build_snapshot(crawl(), [MODEL], {}, min_redundancy=0)


# ---- row states


def test_joining_and_offline_servers_do_not_count_online():
    raw = crawl(announce(P1, 0, 4), announce(P2, 0, 4, state=1), announce(P3, 0, 4, state=0, throughput=0.0))
    report = report_of(build_snapshot(raw, [MODEL], {}))
    assert states(report) == {P1: "online", P2: "joining", P3: "offline"}
    assert report.state == "degraded"
    assert report.blocks[0] == BlockStat(0, online=1, joining=1, offline=1, throughput=10.0)


def test_failed_probe_makes_online_server_unreachable():
    raw = crawl(announce(P1, 0, 4), announce(P2, 0, 4))
    reach = {P2: Reachability(P2, ok=False, checked_at=T, error="Failed to connect in 5 sec. Firewall may be ...")}
    report = report_of(build_snapshot(raw, [MODEL], reach))
    assert states(report) == {P1: "online", P2: "unreachable"}
    row = next(r for r in report.servers if r.peer_id == P2)
    assert row.reachability is reach[P2]
    assert report.state == "degraded" and report.blocks[0].unreachable == 1


def test_protocol_not_supported_probe_means_joining():
    raw = crawl(announce(P1, 0, 4))
    reach = {P1: Reachability(P1, ok=True, checked_at=T, joining=True, error="protocols not supported")}
    report = report_of(build_snapshot(raw, [MODEL], reach))
    assert states(report) == {P1: "joining"} and report.state == "broken"


def test_probe_result_is_not_applied_to_an_offline_span():
    raw = crawl(announce(P1, 0, 4, state=0, throughput=0.0))
    reach = {P1: Reachability(P1, ok=False, checked_at=T - 100, error="timeout")}
    assert states(report_of(build_snapshot(raw, [MODEL], reach))) == {P1: "offline"}


def test_expired_only_when_all_records_expired():
    raw = crawl(
        announce(P1, 0, 4, expiration=T - 1),
        announce(P2, 0, 2, expiration=T - 5),
        announce(P2, 2, 4, expiration=T + 100),
    )
    snapshot = build_snapshot(raw, [MODEL], {P1: Reachability(P1, ok=True, checked_at=T)})
    report = report_of(snapshot)
    assert states(report) == {P1: "expired", P2: "online"}
    p1 = next(r for r in report.servers if r.peer_id == P1)
    p2 = next(r for r in report.servers if r.peer_id == P2)
    assert p1.ttl == -1.0 and p2.ttl == 100.0
    assert (p2.start, p2.end) == (2, 4)  # only unexpired records make the live span
    assert [b.online for b in report.blocks] == [0, 0, 1, 1]
    assert [b.expired for b in report.blocks] == [1, 1, 1, 1]
    assert snapshot.stats.invalid_by_reason == {"expired": 6}
    assert peers_to_probe(raw, [MODEL]) == [P2]


def test_record_expiring_exactly_now_is_still_valid():
    report = report_of(build_snapshot(crawl(announce(P1, 0, 4, expiration=T)), [MODEL], {}))
    assert states(report) == {P1: "online"} and report.servers[0].ttl == 0.0


def test_rows_sorted_by_peer_id_and_blocks_sum_online_throughput():
    raw = crawl(announce(P3, 0, 4, throughput=2.5), announce(P1, 0, 2, throughput=1.0), announce(P2, 1, 3, state=1))
    report = report_of(build_snapshot(raw, [MODEL], {}))
    assert [r.peer_id for r in report.servers] == sorted([P1, P2, P3])
    assert [b.throughput for b in report.blocks] == [3.5, 3.5, 2.5, 2.5]


def test_peers_to_probe_are_online_spans_of_any_model():
    other = ModelInfo("other", 2, official=True)
    raw = crawl(announce(P1, 0, 4, state=1), announce(P2, 0, 2, prefix="other"), announce(P3, 0, 4, state=0))
    assert peers_to_probe(raw, [MODEL, other]) == [P2]


# ---- extras as health.petals.dev


def test_show_public_name_and_top_contributors():
    big = ModelInfo("big", 20, official=True)
    custom_entry = index_entry("custom", 12, "https://huggingface.co/org/custom")
    raw = crawl(
        announce(P1, 0, 12, prefix="big", public_name="alice"),
        announce(P2, 10, 20, prefix="big", public_name="bob"),
        announce(P3, 0, 9, prefix="big", public_name="carol"),  # < 10 blocks: name hidden
        announce(P4, 0, 15, prefix="big", public_name="dave", state=1),  # not online
        announce(P1, 0, 12, prefix="custom", public_name="alice"),  # custom model: not counted
        [custom_entry],
    )
    snapshot = build_snapshot(raw, [big], {})
    rows = {r.peer_id: r for r in report_of(snapshot, "big").servers}
    assert {p: r.show_public_name for p, r in rows.items()} == {P1: True, P2: True, P3: False, P4: False}
    assert snapshot.top_contributors == [("alice", 12), ("bob", 10)]
    assert report_of(snapshot, "custom").servers[0].show_public_name


def test_pings_to_me_and_cache_tokens_per_block():
    raw = crawl(
        announce(P1, 0, 2, next_pings={P2: 0.05, P3: float("inf")}, cache_tokens_left=1000),
        announce(P2, 2, 4, next_pings={P1: 0.07}),
        announce(P3, 0, 4),
    )
    rows = {r.peer_id: r for r in report_of(build_snapshot(raw, [MODEL], {})).servers}
    assert rows[P2].pings_to_me == {P1: 0.05}
    assert rows[P3].pings_to_me == {P1: float("inf")}
    assert rows[P1].pings_to_me == {P2: 0.07}
    assert rows[P1].cache_tokens_left_per_block == 1000 // (2 * 2)
    assert rows[P2].cache_tokens_left_per_block is None


# ---- invalid records


def test_invalid_records_per_reason_are_counted_and_kept_out():
    good = announce(P1, 0, 4)
    bad = [
        RawEntry("m.0", P2, server_info_bytes(throughput=float("nan")), T + 9),
        RawEntry("m.0", P3, server_info_bytes(throughput=-1.0), T + 9),
        RawEntry("m.1", P2, server_info_bytes(state=True), T + 9),
        RawEntry("m.1", P3, server_info_bytes(cache_tokens_left=2**64 - 1), T + 9),
        RawEntry("m.2", P2, server_info_bytes(public_name=7), T + 9),
        RawEntry("m.2", P3, b"\xc1garbage", T + 9),
        RawEntry("m.3", P2, server_info_bytes(start_block=3, end_block=1), T + 9),
        RawEntry("m.3", b"raw-bytes-subkey", server_info_bytes(), T + 9),
        RawEntry("m.3", "<script>alert(1)</script>", server_info_bytes(), T + 9),
        RawEntry("m.3", 12345, server_info_bytes(), T + 9),
        RawEntry("m.x", P2, server_info_bytes(), T + 9),
        RawEntry("m.1.2", P2, server_info_bytes(), T + 9),
        RawEntry("m.01", P2, server_info_bytes(), T + 9),
        RawEntry("no-dot", P2, server_info_bytes(), T + 9),
    ]
    snapshot = build_snapshot(crawl(good, bad, regular_values={"m.2": 3}), [MODEL], {})
    assert snapshot.stats.invalid_by_reason == {
        "key": 4,
        "msgpack": 1,
        "range": 1,
        "regular_value": 3,
        "schema": 1,
        "span": 1,
        "state": 1,
        "subkey": 3,
        "throughput": 2,
    }
    assert states(report_of(snapshot)) == {P1: "online"}
    script = next(i for i in snapshot.invalid if i.subkey and "script" in i.subkey)
    assert script.subkey == "<script>alert(1)</script>" and script.reason == "subkey"
    assert next(i for i in snapshot.invalid if i.reason == "subkey" and i.subkey.startswith("b'")).key == "m.3"
    assert all(i.detail for i in snapshot.invalid)
    assert snapshot.stats.records == len(good) + len(bad)


def test_untrusted_public_name_is_kept_as_data():
    raw = crawl(announce(P1, 0, 4, public_name="<img src=x onerror=alert(1)>"))
    assert report_of(build_snapshot(raw, [MODEL], {})).servers[0].info.public_name == "<img src=x onerror=alert(1)>"


def test_failed_crawl_keeps_its_error():
    snapshot = build_snapshot(crawl(error="no bootstrap peer answered"), [MODEL], {})
    assert snapshot.status == "failed" and snapshot.error == "no bootstrap peer answered"
    assert build_snapshot(crawl(), [MODEL], {}).status == "succeeded"


# ---- model discovery


def index_entry(prefix, num_blocks, repository, expiration=T + 240):
    return RawEntry(MODELS_KEY, prefix, dumps({"num_blocks": num_blocks, "repository": repository}), expiration)


def test_model_discovery_policy_and_order():
    entries = [
        index_entry("m", 99, "https://huggingface.co/someone/else"),  # official wins
        index_entry("small", 4, "https://huggingface.co/org/small"),
        index_entry("large", 80, "https://huggingface.co/org/large"),
        index_entry("also-80", 80, "https://huggingface.co/org/a80"),
        index_entry("local", 32, None),
        index_entry("elsewhere", 16, "https://example.com/model"),
        index_entry("old", 8, "https://huggingface.co/org/old", expiration=T - 1),
        RawEntry(MODELS_KEY, "bad.prefix", dumps({"num_blocks": 3}), T + 9),
        RawEntry(MODELS_KEY, "broken", dumps({"num_blocks": "3"}), T + 9),
    ]

    def models(policy):
        _, _, resolved = classify_entries(crawl(entries), [MODEL], custom_model_policy=policy)
        return [(m.dht_prefix, m.num_blocks, m.official) for m in resolved]

    assert models("huggingface") == [("m", 4, True), ("also-80", 80, False), ("large", 80, False), ("small", 4, False)]
    assert models("any") == [
        ("m", 4, True),
        ("also-80", 80, False),
        ("large", 80, False),
        ("local", 32, False),
        ("elsewhere", 16, False),
        ("small", 4, False),
    ]
    assert models("none") == [("m", 4, True)]
    _, invalid, _ = classify_entries(crawl(entries), [MODEL])
    assert sorted(i.reason for i in invalid) == ["expired", "model_info", "model_info"]


def test_block_keys():
    assert block_uids(ModelInfo("p", 3)) == ["p.0", "p.1", "p.2"]
    assert parse_block_key("mistralai/Mixtral-8x22B-Instruct-v0-1.55") == ("mistralai/Mixtral-8x22B-Instruct-v0-1", 55)
    for bad in ("p", "p.", ".1", "p.-1", "p.+1", "p. 1", "p.1.2", "p q.1", "p.1234567"):
        assert parse_block_key(bad) is None


def test_one_classification_serves_the_probe_list_and_the_snapshot():
    raw = crawl(announce(P1, 0, 4), announce(P2, 0, 2), announce(P3, 1, 3, state=1))
    classified = classify(raw, [MODEL])
    assert peers_to_probe(raw, [MODEL], classified=classified) == peers_to_probe(raw, [MODEL]) == sorted([P1, P2])
    reused = build_snapshot(raw, [MODEL], {}, classified=classified)
    assert reused == build_snapshot(raw, [MODEL], {})
    assert classified.invalid == classify(raw, [MODEL]).invalid  # building the snapshot did not modify it


def test_a_classification_of_other_inputs_is_not_reused():
    raw = crawl(announce(P1, 0, 4), announce(P2, 0, 4))
    other = classify(crawl(announce(P1, 0, 4)), [MODEL])  # another crawl
    assert len(report_of(build_snapshot(raw, [MODEL], {}, classified=other)).servers) == 2
    stale_models = classify(raw, [ModelInfo("m", 2, official=True)])  # other models
    assert report_of(build_snapshot(raw, [MODEL], {}, classified=stale_models)).model.num_blocks == 4
    assert build_snapshot(raw, [MODEL], {}, classified=classify(raw, [MODEL], custom_model_policy="none")) == (
        build_snapshot(raw, [MODEL], {})
    )
