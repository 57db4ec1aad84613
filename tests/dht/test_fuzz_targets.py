"""The fuzz targets (tests/fuzz/targets.py) in the test suite: the seed corpus cut from real hivemind bytes,
mutations of it, and hypothesis-drawn bytes. A target raises only when the contract breaks (an undocumented
exception escaped, or an invariant of decoded data failed), so each test is "no exception"."""

from __future__ import annotations

import random

import pytest
from fuzz import seeds, targets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CHECKS = {name: getattr(targets, f"check_{name}") for name in seeds.TARGETS}
FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module", params=seeds.TARGETS)
def corpus(request) -> tuple[str, list[bytes]]:
    try:
        return request.param, seeds.corpus(request.param)
    except seeds.EmptyCorpus as e:
        pytest.fail(str(e), pytrace=False)


def test_an_empty_corpus_fails_with_a_message_naming_the_target(monkeypatch):
    monkeypatch.setattr(seeds, "VECTOR_FILES", ())
    with pytest.raises(seeds.EmptyCorpus, match="fuzz target 'msgpack' has an empty seed corpus"):
        seeds.corpus("msgpack")


def test_seed_corpus_is_cut_from_every_kind_of_vector(corpus):
    name, blobs = corpus
    assert len(blobs) >= {"envelope": 10, "protobuf": 100, "msgpack": 40, "serverinfo": 20}[name]


def test_seed_corpus_passes_and_mostly_decodes(corpus):
    """Every seed satisfies the contract, and the seeds reach the decoders' success paths (real bytes)."""
    name, blobs = corpus
    for blob in blobs:
        CHECKS[name](blob)
    if name == "envelope":
        from dht import wire

        framed = [b for b in blobs if b[:1] != b"\x00" and _ok(wire.unframe, b)]
        assert len(framed) >= 5
    if name == "protobuf":
        decoded = [b for b in blobs if _ok(targets._parse_protobuf, b[0] % 9, b[1:])]
        assert len(decoded) >= len(blobs) * 0.9
    if name == "msgpack":
        from dht.serializer import loads

        assert sum(_ok(loads, b[1:], allow_unknown_ext=True) for b in blobs) >= len(blobs) * 0.9


def _ok(fn, *args, **kwargs) -> bool:
    try:
        fn(*args, **kwargs)
    except Exception:
        return False
    return True


def _mutations(blob: bytes, rng: random.Random, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        data = bytearray(blob)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(4)
            pos = rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
            elif op == 1:
                data[pos:pos] = bytes([rng.choice((0x00, 0x7F, 0x80, 0xFF, 0xC1, 0xDD, 0xC9))])
            elif op == 2:
                del data[pos : pos + rng.randint(1, 8)]
            else:
                data[pos:pos] = data[rng.randrange(len(data) + 1) :][:16]
        out.append(bytes(data))
    return out


def test_mutated_seeds_keep_the_contract(corpus):
    """A small, seeded libFuzzer-like pass in the suite (the real runs are in tests/fuzz/README.md)."""
    name, blobs = corpus
    rng = random.Random(f"mutate-{name}")
    per_seed = max(2, 1500 // len(blobs))
    for blob in blobs:
        for mutated in _mutations(blob, rng, per_seed):
            CHECKS[name](mutated)


@FAST
@given(st.binary(max_size=512))
def test_envelope_contract_on_any_bytes(data):
    targets.check_envelope(data)


@FAST
@given(st.integers(0, 8), st.binary(max_size=512))
def test_protobuf_contract_on_any_bytes(selector, data):
    targets.check_protobuf(bytes([selector]) + data)


@FAST
@given(st.binary(max_size=512))
def test_msgpack_contract_on_any_bytes(data):
    targets.check_msgpack(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_serverinfo_and_rules_contract_on_any_bytes(data):
    targets.check_serverinfo(data)


# -- structured inputs: bytes that are almost right reach further than random ones


def _msgpack_atoms() -> st.SearchStrategy:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
        st.binary(max_size=20),
    )


_TREES = st.recursive(
    _msgpack_atoms(),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=20,
)


@FAST
@given(_TREES, st.integers(0, 3), st.integers(0, 40))
def test_msgpack_contract_on_truncated_and_valid_trees(tree, control, cut):
    from dht.serializer import dumps

    encoded = dumps(tree)
    targets.check_msgpack(bytes([control]) + encoded)
    targets.check_msgpack(bytes([control]) + encoded[: max(0, len(encoded) - cut)])


@FAST
@given(_TREES)
def test_server_info_shaped_trees_are_accepted_or_refused_with_a_reason(extra):
    from dht.serializer import dumps

    for value in ((2, 10.0, extra), (2, 10.0, {"public_name": extra}), (2, 10.0, {"next_pings": extra}), extra):
        targets.check_serverinfo(dumps(value))
