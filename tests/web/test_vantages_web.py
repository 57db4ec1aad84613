"""Vantage points on the web: "reachable from k of n" in the model and server documents and pages, the
/vantages page and its twin, is_reachable naming the vantage that answered; names from the store escaped."""

from __future__ import annotations

import dataclasses
import select

import pytest
from web_harness import NOW, SWARM, build_store, serve, served

from monitor.snapshot import Reachability
from monitor.store.rows import snapshot_probes
from monitor.store.sqlite import StoreWriter
from monitor.web.changes import PgChangeWatch
from monitor.web.context import CTX

HOSTILE = "<b>x</b>"  # a vantage name only a hostile writer of the database could store: it must be escaped


@pytest.fixture(scope="module")
def fx(web_db):
    """The web fixture's crawls; the crawling vantage "main" and two more, "eu" (reaches every server the crawl
    probed) and the hostile one (reaches none), each on the newest good crawl of SWARM."""
    fixture = build_store(web_db)
    crawl_id = fixture.crawl_ids[-1]
    probes = snapshot_probes(fixture.snapshots[-1])
    with StoreWriter(web_db) as w:
        w.conn.execute("UPDATE crawls SET vantage = 'main' WHERE id = ?", (crawl_id,))
        rows = [dataclasses.replace(p, checked_at=NOW - 5) for p in probes]
        own = (
            "INSERT INTO vantage_probes (crawl_id, vantage, peer_id, ok, checked_at, joining) VALUES (?, ?, ?, ?, ?, ?)"
        )
        w.conn.executemany(own, [(crawl_id, "main", p.peer_id, int(p.ok), p.checked_at, 0) for p in probes])
        w.record_vantage_probes(crawl_id, "eu", [dataclasses.replace(p, ok=True, error=None) for p in rows])
        w.record_vantage_probes(crawl_id, HOSTILE, [dataclasses.replace(p, ok=False, error="<i>no</i>") for p in rows])
    return fixture


@pytest.fixture(scope="module")
def probed(fx) -> dict[str, bool]:
    """The servers the newest crawl probed, and whether the crawling vantage reached them."""
    return {p.peer_id: p.ok for p in snapshot_probes(fx.snapshots[-1])}


def _probed_peer(probed: dict[str, bool], ok: bool) -> str:
    return next(peer for peer, reached in probed.items() if reached is ok)


def test_model_document_says_reachable_from_k_of_n(live, fx, probed):
    report = fx.snapshots[-1].models[0]
    doc = live.get(f"/api/v1/models/{report.model.dht_prefix}?swarm={SWARM}").json()
    rows = {r["peer_id"]: r for r in doc["model"]["server_rows"]}
    checked = 0
    for peer, ok in probed.items():
        if peer not in rows:
            continue
        rf = rows[peer]["reachable_from"]
        assert [v["vantage"] for v in rf["vantages"]] == sorted([HOSTILE, "eu", "main"])
        assert (rf["reachable"], rf["of"]) == (1 + ok, 3)
        checked += 1
    assert checked
    unprobed = [r for r in rows.values() if r["peer_id"] not in probed]
    assert all(r["reachable_from"] is None for r in unprobed)


def test_vantages_twin_lists_every_vantage_and_the_split_servers_first(live, fx, probed):
    doc = live.get(f"/api/v1/vantages?swarm={SWARM}").json()
    assert doc["crawl_id"] == fx.crawl_ids[-1] and doc["vantage"] == "main"
    by_name = {v["vantage"]: v for v in doc["vantages"]}
    assert set(by_name) == {HOSTILE, "eu", "main"}
    assert by_name["eu"]["reached"] == by_name["eu"]["servers"] == len(probed)
    assert by_name[HOSTILE]["reached"] == 0
    assert doc["split"] == len(probed)  # eu reaches every server and the hostile one none: all split
    assert [s["peer_id"] for s in doc["servers"]] and all(s["split"] for s in doc["servers"])


