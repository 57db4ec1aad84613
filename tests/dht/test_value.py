"""DHTValue, DictionaryValue and DHTValueBuilder against hivemind's vectors (dictionary_dht_value,
search_merge, the dictionary cases of storage_rules) plus property tests. Time is always passed in."""

from __future__ import annotations

import pytest
from dht_vector_json import dictionary_from_json, from_json
from hypothesis import given, settings
from hypothesis import strategies as st

from dht.errors import DecodeError
from dht.serializer import dumps, loads
from dht.value import DHTValue, DHTValueBuilder, DictionaryValue, StoreValue, ValueWithExpiration

T = 1767225600.0  # the frozen clock of every deterministic vector


def _two_server_dictionary(case) -> DictionaryValue:
    decoded = from_json(case["decoded"])
    dictionary = DictionaryValue()
    for subkey, value in decoded.items():
        assert dictionary.store(subkey, value, now=case["now_used"])
    return dictionary


def test_dictionary_vector_built_by_storing_entries(vectors):
    case = vectors["dictionary_dht_value"]
    dictionary = _two_server_dictionary(case)
    assert [k for k, _ in dictionary.items()] == [e["subkey"] for e in case["entries"]]
    assert dictionary.latest_expiration == case["latest_expiration_time"]
    assert dictionary.packb().hex() == case["packb_hex"]
    assert dictionary.packb(now=T).hex() == case["packb_hex"]  # nothing expired yet
    assert dumps(dictionary).hex() == case["dumps_hex"]
    assert DictionaryValue.unpackb(bytes.fromhex(case["packb_hex"])) == dictionary


def test_packb_with_now_drops_expired_entries_but_keeps_latest(vectors):
    case = vectors["dictionary_dht_value"]
    dictionary = _two_server_dictionary(case)
    later = T + 200  # the second server (T+120.5) has expired, the first (T+240) has not
    pruned = DictionaryValue.unpackb(dictionary.packb(now=later))
    assert list(pruned) == [case["entries"][0]["subkey"]]
    assert pruned.latest_expiration == case["latest_expiration_time"]
    assert len(dictionary) == 2  # packb never mutates


def test_unpacking_is_frozen_expired_entries_are_kept(vectors):
    case = vectors["dictionary_dht_value"]
    parsed = loads(bytes.fromhex(case["dumps_hex"]))
    assert len(parsed.pruned(T + 10_000)) == 0
    assert len(parsed) == 2


def test_empty_dictionary_from_the_quirk_vector(vectors):
    (case,) = [c for c in vectors["storage_rules"] if "QUIRK: same for a subkey" in c["description"]]
    raw = bytes.fromhex(case["steps"][-1][1])
    empty = loads(raw)
    assert isinstance(empty, DictionaryValue) and len(empty) == 0
    assert empty.latest_expiration == T + 100
    assert dumps(DictionaryValue(latest_expiration=T + 100)) == raw


def test_store_subkey_rules_replayed(vectors):
    """The storage_rules cases made only of store_subkey steps are pure DictionaryValue rules."""
    replayed = 0
    for case in vectors["storage_rules"]:
        steps = case["steps"]
        if not steps or any(step[0] != "store_subkey" for step in steps):
            continue
        dictionary = DictionaryValue()
        for _, subkey, label, expiration, accepted in steps:
            value = label.split()[0]  # the generator stored the first word; the rest is commentary
            got = dictionary.store(subkey, DHTValue(dumps(value), expiration), now=T)
            assert got is accepted, (case["description"], subkey, label)
        expected = dictionary_from_json(case["final"]["dictionary"]["$DictionaryDHTValue"])
        assert dictionary.items() == expected.items()
        assert dictionary.latest_expiration == case["final"]["outer_expiration"]
        assert dictionary.packb() == expected.packb()
        replayed += 1
    assert replayed == 2


def test_search_merge_vector(vectors):
    case = vectors["search_merge"]
    first = from_json(case["candidate_from_node1"])
    second = from_json(case["candidate_from_node2"])
    first_bytes = first.packb()
    merged = first.merge(second, now=T)
    expected = from_json(case["merged_result"])
    assert merged.decode() == expected.value
    assert list(merged) == list(expected.value)  # peerA, peerB (kept its slot), peerC
    assert merged.latest_expiration == expected.expiration
    assert first.packb() == first_bytes  # unlike hivemind, inputs are not mutated
    # Without latest=True hivemind stops at the first unexpired candidate: here node2's.
    default = from_json(case["default_get_result"])
    assert second.decode() == default.value and second.latest_expiration == default.expiration


def test_merge_drops_expired_entries_when_given_now():
    a = DictionaryValue([("x", DHTValue(b"\x01", T + 5)), ("y", DHTValue(b"\x02", T - 1))])
    b = DictionaryValue([("z", DHTValue(b"\x03", T - 2)), ("x", DHTValue(b"\x04", T + 9))])
    merged = a.merge(b, now=T)
    assert merged.items() == [("x", DHTValue(b"\x04", T + 9))]
    assert set(a.merge(b)) == {"x", "y", "z"}  # without now nothing expires


def test_store_keeps_slot_and_latest_rises_even_on_rejection():
    d = DictionaryValue()
    assert d.store("a", DHTValue(b"1", T + 10))
    assert d.store("b", DHTValue(b"2", T + 20))
    assert d.store("a", DHTValue(b"3", T + 30))
    assert list(d) == ["a", "b"]
    assert not d.store("b", DHTValue(b"4", T + 20))  # equal expiration is rejected
    assert not d.store("c", DHTValue(b"5", T - 1), now=T)
    assert d.latest_expiration == T + 30
    assert "c" not in d


