"""The lean-transport and DHT-node fuzz targets (tests/fuzz/lean_targets.py) in the test suite: their seeds, a
seeded mutation pass and hypothesis-drawn inputs (the atheris runs and their figures: tests/fuzz/README.md)."""

from __future__ import annotations

import random
import struct

import pytest
from fuzz import lean_targets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz_targets import _mutations

from dht.net import yamux_frames as yx

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CHECKS = {name: getattr(lean_targets, f"check_{name}") for name in lean_targets.TARGETS}


@pytest.mark.parametrize("name", lean_targets.TARGETS)
def test_seeds_and_their_mutations_keep_the_contract(name):
    seeds = list(lean_targets.seed_inputs(name).values())
    rng = random.Random(f"mutate-{name}")
    for seed in seeds:
        CHECKS[name](seed)
        for mutated in _mutations(seed, rng, 1500 // len(seeds)):
            CHECKS[name](mutated)


@FAST
@given(st.integers(0, 3), st.binary(max_size=600))
def test_lean_contract_on_any_bytes(selector, data):
    lean_targets.check_lean(bytes([selector]) + data)


@FAST
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, yx.RST | yx.FIN | yx.ACK | yx.SYN), st.integers(0, 6)),
        max_size=12,
    ),
    st.integers(0, 255),
)
def test_lean_contract_on_frame_sequences(frames, read_size):
    """Well-formed headers of every type and flag on our streams (1, 3, 5), the peer's (even) and unknown ones,
    with lengths around the window's edges: more of the parser than random bytes reach."""
    lengths = (0, 1, 5, yx.INITIAL_WINDOW, lean_targets.RECEIVE_WINDOW, lean_targets.RECEIVE_WINDOW + 1, 2**32 - 1)
    plain = b""
    for kind, flags, pick in frames:
        stream_id, length = pick % 6 + 1, lengths[pick]
        payload = b"x" * min(length, 64) if kind == yx.DATA else b""
        plain += yx.header(kind, flags, stream_id, length) + payload
    lean_targets.check_lean(b"\x00" + bytes([read_size]) + plain)


@FAST
@given(st.lists(st.tuples(st.integers(0, 8), st.binary(max_size=200)), max_size=4))
def test_node_contract_on_any_requests(requests):
    lean_targets.check_node(b"".join(bytes([s]) + struct.pack(">H", len(r)) + r for s, r in requests))


def test_fuzz_lean_finding_a_valid_message_before_a_forged_one():
    """fuzz_lean (1 M-input run): a message sealed with the key, then garbage. The message decrypts and stays
    decrypted (as documented), and the target had wrongly asserted that nothing would."""
    data = bytes.fromhex("010015daf8d49e3b14dce261382270424cb817b9c06fb0970000000000000000000000db00090000010000007354")
    lean_targets.check_lean(data)
