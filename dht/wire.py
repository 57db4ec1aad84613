"""The unary-call envelope that travels on a libp2p stream (PROTOCOL.md §7.2).

Each direction carries exactly one ``uvarint(len) + PersistentConnectionRequest``: the caller sends
``callUnary{peer, proto, data}``, the callee answers ``unaryResponse{response | error}`` with the same
16-byte ``callId``. Lengths above :data:`MAX_MESSAGE_SIZE` are refused before anything is allocated.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from google.protobuf.message import DecodeError as _PbDecodeError

from ._pb import p2pd_pb2
from .errors import FrameError

MAX_MESSAGE_SIZE = 4 * 1024 * 1024  # p2pd -persistentConnMaxMsgSize, set by hivemind
_MAX_VARINT_BYTES = 10


def encode_uvarint(value: int) -> bytes:
    """Unsigned LEB128, as protobuf's ``_VarintBytes``."""
    if value < 0:
        raise ValueError("uvarint must be non-negative")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_uvarint(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int] | None:
    """Return ``(value, next_pos)``, or ``None`` if ``buf`` ends inside the varint.

    Raises :class:`FrameError` for a varint longer than 10 bytes.
    """
    result = 0
    shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(buf):
            return None
        byte = buf[pos + i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos + i + 1
        shift += 7
    raise FrameError("uvarint longer than 10 bytes")


def frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with its uvarint length."""
    if len(payload) > MAX_MESSAGE_SIZE:
        raise FrameError(f"message of {len(payload)} bytes exceeds the {MAX_MESSAGE_SIZE}-byte limit")
    return encode_uvarint(len(payload)) + payload


def check_length(length: int, limit: int = MAX_MESSAGE_SIZE) -> None:
    """Refuse a declared length before allocating a buffer for it."""
    if length > limit:
        raise FrameError(f"declared length {length} exceeds the {limit}-byte limit")


def unframe(buf: bytes, limit: int = MAX_MESSAGE_SIZE) -> bytes:
    """Split one complete frame; the buffer must hold exactly one message."""
    head = decode_uvarint(buf)
    if head is None:
        raise FrameError("truncated uvarint length prefix")
    length, pos = head
    check_length(length, limit)
    if len(buf) - pos < length:
        raise FrameError(f"truncated frame: {len(buf) - pos} of {length} bytes")
    if len(buf) - pos > length:
        raise FrameError(f"{len(buf) - pos - length} trailing bytes after the frame")
    return bytes(buf[pos : pos + length])


def new_call_id() -> bytes:
    """A random 16-byte UUID; the callee daemon must be able to parse it as one."""
    return uuid.uuid4().bytes


@dataclass(frozen=True, slots=True)
class UnaryCall:
    call_id: bytes
    proto: str
    data: bytes
    peer: bytes = b""


@dataclass(frozen=True, slots=True)
class UnaryReply:
    """A decoded reply: exactly one of ``response`` / ``error`` is not ``None``."""

    call_id: bytes
    response: bytes | None
    error: bytes | None


def encode_call(proto: str, data: bytes, *, call_id: bytes | None = None, peer: bytes = b"") -> bytes:
    """Serialize a ``callUnary`` envelope (without the length prefix). Required fields are always emitted."""
    msg = p2pd_pb2.PersistentConnectionRequest()
    msg.callId = call_id if call_id is not None else new_call_id()
    msg.callUnary.peer = peer
    msg.callUnary.proto = proto
    msg.callUnary.data = data
    return msg.SerializeToString()


def encode_reply(call_id: bytes, *, response: bytes | None = None, error: bytes | None = None) -> bytes:
    """Serialize an ``unaryResponse`` envelope (without the length prefix)."""
    if (response is None) == (error is None):
        raise ValueError("exactly one of response / error must be given")
    msg = p2pd_pb2.PersistentConnectionRequest()
    msg.callId = call_id
    if response is not None:
        msg.unaryResponse.response = response
    else:
        msg.unaryResponse.error = error  # type: ignore[assignment]
    return msg.SerializeToString()


def _parse(payload: bytes) -> p2pd_pb2.PersistentConnectionRequest:
    msg = p2pd_pb2.PersistentConnectionRequest()
    try:
        msg.ParseFromString(payload)
    except _PbDecodeError as e:  # includes missing proto2-required fields
        raise FrameError(f"malformed PersistentConnectionRequest: {e}") from None
    return msg


def decode_call(payload: bytes) -> UnaryCall:
    """Parse a ``callUnary`` envelope; anything else is a :class:`FrameError`."""
    msg = _parse(payload)
    if msg.WhichOneof("message") != "callUnary":
        raise FrameError(f"expected callUnary, got {msg.WhichOneof('message')}")
    if len(msg.callId) != 16:
        raise FrameError(f"callId must be a 16-byte UUID, got {len(msg.callId)} bytes")
    c = msg.callUnary
    if not isinstance(c.proto, str):  # proto2 strings are not UTF-8-checked: invalid bytes come back as bytes
        raise FrameError("callUnary.proto is not valid UTF-8")
    return UnaryCall(call_id=msg.callId, proto=c.proto, data=c.data, peer=c.peer)


def decode_reply(payload: bytes) -> UnaryReply:
    """Parse an ``unaryResponse`` envelope; anything else is a :class:`FrameError`."""
    msg = _parse(payload)
    kind = msg.WhichOneof("message")
    if kind != "unaryResponse":
        raise FrameError(f"expected unaryResponse, got {kind}")
    which = msg.unaryResponse.WhichOneof("result")
    if which == "response":
        return UnaryReply(msg.callId, msg.unaryResponse.response, None)
    if which == "error":
        return UnaryReply(msg.callId, None, msg.unaryResponse.error)
    # An empty CallUnaryResponse: treat as an empty response (hivemind never sends it).
    return UnaryReply(msg.callId, b"", None)
