"""The DHT protobuf codec against real hivemind bytes (vectors.json → protobuf_builtin), both directions,
plus strict parsing of malformed input and property-based round trips."""

from __future__ import annotations

import contextlib
import struct

import pytest
from dht_call_records import check_call
from hypothesis import given, settings
from hypothesis import strategies as st

from dht import protocol as p
from dht._pb import dht_pb2
from dht.errors import DecodeError
from dht.ids import DHTID, dhtid_of
from dht.serializer import dumps, loads
from dht.value import DHTValue, DictionaryValue

T = 1767225600.0


def _calls(vectors, step):
    return vectors["protobuf_builtin"]["steps"][step]["calls"]


def test_every_protobuf_builtin_call(vectors):
    totals = {"requests": 0, "responses": 0, "values": 0}
    for step in vectors["protobuf_builtin"]["steps"]:
        for call in step["calls"]:
            for name, count in check_call(call).items():
                totals[name] += count
    assert totals == {"requests": 10, "responses": 9, "values": 9}


def test_client_mode_find_request_from_keys(vectors):
    """Step 0: a client-mode FIND of 4 keys, built from the raw keys with an empty NodeInfo."""
    (call,) = _calls(vectors, 0)
    keys = ["Meta-Llama-3-1-405B-Instruct-hf.0", "Meta-Llama-3-1-405B-Instruct-hf.1"]
    key_ids = [dhtid_of(k) for k in keys] + [
        bytes.fromhex(vectors["protobuf_builtin"]["nodes"]["keys"][name])
        for name in ("regular-example", "_petals.models")
    ]
    assert p.build_find_request(key_ids).hex() == call["request_hex"]
    assert p.build_find_request(key_ids).endswith(b"\x1a\x00")  # NodeInfo present but empty


def test_client_mode_store_of_a_petals_announcement(vectors):
    """Step 2: what a client-mode Petals server sends for two blocks, from first principles."""
    (call,) = _calls(vectors, 2)
    view = call["request"]
    payload = bytes.fromhex(view["values"][0]["hex"])
    peer_id = "12D3KooWRPKyy59E4rsxJF84s54gUerjR1FtLMZ4GwCgouuCHhbu"
    items = [
        p.StoreItem(dhtid_of(f"Meta-Llama-3-1-405B-Instruct-hf.{block}"), p.subkey_tag(peer_id), payload, T + 240)
        for block in (1, 2)
    ]
    built = p.build_store_request(items)
    assert built.hex() == call["request_hex"]
    assert built.endswith(b"\x32\x02\x00\x00\x3a\x00")  # in_cache packed and always sent; empty NodeInfo


def test_full_node_requests_carry_the_node_id(vectors):
    node_id = bytes.fromhex(vectors["protobuf_builtin"]["nodes"]["FULLNODE"]["node_id"])
    (ping,) = _calls(vectors, 5)
    assert p.build_ping_request(node_id=node_id).hex() == ping["request_hex"]
    assert (
        p.build_ping_request(validate=True, node_id=DHTID.from_bytes(node_id)).hex()
        == (_calls(vectors, 6)[1]["request_hex"])
    )
    (store,) = _calls(vectors, 3)
    items = p.parse_store_request(bytes.fromhex(store["request_hex"])).items
    assert items[1] == p.StoreItem(items[1].key, p.IS_REGULAR_VALUE, dumps("stale"), T - 1, False)
    assert p.build_store_request(items, node_id=node_id).hex() == store["request_hex"]


def test_whole_dictionary_in_cache_store(vectors):
    (call,) = _calls(vectors, 4)
    (item,) = p.parse_store_request(bytes.fromhex(call["request_hex"])).items
    assert item.is_whole_dictionary and item.in_cache
    assert item.dictionary().packb().hex() == vectors["dictionary_dht_value"]["packb_hex"]
    with pytest.raises(ValueError, match="no subkey"):
        item.subkey()


def test_client_mode_pings(vectors):
    assert p.build_ping_request() == b"\x12\x00"
    assert p.build_ping_request(validate=True).hex() == _calls(vectors, 7)[0]["request_hex"] == "12001801"


