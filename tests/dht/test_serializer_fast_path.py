"""``loads_dictionary`` (msgpack's C unpacker for plain FIND dictionaries) must agree with the strict ``loads``
on every input: same value, or the same DecodeError message. Nothing else may differ, since the fast path
only answers for a shape the strict decoder accepts identically and hands everything else to it."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dht.errors import DecodeError
from dht.serializer import EXT_DICTIONARY, dumps, loads, loads_dictionary
from dht.value import DHTValue, DictionaryValue


class _Ext50:
    """Wraps an arbitrary payload in ext 0x50, to write dictionaries hivemind would never produce."""

    MSGPACK_EXT_CODE = EXT_DICTIONARY

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def packb(self) -> bytes:
        return self.payload


def _outcome(decode, raw: bytes):
    try:
        value = decode(raw)
    except DecodeError as e:
        return ("error", str(e))
    if isinstance(value, DictionaryValue):
        items = [(k, v.payload, v.expiration) for k, v in value.items()]
        return ("dictionary", value.maxsize, value.latest_expiration, repr(items))
    return ("value", repr(value))


def _same(raw: bytes) -> None:
    assert _outcome(loads_dictionary, raw) == _outcome(loads, raw)


numbers = st.one_of(
    st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=True), st.just(math.inf), st.booleans(), st.none()
)
subkeys = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=8),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.lists(st.integers(0, 3), max_size=2),  # unhashable: both must refuse it the same way
)
payloads = st.one_of(st.binary(max_size=64), st.text(max_size=8), st.integers(0, 5))
items = st.one_of(
    st.tuples(subkeys, payloads, numbers).map(list),
    st.lists(st.integers(0, 3), max_size=4),  # not [subkey, value, expiration]
)
packed = st.one_of(
    st.tuples(numbers, numbers, st.lists(items, max_size=12)).map(list),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=3),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packed)
def test_agrees_with_strict_decoder_on_any_dictionary_payload(payload):
    _same(dumps(_Ext50(dumps(payload))))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packed, st.data())
def test_agrees_with_strict_decoder_on_mutated_and_truncated_bytes(payload, data):
    raw = bytearray(dumps(_Ext50(dumps(payload))))
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    _same(bytes(raw))
    _same(bytes(raw[: data.draw(st.integers(0, len(raw)))]))
    _same(bytes(raw) + b"\x00")  # trailing bytes


def test_real_dictionary_decodes_identically():
    value = DictionaryValue()
    for i in range(60):
        value.store(f"Qm{i:044d}", DHTValue(bytes([i]) * 300, 1.7e9 + i), None)
    raw = dumps(value)
    assert _outcome(loads_dictionary, raw) == _outcome(loads, raw)
    assert len(loads_dictionary(raw)) == 60


def test_shapes_the_fast_path_leaves_to_the_strict_decoder():
    deep_subkey = [[[[[[0]]]]]]
    nested_too_deep = b"\x91" * 40 + b"\x90"
    cases = [
        dumps(_Ext50(dumps([0, 1.0, [[deep_subkey, b"v", 1.0]]]))),  # unhashable, nested subkey
        dumps(_Ext50(dumps([0, 1.0, [[("t",), b"v", 1.0]]]))),  # a tuple (ext 0x40) inside the dictionary
        dumps(_Ext50(dumps([0, 1.0, []]) + b"\xc0")),  # trailing bytes inside the ext
        dumps(_Ext50(b"\x93\x00\xcb" + b"\x00" * 8 + nested_too_deep)),  # items nested past the depth limit
        dumps(_Ext50(dumps([0, 1.0, [["k", b"v", 1.0], ["k", b"w", 2.0]]]))),  # a repeated subkey: newest wins
        dumps([1, 2, 3]),  # not a dictionary at all
        b"\xa2\xff\xfe",  # invalid UTF-8
        b"",
    ]
    for raw in cases:
        _same(raw)
    repeated = loads_dictionary(cases[4])
    assert repeated["k"].payload == b"w"
