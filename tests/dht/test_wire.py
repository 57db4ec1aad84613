"""The unary envelope, byte for byte against hivemind's own writer (vectors.json → envelopes)."""

from __future__ import annotations

import pytest

from dht import wire
from dht.errors import FrameError


def test_call_envelope_matches_hivemind(vectors):
    env = vectors["envelopes"][0]
    raw = bytes.fromhex(env["bytes_hex"])
    payload = wire.unframe(raw)
    call = wire.decode_call(payload)
    assert call.call_id.hex() == env["call_id_hex"]
    assert call.proto == "DHTProtocol.rpc_find"
    rebuilt = wire.frame(wire.encode_call(call.proto, call.data, call_id=call.call_id, peer=call.peer))
    assert rebuilt == raw


def test_rpc_info_call_with_empty_data_keeps_required_field(vectors):
    env = vectors["envelopes"][3]
    raw = bytes.fromhex(env["bytes_hex"])
    call = wire.decode_call(wire.unframe(raw))
    assert call.data == b""
    rebuilt = wire.frame(wire.encode_call(call.proto, b"", call_id=call.call_id, peer=call.peer))
    assert rebuilt == raw and rebuilt.endswith(b"\x1a\x00")


def test_reply_envelopes_match_hivemind(vectors):
    for env in vectors["envelopes"][1:3]:
        raw = bytes.fromhex(env["bytes_hex"])
        reply = wire.decode_reply(wire.unframe(raw))
        kw = {"response": reply.response} if reply.response is not None else {"error": reply.error}
        assert wire.frame(wire.encode_reply(reply.call_id, **kw)) == raw, env["description"]


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**32, 2**63])
def test_uvarint_roundtrip(value):
    enc = wire.encode_uvarint(value)
    assert wire.decode_uvarint(enc) == (value, len(enc))


def test_truncated_varint_is_incomplete_not_a_crash():
    assert wire.decode_uvarint(b"\x80\x80") is None
    with pytest.raises(FrameError, match="truncated"):
        wire.unframe(b"\x80")


def test_overlong_varint_rejected():
    with pytest.raises(FrameError, match="longer than 10"):
        wire.decode_uvarint(b"\xff" * 11)


def test_oversize_length_refused_before_allocation():
    head = wire.encode_uvarint(wire.MAX_MESSAGE_SIZE + 1)
    with pytest.raises(FrameError, match="exceeds"):
        wire.unframe(head + b"\x00")


def test_garbage_protobuf_is_a_frame_error():
    with pytest.raises(FrameError):
        wire.decode_reply(b"\xff\xff\xff")
    with pytest.raises(FrameError):  # callId is proto2-required
        wire.decode_reply(b"")
