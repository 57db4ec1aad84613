"""Vantage points: the pure "reachable from k of n" rules, and their store on both backends."""

from __future__ import annotations

import dataclasses

import pytest
from factories import T0, make_snapshot

from monitor.rules.vantages import VantageResult, reachable_from, summarize_vantages
from monitor.snapshot import Reachability
from monitor.store.rows import snapshot_probes
from monitor.store.sqlite import Store, StoreWriter
from monitor.store.vantages import NotProbeable


def r(vantage: str, peer: str, ok: bool, t: float, **kw) -> VantageResult:
    return VantageResult(vantage, peer, ok, t, **kw)


def test_only_each_vantages_newest_fresh_result_counts():
    verdicts = reachable_from(
        [
            r("eu", "A", False, 100.0),
            r("eu", "A", True, 160.0),  # newer: replaces the failure
            r("us", "A", False, 150.0),
            r("asia", "A", True, 40.0),  # too old: does not count
            r("us", "B", True, 150.0),
        ],
        since=50.0,
    )
    a = verdicts["A"]
    assert [(x.vantage, x.ok) for x in a.results] == [("eu", True), ("us", False)]
    assert (a.reachable, a.of, a.split, a.text()) == (1, 2, True, "reachable from 1 of 2")
    assert (verdicts["B"].reachable, verdicts["B"].of, verdicts["B"].split) == (1, 1, False)


def test_a_vantage_that_only_has_stale_results_drops_out_of_n():
    assert reachable_from([r("eu", "A", True, 10.0)], since=11.0) == {}


def test_summary_per_vantage():
    verdicts = reachable_from(
        [r("eu", "A", True, 100.0), r("eu", "B", False, 120.0), r("us", "A", True, 130.0)], since=0.0
    )
    rows = [(s.vantage, s.servers, s.reached, s.last_checked_at) for s in summarize_vantages(verdicts)]
    assert rows == [("eu", 2, 1, 120.0), ("us", 1, 1, 130.0)]


def _probes(snapshot, t: float, ok: bool) -> list[Reachability]:
    return [
        dataclasses.replace(p, ok=ok, checked_at=t, error=None if ok else "refused") for p in snapshot_probes(snapshot)
    ]


def test_crawl_and_probe_rounds_give_k_of_n_per_server(db_location):
    first = make_snapshot("s", T0)
    second = make_snapshot("s", T0 + 60)
    with StoreWriter(db_location) as w, Store(db_location) as store:
        c1 = w.finish_crawl(w.begin_crawl("s", T0, "main"), first).id
        own = {p.peer_id: p.ok for p in snapshot_probes(first)}
        assert own, "the factory snapshot has probed servers"
        target = store.probe_targets("s")
        assert target == (c1, sorted(own))
        # two other vantage points: one reaches everything, one nothing
        assert w.record_vantage_probes(c1, "eu", _probes(first, T0 + 20, True)) == len(own)
        w.record_vantage_probes(c1, "us", _probes(first, T0 + 25, False))
        w.record_vantage_probes(c1, "us", _probes(first, T0 + 30, False))  # a repeated round replaces, not adds
        verdicts = store.reachable_from(c1, max_age=600).by_peer
        assert set(verdicts) == set(own)
        for peer, ok in own.items():
            v = verdicts[peer]
            assert [x.vantage for x in v.results] == ["eu", "main", "us"]
            assert (v.reachable, v.of) == (1 + ok, 3)
            assert next(x for x in v.results if x.vantage == "us").checked_at == T0 + 30
        # the next crawl: until the probe processes reach it, their results on the previous crawl still count
        c2 = w.finish_crawl(w.begin_crawl("s", T0 + 60, "main"), second).id
        verdicts2 = store.reachable_from(c2, max_age=600).by_peer
        some = next(iter(set(verdicts2) & set(own)))
        assert [x.vantage for x in verdicts2[some].results] == ["eu", "main", "us"]
        # ... but not once they are older than max_age before the crawl finished
        assert {x.vantage for v in store.reachable_from(c2, max_age=1).by_peer.values() for x in v.results} == {"main"}
        assert store.peer_vantage_results(some, since=T0).of == 3
        assert store.peer_vantage_results("nobody", since=T0) is None
        assert store.crawl(c2).vantage == "main"


def test_probe_rounds_on_a_crawl_that_is_gone_or_failed_are_refused(db_location):
    with StoreWriter(db_location) as w:
        failed = w.begin_crawl("s", T0, "main")
        w.fail_crawl(failed, "boom")
        with pytest.raises(NotProbeable, match="is failed"):
            w.record_vantage_probes(failed, "eu", [])
        with pytest.raises(NotProbeable, match="is gone"):
            w.record_vantage_probes(10_000, "eu", [])


def test_a_probe_writer_leaves_a_running_crawl_alone(tmp_path):
    db = tmp_path / "m.db"
    with StoreWriter(db) as crawler:
        running = crawler.begin_crawl("s", T0, "main")
        with StoreWriter(db, recover=False) as prober:
            assert prober.interrupted == 0
        with Store(db) as store:
            assert store.crawl(running).status == "started"


