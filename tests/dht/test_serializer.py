"""hivemind's msgpack dialect: every vector byte for byte, differential tests against msgpack-python used
the way hivemind uses it, and a strict decoder that only ever raises DecodeError."""

from __future__ import annotations

import contextlib
import math
import struct
from collections import namedtuple
from enum import IntEnum

import msgpack
import pytest
from dht_vector_json import from_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dht.errors import DecodeError
from dht.serializer import DecodeLimits, TensorDescriptor, dumps, loads
from dht.value import DictionaryValue

# ------------------------------------------------------------------------------- a reference: msgpack-python


def _reference_default(obj):
    if isinstance(obj, tuple):
        return msgpack.ExtType(0x40, reference_dumps(list(obj)))
    raise TypeError(type(obj))


def reference_dumps(obj) -> bytes:
    """What hivemind's MSGPackSerializer.dumps does for values without registered ext types."""
    return msgpack.packb(obj, use_bin_type=True, strict_types=True, default=_reference_default)


def _reference_ext_hook(code, data):
    if code == 0x40:
        return tuple(msgpack.unpackb(data, ext_hook=_reference_ext_hook, raw=False))
    return data


def reference_loads(data: bytes):
    return msgpack.unpackb(data, ext_hook=_reference_ext_hook, raw=False)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
# Sizes around every format boundary: fixstr/str8/str16, bin8/bin16, fixext 1/2/4/8/16 and ext8/ext16.
boundary_text = st.sampled_from([0, 1, 31, 32, 255, 256, 65535, 65536]).map(lambda n: "x" * n)
boundary_bytes = st.sampled_from([0, 1, 255, 256, 65535, 65536]).map(lambda n: b"y" * n)
values = st.recursive(
    scalars | boundary_text | boundary_bytes,
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.text(max_size=8) | st.binary(max_size=8), children, max_size=6)
        | st.lists(children, max_size=6).map(tuple)
    ),
    max_leaves=25,
)


# ------------------------------------------------------------------------------- vectors


def test_every_positive_msgpack_vector(vectors):
    checked = 0
    for case in vectors["msgpack"]:
        if "value" not in case:
            continue
        value = from_json(case["value"])
        raw = bytes.fromhex(case["hex"])
        assert dumps(value) == raw, case["description"]
        decoded = loads(raw)
        assert type(decoded).__name__ == case["decoded_type"]
        if isinstance(value, float) and value == 0:
            assert math.copysign(1, decoded) == math.copysign(1, value)
        assert decoded == value
        checked += 1
    assert checked == 28


def test_int_map_key_encodes_but_does_not_decode(vectors):
    (case,) = [c for c in vectors["msgpack"] if "loads_error" in c]
    assert dumps({1: "a"}).hex() == case["hex"]
    with pytest.raises(DecodeError, match="map key of type int"):
        loads(bytes.fromhex(case["hex"]))


def test_unknown_ext_is_an_error_unless_allowed(vectors):
    (case,) = [c for c in vectors["msgpack"] if "unknown ext" in c["description"]]
    raw = bytes.fromhex(case["hex"])
    with pytest.raises(DecodeError, match="unknown ext type 51"):
        loads(raw)
    assert loads(raw, allow_unknown_ext=True) == from_json(case["decoded"])


def test_dictionary_dht_value_vector(vectors):
    case = vectors["dictionary_dht_value"]
    value = loads(bytes.fromhex(case["dumps_hex"]))
    assert isinstance(value, DictionaryValue)
    assert dumps(value).hex() == case["dumps_hex"]
    assert value.packb().hex() == case["packb_hex"]
    assert value == from_json(case["decoded"])


def test_petals_values_byte_for_byte(vectors):
    """ServerInfo tuples, ModelInfo maps and the parsing inputs: the values Petals actually stores."""
    petals = vectors["petals"]
    cases = [(c["to_tuple"], c["hex"]) for c in petals["server_info"]]
    cases += [(c["to_dict"], c["hex"]) for c in petals["model_info"]]
    cases += [(c["input"], c["hex"]) for c in petals["server_info_parsing"]]
    for value_json, hex_ in cases:
        value = from_json(value_json)
        assert dumps(value).hex() == hex_
        assert loads(bytes.fromhex(hex_)) == value
    assert len(cases) == 9


def test_tensor_descriptor_from_live_rpc_info_roundtrips(live_trace):
    (call,) = [
        c
        for c in live_trace["calls"]
        if c["handler"] == "TransformerConnectionHandler.rpc_info" and c["request"].get("uid")
    ]
    raw = bytes.fromhex(call["response"]["serialized_info_hex"])
    info = loads(raw)
    (descriptor,) = info["outputs_schema"]
    assert isinstance(descriptor, TensorDescriptor)
    assert descriptor.size == (None, 16384)
    assert descriptor.dtype == "torch.bfloat16"
    assert dumps(info) == raw


# ------------------------------------------------------------------------------- encoding rules


@pytest.mark.parametrize(
    ("value", "hex_"),
    [
        ((), "d44090"),
        ((1, 2), "c70340920102"),
        ((1, 2, 3), "d64093010203"),
        ((1,) * 7, "d7409701010101010101"),
        ((1,) * 15, "d8409f" + "01" * 15),
        (-32, "e0"),
        (-33, "d0df"),
        (255, "ccff"),
        (-(2**15), "d18000"),
        (2**64 - 1, "cfffffffffffffffff"),
        (float("-inf"), "cbfff0000000000000"),
    ],
)
def test_encoding_formats(value, hex_):
    assert dumps(value).hex() == hex_


