"""The sans-IO HivemindDHT client: request bookkeeping, results keyed by the caller's keys, and a replay of
the monitor's whole get_many(latest=True) from the hivemind simulation (sim_trace.json, phase 4)."""

from __future__ import annotations

import pytest
from dht_vector_json import from_json

from dht import protocol as p
from dht.client import (
    FindData,
    HivemindDHT,
    OutgoingRequest,
    PingResult,
    RequestFailed,
    StoreEntry,
    StoreResults,
)
from dht.errors import CallTimeout, DecodeError, RequestIdError
from dht.ids import dhtid_of
from dht.serializer import dumps, loads
from dht.value import DHTValue, DHTValueBuilder, DictionaryValue

T = 1767225600.0
PEER = b"\x00\x24peer"
SERVER_NODE = b"\xda" * 20


def test_ping_roundtrip(vectors):
    dht = HivemindDHT()
    request = dht.ping(PEER, validate=True)
    assert request == OutgoingRequest(1, PEER, p.RPC_PING, b"\x12\x00\x18\x01")
    (call,) = vectors["protobuf_builtin"]["steps"][7]["calls"]
    assert request.data.hex() == call["request_hex"]
    result = dht.handle_response(request.request_id, bytes.fromhex(call["response_hex"]))
    assert result == PingResult(1, PEER, bytes.fromhex(call["response"]["peer"]["node_id"]), T, False)
    assert dht.pending() == []


def test_store_many_tags_and_results():
    dht = HivemindDHT()
    whole = DictionaryValue([("s", DHTValue(b"\xa1v", T + 9))])
    entries = [
        ("regular", DHTValue(dumps("hello"), T + 60)),
        StoreEntry("block.0", DHTValueBuilder.from_object((2, 1.0)).ttl_seconds(240, now=T).build(), "peerA"),
        ("_petals.models", DHTValueBuilder.from_dictionary(whole).cached().build()),
    ]
    request = dht.store_many(PEER, entries)
    assert request.proto == p.RPC_STORE
    items = p.parse_store_request(request.data)
    assert items.node_id == b""  # client mode: never our node id
    assert [i.key for i in items.items] == [dhtid_of(k) for k in ("regular", "block.0", "_petals.models")]
    assert [i.subkey_tag for i in items.items] == [p.IS_REGULAR_VALUE, dumps("peerA"), p.IS_DICTIONARY]
    assert [i.expiration for i in items.items] == [T + 60, T + 240, T + 9]
    assert [i.in_cache for i in items.items] == [False, False, True]
    assert items.items[2].dictionary() == whole

    result = dht.handle_response(request.request_id, p.build_store_response(SERVER_NODE, [True, False, True]))
    assert isinstance(result, StoreResults)
    assert result.node_id == SERVER_NODE
    assert result.stored("regular") and not result.stored("block.0", "peerA")
    assert not result.all_stored
    with pytest.raises(KeyError):
        result.stored("block.0")


def test_store_single_and_whole_dictionary_rules():
    dht = HivemindDHT()
    whole = DictionaryValue([("s", DHTValue(b"\xc0", T))])
    request = dht.store(PEER, "k", whole)
    (item,) = p.parse_store_request(request.data).items
    assert item.is_whole_dictionary and not item.in_cache and item.expiration == T
    with pytest.raises(ValueError, match="without a subkey"):
        dht.store(PEER, "k", whole, subkey="s")
    with pytest.raises(TypeError):
        dht.store(PEER, "k", b"raw bytes have no expiration")
    with pytest.raises(ValueError):
        dht.store_many(PEER, [])


def test_store_response_of_the_wrong_length_fails_the_call():
    dht = HivemindDHT()
    request = dht.store(PEER, "k", DHTValue(b"\xc0", T))
    with pytest.raises(DecodeError, match="2 results for 1 items"):
        dht.handle_response(request.request_id, p.build_store_response(SERVER_NODE, [True, True]))
    with pytest.raises(RequestIdError):  # settled even though it failed
        dht.handle_error(request.request_id, CallTimeout("late"))


def test_get_many_keys_by_original_key():
    dht = HivemindDHT()
    keys = ["abc", b"abc", ("expert", 3), "abc"]  # the duplicate is asked once
    request = dht.get_many(PEER, keys)
    ids = [dhtid_of("abc"), dhtid_of(b"abc"), dhtid_of(("expert", 3))]
    assert p.parse_find_request(request.data) == p.FindRequest(b"", ids)
    dictionary = DictionaryValue([("peerA", DHTValue(dumps((2, 1.0, {})), T + 5))])
    near = [(b"\x01" * 20, b"peer-1"), (b"\x02" * 20, b"peer-2")]
    response = p.build_find_response(
        SERVER_NODE,
        [
            p.FindResult.of(ids[0], DHTValue(dumps("v"), T + 1), near),
            p.FindResult.of(ids[1], None, near[:1]),
            p.FindResult.of(ids[2], dictionary, [], expiration=T + 7),
        ],
    )
    found = dht.handle_response(request.request_id, response)
    assert isinstance(found, FindData)
    assert list(found.results) == ["abc", b"abc", ("expert", 3)]
    assert found.value("abc") == DHTValue(dumps("v"), T + 1)
    assert found.value("abc").decode() == "v"
    assert found.value(b"abc") is None and found.results[b"abc"].nearest == near[:1]
    assert found.value(("expert", 3)) == dictionary
    assert found.results[("expert", 3)].expiration == T + 7
    assert found.nearest_peers() == dict(near)


