"""ServerInfo / ModelInfo / PeerID validation against Petals' own constraints and the hivemind-made vectors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from petals_fixtures import server_info_bytes

from dht.serializer import dumps
from monitor.rules.serverinfo import (
    MAX_INT,
    MAX_NEXT_PINGS,
    MAX_PUBLIC_NAME,
    InvalidModelInfo,
    InvalidServerInfo,
    is_peer_id,
    is_valid_dht_prefix,
    parse_model_info,
    parse_server_info,
)
from monitor.snapshot import ServerInfo

ED25519_PEER = "12D3KooWD4DGWPgr6GLXxifDvNnm9fyzfBmtKMpUxS8sNNhrZuw8"
RSA_PEER = "QmedTaZXmULqwspJXz44SsPZyTNKxhnnFvYRajfH7MGhCY"


def _from_json(value: object) -> object:
    """The vectors' JSON conventions back to Python ({"$tuple": ...}, {"$float": "inf"})."""
    if isinstance(value, dict):
        if "$tuple" in value:
            return tuple(_from_json(item) for item in value["$tuple"])
        if "$float" in value:
            return float(value["$float"])
        return {key: _from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_from_json(item) for item in value]
    return value


def test_server_info_vectors_parse_to_every_field(vectors):
    for vector in vectors["petals"]["server_info"]:
        state, throughput, extra = _from_json(vector["to_tuple"])
        info = parse_server_info(bytes.fromhex(vector["hex"]))
        assert (info.state, info.throughput) == (state, throughput), vector["description"]
        for name, expected in extra.items():
            assert getattr(info, name) == expected, (vector["description"], name)


def test_server_info_vector_details(vectors):
    full = parse_server_info(bytes.fromhex(vectors["petals"]["server_info"][0]["hex"]))
    assert full.next_pings == {ED25519_PEER: 0.0123, RSA_PEER: math.inf}
    assert full.adapters == ("artek0chumak/guanaco-65b", "timdettmers/guanaco-65b")
    assert (full.start_block, full.end_block, full.cache_tokens_left) == (0, 63, 157184)
    relay = parse_server_info(bytes.fromhex(vectors["petals"]["server_info"][2]["hex"]))
    assert relay.using_relay is True and relay.state == 0 and relay.next_pings is None


def test_server_info_parsing_vectors(vectors):
    cases = {v["description"]: v for v in vectors["petals"]["server_info_parsing"]}
    unknown = parse_server_info(bytes.fromhex(cases["from_tuple ignores unknown extra_info keys"]["hex"]))
    assert (unknown.state, unknown.throughput, unknown.public_name) == (2, 55.5, "old")
    with pytest.raises(InvalidServerInfo) as e:
        parse_server_info(bytes.fromhex(cases["throughput given as int is rejected (strict float)"]["hex"]))
    assert e.value.reason == "throughput"
    with pytest.raises(InvalidServerInfo) as e:
        parse_server_info(bytes.fromhex(cases["state 3 is not a ServerState"]["hex"]))
    assert e.value.reason == "state"
    two = parse_server_info(bytes.fromhex(cases["2-tuple without extra_info is accepted"]["hex"]))
    assert two == ServerInfo(state=1, throughput=1.0)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xc1", "msgpack"),  # never-used msgpack byte
        (b"", "msgpack"),
        (dumps([2]), "schema"),
        (dumps({"state": 2}), "schema"),
        (dumps(42), "schema"),
        (dumps((2, 1.0, [1, 2])), "schema"),  # extra_info not a map
        (dumps((2, 1.0, {b"public_name": "x"})), "schema"),  # bytes key: Petals' **kwargs fails
        (dumps((2, 1.0, {"state": 1})), "schema"),  # "multiple values for keyword argument"
        (server_info_bytes(state=True), "state"),  # bool is not an int state
        (server_info_bytes(state=2.0), "state"),
        (server_info_bytes(state=-1), "state"),
        (server_info_bytes(state="ONLINE"), "state"),
        (server_info_bytes(throughput=float("nan")), "throughput"),
        (server_info_bytes(throughput=float("inf")), "throughput"),
        (server_info_bytes(throughput=-0.5), "throughput"),
        (server_info_bytes(throughput=True), "throughput"),
        (server_info_bytes(throughput="10"), "throughput"),
        (server_info_bytes(start_block=-1), "range"),
        (server_info_bytes(start_block=2**64 - 1), "range"),  # fits msgpack, not SQLite
        (server_info_bytes(cache_tokens_left=-5), "range"),
        (server_info_bytes(end_block=True), "schema"),
        (server_info_bytes(end_block=3.0), "schema"),
        (server_info_bytes(start_block=4, end_block=4), "span"),
        (server_info_bytes(start_block=5, end_block=2), "span"),
        (server_info_bytes(network_rps=float("nan")), "range"),
        (server_info_bytes(forward_rps=-1.0), "range"),
        (server_info_bytes(inference_rps=float("-inf")), "range"),
        (server_info_bytes(network_rps=5), "schema"),  # int rejected, as pydantic strict does
        (server_info_bytes(public_name=5), "schema"),
        (server_info_bytes(public_name=b"bytes"), "schema"),
        (server_info_bytes(version=["2.3"]), "schema"),
        (server_info_bytes(torch_dtype=16), "schema"),
        (server_info_bytes(using_relay=1), "schema"),
        (server_info_bytes(using_relay="yes"), "schema"),
        (server_info_bytes(adapters=None), "schema"),
        (server_info_bytes(adapters="lora"), "schema"),
        (server_info_bytes(adapters=("ok", 3)), "schema"),
        (server_info_bytes(next_pings=[("peer", 1.0)]), "schema"),
        (server_info_bytes(next_pings={"peer": 1}), "schema"),
        (server_info_bytes(next_pings={"peer": float("nan")}), "range"),
        (server_info_bytes(next_pings={"peer": -0.1}), "range"),
        (server_info_bytes(next_pings={b"peer": 0.1}), "schema"),
    ],
)
def test_invalid_server_info_reason(value, reason):
    with pytest.raises(InvalidServerInfo) as e:
        parse_server_info(value)
    assert e.value.reason == reason
    assert e.value.detail


