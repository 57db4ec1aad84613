"""Routing table: bucket splits (k=20, b=5), replacements, nearest-by-XOR, id/peer bookkeeping."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dht.routing import MAX_ID, RoutingTable, as_node_id, node_id_bytes, xor_distance

HIGH = 1 << 159  # IDs with the top bit set are far from an own ID of 0


def test_id_conversions(vectors):
    assert as_node_id(b"") == 0
    assert as_node_id(b"\x01") == 1
    assert node_id_bytes(1) == b"\x00" * 19 + b"\x01"
    with pytest.raises(ValueError):
        as_node_id(b"\x01" * 21)
    with pytest.raises(ValueError):
        as_node_id(MAX_ID)
    cases = vectors["xor_distance"]
    assert cases
    for case in cases:
        distance = xor_distance(bytes.fromhex(case["a_hex"]), bytes.fromhex(case["b_hex"]))
        assert node_id_bytes(distance).hex() == case["xor_distance_20_bytes"]


def test_small_table_keeps_everything_and_nearest_is_sorted():
    table = RoutingTable(0)
    rng = random.Random(1)
    ids = [rng.randrange(MAX_ID) for _ in range(15)]
    for n, node in enumerate(ids):
        assert table.add_or_update(node, f"peer{n}") is None
    key = rng.randrange(MAX_ID)
    nearest = table.nearest(key, k=5)
    assert [node for node, _ in nearest] == sorted(ids, key=lambda i: i ^ key)[:5]
    assert table.peer_id(ids[3]) == "peer3" and table.node_id("peer3") == ids[3]
    assert len(table) == 15


def test_own_id_is_never_added_or_returned():
    table = RoutingTable(12345)
    assert table.add_or_update(12345, "me") is None
    assert 12345 not in table and len(table) == 0
    table.add_or_update(7, "p")
    assert table.nearest(12345) == [(7, "p")]


def test_exclude_requester():
    table = RoutingTable(0)
    for n in range(1, 6):
        table.add_or_update(n, f"p{n}")
    assert [n for n, _ in table.nearest(0, k=3, exclude=1)] == [2, 3, 4]
    assert [n for n, _ in table.nearest(0, k=3, exclude=node_id_bytes(2))] == [1, 3, 4]
    assert [n for n, _ in table.nearest(0, k=3, exclude=[1, 2])] == [3, 4, 5]
    assert table.nearest(0, k=0) == []


def test_bucket_covering_own_id_splits():
    table = RoutingTable(0, bucket_size=2, depth_modulo=5)
    for node in (HIGH + 1, HIGH + 2, 1):  # the root bucket covers own ID 0: it splits
        assert table.add_or_update(node, str(node)) is None
    assert len(table.buckets) == 2
    assert len(table) == 3


def test_full_far_bucket_at_depth_multiple_of_b_does_not_split():
    """Depth 0 splits (covers own id); depth 1 right half is far, depth 1 % 5 != 0 so it still splits,
    ... until depth 5, a multiple of b: there a full bucket keeps newcomers as replacements."""
    table = RoutingTable(0, bucket_size=2, depth_modulo=5)
    base = HIGH  # all in the far half; they share the top 5 bits 10000 with each other
    same_prefix = [base + i for i in (1, 2, 3, 4)]
    assert table.add_or_update(same_prefix[0], "a") is None
    assert table.add_or_update(same_prefix[1], "b") is None
    to_ping = table.add_or_update(same_prefix[2], "c")
    far_bucket = table.buckets[table.bucket_index(base)]
    assert far_bucket.depth == 5
    assert to_ping == (same_prefix[0], "a")  # least-recently updated
    assert same_prefix[2] in far_bucket.replacements
    assert [n for n, _ in table.nearest(base, k=10)] == same_prefix[:2]  # replacements are not returned
    # a second newcomer asks to ping the next LRU entry, not the one already being pinged
    assert table.add_or_update(same_prefix[3], "d") == (same_prefix[1], "b")
    # the pinged node failed: drop it, the most recent replacement takes its place
    assert table.remove(same_prefix[0]) == "a"
    assert [n for n, _ in table.nearest(base, k=10)] == [same_prefix[1], same_prefix[3]]
    assert table.peer_id(same_prefix[2]) == "c"  # still known as a replacement


def test_depth_not_multiple_of_b_splits_far_buckets():
    table = RoutingTable(0, bucket_size=2, depth_modulo=5)
    far = [HIGH, HIGH + (1 << 157), HIGH + (1 << 156)]  # bucket [HIGH, MAX) splits twice, depth 1 and 2
    for node in far:
        assert table.add_or_update(node, str(node)) is None
    depths = sorted(bucket.depth for bucket in table.buckets)
    assert max(depths) == 3
    assert len(table) == 3  # splitting made room for all of them


def test_refresh_moves_to_most_recent():
    table = RoutingTable(0, bucket_size=2, depth_modulo=1)  # depth_modulo 1: far buckets never split
    table.add_or_update(HIGH + 1, "a")
    table.add_or_update(HIGH + 2, "b")
    table.add_or_update(HIGH + 1, "a")  # a is now the most recently updated
    assert table.add_or_update(HIGH + 3, "c") == (HIGH + 2, "b")


def test_peer_with_new_node_id_replaces_its_old_entry():
    table = RoutingTable(0)
    table.add_or_update(5, "peer")
    table.add_or_update(9, "peer")
    assert 5 not in table and table.node_id("peer") == 9 and len(table) == 1
    table.add_or_update(9, "moved")
    assert table.peer_id(9) == "moved" and table.node_id("peer") is None
    assert table.remove_peer("moved") == 9 and len(table) == 0
    assert table.remove(9) is None


@settings(max_examples=50, deadline=None)
@given(
    st.integers(0, MAX_ID - 1),
    st.lists(st.integers(0, MAX_ID - 1), min_size=1, max_size=300, unique=True),
    st.integers(0, MAX_ID - 1),
)
def test_nearest_is_exact_over_main_entries(own, ids, key):
    table = RoutingTable(own, bucket_size=4, depth_modulo=2)
    for node in ids:
        to_ping = table.add_or_update(node, node)
        if to_ping is not None and to_ping[0] % 3 == 0:
            table.remove(to_ping[0])  # simulate some failed pings
    main = [node for node, _ in table.entries()]
    assert own not in main and len(set(main)) == len(main)
    for bucket in table.buckets:
        assert len(bucket.nodes) <= 4 and len(bucket.replacements) <= 4
        assert all(bucket.covers(n) for n in list(bucket.nodes) + list(bucket.replacements))
    assert [n for n, _ in table.nearest(key, k=20)] == sorted(main, key=lambda n: n ^ key)[:20]
    # the id maps hold exactly the bucket contents
    held = {n for b in table.buckets for n in list(b.nodes) + list(b.replacements)}
    assert set(table._peer_of) == held