def test_pages_show_k_of_n_and_escape_vantage_names(live, fx, probed):
    page = live.get(f"/vantages?swarm={SWARM}").text
    assert "&lt;b&gt;x&lt;/b&gt;" in page and HOSTILE not in page
    assert "&lt;i&gt;no&lt;/i&gt;" in page and "<i>no</i>" not in page
    assert "reachable from some vantage points only" in page
    peer = _probed_peer(probed, True)
    server = live.get(f"/servers/{peer}").text
    assert "Reachable from 2 of 3 vantage points" in server and HOSTILE not in server
    report = next(m for m in fx.snapshots[-1].models if any(r.peer_id == peer for r in m.servers))
    model = live.get(f"/models/{report.model.dht_prefix}?swarm={SWARM}").text
    assert 'title="reachable from 2 of 3 vantage points">2/3</a>' in model


def ask_is_reachable(fx, peer: str, *, store_read_fails: bool = False) -> dict:
    """``/api/v1/is_reachable/{peer}`` from an app whose own probe reaches every peer."""

    async def prober(peer_id: str) -> Reachability:
        return Reachability(peer_id, ok=True, checked_at=NOW, latency=0.01)

    def broken(*_args):
        raise OSError("database gone")

    live, store = serve(fx.path, prober=prober)
    try:
        if store_read_fails:
            store.peer_vantage_results = broken
        return live.get(f"/api/v1/is_reachable/{peer}").json()
    finally:
        live.close()
        store.close()


def test_is_reachable_names_its_vantage_and_what_the_others_recorded(fx, probed):
    body = ask_is_reachable(fx, _probed_peer(probed, True))
    assert body["success"] is True and body["vantage"] == "main"
    assert {v["vantage"]: v["ok"] for v in body["recorded"]["vantages"]} == {"main": True, "eu": True, HOSTILE: False}


def notified(app) -> None:
    """On PostgreSQL, wait (at most 10 s) until the commit's NOTIFY has reached the web's change watch: it is
    delivered asynchronously, unlike SQLite's data_version, which a reader sees at once."""
    watch = getattr(app.app[CTX].reader, "_watch", None)
    if isinstance(watch, PgChangeWatch) and watch._conn is not None:
        select.select([watch._conn.fileno()], [], [], 10)


def test_a_page_cached_before_a_probe_round_shows_the_round_after_it(fx, web_db, probed):
    """Pages are cached per crawl: a probe round written between crawls must still reach them."""
    peer = _probed_peer(probed, True)
    report = next(m for m in fx.snapshots[-1].models if any(r.peer_id == peer for r in m.servers))
    model = f"/api/v1/models/{report.model.dht_prefix}?swarm={SWARM}"  # a document cached per crawl

    def of(doc: dict) -> dict:
        return next(r for r in doc["model"]["server_rows"] if r["peer_id"] == peer)["reachable_from"]

    try:
        with served(fx.path) as app:
            before = of(app.get(model).json())
            with StoreWriter(web_db, recover=False) as w:
                w.record_vantage_probes(fx.crawl_ids[-1], "asia", [Reachability(peer, ok=True, checked_at=NOW - 1)])
            notified(app)
            after = of(app.get(model).json())
            page = app.get(f"/vantages?swarm={SWARM}").text
    finally:  # the module's store is shared: leave it as the other tests expect it
        with StoreWriter(web_db, recover=False) as w, w.transaction() as conn:
            conn.execute("DELETE FROM vantage_probes WHERE vantage = 'asia'")
    assert before["of"] == 3 and after["of"] == 4 and "asia" in page


def test_metrics_per_vantage_point(live, fx, probed):
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(live.get("/metrics").text)}
    probed_by = {
        s.labels["vantage"]: s.value
        for s in families["petals_vantage_servers_probed"].samples
        if s.labels["swarm"] == SWARM
    }
    reached_by = {
        s.labels["vantage"]: s.value
        for s in families["petals_vantage_servers_reached"].samples
        if s.labels["swarm"] == SWARM
    }
    assert probed_by == {"main": len(probed), "eu": len(probed), HOSTILE: len(probed)}
    assert reached_by == {"main": sum(probed.values()), "eu": len(probed), HOSTILE: 0}
    split = {s.labels["swarm"]: s.value for s in families["petals_servers_reachable_split"].samples}
    assert split[SWARM] == len(probed)


def test_is_reachable_answers_from_its_probe_when_the_store_cannot_be_read(fx, probed):
    body = ask_is_reachable(fx, _probed_peer(probed, True), store_read_fails=True)
    assert (body["success"], body["vantage"], body["recorded"]) == (True, "main", None)
