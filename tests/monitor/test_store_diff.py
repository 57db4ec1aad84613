"""monitor.store.diff.diff_snapshots (pure) and Store.diff (loads two crawls)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
from factories import T0, make_snapshot, make_snapshots

from monitor.store.diff import diff_snapshots
from monitor.store.sqlite import CrawlNotFound, Store, StoreWriter


def test_identical_snapshots_have_no_changes():
    a = make_snapshot(crawl_id=1)
    d = diff_snapshots(a, dataclasses.replace(copy.deepcopy(a), crawl_id=2))
    assert (d.a, d.b) == (1, 2)
    assert d.joined == d.left == d.moved == d.state_changed == d.model_state_changed == []


def test_each_kind_of_change():
    a = make_snapshot(crawl_id=10, hostile=False)
    b = copy.deepcopy(a)
    b.crawl_id = 11
    m0, m1 = b.models[0], b.models[1]
    prefix0, prefix1 = m0.model.dht_prefix, m1.model.dht_prefix
    gone = m0.servers.pop(0)
    moved = m0.servers[0]
    moved_before = (moved.state, moved.start, moved.end)
    moved.start, moved.end = moved.start + 1, moved.end + 1
    flipped = m1.servers[0]
    flipped_before = (flipped.state, flipped.start, flipped.end)
    flipped.state = "offline" if flipped.state != "offline" else "online"
    newcomer = dataclasses.replace(m1.servers[1], peer_id="12D3KooWnewcomer")
    m1.servers.append(newcomer)
    m1.state = "healthy" if m1.state != "healthy" else "broken"
    dropped_model = b.models.pop(2)

    d = diff_snapshots(a, b)
    assert (d.a, d.b) == (10, 11)
    assert [(c.dht_prefix, c.peer_id, c.before, c.after) for c in d.joined] == [
        (prefix1, newcomer.peer_id, None, (newcomer.state, newcomer.start, newcomer.end))
    ]
    left_keys = {(c.dht_prefix, c.peer_id) for c in d.left}
    assert (prefix0, gone.peer_id) in left_keys
    assert {(dropped_model.model.dht_prefix, r.peer_id) for r in dropped_model.servers} <= left_keys
    assert all(c.after is None for c in d.left)
    assert [(c.peer_id, c.before, c.after) for c in d.moved] == [
        (moved.peer_id, moved_before, (moved.state, moved.start, moved.end))
    ]
    assert [(c.peer_id, c.before, c.after) for c in d.state_changed] == [
        (flipped.peer_id, flipped_before, (flipped.state, flipped.start, flipped.end))
    ]
    assert d.model_state_changed == sorted(
        [(prefix1, a.models[1].state, m1.state), (dropped_model.model.dht_prefix, dropped_model.state, None)]
    )
    for changes in (d.joined, d.left, d.moved, d.state_changed):
        assert changes == sorted(changes, key=lambda c: (c.dht_prefix, c.peer_id))


def test_diff_is_antisymmetric_for_joins_and_leaves():
    a, b = make_snapshots(count=2)
    forward, backward = diff_snapshots(a, b), diff_snapshots(b, a)
    assert {(c.dht_prefix, c.peer_id) for c in forward.joined} == {(c.dht_prefix, c.peer_id) for c in backward.left}
    assert {(c.dht_prefix, c.peer_id) for c in forward.left} == {(c.dht_prefix, c.peer_id) for c in backward.joined}
    assert forward.left, "churn should make some server leave"


def test_store_diff_loads_crawls(db_location):
    path = db_location
    store = Store(path)
    a, b = make_snapshots(count=2)
    with StoreWriter(path) as writer:
        ida, idb = writer.write_snapshot(a).id, writer.write_snapshot(b).id
        failed = writer.begin_crawl("test", T0 + 500)
        writer.fail_crawl(failed, "boom")
    assert store.diff(ida, idb) == diff_snapshots(
        dataclasses.replace(a, crawl_id=ida), dataclasses.replace(b, crawl_id=idb)
    )
    with pytest.raises(CrawlNotFound):
        store.diff(ida, failed)
    with pytest.raises(CrawlNotFound):
        store.diff(999, idb)
    store.close()
