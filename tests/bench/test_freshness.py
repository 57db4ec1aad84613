"""The freshness benchmark's arithmetic (the benchmark itself needs real Petals: `python -m bench --only freshness`)."""

from __future__ import annotations

from bench.__main__ import REAL_PETALS, selected
from bench.freshness import Seen, is_online, not_online, reannounced_share, shown_after, summary, table

PEER = "QmServer"


def test_a_change_counts_from_the_first_document_after_the_event_that_shows_it():
    seen = [
        Seen(100.0, {PEER: "online"}),
        Seen(110.0, {}),  # before the event: a gap in the records says nothing about it
        Seen(125.0, {PEER: "online"}),  # the crawl after the event had not noticed yet
        Seen(131.0, {PEER: "unreachable"}),
        Seen(140.0, {}),
    ]
    assert shown_after(seen, 120.0, PEER, not_online) == 11.0
    assert shown_after(seen, 120.0, PEER, is_online) == 5.0
    assert shown_after(seen, 135.0, PEER, is_online) is None
    assert shown_after(seen, 135.0, PEER, not_online) == 5.0  # gone from the document is not online


def test_the_table_says_which_runs_never_showed_the_change():
    results = {"crash (SIGKILL)": {"ours": summary([3.0, 7.5]), "official": summary([70.0, None])}}
    text = table(results, 20.0)
    assert "| crash (SIGKILL) | 5.2 s (3.0, 7.5) | 70.0 s (70.0, —), 1 not shown | 20 s |" in text
    assert summary([None])["median"] is None and "never shown" in table(
        {"e": {"ours": summary([None]), "official": summary([1.0])}}, 1
    )


def test_quick_runs_leave_the_real_petals_benchmark_out_unless_named():
    assert "freshness" in REAL_PETALS
    assert "freshness" not in selected(None, quick=True)
    assert "freshness" in selected(None, quick=False) and selected(["freshness"], quick=True) == ["freshness"]


def test_a_server_counts_as_reannounced_between_two_crawls_when_its_expiration_moved():
    a, b = "QmA", "QmB"
    seen = [
        Seen(0.0, {}, {a: 120.0, b: 90.0}),
        Seen(15.0, {}, {a: 120.0, b: 150.0}),  # b re-announced
        Seen(30.0, {}, {a: 120.4}),  # the same record (dht_time rounding), b gone: not counted
        Seen(45.0, {}, {a: 180.0, b: 210.0}),  # a re-announced; b is back, but was not in the crawl before
    ]
    assert reannounced_share(seen) == (2, 4)
