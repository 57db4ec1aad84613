"""Store history reads over raw crawls: model points, server points, uptime and a server's models."""

from __future__ import annotations

import dataclasses

import pytest
from factories import T0, make_snapshot, make_snapshots

from monitor.store.history import ModelPoint
from monitor.store.sqlite import Store, StoreWriter

INTERVAL = 600.0


@pytest.fixture
def series(db_location):
    """12 crawls of swarm "test" 10 minutes apart (with churn), and one of another swarm. Yields (store, snaps)."""
    path = db_location
    store = Store(path)
    snaps = make_snapshots(count=12, interval=INTERVAL, seed=3, n_models=3, servers_per_model=10)
    with StoreWriter(path) as writer:
        for snap in snaps:
            snap.crawl_id = writer.write_snapshot(snap).id
        writer.write_snapshot(make_snapshot("other", T0, seed=4))
    yield store, snaps
    store.close()


def oracle_point(snaps, prefix) -> ModelPoint:
    """The bucket point computed straight from the snapshots: worst case for health, mean for capacity."""
    reports = [r for s in snaps for r in s.models if r.model.dht_prefix == prefix]
    online = [[x for x in r.servers if x.state == "online"] for r in reports]
    states = {r.state for r in reports}
    return ModelPoint(
        ts=0.0,
        state="broken" if "broken" in states else "degraded" if "degraded" in states else "healthy",
        blocks_covered=min(r.blocks_covered for r in reports),
        num_blocks=max(r.model.num_blocks for r in reports),
        min_online=min(r.min_online for r in reports),
        servers_online=round(sum(len(o) for o in online) / len(reports)),
        throughput=sum(x.info.throughput for o in online for x in o) / len(reports),
    )


def test_model_history_raw_points(series):
    store, snaps = series
    prefix = snaps[0].models[1].model.dht_prefix
    points = store.model_history("test", prefix, T0, T0 + 12 * INTERVAL, None)
    assert [p.ts for p in points] == [s.finished_at for s in snaps]
    for point, snap in zip(points, snaps, strict=True):
        assert point == dataclasses.replace(oracle_point([snap], prefix), ts=snap.finished_at)
    assert store.model_history("other", prefix, T0, T0 + 12 * INTERVAL, None) != points
    assert store.model_history("test", "no-such-model", 0, 2 * T0, None) == []
    assert len(store.model_history("test", prefix, T0 + INTERVAL, T0 + 3 * INTERVAL, None)) == 3  # inclusive


def test_model_history_buckets(series):
    store, snaps = series
    prefix = snaps[0].models[2].model.dht_prefix
    step = 3600.0
    points = store.model_history("test", prefix, T0, T0 + 12 * INTERVAL, step)
    buckets: dict[float, list] = {}
    for snap in snaps:
        buckets.setdefault(snap.finished_at // step * step, []).append(snap)
    assert [p.ts for p in points] == sorted(buckets)
    assert len(points) >= 2
    for point in points:
        expected = dataclasses.replace(oracle_point(buckets[point.ts], prefix), ts=point.ts)
        assert point == dataclasses.replace(expected, throughput=pytest.approx(expected.throughput))


def test_server_history(series):
    store, snaps = series
    peer = snaps[0].models[0].servers[0].peer_id  # also serves model 1
    points = store.server_history(peer, 0, 2 * T0)
    expected = [
        (s.finished_at, s.crawl_id, r.model.dht_prefix, x.state, x.start, x.end, x.info.version, x.info.throughput)
        for s in snaps
        for r in s.models
        for x in r.servers
        if x.peer_id == peer
    ]
    assert [dataclasses.astuple(p) for p in points] == sorted(expected, key=lambda e: (e[0], e[2]))
    assert {p.dht_prefix for p in points} == {snaps[0].models[0].model.dht_prefix, snaps[0].models[1].model.dht_prefix}
    assert store.server_history(peer, T0 + 1, T0 + INTERVAL - 1) == []
    assert store.server_history("12D3KooWunknown", 0, 2 * T0) == []


def oracle_uptime(snaps, peer, now, window):
    present = [s for s in snaps if any(x.peer_id == peer for r in s.models for x in r.servers)]
    if not present:
        return None
    start = max(now - window, min(s.finished_at for s in present))
    in_window = [s for s in snaps if start <= s.finished_at <= now]
    online = [
        s for s in in_window if any(x.peer_id == peer and x.state == "online" for r in s.models for x in r.servers)
    ]
    return len(online) / len(in_window) if in_window else None


def test_server_uptime(series):
    store, snaps = series
    now = snaps[-1].finished_at
    peers = {x.peer_id for s in snaps for r in s.models for x in r.servers}
    windows = (1800, 3600, 86400)
    values = []
    for peer in sorted(peers):
        uptime = store.server_uptime(peer, now, windows)
        assert uptime == {w: oracle_uptime(snaps, peer, now, w) for w in windows}, peer
        values.append(uptime[86400])
    assert 0.0 in values and any(0 < v < 1 for v in values)
    assert store.server_uptime("12D3KooWunknown", now) == {86400: None, 604800: None, 2592000: None}
    lone = snaps[0].models[0].servers[1].peer_id
    assert store.server_uptime(lone, now + 10 * 86400, (3600,)) == {3600: None}  # no crawl in the window


def test_server_models(series, tmp_path):
    store, snaps = series
    shared = snaps[0].models[0].servers[0].peer_id
    last_with_peer = [s for s in snaps if any(x.peer_id == shared for r in s.models for x in r.servers)][-1]
    rows = store.server_models(shared)
    expected = [
        (r.model, x) for r in last_with_peer.models for x in r.servers if x.peer_id == shared
    ]  # the newest crawl that lists the peer, in model order
    assert [(m.model, m.server) for m in rows] == expected
    assert {(m.swarm, m.crawl_id, m.ts) for m in rows} == {
        ("test", last_with_peer.crawl_id, last_with_peer.finished_at)
    }
    assert store.server_models("12D3KooWunknown") == []


def test_server_models_after_the_peer_left(series):
    store, snaps = series
    shared = snaps[0].models[0].servers[0].peer_id
    before = store.server_models(shared)
    assert before
    later = make_snapshot(t=T0 + 20 * INTERVAL, seed=3, step=20, n_models=3, servers_per_model=10)
    for report in later.models:
        report.servers = [x for x in report.servers if x.peer_id != shared]
    with StoreWriter(store.location) as writer:
        writer.write_snapshot(later)
    assert store.latest_snapshot("test").finished_at == later.finished_at
    assert store.server_models(shared) == before  # still its last rows, dated by their crawl ("last seen")
