"""Check one recorded RPC (``protobuf_builtin``/``sim``/``live`` call records) against our codec.

For every call: our parser must reproduce the recorded decoded view, and our builder, fed what the parser
found, must reproduce the recorded bytes exactly (requests and responses: the builders are deterministic).
"""

from __future__ import annotations

from typing import Any

from dht_vector_json import Repr, from_json

from dht import protocol as p
from dht.serializer import TensorDescriptor, loads
from dht.value import DictionaryValue

DHT_HANDLERS = (p.RPC_PING, p.RPC_STORE, p.RPC_FIND)


def same_value(ours: Any, theirs: Any) -> bool:
    """Equality where a ``$repr`` placeholder matches the TensorDescriptor it describes."""
    if isinstance(theirs, Repr):
        return (
            isinstance(ours, TensorDescriptor) and f"size={ours.size!r}" in theirs and f"dtype={ours.dtype}" in theirs
        )
    if isinstance(theirs, (tuple, list)):
        return (
            type(ours) is type(theirs)
            and len(ours) == len(theirs)
            and all(same_value(a, b) for a, b in zip(ours, theirs, strict=True))
        )
    if isinstance(theirs, dict) and not isinstance(theirs, DictionaryValue):
        return type(ours) is dict and list(ours) == list(theirs) and all(same_value(ours[k], theirs[k]) for k in theirs)
    return type(ours) is type(theirs) and ours == theirs


def _node_id(view: dict) -> bytes:
    assert view["peer"]["present"] is True
    assert view.get("auth_present") is False
    return bytes.fromhex(view["peer"]["node_id"])


def check_call(call: dict) -> dict[str, int]:
    """Assert everything about one DHT or rpc_info call; return counters of what was checked."""
    handler = call["handler"]
    request = bytes.fromhex(call["request_hex"])
    response = bytes.fromhex(call["response_hex"]) if "response_hex" in call else None
    checked = {"requests": 1, "responses": int(response is not None), "values": 0}
    if handler == p.RPC_PING:
        _check_ping(call, request, response)
    elif handler == p.RPC_STORE:
        checked["values"] += _check_store(call, request, response)
    elif handler == p.RPC_FIND:
        checked["values"] += _check_find(call, request, response)
    elif handler == p.RPC_INFO:
        _check_info(call, request, response)
    else:
        raise AssertionError(f"unexpected handler {handler}")
    return checked


def _check_ping(call: dict, request: bytes, response: bytes | None) -> None:
    view = call["request"]
    parsed = p.parse_ping_request(request)
    assert parsed == p.PingRequest(_node_id(view), view["validate"])
    assert p.build_ping_request(parsed.validate, parsed.node_id or None) == request
    if response is None:
        return
    rview = call["response"]
    answer = p.parse_ping_response(response)
    assert answer == p.PingResponse(_node_id(rview), rview["dht_time"], rview["available"])
    assert p.build_ping_response(answer.node_id, answer.dht_time, answer.available) == response


def _check_store(call: dict, request: bytes, response: bytes | None) -> int:
    view = call["request"]
    parsed = p.parse_store_request(request)
    assert parsed.node_id == _node_id(view)
    assert [item.key.hex() for item in parsed.items] == view["keys"]
    assert [item.subkey_tag.hex() for item in parsed.items] == [s["hex"] for s in view["subkeys"]]
    assert [item.payload.hex() for item in parsed.items] == [v["hex"] for v in view["values"]]
    assert [item.expiration for item in parsed.items] == view["expiration_time"]
    assert [item.in_cache for item in parsed.items] == view["in_cache"]
    values = 0
    for item, subkey_view, value_view in zip(parsed.items, view["subkeys"], view["values"], strict=True):
        if "decoded" in subkey_view:
            assert same_value(item.subkey(), from_json(subkey_view["decoded"]))
        else:
            assert item.is_regular or item.is_whole_dictionary
        decoded = item.dictionary() if item.is_whole_dictionary else loads(item.payload)
        assert same_value(decoded, from_json(value_view["decoded"]))
        values += 1
    assert p.build_store_request(parsed.items, parsed.node_id or None) == request
    if response is not None:
        rview = call["response"]
        answer = p.parse_store_response(response, expected=len(parsed.items))
        assert answer == p.StoreResponse(_node_id(rview), rview["store_ok"])
        assert p.build_store_response(answer.node_id, answer.store_ok) == response
    return values


def _check_find(call: dict, request: bytes, response: bytes | None) -> int:
    view = call["request"]
    parsed = p.parse_find_request(request)
    assert parsed == p.FindRequest(_node_id(view), [bytes.fromhex(k) for k in view["keys"]])
    assert p.build_find_request(parsed.keys, parsed.node_id or None) == request
    if response is None:
        return 0
    rview = call["response"]
    answer = p.parse_find_response(response, parsed.keys)
    assert answer.node_id == _node_id(rview)
    values = 0
    for result, expected in zip(answer.results, rview["results"], strict=True):
        assert result.type.name == expected["type"]
        assert [n.hex() for n, _ in result.nearest] == expected["nearest_node_ids"]
        assert [peer.hex() for _, peer in result.nearest] == expected["nearest_peer_ids_hex"]
        if result.type is p.ResultType.NOT_FOUND:
            assert result.value is None and result.expiration is None
            assert expected["value_hex"] == "" and expected["expiration_time"] == 0.0
            continue
        assert result.value.hex() == expected["value_hex"]
        assert result.expiration == expected["expiration_time"]
        decoded = loads(result.value)
        assert same_value(decoded, from_json(expected["value_decoded"]))
        if result.type is p.ResultType.FOUND_DICTIONARY:
            assert isinstance(decoded, DictionaryValue)
        values += 1
    assert p.build_find_response(answer.node_id, answer.results) == response
    return values


def _check_info(call: dict, request: bytes, response: bytes | None) -> None:
    uid = p.parse_info_request(request)
    assert uid == call["request"]["uid"]
    assert p.build_info_request(uid) == request
    if response is None:
        assert "protocols not supported" in call["error"]
        return
    info = p.parse_info_response(response)
    assert same_value(info, from_json(call["response"]["serialized_info_decoded"]))
    assert p.build_info_response(info) == response