def test_find_result_factory_matches_hivemind_responder(vectors):
    (call,) = _calls(vectors, 0)
    answer = p.parse_find_response(
        bytes.fromhex(call["response_hex"]), p.parse_find_request(bytes.fromhex(call["request_hex"])).keys
    )
    rebuilt = []
    for result in answer.results:
        if result.type is p.ResultType.NOT_FOUND:
            value = None
        elif result.type is p.ResultType.FOUND_REGULAR:
            value = DHTValue(result.value, result.expiration)
        else:
            value = loads(result.value)
            assert isinstance(value, DictionaryValue)
        rebuilt.append(p.FindResult.of(result.key, value, result.nearest, now=T))
    assert p.build_find_response(answer.node_id, rebuilt).hex() == call["response_hex"]


def test_empty_node_info_server_side():
    assert p.build_ping_response(None, 1.0) == b"\x12\x00\x21" + struct.pack("<d", 1.0)
    assert p.build_store_response(b"", []) == b"\x1a\x00"


# ------------------------------------------------------------------------------------------ strictness


def test_garbage_raises_decode_error():
    for parse in (p.parse_ping_request, p.parse_ping_response, p.parse_store_request, p.parse_find_request):
        with pytest.raises(DecodeError):
            parse(b"\xff\xff")
    with pytest.raises(DecodeError):
        p.parse_find_response(b"\xff\xff", [])
    with pytest.raises(DecodeError, match="expected bytes"):
        p.parse_ping_request("1200")  # type: ignore[arg-type]


def test_store_request_alignment_like_hivemind():
    msg = dht_pb2.StoreRequest(keys=[b"k" * 20] * 2, subkeys=[b"\xc0"], values=[b"\x01", b"\x02"])
    msg.expiration_time.extend([T, T])
    msg.in_cache.extend([False, False])
    truncated = p.parse_store_request(msg.SerializeToString())
    assert len(truncated.items) == 1  # subkeys are zipped, not checked: the batch is cut short
    msg.in_cache.append(True)
    with pytest.raises(DecodeError, match="misaligned"):
        p.parse_store_request(msg.SerializeToString())


def test_store_response_count_must_match():
    data = p.build_store_response(b"\x01" * 20, [True])
    assert p.parse_store_response(data, expected=1).store_ok == [True]
    with pytest.raises(DecodeError, match="1 results for 2 items"):
        p.parse_store_response(data, expected=2)


def test_unpacked_repeated_scalars_are_accepted():
    unpacked = b"\x10\x01\x10\x00\x1a\x00"  # store_ok as two unpacked varints
    assert p.parse_store_response(unpacked).store_ok == [True, False]


def test_find_response_checks():
    key = b"\x07" * 20
    good = dht_pb2.FindResponse(results=[dht_pb2.FindResult(type=dht_pb2.FOUND_REGULAR, value=b"\xc0")])
    with pytest.raises(DecodeError, match="1 results for 2 keys"):
        p.parse_find_response(good.SerializeToString(), [key, key])
    cases = {
        "unknown result type": dht_pb2.FindResult(type=7),
        "nearest node ids but": dht_pb2.FindResult(nearest_node_ids=[b"\x01" * 20]),
        "nearest node id of 3 bytes": dht_pb2.FindResult(nearest_node_ids=[b"abc"], nearest_peer_ids=[b"p"]),
        "NaN": dht_pb2.FindResult(type=dht_pb2.FOUND_REGULAR, expiration_time=float("nan")),
    }
    for message, result in cases.items():
        data = dht_pb2.FindResponse(results=[result]).SerializeToString()
        with pytest.raises(DecodeError, match=message):
            p.parse_find_response(data, [key])
    bad_peer = dht_pb2.FindResponse(peer=dht_pb2.NodeInfo(node_id=b"short")).SerializeToString()
    with pytest.raises(DecodeError, match="node_id must be empty or 20 bytes"):
        p.parse_find_response(bad_peer, [])