def test_accepted_edge_values():
    info = parse_server_info(
        server_info_bytes(
            state=0,
            throughput=0.0,
            start_block=0,
            end_block=MAX_INT,
            adapters=["a", "b"],  # a list is a Sequence[str] too
            next_pings={"x": math.inf, "y": 0.0},
            using_relay=False,
            cache_tokens_left=0,
            some_future_field={"nested": [1, 2, 3]},
        )
    )
    assert info.adapters == ("a", "b")
    assert info.next_pings == {"x": math.inf, "y": 0.0}
    assert info.end_block == MAX_INT and info.using_relay is False and info.cache_tokens_left == 0
    # elements past the third are ignored, like Petals' source[2]
    assert parse_server_info(dumps((1, 2.0, {}, "extra"))).state == 1


def test_untrusted_strings_are_kept_as_data_and_bounded():
    script = "<script>alert(1)</script>"
    info = parse_server_info(server_info_bytes(public_name=script, version=script))
    assert info.public_name == script and info.version == script
    long = parse_server_info(server_info_bytes(public_name="n" * 10_000, version="v" * 1000))
    assert len(long.public_name) == MAX_PUBLIC_NAME and long.public_name.endswith("…")
    assert len(long.version) <= 64


def test_next_pings_and_adapters_are_capped():
    pings = {f"peer{i}": float(i) for i in range(500)}
    info = parse_server_info(server_info_bytes(next_pings=pings, adapters=tuple(f"a{i}" for i in range(500))))
    assert len(info.next_pings) == MAX_NEXT_PINGS and info.next_pings["peer0"] == 0.0
    assert len(info.adapters) == 64


_leaf = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20)
_values = st.recursive(
    _leaf | st.binary(max_size=10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
_extra = st.dictionaries(
    st.sampled_from(["start_block", "end_block", "public_name", "next_pings", "adapters", "network_rps", "x"]),
    _values,
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_parse_never_raises_anything_else_on_random_bytes(data):
    try:
        info = parse_server_info(data)
    except InvalidServerInfo as e:
        assert e.reason in {"msgpack", "schema", "state", "throughput", "range", "span"}
    else:
        assert 0 <= info.state <= 2 and math.isfinite(info.throughput)


@settings(max_examples=150, deadline=None)
@given(_values, _values, _extra)
def test_parse_never_raises_anything_else_on_structured_values(state, throughput, extra):
    try:
        info = parse_server_info(dumps((state, throughput, extra)))
    except InvalidServerInfo:
        return
    assert type(info.state) is int and type(info.throughput) is float and info.throughput >= 0
    if info.start_block is not None and info.end_block is not None:
        assert info.start_block < info.end_block


def test_peer_ids():
    assert is_peer_id(ED25519_PEER) and is_peer_id(RSA_PEER)
    assert not is_peer_id("")
    assert not is_peer_id(42)
    assert not is_peer_id(ED25519_PEER.encode())
    assert not is_peer_id("12D3KooW0OIl")  # 0, O, I, l are not base58
    assert not is_peer_id(ED25519_PEER[:-1])  # truncated multihash
    assert not is_peer_id("Qm" + "a" * 200)
    assert not is_peer_id("<script>")


def test_dht_prefixes():
    assert is_valid_dht_prefix("Meta-Llama-3-1-405B-Instruct-hf")
    assert is_valid_dht_prefix("mistralai/Mixtral-8x22B-Instruct-v0-1")
    for bad in ("", "a.b", "a b", "a\nb", None, 5, "x" * 300):
        assert not is_valid_dht_prefix(bad)


def test_model_info_vectors(vectors):
    llama, local = vectors["petals"]["model_info"]
    assert parse_model_info(bytes.fromhex(llama["hex"])) == (
        126,
        "https://huggingface.co/meta-llama/Meta-Llama-3.1-405B-Instruct",
    )
    assert parse_model_info(bytes.fromhex(local["hex"])) == (32, None)


@pytest.mark.parametrize(
    "value",
    [
        dumps({"num_blocks": 0}),
        dumps({"num_blocks": True}),
        dumps({"num_blocks": 3.0}),
        dumps({"num_blocks": 10**9}),
        dumps({"repository": "https://huggingface.co/x"}),
        dumps({"num_blocks": 3, "repository": 5}),
        dumps([3, None]),
        b"\xc1",
    ],
)
def test_invalid_model_info(value):
    with pytest.raises(InvalidModelInfo) as e:
        parse_model_info(value)
    assert e.value.reason == "model_info"


def test_model_info_ignores_unknown_keys():
    assert parse_model_info(dumps({"num_blocks": 3, "repository": None, "future": 1})) == (3, None)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80) | st.binary(max_size=40) | st.integers())
def test_peer_id_check_never_raises(value):
    assert is_peer_id(value) in (True, False)