def test_retention_deletes_a_crawls_probes_with_it(tmp_path):
    db = tmp_path / "m.db"
    with StoreWriter(db) as w:
        old = w.finish_crawl(w.begin_crawl("s", T0, "main"), make_snapshot("s", T0)).id
        w.finish_crawl(w.begin_crawl("s", T0 + 30 * 86400, "main"), make_snapshot("s", T0 + 30 * 86400))
        w.apply_retention(T0 + 30 * 86400, raw_days=7)
        left = w.conn.execute("SELECT count(*) FROM vantage_probes WHERE crawl_id = ?", (old,)).fetchone()[0]
    assert left == 0


def _crawl(w, t: float, snapshot=None, vantage: str = "main") -> int:
    return w.finish_crawl(w.begin_crawl("s", t, vantage), snapshot or make_snapshot("s", t)).id


def test_a_partial_round_updates_what_it_reached_and_keeps_the_rest(db_location):
    snap = make_snapshot("s", T0)
    with StoreWriter(db_location) as w, Store(db_location) as store:
        c1 = _crawl(w, T0, snap)
        peers = [p.peer_id for p in snapshot_probes(snap)]
        w.record_vantage_probes(c1, "eu", _probes(snap, T0 + 20, True))
        w.record_vantage_probes(c1, "eu", [dataclasses.replace(_probes(snap, T0 + 40, False)[0])])  # cut short
        eu = {
            p: next(r for r in v.results if r.vantage == "eu") for p, v in store.reachable_from(c1, 600).by_peer.items()
        }
    assert (eu[peers[0]].ok, eu[peers[0]].checked_at) == (False, T0 + 40)
    assert all((eu[p].ok, eu[p].checked_at) == (True, T0 + 20) for p in peers[1:])


def test_a_crawls_view_counts_only_its_servers_and_results_younger_than_max_age(db_location):
    first = make_snapshot("s", T0)
    gone = snapshot_probes(first)[0].peer_id
    with StoreWriter(db_location) as w, Store(db_location) as store:
        c1 = _crawl(w, T0, first)
        w.record_vantage_probes(c1, "eu", _probes(first, T0 + 20, True))
        # two crawls later, with one server gone: eu has not probed them yet
        _crawl(w, T0 + 60)
        later = make_snapshot("s", T0 + 120)
        for report in later.models:
            report.servers = [r for r in report.servers if r.peer_id != gone]
        c3 = _crawl(w, T0 + 120, later)
        view = store.reachable_from(c3, max_age=600).by_peer
        assert gone not in view  # not a server of crawl 3, whatever older rounds said of it
        assert set(view) == {p.peer_id for p in snapshot_probes(later)}
        still = [p for p in view if any(r.vantage == "eu" for r in view[p].results)]
        assert still and all(p in {x.peer_id for x in snapshot_probes(first)} for p in still)  # 100 s old: counts
        aged = store.reachable_from(c3, max_age=50).by_peer  # ... but not once older than max_age
        assert all([r.vantage for r in v.results] == ["main"] for v in aged.values())
        assert store.reachable_from(c1, max_age=600).by_peer[gone].of == 2  # crawl 1's own view is unchanged


def test_a_probe_round_under_the_crawlers_own_name_is_refused(db_location):
    snap = make_snapshot("s", T0)
    with StoreWriter(db_location) as w, Store(db_location) as store:
        c1 = _crawl(w, T0, snap)
        with pytest.raises(NotProbeable, match="give this probe process a name of its own"):
            w.record_vantage_probes(c1, "main", _probes(snap, T0 + 20, False))
        assert all(v.reachable == sum(x.ok for x in v.results) for v in store.reachable_from(c1, 600).by_peer.values())
        own = {p.peer_id: p.ok for p in snapshot_probes(snap)}
        assert {p: v.results[0].ok for p, v in store.reachable_from(c1, 600).by_peer.items()} == own


class _HangingClient:
    """A DHT client whose bootstrap never answers (a black-holed network)."""

    async def bootstrap(self, addresses, *, timeout=None):
        import trio

        await trio.sleep_forever()


async def test_a_round_whose_deadline_came_before_any_probe_stores_nothing(tmp_path, autojump_clock):
    from monitor.config import SwarmConfig
    from monitor.crawl.crawler import ReachabilityCache
    from monitor.crawl.vantage import probe_round

    db = tmp_path / "m.db"
    snap = make_snapshot("s", T0)
    with StoreWriter(db) as w:
        c1 = _crawl(w, T0, snap)
        w.record_vantage_probes(c1, "eu", _probes(snap, T0 + 20, True))
    swarm = SwarmConfig(name="s", initial_peers=(), crawl_timeout=5.0)
    with Store(db) as store:
        writer = store.writer(recover=False)
        try:
            result = await probe_round(_HangingClient(), swarm, store, writer, "eu", ReachabilityCache(300))
        finally:
            writer.close()
        assert (result.stored, result.error) == (False, "no probe finished within 5 s")
        kept = store.reachable_from(c1, 600).by_peer
    assert all(next(r for r in v.results if r.vantage == "eu").ok for v in kept.values())  # earlier round intact