def test_maxsize_evicts_earliest_expiring():
    d = DictionaryValue(maxsize=2)
    d.store("a", DHTValue(b"", T + 30))
    d.store("b", DHTValue(b"", T + 10))
    assert not d.store("c", DHTValue(b"", T + 5))  # evicted right away: it expires first
    d.store("e", DHTValue(b"", T + 40))
    assert list(d) == ["a", "e"]


def test_unhashable_subkey_is_refused():
    with pytest.raises(TypeError):
        DictionaryValue().store([1], DHTValue(b"", T))


def test_dht_value_basics():
    value = DHTValue(dumps((2, 10.0, {})), T + 240)
    assert value.is_valid(T) and value.is_valid(T + 240) and not value.is_valid(T + 240.001)
    assert value.ttl(T) == 240
    assert value.decode() == (2, 10.0, {})
    assert DHTValue(b"\xd5\x33\x01\x02", T).decode(allow_unknown_ext=True) == b"\x01\x02"
    with pytest.raises(DecodeError):
        DHTValue(b"\xc1", T).decode()
    assert DHTValue(bytearray(b"x"), 5).payload == b"x"
    assert isinstance(DHTValue(b"", 5).expiration, float)


def test_builder():
    info = (2, 2854.5, {"start_block": 0})
    built = DHTValueBuilder.from_object(info).ttl_seconds(240, now=T).build()
    assert built == StoreValue(dumps(info), T + 240, in_cache=False, whole_dictionary=False)
    assert built.value == DHTValue(dumps(info), T + 240)
    cached = DHTValueBuilder.from_bytes(b"\xa1x").expiration_time(T + 1).cached().build()
    assert cached.in_cache and cached.payload == b"\xa1x"
    with pytest.raises(ValueError, match="expiration"):
        DHTValueBuilder.from_bytes(b"\xc0").build()
    base = DHTValueBuilder.from_bytes(b"\xc0")
    base.cached()
    assert base.in_cache is False  # immutable


def test_builder_and_store_value_for_whole_dictionaries(vectors):
    dictionary = loads(bytes.fromhex(vectors["dictionary_dht_value"]["dumps_hex"]))
    built = DHTValueBuilder.from_object(dictionary).cached().build()
    assert built.whole_dictionary and built.in_cache
    assert built.expiration == dictionary.latest_expiration
    assert built.payload.hex() == vectors["dictionary_dht_value"]["dumps_hex"]
    assert StoreValue.of(dictionary).whole_dictionary
    assert StoreValue.of(DHTValue(b"x", 1.0)) == StoreValue(b"x", 1.0)
    with pytest.raises(TypeError):
        StoreValue.of(b"raw")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ properties

subkeys = st.text(max_size=6) | st.integers(-5, 5) | st.tuples(st.text(max_size=3), st.integers(0, 3))
expirations = st.floats(min_value=T - 100, max_value=T + 1000, allow_nan=False)
entries = st.lists(st.tuples(subkeys, st.binary(max_size=12), expirations), max_size=8)


def _build(rows) -> DictionaryValue:
    d = DictionaryValue()
    for subkey, payload, exp in rows:
        d.store(subkey, DHTValue(payload, exp))
    return d


@settings(deadline=None)
@given(entries)
def test_packb_roundtrip(rows):
    d = _build(rows)
    again = DictionaryValue.unpackb(d.packb())
    assert again == d and list(again) == list(d)
    assert loads(dumps(d)) == d


@settings(deadline=None)
@given(entries, entries, st.none() | expirations)
def test_merge_is_newest_wins_per_subkey(rows_a, rows_b, now):
    a, b = _build(rows_a), _build(rows_b)
    merged = a.merge(b, now=now)
    for subkey in set(a) | set(b):
        candidates = [d[subkey] for d in (a, b) if subkey in d]
        best = max(c.expiration for c in candidates)
        if now is not None and best < now:
            assert subkey not in merged
        else:
            assert merged[subkey].expiration == best
    assert set(merged) <= set(a) | set(b)
    assert merged.latest_expiration == max(a.latest_expiration, b.latest_expiration)
    reverse = b.merge(a, now=now)
    assert {k: v.expiration for k, v in merged.items()} == {k: v.expiration for k, v in reverse.items()}


@settings(deadline=None)
@given(entries, entries, st.none() | expirations)
def test_merging_copies_that_share_entries_equals_merging_separate_decodes(rows_a, rows_b, now):
    """Replicas decoded once share their DHTValue objects (dht.decode_memo); merge skips those: same result."""
    a, b = _build(rows_a), _build(rows_b)
    shared = a.copy()
    for subkey, value in b.items():
        shared.store(subkey, value)  # b's entries, some now the very same objects as in a
    separate = DictionaryValue.unpackb(shared.packb())  # equal content, no object shared with a
    fast, slow = a.merge(shared, now=now), a.merge(separate, now=now)
    assert fast == slow and list(fast) == list(slow)
    assert fast.latest_expiration == slow.latest_expiration


def test_value_with_expiration_is_a_tuple():
    assert ValueWithExpiration("v", 1.0) == ("v", 1.0)