def test_ext16_and_ext32_containers():
    big = (b"z" * 300,)
    assert dumps(big)[:4] == b"\xc8\x01\x30\x40"  # payload 91 c5 012c + 300 bytes = 304
    huge = (b"z" * 70000,)
    assert dumps(huge)[:6] == b"\xc9\x00\x01\x11\x76\x40"
    assert loads(dumps(huge)) == huge


def test_namedtuple_is_a_tuple_like_in_hivemind():
    Pair = namedtuple("Pair", "a b")
    assert dumps(Pair(1, 2)) == dumps((1, 2))


@pytest.mark.parametrize("bad", [{1, 2}, object(), IntEnum("E", "A").A, type("S", (str,), {})("x")])
def test_strict_types_refuse_other_types(bad):
    with pytest.raises(TypeError):
        dumps(bad)


@pytest.mark.parametrize("big", [2**64, -(2**63) - 1])
def test_int_out_of_range(big):
    with pytest.raises(OverflowError):
        dumps(big)


def test_encoding_depth_limit():
    nested: list = []
    for _ in range(600):
        nested = [nested]
    with pytest.raises(ValueError, match="nesting"):
        dumps(nested)


# ------------------------------------------------------------------------------- strict decoding


@pytest.mark.parametrize(
    ("hex_", "message"),
    [
        ("", "empty input"),
        ("c1", "invalid type byte 0xc1"),
        ("0101", "trailing bytes"),
        ("dd7fffffff", "array of 2147483647 items exceeds"),
        ("dd00000005c0", "array declares 5 items but only 1 bytes remain"),
        ("df7fffffff", "map of 2147483647 items exceeds"),
        ("de0002c0c0", "map declares 2 items but only 2 bytes remain"),
        ("c6ffffffff", "truncated"),
        ("db00000010", "truncated"),
        ("c9ffffffff40", "truncated"),
        ("a2c328", "not valid UTF-8"),
        ("82a16101a16102", "duplicate map key"),
        ("81c001", "map key of type NoneType"),
        ("d44001", r"tuple\) payload is a int"),
        ("d5409001", "trailing bytes inside ext 0x40"),
        ("c70040", "empty payload"),
        ("d55101c0", "trailing bytes inside ext 0x51"),
        ("d45101", "tensor descriptor"),
        ("c7035093c0c0", "array declares 3 items"),
        ("cb0000", "truncated"),
    ],
)
def test_malformed_inputs_raise_decode_error(hex_, message):
    with pytest.raises(DecodeError, match=message):
        loads(bytes.fromhex(hex_))


def test_dictionary_payload_shape_is_checked():
    bad_payloads = [
        [1, 2],  # not 3 elements
        ["inf", 1.0, []],  # maxsize not a number
        [float("inf"), 1.0, [[1, "not bin", 1.0]]],
        [float("inf"), 1.0, [[1, b"v"]]],
        [float("inf"), 1.0, [[[1], b"v", 1.0]]],  # unhashable subkey
        [float("inf"), float("nan"), []],
        [float("inf"), 1.0, [["k", b"v", True]]],  # bool is not an expiration
    ]
    for payload in bad_payloads:
        raw = b"\xc7" + bytes([len(dumps(payload))]) + b"\x50" + dumps(payload)
        with pytest.raises(DecodeError, match="DictionaryDHTValue"):
            loads(raw)


def test_depth_limit():
    ok = b"\x91" * 31 + b"\x90"
    assert loads(ok) is not None
    with pytest.raises(DecodeError, match="nesting deeper than 32"):
        loads(b"\x91" * 32 + b"\x90")
    assert loads(b"\x91\x91\x90", limits=DecodeLimits(max_depth=3)) == [[[]]]
    with pytest.raises(DecodeError, match="nesting"):
        loads(b"\x91\x91\x90", limits=DecodeLimits(max_depth=2))


def test_tuples_count_towards_depth():
    deep = ()
    for _ in range(20):
        deep = (deep,)
    with pytest.raises(DecodeError, match="nesting"):
        loads(dumps(deep))  # each tuple is an ext plus an array: two levels


def test_size_and_container_limits():
    with pytest.raises(DecodeError, match="exceed"):
        loads(b"\xc4\x03abc", limits=DecodeLimits(max_size=4))
    with pytest.raises(DecodeError, match="exceeds the limit of 2"):
        loads(b"\x93\x01\x02\x03", limits=DecodeLimits(max_container_len=2))


def test_float32_is_accepted():
    assert loads(b"\xca" + struct.pack(">f", 1.5)) == 1.5


def test_non_bytes_input():
    with pytest.raises(DecodeError, match="expected bytes"):
        loads("c0")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- property tests


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_dumps_matches_msgpack_python_and_roundtrips(value):
    raw = dumps(value)
    assert raw == reference_dumps(value)
    assert loads(raw) == value
    assert loads(raw) == reference_loads(raw)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_only_ever_raise_decode_error(raw):
    try:
        value = loads(raw)
    except DecodeError:
        return
    # Whatever we accept, msgpack-python (used like hivemind) decodes to the same thing.
    assert reference_loads(raw) == value or _has_nan(value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.data())
def test_mutated_encodings_only_ever_raise_decode_error(value, data):
    raw = bytearray(dumps(value))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for candidate in (bytes(raw), bytes(raw[:cut])):
        with contextlib.suppress(DecodeError):
            loads(candidate)


def _has_nan(value) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, (list, tuple)):
        return any(_has_nan(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    return False
