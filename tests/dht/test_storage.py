"""Storage rules: hivemind's truth table (vectors `storage_rules`), the eviction-quirk choice, and limits."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dht.storage import (
    ENTRY_OVERHEAD_BYTES,
    DictionaryEntry,
    DictionaryItem,
    LocalStorage,
    RegularItem,
    StorageLimits,
    TimedStore,
)

T0 = 1767225600.0  # the frozen clock of the vectors
KEY = bytes.fromhex("4f33ccbabe54b4d8abc63580f94a948a13ce5fff")
KEY2 = bytes.fromhex("9b14d861b958d4bf27a484d3361000dfb86d791f")


def pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def label_value(label: str) -> bytes:
    """The vectors store msgpack(first word of the step label)."""
    return pack(label.split()[0])


def run_rules(rule: dict, *, eviction_quirk: bool) -> tuple[TimedStore, float]:
    """Replay one `storage_rules` scenario; assert every store result. Returns (store, final clock)."""
    store = TimedStore(eviction_quirk=eviction_quirk)
    now = T0
    for step in rule["steps"]:
        op = step[0]
        if op == "t":
            now = step[1]
        elif op == "store":
            _, label, expiration, expected = step
            assert store.store(KEY, label_value(label), expiration, now) is expected, step
        elif op == "store_subkey":
            _, subkey, label, expiration, expected = step
            assert store.store_subkey(KEY, pack(subkey), label_value(label), expiration, now) is expected, step
    return store, now


def expected_final(final: dict | None):
    if final is None:
        return None
    if "regular" in final:
        return RegularItem(bytes.fromhex(final["regular"]["$bytes"]), final["expiration"])
    dictionary = final["dictionary"]["$DictionaryDHTValue"]
    entries = tuple(
        DictionaryEntry(pack(e["subkey"]), bytes.fromhex(e["value"]["$bytes"]), e["expiration_time"])
        for e in dictionary["items"]
    )
    assert dictionary["latest_expiration_time"] == final["outer_expiration"]
    return DictionaryItem(final["outer_expiration"], entries)


def plain_rules(vectors) -> list[dict]:
    return [r for r in vectors["storage_rules"] if not r["description"].startswith("QUIRK")]


def quirk_rules(vectors) -> list[dict]:
    return [r for r in vectors["storage_rules"] if r["description"].startswith("QUIRK")]


@pytest.mark.parametrize("eviction_quirk", [False, True])
def test_truth_table_vectors(vectors, eviction_quirk):
    rules = plain_rules(vectors)
    assert len(rules) == 6
    for rule in rules:
        store, now = run_rules(rule, eviction_quirk=eviction_quirk)
        assert store.get(KEY, now) == expected_final(rule["final"]), rule["description"]


def test_quirk_vectors_reproduced_in_quirk_mode(vectors):
    regular, subkey = quirk_rules(vectors)
    store, now = run_rules(regular, eviction_quirk=True)
    assert regular["steps"][-1] == ["get", None]
    assert store.get(KEY, now) is None  # the NEWER value was dropped at the rejected expiration

    store, now = run_rules(subkey, eviction_quirk=True)
    item = store.get(KEY, now)
    assert isinstance(item, DictionaryItem)
    assert item.entries == ()  # the dictionary survives, its subkey vanished early
    assert item.to_msgpack().hex() == subkey["steps"][-1][1]


def test_quirk_not_reproduced_by_default(vectors):
    """Our documented choice: a rejected stale store never shortens the life of the newer value."""
    regular, subkey = quirk_rules(vectors)
    store, now = run_rules(regular, eviction_quirk=False)
    assert store.get(KEY, now) == RegularItem(pack("new"), T0 + 100)

    store, now = run_rules(subkey, eviction_quirk=False)
    item = store.get(KEY, now)
    assert item == DictionaryItem(T0 + 100, (DictionaryEntry(pack("a"), pack("new"), T0 + 100),))
    assert store.get(KEY, T0 + 100) is not None  # alive up to and including its expiration
    assert store.get(KEY, T0 + 100.001) is None


def test_quirk_also_shortens_a_whole_dictionary_in_quirk_mode():
    """A rejected older regular store reschedules eviction of the outer key (hivemind TimedStorage)."""
    store = TimedStore(eviction_quirk=True)
    assert store.store_subkey(KEY, pack("a"), pack("x"), T0 + 20, T0)
    assert not store.store(KEY, pack("r"), T0 + 15, T0)
    assert store.get(KEY, T0 + 16) is None
    plain = TimedStore()
    assert plain.store_subkey(KEY, pack("a"), pack("x"), T0 + 20, T0)
    assert not plain.store(KEY, pack("r"), T0 + 15, T0)
    assert plain.get(KEY, T0 + 16) is not None


def test_dictionary_packb_matches_vector(vectors):
    vector = vectors["dictionary_dht_value"]
    decoded = vector["decoded"]["$DictionaryDHTValue"]
    store = TimedStore()
    for entry in decoded["items"]:
        assert store.store_subkey(
            KEY,
            pack(entry["subkey"]),
            bytes.fromhex(entry["value"]["$bytes"]),
            entry["expiration_time"],
            vector["now_used"],
        )
    item = store.get(KEY, vector["now_used"])
    assert isinstance(item, DictionaryItem)
    assert item.latest_expiration == vector["latest_expiration_time"]
    assert item.packb().hex() == vector["packb_hex"]
    assert item.to_msgpack().hex() == vector["dumps_hex"]


def test_updated_subkey_keeps_its_slot_and_outer_expiration_is_max():
    store = TimedStore()
    for subkey, expiration in [("a", 10), ("b", 30), ("c", 20)]:
        assert store.store_subkey(KEY, pack(subkey), pack(subkey), T0 + expiration, T0)
    assert store.store_subkey(KEY, pack("a"), pack("a2"), T0 + 25, T0)
    item = store.get(KEY, T0)
    assert [e.subkey for e in item.entries] == [pack("a"), pack("b"), pack("c")]
    assert item.entries[0].value == pack("a2")
    assert item.latest_expiration == T0 + 30
    # entries expire individually; the outer expiration is not recomputed
    item = store.get(KEY, T0 + 26)
    assert [e.subkey for e in item.entries] == [pack("b")]
    assert item.latest_expiration == T0 + 30
    assert store.get(KEY, T0 + 31) is None
    assert store.num_entries == 0 and store.total_bytes == 0


def test_whole_dictionary_store_short_circuits():
    store = TimedStore()
    assert store.store_subkey(KEY, pack("b"), pack("newer b"), T0 + 50, T0)
    entries = [
        (pack("a"), pack("a"), T0 + 40),
        (pack("b"), pack("older b"), T0 + 30),  # rejected: stops the rest
        (pack("c"), pack("c"), T0 + 60),
    ]
    assert store.store_dictionary(KEY, entries, T0) is False
    item = store.get(KEY, T0)
    assert [e.subkey for e in item.entries] == [pack("b"), pack("a")]
    assert item.latest_expiration == T0 + 50


def test_whole_dictionary_store_merges_duplicates_and_accepts_empty():
    store = TimedStore()
    assert store.store_dictionary(KEY, [], T0) is True
    assert store.get(KEY, T0) is None
    entries = [(pack("a"), pack("a1"), T0 + 10), (pack("b"), pack("b"), T0 + 5), (pack("a"), pack("a2"), T0 + 20)]
    assert store.store_dictionary(KEY, entries, T0) is True
    item = store.get(KEY, T0)
    assert [(e.subkey, e.value) for e in item.entries] == [(pack("a"), pack("a2")), (pack("b"), pack("b"))]


def test_expired_whole_dictionary_entry_is_rejected_but_earlier_ones_stay():
    store = TimedStore()
    entries = [(pack("a"), pack("a"), T0 + 40), (pack("old"), pack("x"), T0 - 1), (pack("c"), pack("c"), T0 + 9)]
    assert store.store_dictionary(KEY, entries, T0) is False
    assert [e.subkey for e in store.get(KEY, T0).entries] == [pack("a")]


def test_expiration_equal_to_now_is_accepted():
    store = TimedStore()
    assert store.store(KEY, b"\x01", T0, T0)
    assert store.get(KEY, T0) == RegularItem(b"\x01", T0)


def test_cache_answers_only_if_strictly_later():
    local = LocalStorage()
    assert local.storage.store(KEY, pack("stored"), T0 + 10, T0)
    assert local.cache.store(KEY, pack("cached"), T0 + 10, T0)
    assert local.find(KEY, T0).value == pack("stored")
    assert local.cache.store(KEY, pack("cached newer"), T0 + 11, T0)
    assert local.find(KEY, T0).value == pack("cached newer")
    assert local.find(KEY2, T0) is None
    assert local.cache.store(KEY2, pack("only cached"), T0 + 5, T0)
    assert local.find(KEY2, T0) == RegularItem(pack("only cached"), T0 + 5)
    assert local.tier(True) is local.cache and local.tier(False) is local.storage


# ---------------------------------------------------------------- limits and hostile input


def key_n(n: int) -> bytes:
    return n.to_bytes(20, "big")


def test_max_entries_rejects_then_frees_after_expiry():
    store = TimedStore(StorageLimits(max_entries=3))
    for n in range(3):
        assert store.store(key_n(n), b"\x01", T0 + 10, T0)
    assert not store.store(key_n(3), b"\x01", T0 + 10, T0)
    assert not store.store_subkey(key_n(4), pack("s"), b"\x01", T0 + 10, T0)
    assert store.store(key_n(0), b"\x02", T0 + 11, T0)  # replacing does not need a new entry
    assert store.store(key_n(3), b"\x01", T0 + 30, T0 + 10.5)  # purging expired entries made room
    assert store.num_entries == 2


def test_replacing_a_value_within_limits_is_allowed():
    store = TimedStore(StorageLimits(max_entries=1, max_bytes=2 * ENTRY_OVERHEAD_BYTES + 10))
    assert store.store(KEY, b"12345", T0 + 10, T0)
    assert store.store(KEY, b"1234567890", T0 + 11, T0)
    assert not store.store(KEY, b"12345678901", T0 + 12, T0)
    assert store.get(KEY, T0).value == b"1234567890"
    assert store.store_subkey(KEY, b"\x01", b"123456789", T0 + 13, T0)  # regular -> 1-entry dictionary
    assert not store.store_subkey(KEY, b"\x02", b"1", T0 + 14, T0)  # a second entry is over max_entries


def test_value_subkey_ttl_and_nan_limits():
    store = TimedStore(StorageLimits(max_value_bytes=8, max_subkey_bytes=4, max_ttl=100.0))
    assert not store.store(KEY, b"123456789", T0 + 10, T0)
    assert not store.store_subkey(KEY, pack("abcd"), b"1", T0 + 10, T0)  # 5-byte subkey
    assert not store.store(KEY, b"1", T0 + 101, T0)
    assert not store.store(KEY, b"1", math.inf, T0)
    assert not store.store(KEY, b"1", math.nan, T0)
    assert not store.store_subkey(KEY, b"\x92\x01", b"1", T0 + 10, T0)  # truncated msgpack subkey
    assert not store.store_subkey(KEY, b"\x01\x02", b"1", T0 + 10, T0)  # two objects
    assert store.get(KEY, T0) is None
    assert store.store(KEY, b"12345678", T0 + 100, T0)
    assert store.num_entries == 1


def test_max_subkeys_per_key():
    store = TimedStore(StorageLimits(max_subkeys_per_key=2))
    assert store.store_subkey(KEY, pack(1), b"1", T0 + 10, T0)
    assert store.store_subkey(KEY, pack(2), b"1", T0 + 10, T0)
    assert not store.store_subkey(KEY, pack(3), b"1", T0 + 10, T0)
    assert store.store_subkey(KEY, pack(2), b"2", T0 + 11, T0)  # updating an existing subkey is fine


def test_bad_key_is_a_programming_error():
    with pytest.raises(ValueError):
        TimedStore().store(b"short", b"1", T0 + 1, T0)


def test_cache_tier_evicts_least_recently_used():
    cache = TimedStore(StorageLimits(max_entries=2), evict_lru=True)
    assert cache.store(key_n(1), b"1", T0 + 10, T0)
    assert cache.store(key_n(2), b"2", T0 + 10, T0)
    assert cache.get(key_n(1), T0) is not None  # key 1 is now the most recently used
    assert cache.store(key_n(3), b"3", T0 + 10, T0)
    assert cache.get(key_n(2), T0) is None
    assert cache.get(key_n(1), T0) is not None and cache.get(key_n(3), T0) is not None
    assert len(cache) == 2


def test_heap_stays_bounded_under_repeated_updates():
    store = TimedStore()
    for i in range(20_000):
        assert store.store_subkey(KEY, pack("s"), b"1", T0 + 1 + i * 1e-3, T0)
    assert len(store._heap) < 2 * 2 + 1024 + 10


def accounting_invariant(store: TimedStore) -> None:
    entries = used = 0
    for record in store._records.values():
        if record.regular is not None:
            entries += 1
            used += len(record.regular.value) + 2 * ENTRY_OVERHEAD_BYTES
        else:
            entries += len(record.entries)
            used += ENTRY_OVERHEAD_BYTES
            used += sum(len(s) + len(slot.value) + ENTRY_OVERHEAD_BYTES for s, slot in record.entries.items())
    assert (store.num_entries, store.total_bytes) == (entries, used)
    limits = store.limits
    assert store.num_entries <= limits.max_entries and store.total_bytes <= limits.max_bytes


operations = st.lists(
    st.tuples(
        st.sampled_from(["store", "store_subkey", "store_dictionary", "get", "advance"]),
        st.integers(0, 3),  # key
        st.sampled_from([pack("a"), pack("b"), pack(1), b"\xc1", b"\x92"]),  # subkey (some invalid)
        st.binary(max_size=40),
        st.one_of(st.floats(-5, 30), st.sampled_from([math.nan, math.inf, -math.inf])),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(operations, st.booleans(), st.booleans())
def test_random_operations_never_crash_and_keep_accounting(ops, quirk, lru):
    store = TimedStore(
        StorageLimits(max_entries=5, max_bytes=600, max_value_bytes=32), eviction_quirk=quirk, evict_lru=lru
    )
    now = T0
    for op, k, subkey, value, offset in ops:
        key = key_n(k)
        expiration = now + offset
        if op == "store":
            store.store(key, value, expiration, now)
        elif op == "store_subkey":
            store.store_subkey(key, subkey, value, expiration, now)
        elif op == "store_dictionary":
            store.store_dictionary(key, [(subkey, value, expiration), (pack("z"), value, expiration)], now)
        elif op == "get":
            item = store.get(key, now)
            if item is not None:
                assert item.expiration >= now
                if isinstance(item, DictionaryItem):
                    assert all(e.expiration >= now for e in item.entries)
                    msgpack.unpackb(item.to_msgpack(), ext_hook=lambda code, data: msgpack.unpackb(data))
        else:
            now += 3
        accounting_invariant(store)
