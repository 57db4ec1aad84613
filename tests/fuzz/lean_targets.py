"""Fuzz targets for the lean transport's framing and for a DHT node's RPC handlers (see README.md).

``check_lean``: the bytes a peer sends after a valid handshake, sealed into Noise transport messages with the
connection's key and cut into socket reads where the input says, through ``LeanConnection._absorb`` with three
streams of ours open (yamux frames of every type, flags and length); raw bytes as Noise transport messages,
as Noise handshake message 2 and as its identity payload; multistream lines. Only ``FrameError`` (with its
``NoiseError``, ``LeanStreamClosed``) and ``PeerIdentityError`` may escape; the memory bounds of issue 18 are
checked after every read.

``check_node``: up to four ping / store / find requests against one fresh :class:`~dht.node.DHTNode` through
its network-free handlers. Only ``DecodeError`` and ``RequestRejected`` may escape, and every reply must pass
our own strict client parsers (a node never serves what our crawler refuses).

Like ``targets``, nothing here imports atheris. ``seed_inputs(name)`` gives each target a few valid inputs; run
as a script to write them for atheris: ``python tests/fuzz/lean_targets.py tests/fuzz/corpus``.
"""

from __future__ import annotations

import math
import struct
import sys
from pathlib import Path

import trio

from dht import protocol
from dht._pb import dht_pb2
from dht.errors import DecodeError, FrameError, PeerIdentityError
from dht.ids import dhtid_of
from dht.net import noise_xx
from dht.net import yamux_frames as yx
from dht.net.lean import (
    MAX_PENDING_CONTROL,
    RECEIVE_WINDOW,
    LeanConnection,
    _take_line,
    verified_peer_id,
)
from dht.node import DHTNode, RequestRejected
from dht.peerid import peer_id_text
from dht.serializer import dumps
from dht.value import DHTValue, DictionaryValue

KEY = b"k" * 32
PEERS = (
    "QmedTaZXmULqwspJXz44SsPZyTNKxhnnFvYRajfH7MGhCY",
    "QmQGTqmM7NKjV6ggU1ZCap8zWiyKR89RViDXiqehSiCpY5",
    "12D3KooWHv9JtiqVnSkzTu92nbFXsMvyDnbv6Vd3beJjEHuSVhxX",
)
DHT_TIME = 1_767_225_600.0
MAX_REQUESTS = 4


class _NoSocket:
    """What ``_absorb`` never touches: it parses and queues, the writer task (not run here) sends."""

    async def aclose(self) -> None:
        return None


# ---------------------------------------------------------------------------------------------- lean


def check_lean(data: bytes) -> None:
    if not data:
        return
    selector, body = data[0] % 4, data[1:]
    if selector == 0:
        trio.run(_feed_connection, body)
    elif selector == 1:
        _raw_transport_messages(body)
    elif selector == 2:
        _handshake_message2(body)
    else:
        try:
            line = _take_line(bytearray(body), "fuzz")
        except FrameError:
            return
        assert line is None or isinstance(line, str)


async def _feed_connection(body: bytes) -> None:
    """``body[0]`` picks the socket read size (1..4096 bytes), the rest is yamux plaintext from the peer."""
    read_size = 1 + (body[0] * 16 if body else 0)
    plain = body[1:]
    send = noise_xx.CipherState(KEY)
    keys = noise_xx.NoiseResult(b"", b"", noise_xx.CipherState(b"o" * 32), noise_xx.CipherState(KEY))
    conn = LeanConnection(_NoSocket(), keys, PEERS[0], ("127.0.0.1", 1), cipher=bytearray(), plain=bytearray())
    streams = [conn.open_stream() for _ in range(3)]
    wire = noise_xx.encrypt_stream(send, plain) if plain else b""
    try:
        for start in range(0, len(wire), read_size):
            conn._absorb(wire[start : start + read_size])
            _check_bounds(conn, streams)
    except FrameError:
        conn._fail("fuzz: protocol error")
    for stream in streams:  # what was delivered reads back, then the stream ends one way or another
        while stream._chunks:
            assert await stream.read() or stream._buffered == 0
        await stream.reset()
    assert conn._budget.used == 0


def _check_bounds(conn: LeanConnection, streams: list) -> None:
    assert len(conn._plain) < yx.HEADER_LEN  # DATA payloads never wait in the connection's buffer
    assert len(conn._cipher) <= 2 + noise_xx.MAX_MESSAGE  # at most one partial Noise message
    assert len(conn._control) <= MAX_PENDING_CONTROL
    assert conn._budget.used == sum(s._buffered for s in streams)
    for stream in streams:
        assert 0 <= stream._receive_left <= RECEIVE_WINDOW and stream._buffered <= RECEIVE_WINDOW


def _raw_transport_messages(body: bytes) -> None:
    buffer, out = bytearray(body), bytearray()
    try:
        noise_xx.decrypt_into(noise_xx.CipherState(KEY).decrypt, buffer, out)
    except noise_xx.NoiseError:
        # what came before the message that failed authenticated, and is all that was decrypted: with a fresh
        # cipher the consumed front decrypts, whole and alone, to the same bytes (a forgery adds nothing)
        consumed, again = bytearray(body[: len(body) - len(buffer)]), bytearray()
        noise_xx.decrypt_into(noise_xx.CipherState(KEY).decrypt, consumed, again)
        assert not consumed and again == out
    else:  # what stays is one message not all there yet
        assert len(buffer) < 2 or len(buffer) < 2 + ((buffer[0] << 8) | buffer[1])
    assert body.endswith(bytes(buffer))  # consumed from the front only