def test_unparseable_dictionary_is_reported_per_key():
    dht = HivemindDHT()
    request = dht.get_many(PEER, ["good", "bad"])
    ids = p.parse_find_request(request.data).keys
    bad = p.FindResult(ids[1], p.ResultType.FOUND_DICTIONARY, dumps("not a dictionary"), T, [])
    good = p.FindResult.of(ids[0], DHTValue(b"\xc0", T), [])
    found = dht.handle_response(request.request_id, p.build_find_response(b"", [good, bad]))
    assert found.value("good") is not None
    assert found.value("bad") is None and "str" in found.results["bad"].error
    garbage = p.FindResult(ids[1], p.ResultType.FOUND_DICTIONARY, b"\xc1", T, [])
    request = dht.get_many(PEER, ["good", "bad"])
    found = dht.handle_response(request.request_id, p.build_find_response(b"", [good, garbage]))
    assert "invalid type byte" in found.results["bad"].error


def test_request_ids_are_unique_and_settled_once():
    dht = HivemindDHT()
    first, second, third = dht.ping(PEER), dht.get(PEER, "k"), dht.ping(b"other")
    assert [r.request_id for r in (first, second, third)] == [1, 2, 3]
    assert dht.pending() == [first, second, third]
    failure = dht.handle_error(second.request_id, CallTimeout("3 s"))
    assert isinstance(failure, RequestFailed) and failure.proto == p.RPC_FIND and failure.peer == PEER
    assert dht.pending() == [first, third]
    with pytest.raises(RequestIdError):
        dht.handle_response(second.request_id, b"")
    with pytest.raises(RequestIdError):
        dht.handle_response(99, b"")
    dht.handle_response(first.request_id, p.build_ping_response(SERVER_NODE, T))
    with pytest.raises(RequestIdError):
        dht.handle_response(first.request_id, p.build_ping_response(SERVER_NODE, T))


def test_malformed_response_raises_and_settles():
    dht = HivemindDHT()
    request = dht.get(PEER, "k")
    with pytest.raises(DecodeError):
        dht.handle_response(request.request_id, b"\xff\xff")
    assert dht.pending() == []


def test_replay_of_the_monitor_get_many_latest(sim_trace):
    """Drive the client with every request/response of the simulated monitor: our requests equal hivemind's
    bytes, and merging the FIND answers (latest=True) gives what Petals' get_remote_module_infos returned."""
    phase = sim_trace["phases"][3]
    originals = [f"Meta-Llama-3-1-405B-Instruct-hf.{i}" for i in range(6)] + ["_petals.models"]
    by_id = {dhtid_of(key).hex(): key for key in originals}
    dht = HivemindDHT()
    merged: dict[str, DictionaryValue] = {}
    finds = stores = 0
    for call in phase["calls"]:
        view = call["request"]
        keys = [by_id[k] for k in view["keys"]]
        if call["handler"] == p.RPC_FIND:
            request = dht.get_many(call["callee"], keys)
            finds += 1
        else:  # hivemind's cache_nearest: the merged dictionary, in_cache, tag b""
            (item,) = p.parse_store_request(bytes.fromhex(call["request_hex"])).items
            value = DHTValueBuilder.from_dictionary(item.dictionary()).expiration_time(item.expiration).cached()
            request = dht.store(call["callee"], keys[0], value.build())
            stores += 1
        assert request.data.hex() == call["request_hex"]
        result = dht.handle_response(request.request_id, bytes.fromhex(call["response_hex"]))
        if isinstance(result, FindData):
            for key, found in result.results.items():
                if isinstance(found.value, DictionaryValue):
                    merged[key] = merged[key].merge(found.value, now=T) if key in merged else found.value
        else:
            assert result.all_stored
    assert (finds, stores) == (36, 7)
    assert dht.pending() == []

    expected = from_json(phase["result"])
    models = merged["_petals.models"]
    assert models.decode() == expected["_petals.models"].value
    assert models.latest_expiration == expected["_petals.models"].expiration
    for info in expected["module_infos"]:
        servers = {subkey: v.value for subkey, v in merged[info["uid"]].decode().items()}
        assert servers == info["servers"], info["uid"]
    assert loads(dumps(merged["Meta-Llama-3-1-405B-Instruct-hf.2"])) == merged["Meta-Llama-3-1-405B-Instruct-hf.2"]
