"""DHTID against hivemind's own values (vectors.json → dhtid, dhtid_fixed_width, xor_distance, subkeys)."""

from __future__ import annotations

import hashlib

import pytest
from dht_vector_json import from_json
from hypothesis import given, settings
from hypothesis import strategies as st

from dht.ids import DHTID, dhtid_of, hashed_input, longest_common_prefix_length, xor_distance
from dht.protocol import subkey_tag


def test_every_dhtid_vector(vectors):
    for case in vectors["dhtid"]:
        key = from_json(case["key"])
        assert hashed_input(key).hex() == case["hashed_input_hex"], case["description"]
        assert dhtid_of(key).hex() == case["dhtid_to_bytes_hex"], case["description"]
        uid = DHTID.from_key(key)
        assert uid == int(case["dhtid_int_hex"], 16)
        assert uid.to_bytes().hex() == case["dhtid_to_bytes_hex"]


def test_bytes_key_is_hashed_raw_and_collides_with_its_msgpack_str():
    assert DHTID.from_key(b"\xa3abc") == DHTID.from_key("abc")
    assert DHTID.from_key(b"abc") != DHTID.from_key("abc")
    assert dhtid_of(b"abc") == hashlib.sha1(b"abc").digest()


def test_fixed_width_layout(vectors):
    for case in vectors["dhtid_fixed_width"]:
        if "int_hex" in case:
            uid = DHTID(int(case["int_hex"], 16))
            assert uid.to_bytes().hex() == case["to_bytes_hex"]
            assert DHTID.from_bytes(bytes.fromhex(case["to_bytes_hex"])) == uid
        else:
            assert DHTID.from_bytes(b"") == case["value"] == 0


def test_xor_distance_and_common_prefix(vectors):
    for case in vectors["xor_distance"]:
        a, b = DHTID.from_bytes(bytes.fromhex(case["a_hex"])), bytes.fromhex(case["b_hex"])
        assert xor_distance(a, b) == int(case["xor_distance_hex"], 16)
        assert a.xor_distance(b).to_bytes(20, "big").hex() == case["xor_distance_20_bytes"]
        assert longest_common_prefix_length(a, b) == case["longest_common_prefix_bits"]


def test_subkey_wire_bytes(vectors):
    for case in vectors["subkeys"]:
        if "wire_subkey_hex" not in case:
            continue
        assert subkey_tag(case["subkey"]).hex() == case["wire_subkey_hex"], case["description"]
        if case["dhtid_if_used_as_a_key_hex"]:
            assert dhtid_of(case["subkey"]).hex() == case["dhtid_if_used_as_a_key_hex"]


def test_range_is_enforced():
    with pytest.raises(ValueError):
        DHTID(-1)
    with pytest.raises(ValueError):
        DHTID(2**160)
    with pytest.raises(ValueError):
        DHTID.from_bytes(b"\x01" + b"\x00" * 20)


def test_random_ids_are_in_range_and_distinct():
    seen = {DHTID.random() for _ in range(50)}
    assert len(seen) == 50
    assert all(0 <= uid < 2**160 for uid in seen)
    fixed = DHTID.random(lambda n: b"\x00" * n)
    assert fixed == DHTID.from_bytes(hashlib.sha1(b"\x00" * 32).digest())


def test_ordering_hash_and_repr():
    low, high = DHTID(1), DHTID(2)
    assert low < high and sorted([high, low]) == [low, high]
    assert {low: "x"}[DHTID.from_bytes(b"\x01")] == "x"
    assert repr(low) == "DHTID(" + "00" * 19 + "01)"


def test_common_prefix_edges():
    uid = DHTID(12345)
    assert longest_common_prefix_length(uid, uid) == 160
    assert longest_common_prefix_length(DHTID(0), DHTID(2**159)) == 0
    assert longest_common_prefix_length(DHTID(0), DHTID(1), DHTID(2)) == 158


@settings(deadline=None)
@given(st.binary(min_size=20, max_size=20), st.binary(min_size=20, max_size=20))
def test_bytes_roundtrip_and_xor_symmetry(a_raw, b_raw):
    a, b = DHTID.from_bytes(a_raw), DHTID.from_bytes(b_raw)
    assert a.to_bytes() == a_raw
    assert xor_distance(a, b) == xor_distance(b, a)
    assert (xor_distance(a, b) == 0) == (a == b)
    lcp = longest_common_prefix_length(a, b)
    assert lcp == 160 or xor_distance(a, b) >> (159 - lcp) == 1