def _handshake_message2(body: bytes) -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    initiator = noise_xx.XXInitiator(X25519PrivateKey.generate(), b"")
    initiator.message1()
    try:
        payload = initiator.read_message2(body)
    except noise_xx.NoiseError:
        payload = body  # the payload check on its own, as if the message had authenticated
    try:
        peer = verified_peer_id(payload, body[:32])
    except PeerIdentityError:
        return
    assert peer_id_text(peer) is not None


# ---------------------------------------------------------------------------------------------- node


def check_node(data: bytes) -> None:
    """``data``: up to MAX_REQUESTS of ``selector byte + uint16 length + request``; the selector picks the RPC
    (ping / store / find) and the caller."""
    node = DHTNode(dhtid_of("fuzzed node"), clock=lambda: DHT_TIME, monotonic=lambda: 0.0)
    pos = 0
    for _ in range(MAX_REQUESTS):
        if len(data) - pos < 3:
            return
        selector, size = data[pos], struct.unpack_from(">H", data, pos + 1)[0]
        request = data[pos + 3 : pos + 3 + size]
        pos += 3 + size
        caller = PEERS[(selector // 3) % len(PEERS)]
        try:
            _serve(node, selector % 3, caller, request)
        except (DecodeError, RequestRejected):
            continue


def _serve(node: DHTNode, kind: int, caller: str, request: bytes) -> None:
    if kind == 0:
        reply = protocol.parse_ping_response(node.handle_ping(caller, request))
        assert reply.node_id == node.node_id_bytes
    elif kind == 1:
        raw = node.handle_store(caller, request)
        expected = len(dht_pb2.StoreRequest.FromString(request).keys)
        assert len(protocol.parse_store_response(raw, expected=expected).store_ok) == expected
    else:
        raw = node.handle_find(caller, request)
        keys = list(dht_pb2.FindRequest.FromString(request).keys)
        found = protocol.parse_find_response(raw, keys)  # our client's strict parser accepts what we serve
        for result in found.results:
            assert result.expiration is None or not math.isnan(result.expiration)
            assert all(peer_id_text(peer) is not None for _, peer in result.nearest)


# ---------------------------------------------------------------------------------------------- seeds


def seed_inputs(name: str) -> dict[str, bytes]:
    """A few valid inputs per target (atheris mutates from them; the tests replay them)."""
    if name == "lean":
        frames = {
            "data": yx.header(yx.DATA, 0, 1, 5) + b"hello",
            "data_fin": yx.header(yx.DATA, yx.FIN, 3, 3) + b"bye",
            "credit": yx.header(yx.WINDOW_UPDATE, 0, 1, 4096),
            "reset": yx.header(yx.WINDOW_UPDATE, yx.RST, 5, 0),
            "peer_stream": yx.header(yx.WINDOW_UPDATE, yx.SYN, 2, 0),
            "ping": yx.header(yx.PING, yx.SYN, 0, 7),
            "go_away": yx.header(yx.GO_AWAY, 0, 0, 0),
            "unknown_stream": yx.header(yx.DATA, 0, 9, 4) + b"lost",
        }
        seeds = {f"yamux_{name}": b"\x00\x03" + frame for name, frame in frames.items()}
        seeds["yamux_all_bytewise"] = b"\x00\x00" + b"".join(frames.values())
        seeds["noise_message"] = b"\x01" + noise_xx.encrypt_stream(noise_xx.CipherState(KEY), b"plain")
        seeds["handshake"] = b"\x02" + bytes(96)
        seeds["multistream"] = b"\x03\x13/multistream/1.0.0\n"
        return seeds
    if name == "node":
        key = dhtid_of("key")
        dictionary = DictionaryValue()
        dictionary.store(PEERS[1], DHTValue(dumps((2, 10.0, {"start_block": 0})), DHT_TIME + 60))
        items = [
            protocol.StoreItem(key, protocol.IS_REGULAR_VALUE, b"\x01", DHT_TIME + 60),
            protocol.StoreItem(key, dumps(PEERS[2]), dumps(1), DHT_TIME + 60),
            protocol.StoreItem(dhtid_of("d"), protocol.IS_DICTIONARY, dumps(dictionary), DHT_TIME + 60),
        ]
        requests = [
            (0, protocol.build_ping_request(node_id=dhtid_of("peer"))),
            (1, protocol.build_store_request(items, node_id=dhtid_of("peer"))),
            (2, protocol.build_find_request([key, dhtid_of("d"), dhtid_of("none")], node_id=dhtid_of("peer"))),
        ]
        body = b"".join(bytes([kind]) + struct.pack(">H", len(r)) + r for kind, r in requests)
        return {"ping_store_find": body, "find_only": body[len(body) - 3 - len(requests[2][1]) :]}
    raise ValueError(f"no such target: {name}")


TARGETS = ("lean", "node")

__all__ = ["TARGETS", "check_lean", "check_node", "seed_inputs"]

if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "corpus")
    for target in TARGETS:
        (out / target).mkdir(parents=True, exist_ok=True)
        for seed_name, seed in seed_inputs(target).items():
            (out / target / seed_name).write_bytes(seed)
        print(target, len(seed_inputs(target)))