def test_key_and_node_id_lengths_are_checked_when_building():
    with pytest.raises(ValueError, match="20 bytes"):
        p.build_find_request([b"short"])
    with pytest.raises(ValueError, match="20 bytes"):
        p.build_ping_request(node_id=b"\x01" * 21)
    with pytest.raises(DecodeError, match="key must be 20 bytes"):
        p.parse_find_request(dht_pb2.FindRequest(keys=[b"x"]).SerializeToString())


def test_info_request_and_response(live_trace):
    assert p.build_info_request() == b""
    assert p.parse_info_request(b"") == ""
    assert p.parse_info_response(p.build_info_response({"version": "x"})) == {"version": "x"}
    with pytest.raises(DecodeError, match="not a map"):
        p.parse_info_response(dht_pb2.NodeInfo(node_id=b"\x90").SerializeToString())  # field 1 = bytes


# ------------------------------------------------------------------------------------------ properties

ids20 = st.binary(min_size=20, max_size=20)
node_ids = st.just(b"") | ids20
finite = st.floats(allow_nan=False)
store_items = st.builds(
    p.StoreItem,
    key=ids20,
    subkey_tag=st.just(p.IS_REGULAR_VALUE) | st.just(p.IS_DICTIONARY) | st.text(max_size=8).map(dumps),
    payload=st.binary(max_size=30),
    expiration=finite,
    in_cache=st.booleans(),
)
nearest = st.lists(st.tuples(ids20, st.binary(min_size=1, max_size=40)), max_size=4)


@st.composite
def find_results(draw):
    key = draw(ids20)
    kind = draw(st.sampled_from(list(p.ResultType)))
    if kind is p.ResultType.NOT_FOUND:
        return p.FindResult(key, kind, None, None, draw(nearest))
    return p.FindResult(key, kind, draw(st.binary(max_size=30)), draw(finite), draw(nearest))


@settings(deadline=None)
@given(st.lists(store_items, max_size=6), node_ids)
def test_store_roundtrip(items, node_id):
    parsed = p.parse_store_request(p.build_store_request(items, node_id or None))
    assert parsed == p.StoreRequest(node_id, items)


@settings(deadline=None)
@given(st.lists(find_results(), max_size=5), node_ids)
def test_find_roundtrip(results, node_id):
    keys = [r.key for r in results]
    request = p.parse_find_request(p.build_find_request(keys, node_id))
    assert request == p.FindRequest(node_id, keys)
    answer = p.parse_find_response(p.build_find_response(node_id, results), keys)
    assert answer == p.FindResponse(node_id, results)


@settings(deadline=None)
@given(node_ids, finite, st.booleans(), st.booleans())
def test_ping_roundtrip(node_id, dht_time, available, validate):
    assert p.parse_ping_request(p.build_ping_request(validate, node_id)) == p.PingRequest(node_id, validate)
    response = p.parse_ping_response(p.build_ping_response(node_id, dht_time, available))
    assert response == p.PingResponse(node_id, dht_time, available)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_only_ever_raise_decode_error(raw):
    parsers = [
        p.parse_ping_request,
        p.parse_ping_response,
        p.parse_store_request,
        p.parse_store_response,
        p.parse_find_request,
        lambda d: p.parse_find_response(d, [b"\x00" * 20]),
        p.parse_info_request,
        p.parse_info_response,
    ]
    for parse in parsers:
        with contextlib.suppress(DecodeError):
            parse(raw)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_mutated_real_responses_only_ever_raise_decode_error(vectors, data):
    (call,) = _calls(vectors, 0)
    raw = bytearray(bytes.fromhex(call["response_hex"]))
    for _ in range(data.draw(st.integers(1, 6))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = raw[: data.draw(st.integers(0, len(raw)))]
    keys = p.parse_find_request(bytes.fromhex(call["request_hex"])).keys
    try:
        answer = p.parse_find_response(bytes(raw), keys)
    except DecodeError:
        return
    for result in answer.results:  # whatever parses, its values decode or raise DecodeError only
        if result.value is not None:
            with contextlib.suppress(DecodeError):
                loads(result.value)
