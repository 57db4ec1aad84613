"""dht.net.lean / noise_xx: our dialler-side Noise XX + yamux, against independent implementations and bad peers.

The handshake is checked against the ``noise`` package's responder (what py-libp2p uses) and against py-libp2p's
listening hosts; every interop suite then runs it against real hivemind 1.1.12 daemons (client-mode hosts dial
with it). The connection's frame handling is driven here by a scripted peer over an in-memory stream.
"""

from __future__ import annotations

import contextlib
import functools

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from noise.connection import Keypair, NoiseConnection

import dht.net.lean
import dht.net.transport
from dht.errors import CallTimeout, FrameError, PeerUnreachable, ProtocolNotSupported
from dht.net import noise_xx
from dht.net import yamux_frames as yx
from dht.net.lean import LeanConnection, LeanStreamClosed, LeanUnsupported, LocalIdentity
from dht.net.streams import encode_multistream_line
from dht.net.transport import open_host

DEADLINE = 10.0
PAYLOAD = b"responder payload"


def _raw(private: X25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def _handshake_with_noise_package() -> tuple[noise_xx.NoiseResult, NoiseConnection, bytes, bytes]:
    ours, theirs = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    responder = NoiseConnection.from_name(b"Noise_XX_25519_ChaChaPoly_SHA256")
    responder.set_as_responder()
    responder.set_keypair_from_private_bytes(Keypair.STATIC, _raw(theirs))
    responder.start_handshake()
    initiator = noise_xx.XXInitiator(ours, b"initiator payload")
    assert responder.read_message(initiator.message1()) == b""
    assert initiator.read_message2(responder.write_message(PAYLOAD)) == PAYLOAD
    message3, result = initiator.message3()
    assert responder.read_message(message3) == b"initiator payload"
    assert responder.handshake_finished
    return result, responder, ours.public_key().public_bytes_raw(), theirs.public_key().public_bytes_raw()


def test_noise_xx_agrees_with_the_noise_package_both_ways():
    result, responder, _ours, theirs = _handshake_with_noise_package()
    assert result.remote_static == theirs and result.remote_payload == PAYLOAD
    for i in range(3):  # nonces advance in step on both sides
        assert responder.decrypt(result.send.encrypt(b"ping %d" % i)) == b"ping %d" % i
        assert result.receive.decrypt(responder.encrypt(b"pong %d" % i)) == b"pong %d" % i


def test_noise_tampered_message_fails_authentication():
    result, responder, *_ = _handshake_with_noise_package()
    sealed = bytearray(responder.encrypt(b"hello"))
    sealed[3] ^= 1
    with pytest.raises(noise_xx.NoiseError, match="authentication"):
        result.receive.decrypt(bytes(sealed))


def test_noise_low_order_key_is_refused():
    initiator = noise_xx.XXInitiator(X25519PrivateKey.generate(), b"")
    initiator.message1()
    with pytest.raises(noise_xx.NoiseError, match="unusable X25519 key"):
        initiator.read_message2(bytes(32) + bytes(64))


def test_noise_stream_framing_splits_and_reassembles_cut_anywhere():
    send, receive = noise_xx.CipherState(b"k" * 32), noise_xx.CipherState(b"k" * 32)
    plain = bytes(range(256)) * 700  # 179,200 bytes: three transport messages
    wire = noise_xx.encrypt_stream(send, plain)
    assert len(wire) == len(plain) + 3 * (2 + noise_xx.TAG_LEN)
    buffer, out = bytearray(), bytearray()
    for start in range(0, len(wire), 7919):  # a prime: cuts land inside lengths, tags and bodies
        buffer += wire[start : start + 7919]
        noise_xx.decrypt_into(receive.decrypt, buffer, out)
    assert bytes(out) == plain and not buffer


def test_tcp_target_parses_only_direct_tcp():
    assert dht.net.lean.tcp_target("/ip4/127.0.0.1/tcp/4001") == ("127.0.0.1", 4001)
    assert dht.net.lean.tcp_target("/ip6/::1/tcp/80") == ("::1", 80)
    assert dht.net.lean.tcp_target("/dns4/example.org/tcp/31337") == ("example.org", 31337)
    for addr in ("/ip4/1.2.3.4/udp/1/quic", "/ip4/1.2.3.4/tcp/1/ws", "/ip4/1.2.3.4/tcp/0", "/ip4/1.2.3.4/tcp/x"):
        assert dht.net.lean.tcp_target(addr) is None
    assert dht.net.lean.tcp_target("/p2p/QmRelay/p2p-circuit") is None


def test_targets_are_ranked_public_first_and_deduplicated():
    announced = [
        ("127.0.0.1", 31337),
        ("10.0.0.5", 31337),
        ("172.17.0.1", 31337),
        ("192.168.1.7", 31337),
        ("fe80::1", 31337),
        ("10.0.0.5", 31337),
        ("8.8.4.4", 31337),
        ("2001:4860::8888", 31337),
        ("server.example.org", 31337),
        ("::1", 31337),
        ("100.64.0.9", 31337),
        ("224.0.0.1", 31337),
        ("::ffff:127.0.0.2", 31337),
        ("localhost", 31337),
    ]
    assert dht.net.lean.rank_targets(announced) == [
        ("8.8.4.4", 31337),  # public, in announced order
        ("2001:4860::8888", 31337),
        ("server.example.org", 31337),
        ("10.0.0.5", 31337),  # then private and link-local, once each
        ("172.17.0.1", 31337),
        ("192.168.1.7", 31337),
        ("fe80::1", 31337),
        ("100.64.0.9", 31337),  # shared address space (CGNAT, Tailscale): not public
        ("127.0.0.1", 31337),  # loopback after them, still dialled
        ("::1", 31337),
        ("::ffff:127.0.0.2", 31337),
        ("localhost", 31337),
        ("224.0.0.1", 31337),  # multicast: last
    ]


async def test_a_dial_takes_the_public_address_over_a_crowd_of_lan_ones(monkeypatch):
    """Four LAN addresses announced first must not push the public one out of the addresses dialled (the
    dial is captured: nothing leaves 127.0.0.1)."""
    dialled = []

    async def capture(self, peer_id, targets):
        dialled.extend(targets)

    monkeypatch.setattr(dht.net.transport.Host, "_dial_lean", capture)
    async with open_host() as client:
        peer = "12D3KooWDpcMQ1Yed2zxjj2r1tkfYFsmFYbnZrjW9owG5Mg2Uu6T"
        lan = [f"/ip4/{ip}/tcp/31337" for ip in ("127.0.0.1", "10.0.0.5", "172.17.0.1", "192.168.1.7")]
        client.add_addrs(peer, [*lan, "/ip4/8.8.4.4/tcp/31337"])
        await client._dial_direct(peer)
    assert dialled[0] == ("8.8.4.4", 31337) and len(dialled) == dht.net.transport.MAX_LEAN_ADDRS_PER_DIAL


# ------------------------------------------------------------------ against py-libp2p's listening hosts


async def _echo(caller: str, data: bytes) -> bytes:
    return data


async def _big(caller: str, data: bytes) -> bytes:
    return b"y" * 3_000_000


async def test_client_host_calls_a_py_libp2p_host_over_lean_connection():
    async with open_host(listen=True) as server, open_host() as client:
        assert server._lean_identity is None and client._lean_identity is not None  # listening hosts stay py-libp2p
        server.set_unary_handler("Test.echo", _echo)
        server.set_unary_handler("Test.big", _big)
        peer = await client.connect(server.listen_addrs[0], timeout=DEADLINE)
        request = bytes(range(256)) * 1200  # 307 KB: over yamux's initial 256 KiB window, so credit must flow
        replies = []
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(lambda: _append(replies, client.call_unary(peer, "Test.echo", request)))
        assert replies == [request] * 3
        assert await client.call_unary(peer, "Test.big", b"", timeout=DEADLINE) == b"y" * 3_000_000
        assert client._lean_connection(peer) is not None
        assert client.libp2p_host.get_network().get_connections() == []  # nothing went through py-libp2p
        assert client.connected_peers() == [peer] and not client.is_relayed(peer)
        await client.disconnect(peer)
        assert not client.is_connected(peer)
        assert await client.call_unary(peer, "Test.echo", b"again", timeout=DEADLINE) == b"again"  # redials


async def _append(out: list, call) -> None:
    out.append(await call)


async def test_wrong_peer_at_the_address_is_refused():
    async with open_host(listen=True) as server, open_host(listen=True) as other:
        port = int(server.listen_addrs[0].split("/")[4])
        with trio.fail_after(DEADLINE), pytest.raises(PeerUnreachable, match=f"is {server.peer_id}, not"):
            await dht.net.lean.dial(LocalIdentity(_key_pair()), "127.0.0.1", port, other.peer_id)


async def test_tcp_connect_takes_literals_directly_and_names_the_long_way(monkeypatch):
    """``dht.net.lean._connect_tcp``: an IP literal skips trio's resolver; a name goes through it; a closed port is an
    OSError (``dial`` turns it into PeerUnreachable)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    resolved = []
    real_open = trio.open_tcp_stream

    async def open_by_name(host, port):  # stands in for the resolver: "localhost" may be ::1 only here
        resolved.append(host)
        return await real_open("127.0.0.1", port)

    monkeypatch.setattr(trio, "open_tcp_stream", open_by_name)
    with trio.fail_after(DEADLINE):
        for host in ("127.0.0.1", "peer.localhost"):
            stream = await dht.net.lean._connect_tcp(host, port)
            assert stream.socket.getpeername()[:2] == ("127.0.0.1", port)
            await stream.aclose()
        assert resolved == ["peer.localhost"]
        await listeners[0].aclose()
        with pytest.raises(OSError):
            await dht.net.lean._connect_tcp("127.0.0.1", port)
        with pytest.raises(PeerUnreachable, match=r"cannot connect to 127\.0\.0\.1"):
            await dht.net.lean.dial(
                LocalIdentity(_key_pair()), "127.0.0.1", port, "12D3KooWDpcMQ1Yed2zxjj2r1tkfYFsmFYbnZrjW9owG5Mg2Uu6T"
            )


def _key_pair():
    import libp2p

    return libp2p.generate_new_ed25519_identity()


async def test_peer_refusing_lean_is_dialled_with_py_libp2p(monkeypatch):
    async def refuse(*_args, **_kwargs):
        raise LeanUnsupported("the peer does not speak /noise")

    monkeypatch.setattr(dht.net.lean, "dial", refuse)
    async with open_host(listen=True) as server, open_host() as client:
        server.set_unary_handler("Test.echo", _echo)
        peer = await client.connect(server.listen_addrs[0], timeout=DEADLINE)
        assert await client.call_unary(peer, "Test.echo", b"hi", timeout=DEADLINE) == b"hi"
        assert peer in client._lean_refused and client._lean_connection(peer) is None
        assert client.libp2p_host.get_network().get_connections()


# ------------------------------------------------------------------ hostile or silent TCP peers


async def _serve_once(script, nursery: trio.Nursery) -> int:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, script, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def test_garbage_instead_of_multistream_is_a_clear_error():
    async def garbage(stream: trio.SocketStream) -> None:
        await stream.send_all(b"\x05HELLO" * 10)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        port = await _serve_once(garbage, nursery)
        with trio.fail_after(DEADLINE), pytest.raises(PeerUnreachable, match=r"handshake with 127\.0\.0\.1"):
            await dht.net.lean.dial(LocalIdentity(_key_pair()), "127.0.0.1", port, "QmWhoever")
        nursery.cancel_scope.cancel()


async def test_noise_refused_is_lean_unsupported():
    async def no_noise(stream: trio.SocketStream) -> None:
        await stream.send_all(encode_multistream_line("/multistream/1.0.0") + encode_multistream_line("na"))
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        port = await _serve_once(no_noise, nursery)
        with trio.fail_after(DEADLINE), pytest.raises(LeanUnsupported):
            await dht.net.lean.dial(LocalIdentity(_key_pair()), "127.0.0.1", port, "QmWhoever")
        nursery.cancel_scope.cancel()


async def test_silent_peer_ends_at_the_callers_deadline():
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery, open_host() as client:
        port = await _serve_once(silent, nursery)
        peer = "12D3KooWLXDLtKD2y9e9vnB8oGLZthfU9aJ4hHT7gcvLsfmz23Eo"
        with pytest.raises(CallTimeout):
            await client.connect(peer, [f"/ip4/127.0.0.1/tcp/{port}"], timeout=0.3)
        assert not client.is_connected(peer)
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ the connection, against a scripted peer


class _ScriptedPeer:
    """The other end of a LeanConnection over an in-memory stream, with matching Noise keys."""

    def __init__(self) -> None:
        ours, theirs = trio.testing.memory_stream_pair()
        keys = noise_xx.NoiseResult(b"", b"", noise_xx.CipherState(b"a" * 32), noise_xx.CipherState(b"b" * 32))
        self.conn = LeanConnection(ours, keys, "QmPeer", ("127.0.0.1", 1), cipher=bytearray(), plain=bytearray())
        self.sock = theirs
        self.send = noise_xx.CipherState(b"b" * 32)
        self.receive = noise_xx.CipherState(b"a" * 32)
        self._cipher = bytearray()
        self.plain = bytearray()

    async def frames(self, *frames: bytes) -> None:
        await self.sock.send_all(noise_xx.encrypt_stream(self.send, b"".join(frames)))

    async def read_frame(self) -> tuple[int, int, int, int, bytes]:
        """The next yamux frame we sent: (type, flags, stream id, length, data)."""
        while True:
            if len(self.plain) >= yx.HEADER_LEN:
                _v, kind, flags, sid, length = yx.HEADER.unpack_from(self.plain)
                size = yx.HEADER_LEN + (length if kind == yx.DATA else 0)
                if len(self.plain) >= size:
                    data = bytes(self.plain[yx.HEADER_LEN : size])
                    del self.plain[:size]
                    return kind, flags, sid, length, data
            chunk = await self.sock.receive_some(1 << 20)
            if not chunk:
                raise EOFError("the connection hung up")
            self._cipher += chunk
            noise_xx.decrypt_into(self.receive.decrypt, self._cipher, self.plain)


@contextlib.asynccontextmanager
async def _running_peer(peer: _ScriptedPeer | None = None):
    """A scripted peer (``peer``, or a new one) with our connection's reader task running; the connection is
    closed on the way out."""
    peer = peer or _ScriptedPeer()
    async with trio.open_nursery() as nursery:
        peer.nursery = nursery
        nursery.start_soon(peer.conn.run)
        try:
            yield peer
        finally:
            await peer.conn.aclose()


async def test_connection_answers_pings_and_refuses_peer_streams():
    async with _running_peer() as peer:
        with trio.fail_after(DEADLINE):
            await peer.frames(yx.header(yx.PING, yx.SYN, 0, 77), yx.header(yx.WINDOW_UPDATE, yx.SYN, 2, 0))
            assert (await peer.read_frame())[:4] == (yx.PING, yx.ACK, 0, 77)
            assert (await peer.read_frame())[:4] == (yx.WINDOW_UPDATE, yx.RST, 2, 0)
        assert peer.conn.is_open


YAMUX_ANSWER = encode_multistream_line("/multistream/1.0.0") + encode_multistream_line(yx.PROTOCOL_ID)


async def test_the_yamux_answer_the_dial_did_not_wait_for_is_read_before_the_first_frame():
    peer = _ScriptedPeer()
    peer.conn.expect_muxer_answer()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.conn.run)
        with trio.fail_after(DEADLINE):
            await peer.frames(YAMUX_ANSWER[:3])  # the answer may come in pieces, and frames in its last piece
            await peer.frames(YAMUX_ANSWER[3:], yx.header(yx.PING, yx.SYN, 0, 5))
            assert (await peer.read_frame())[:4] == (yx.PING, yx.ACK, 0, 5)
        assert peer.conn.is_open and not peer.conn.refused_muxer
        await peer.conn.aclose()


async def test_a_yamux_refusal_after_the_dial_fails_the_connection_and_marks_the_peer():
    peer = _ScriptedPeer()
    peer.conn.expect_muxer_answer()
    stream = peer.conn.open_stream()  # a call started right after the dial
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.conn.run)
        with trio.fail_after(DEADLINE):
            await peer.frames(encode_multistream_line("/multistream/1.0.0") + encode_multistream_line("na"))
            with pytest.raises(LeanStreamClosed):
                await stream.read(1)
    assert peer.conn.refused_muxer and not peer.conn.is_open  # the host then dials this peer with py-libp2p


async def test_our_keepalive_ping_needs_the_peers_ack():
    async with _running_peer() as peer:
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                answered = []
                nursery.start_soon(lambda: _append(answered, peer.conn.ping(DEADLINE)))
                kind, flags, _sid, opaque, _ = await peer.read_frame()
                assert (kind, flags) == (yx.PING, yx.SYN)
                await peer.frames(yx.header(yx.PING, yx.ACK, 0, opaque + 1))  # not ours: ignored
                await trio.testing.wait_all_tasks_blocked()
                assert answered == [] and opaque in peer.conn._pings
                await peer.frames(yx.header(yx.PING, yx.ACK, 0, opaque))
            assert answered == [True]


async def test_a_busy_peer_counts_as_alive_without_the_ack(autojump_clock):
    """The ACK queues behind the data the peer is sending: bytes after our PING prove it is there."""
    async with _running_peer() as peer:
        async with trio.open_nursery() as nursery:
            answered = []
            nursery.start_soon(lambda: _append(answered, peer.conn.ping(DEADLINE)))
            await peer.read_frame()
            await peer.frames(yx.header(yx.DATA, 0, 99, 3) + b"abc")  # a stream we no longer know: dropped
        assert answered == [True]


async def test_a_ping_unanswered_in_time_fails_and_leaves_the_connection_to_the_host(autojump_clock):
    async with _running_peer() as peer:  # the scripted peer reads nothing and stays silent
        assert await peer.conn.ping(DEADLINE) is False
        assert peer.conn.is_open and not peer.conn._pings  # a late ACK finds nothing waiting


async def test_a_ping_ends_when_the_connection_does():
    async with _running_peer() as peer:
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                answered = []
                nursery.start_soon(lambda: _append(answered, peer.conn.ping(10 * DEADLINE)))
                await peer.read_frame()
                await peer.sock.aclose()  # the peer hangs up instead of answering
            assert answered == [False]
        assert await peer.conn.ping(DEADLINE) is False  # and a closed connection is not pinged at all


async def test_silent_lean_connections_are_closed_and_answering_ones_kept():
    async with open_host(listen=True) as server, open_host() as client, _running_peer() as silent:
        server.set_unary_handler("Test.echo", _echo)
        await client.connect(server.listen_addrs[0], timeout=DEADLINE)
        silent.conn.peer_id = "12D3KooWLXDLtKD2y9e9vnB8oGLZthfU9aJ4hHT7gcvLsfmz23Eo"
        client._lean[silent.conn.peer_id] = silent.conn  # a peer whose NAT dropped us: nothing comes back
        with trio.fail_after(DEADLINE):
            assert await client._close_silent_lean(2.0) == 0  # both sent bytes within the last sweep period
            for conn in client._lean.values():
                conn.last_received -= 2 * dht.net.transport.LEAN_REAP_EVERY  # long quiet: both get pinged
            assert await client._close_silent_lean(2.0) == 1  # real sockets: a real (generous) timeout
        assert not silent.conn.is_open and "keepalive ping" in silent.conn.error
        assert client.connected_peers() == [server.peer_id]  # py-libp2p's yamux answered
        assert await client.call_unary(server.peer_id, "Test.echo", b"still", timeout=DEADLINE) == b"still"


async def test_the_reaper_closes_idle_then_silent_connections_every_period(autojump_clock):
    calls = []

    class Stub:
        async def _close_idle_lean(self, now):
            calls.append(("idle", now))

        async def _close_silent_lean(self, timeout):
            calls.append(("silent", timeout))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(dht.net.transport.Host._reap_idle_lean, Stub())
        await trio.sleep(2.5 * dht.net.transport.LEAN_REAP_EVERY)
        nursery.cancel_scope.cancel()
    period, timeout = dht.net.transport.LEAN_REAP_EVERY, dht.net.transport.LEAN_PING_TIMEOUT
    assert [kind for kind, _ in calls] == ["idle", "silent", "idle", "silent"]
    assert calls[1] == ("silent", timeout) and calls[2][1] - calls[0][1] == pytest.approx(period)


async def test_stream_round_trip_window_credit_and_close():
    async with _running_peer() as peer:
        stream = peer.conn.open_stream()
        big = b"z" * (yx.INITIAL_WINDOW + 1000)
        with trio.fail_after(DEADLINE):
            peer.nursery.start_soon(stream.write, big)
            kind, flags, sid, length, _ = await peer.read_frame()
            assert (kind, flags, sid, length) == (yx.WINDOW_UPDATE, yx.SYN, 1, dht.net.lean.STREAM_GRANT)
            got = b""
            while len(got) < yx.INITIAL_WINDOW:  # the peer's window: the rest waits for credit
                got += (await peer.read_frame())[4]
            assert got == big[: yx.INITIAL_WINDOW]
            await peer.frames(yx.header(yx.WINDOW_UPDATE, 0, 1, 4096))
            assert (await peer.read_frame())[4] == b"z" * 1000
            # the reply, split over frames and ended by FIN
            await peer.frames(yx.header(yx.DATA, yx.ACK, 1, 3) + b"abc", yx.header(yx.DATA, yx.FIN, 1, 2) + b"de")
            assert await stream.read() == b"abcde"  # both frames came in one Noise message
            assert await stream.read() == b""  # then the FIN
            await stream.close()
            assert (await peer.read_frame())[:3] == (yx.WINDOW_UPDATE, yx.FIN, 1)


@pytest.mark.parametrize(
    "bad, reason",
    [
        (yx.header(yx.DATA, 0, 1, dht.net.lean.RECEIVE_WINDOW + 1), "DATA frame of"),
        (yx.HEADER.pack(1, yx.DATA, 0, 1, 0), "yamux version"),
        (yx.header(9, 0, 1, 0), "unknown yamux frame type"),
    ],
)
async def test_protocol_violations_close_the_connection_and_fail_its_streams(bad, reason):
    async with _running_peer() as peer:
        stream = peer.conn.open_stream()
        with trio.fail_after(DEADLINE):
            await peer.frames(bad)
            with pytest.raises(LeanStreamClosed, match=reason):
                await stream.read()
        assert peer.conn.closed and not peer.conn.is_open
        with pytest.raises(PeerUnreachable):
            peer.conn.open_stream()


async def test_tampered_noise_message_closes_the_connection():
    async with _running_peer() as peer:
        stream = peer.conn.open_stream()
        sealed = bytearray(noise_xx.encrypt_stream(peer.send, yx.header(yx.DATA, 0, 1, 2) + b"hi"))
        sealed[-1] ^= 0xFF
        with trio.fail_after(DEADLINE):
            await peer.sock.send_all(bytes(sealed))
            with pytest.raises(LeanStreamClosed, match="authentication"):
                await stream.read()


async def test_peer_closing_the_socket_fails_pending_reads():
    async with _running_peer() as peer:
        stream = peer.conn.open_stream()
        with trio.fail_after(DEADLINE):
            await peer.sock.aclose()
            with pytest.raises(LeanStreamClosed, match="closed by the peer"):
                await stream.read()
            with pytest.raises(FrameError):
                await stream.write(b"x")


async def test_receive_credit_is_returned_once_half_the_window_is_read():
    async with _running_peer() as peer:
        stream = peer.conn.open_stream()
        with trio.fail_after(DEADLINE):
            await stream.write(b"request")
            assert (await peer.read_frame())[:2] == (yx.WINDOW_UPDATE, yx.SYN)
            assert (await peer.read_frame())[4] == b"request"
            piece = b"r" * 60_000
            total = 0
            while total <= dht.net.lean.RECEIVE_WINDOW // 2:
                await peer.frames(yx.header(yx.DATA, 0, 1, len(piece)) + piece)
                total += len(piece)
            got = 0
            while got < total:
                got += len(await stream.read(100_000))
            kind, flags, sid, credit, _ = await peer.read_frame()
            assert (kind, flags, sid) == (yx.WINDOW_UPDATE, 0, 1)
            assert dht.net.lean.RECEIVE_WINDOW // 2 <= credit <= total  # what we read, given back


async def test_data_beyond_the_granted_window_closes_the_connection():
    async with _running_peer() as peer:
        stream = peer.conn.open_stream()
        piece = b"w" * 1_000_000
        with trio.fail_after(DEADLINE):
            for _ in range(dht.net.lean.RECEIVE_WINDOW // len(piece) + 1):  # each frame fits; together they do not
                await peer.frames(yx.header(yx.DATA, 0, 1, len(piece)) + piece)
            with pytest.raises(EOFError):  # nothing was read, so no credit came back: the connection hangs up
                await peer.read_frame()
            with pytest.raises(LeanStreamClosed, match="window"):
                while True:
                    await stream.read()
        assert peer.conn.closed


async def test_peer_reset_fails_reads_after_the_data_that_came_first():
    async with _running_peer() as peer:
        stream = peer.conn.open_stream()
        with trio.fail_after(DEADLINE):
            await peer.frames(yx.header(yx.DATA, 0, 1, 4) + b"part", yx.header(yx.WINDOW_UPDATE, yx.RST, 1, 0))
            assert await stream.read() == b"part"
            with pytest.raises(LeanStreamClosed, match="reset by the peer"):
                await stream.read()
        assert peer.conn.is_open  # only the stream is gone


async def test_frames_for_a_closed_stream_are_dropped_and_reads_after_close_fail():
    async with _running_peer() as peer:
        stream = peer.conn.open_stream()
        with trio.fail_after(DEADLINE):
            await stream.write(b"x")
            await stream.close()
            with pytest.raises(LeanStreamClosed, match="closed by us"):
                await stream.read()
            await peer.frames(yx.header(yx.DATA, 0, 1, 5) + b"late!", yx.header(yx.PING, yx.SYN, 0, 9))
            frames = [await peer.read_frame() for _ in range(4)]  # SYN, DATA, FIN, then the ping's answer
            assert frames[-1][:4] == (yx.PING, yx.ACK, 0, 9)  # the reader went past the late frame
        assert peer.conn.is_open


async def test_go_away_stops_new_streams_on_the_connection():
    async with _running_peer() as peer:
        with trio.fail_after(DEADLINE):
            await peer.frames(yx.header(yx.GO_AWAY, 0, 0, yx.GO_AWAY_NORMAL), yx.header(yx.PING, yx.SYN, 0, 1))
            await peer.read_frame()  # the ping after GO_AWAY was answered: GO_AWAY has been handled
        assert peer.conn.going_away and not peer.conn.is_open
        with pytest.raises(PeerUnreachable, match="going away"):
            peer.conn.open_stream()


async def test_a_peer_opening_streams_in_a_loop_is_cut_off():
    async with _running_peer() as peer:
        stream = peer.conn.open_stream()
        opens = [
            yx.header(yx.WINDOW_UPDATE, yx.SYN, 2 * (i + 1), 0) for i in range(dht.net.lean.MAX_INBOUND_RESETS + 1)
        ]
        with trio.fail_after(DEADLINE):
            await peer.frames(*opens)
            with pytest.raises(LeanStreamClosed, match="streams in"):
                await stream.read()


async def test_decrypt_failure_after_a_good_message_is_a_noise_error():
    send, receive = noise_xx.CipherState(b"k" * 32), noise_xx.CipherState(b"k" * 32)
    good = noise_xx.encrypt_stream(send, b"first")
    bad = bytearray(noise_xx.encrypt_stream(send, b"second"))
    bad[-1] ^= 1
    buffer, out = bytearray(good + bytes(bad)), bytearray()
    with pytest.raises(noise_xx.NoiseError):
        noise_xx.decrypt_into(receive.decrypt, buffer, out)
    assert bytes(buffer) == bytes(bad)  # the good message is consumed, never decrypted twice
    assert out == b"first"  # and stays decrypted


@pytest.mark.parametrize("pipeline", [False, True])
@pytest.mark.parametrize("lean", [True, False])
@pytest.mark.parametrize("size", [10, 300_000])
async def test_unsupported_protocol_is_told_apart_with_a_pipelined_request(lean, size, pipeline):
    """A refused protocol must read as "not supported", whatever the request size and the stream kind, also when
    the request went with the proposal (the listener then reads it as its next proposal, and must survive it)."""
    async with open_host(listen=True) as server, open_host(lean=lean) as client:
        peer = await client.connect(server.listen_addrs[0], timeout=DEADLINE)
        assert (client._lean_connection(peer) is not None) is lean
        with trio.fail_after(DEADLINE), pytest.raises(ProtocolNotSupported):
            await client.call_unary(peer, "Test.nobody", b"q" * size, timeout=DEADLINE, pipeline=pipeline)
        server.set_unary_handler("Test.echo", _echo)  # and the connection still works
        assert await client.call_unary(peer, "Test.echo", b"q" * size, timeout=DEADLINE) == b"q" * size


async def test_a_protocol_once_selected_is_pipelined_until_the_peer_refuses_it():
    async with open_host(listen=True) as server, open_host() as client:
        peer = await client.connect(server.listen_addrs[0], timeout=DEADLINE)
        server.set_unary_handler("Test.echo", _echo)
        with trio.fail_after(DEADLINE):
            assert await client.call_unary(peer, "Test.echo", b"one", timeout=DEADLINE) == b"one"
            assert client._accepted.knows(peer, "Test.echo")  # so the next request goes with its proposal
            assert await client.call_unary(peer, "Test.echo", b"two", timeout=DEADLINE) == b"two"
            server.remove_unary_handler("Test.echo")  # a server restarted without it (a joining Petals server)
            with pytest.raises(ProtocolNotSupported):
                await client.call_unary(peer, "Test.echo", b"three", timeout=DEADLINE)
            assert not client._accepted.knows(peer, "Test.echo")  # asked first again next time
            server.set_unary_handler("Test.echo", _echo)
            assert await client.call_unary(peer, "Test.echo", b"four", timeout=DEADLINE) == b"four"


async def test_reads_of_any_size_return_the_bytes_in_order():
    data = bytes(range(256)) * 40
    async with _running_peer() as peer:
        stream = peer.conn.open_stream()
        with trio.fail_after(DEADLINE):
            for start in range(0, len(data), 1000):  # ten frames of 1000 bytes (the last one 240)
                piece = data[start : start + 1000]
                await peer.frames(yx.header(yx.DATA, 0, 1, len(piece)) + piece)
            await peer.frames(yx.header(yx.WINDOW_UPDATE, yx.FIN, 1, 0))
            got, sizes = b"", [1, 7, 992, 1000, 1500, 3, None, 5000]
            for i in range(100):
                part = await stream.read(sizes[i % len(sizes)])
                if not part:
                    break
                assert sizes[i % len(sizes)] is None or len(part) <= sizes[i % len(sizes)]
                got += part
            assert got == data


async def test_a_listening_host_survives_a_proposal_that_is_not_utf8():
    """py-libp2p 0.8.1 let UnicodeDecodeError escape multistream negotiation and stop the whole host (the demo
    swarm died of one request sent after a refused proposal)."""
    from dht.net.streams import BufferedReader

    async with open_host(listen=True) as server, open_host() as client:
        server.set_unary_handler("Test.echo", _echo)
        peer = await client.connect(server.listen_addrs[0], timeout=DEADLINE)
        stream = client._lean_connection(peer).open_stream()
        bad = b"\xab\xcd\xef\n"
        with trio.fail_after(DEADLINE):
            await stream.write(encode_multistream_line("/multistream/1.0.0") + bytes([len(bad)]) + bad)
            reader = BufferedReader(stream)
            assert await reader.read_frame(1024) == b"/multistream/1.0.0\n"  # the host's header, then nothing
            with pytest.raises(FrameError):
                await reader.read_frame(1024)
            other = await client.call_unary(peer, "Test.echo", b"still here", timeout=DEADLINE)
        assert other == b"still here"


async def test_a_refusal_on_one_address_ends_the_lean_dial_without_waiting_for_a_silent_one():
    """Two addresses: one answers "na" to /noise, one swallows packets: the refusal decides at once (the host then
    dials with py-libp2p) instead of waiting out the deadline on the silent one."""

    async def no_noise(stream: trio.SocketStream) -> None:
        await stream.send_all(encode_multistream_line("/multistream/1.0.0") + encode_multistream_line("na"))
        await trio.sleep_forever()

    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery, open_host() as client:
        refusing, swallowing = await _serve_once(no_noise, nursery), await _serve_once(silent, nursery)
        peer = "12D3KooWLXDLtKD2y9e9vnB8oGLZthfU9aJ4hHT7gcvLsfmz23Eo"
        with trio.fail_after(3), pytest.raises(LeanUnsupported):  # far less than a call's deadline
            await client._dial_lean(peer, [("127.0.0.1", swallowing), ("127.0.0.1", refusing)])
        assert not client.is_connected(peer)
        nursery.cancel_scope.cancel()


async def test_idle_lean_connections_are_closed_and_redialled_when_needed():
    async with open_host(listen=True) as a, open_host(listen=True) as b, open_host() as client:
        for server in (a, b):
            server.set_unary_handler("Test.echo", _echo)
            await client.connect(server.listen_addrs[0], timeout=DEADLINE)
        now = trio.current_time()
        assert await client._close_idle_lean(now) == 0  # both fresh
        assert await client.call_unary(b.peer_id, "Test.echo", b"b", timeout=DEADLINE) == b"b"
        assert await client._close_idle_lean(now, keep=1) == 1  # over the cap: the least recently used goes
        assert not client.is_connected(a.peer_id) and client.is_connected(b.peer_id)
        later = trio.current_time() + dht.net.transport.LEAN_IDLE_CLOSE + 1
        assert await client._close_idle_lean(later) == 1 and client.connected_peers() == []
        assert await client.call_unary(a.peer_id, "Test.echo", b"a", timeout=DEADLINE) == b"a"  # dialled again


@pytest.mark.parametrize(("size", "pipelined"), [(10, True), (300_000, False)])
async def test_only_a_request_within_the_initial_window_goes_with_its_proposal(size, pipelined):
    """go-yamux grants no window past the first 256 KiB to a stream whose protocol it refuses: a larger pipelined
    request would wait for credit, and the refusal would read as a broken stream."""
    async with open_host(listen=True) as server, open_host() as client:
        peer = await client.connect(server.listen_addrs[0], timeout=DEADLINE)
        server.set_unary_handler("Test.echo", _echo)
        opened: list[bool] = []
        open_stream = client._open_stream

        async def recording(peer_id, protocol, then=b""):
            opened.append(bool(then))
            return await open_stream(peer_id, protocol, then)

        client._open_stream = recording
        with trio.fail_after(DEADLINE):
            assert await client.call_unary(peer, "Test.echo", b"q" * size, timeout=DEADLINE, pipeline=True)
        assert opened == [pipelined]
