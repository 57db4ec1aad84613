"""dht.net.lean against hostile peers (issue 18, transport): memory a peer can pin, identities, refusals, drains.

Scripted peers complete a real handshake (:mod:`lean_peers`, over in-memory streams) or skip it
(``test_lean._ScriptedPeer``, matching Noise keys) and then misbehave.
"""

from __future__ import annotations

import tracemalloc

import pytest
import trio
import trio.testing
from lean_peers import NoiseResponder, handshake_payload, new_key_pair, peer_id_of, scripted_targets
from test_lean import _running_peer, _ScriptedPeer

import dht.net.lean
from dht.net import noise_xx
from dht.net import yamux_frames as yx
from dht.net.lean import MAX_CONNECTION_BUFFER, RECEIVE_WINDOW, LeanStreamClosed, LocalIdentity, ReceiveBudget

DEADLINE = 10.0
# What a connection may hold after a socket read when no stream of ours takes data: a partial Noise message (its
# length prefix included) and a partial yamux header.
IDLE_BOUND = noise_xx.MAX_MESSAGE + 2 + yx.HEADER_LEN
# ... and with streams nobody reads: the connection's cap, overshot by at most one socket read's worth
READ_OVERSHOOT = dht.net.lean.BULK_READ + noise_xx.MAX_MESSAGE + 2


def _held(conn: dht.net.lean.LeanConnection) -> int:
    """Bytes the connection holds for the peer: undecrypted, unparsed, and buffered in its streams."""
    streams = sum(s._buffered for s in conn._streams.values())
    return len(conn._cipher) + len(conn._plain) + streams


async def test_hostile_peers_flooding_after_a_valid_handshake_cannot_pin_memory(monkeypatch):
    """Eight peers complete a valid handshake, then each sends a DATA frame of a whole window for a stream we
    never opened, all but its last byte, and keeps the connection open. The payload is dropped as it arrives:
    each connection holds at most IDLE_BOUND bytes (~64 KiB), where the old reader held each frame whole
    (4 MiB a connection, ~33 MB here), and the connection stays open (go-yamux drops such data too)."""
    peers = 8
    key_pairs = [new_key_pair() for _ in range(peers)]
    identity = LocalIdentity(new_key_pair())
    flooded = trio.Semaphore(0)

    def flood(key_pair):
        async def script(sock) -> None:
            responder = NoiseResponder(sock, lambda static: handshake_payload(key_pair, static))
            assert await responder.handshake()
            await responder.send_plain(yx.header(yx.DATA, 0, 1, RECEIVE_WINDOW))
            await responder.send_zeros(RECEIVE_WINDOW - 1)
            flooded.release()
            await trio.sleep_forever()

        return script

    tracemalloc.start()
    try:
        async with scripted_targets(monkeypatch) as scripts, trio.open_nursery() as nursery:
            conns = []
            baseline = tracemalloc.get_traced_memory()[0]
            with trio.fail_after(DEADLINE):
                for port, key_pair in enumerate(key_pairs, start=1):
                    scripts[port] = flood(key_pair)
                    conn = await dht.net.lean.dial(identity, "127.0.0.1", port, peer_id_of(key_pair))
                    nursery.start_soon(conn.run)
                    conns.append(conn)
                for _ in range(peers):
                    await flooded.acquire()
                await trio.testing.wait_all_tasks_blocked()  # every reader has taken every byte sent
            held_traced = tracemalloc.get_traced_memory()[0] - baseline
            held = [_held(conn) for conn in conns]
            assert all(conn.is_open for conn in conns)
            for conn in conns:
                await conn.aclose()
            nursery.cancel_scope.cancel()
    finally:
        tracemalloc.stop()
    assert max(held) <= IDLE_BOUND, held
    assert held_traced < peers * (IDLE_BOUND + 64 * 1024), held_traced  # what Python allocated and kept, all told


async def test_a_data_frame_larger_than_what_is_left_of_its_window_closes_the_connection_at_its_header():
    async with _running_peer() as peer:
        stream = peer.conn.open_stream()
        with trio.fail_after(DEADLINE):
            await peer.frames(yx.header(yx.DATA, 0, 1, 1000) + b"a" * 1000)
            await peer.frames(yx.header(yx.DATA, 0, 1, RECEIVE_WINDOW - 999))  # one byte too many, no payload yet
            await trio.testing.wait_all_tasks_blocked()
            assert peer.conn.closed  # decided at the header, not after 4 MiB arrived
            assert await stream.read() == b"a" * 1000  # what came within the window is still read
            with pytest.raises(LeanStreamClosed, match="window"):
                await stream.read()


async def test_data_for_a_stream_we_closed_is_dropped_as_it_arrives_and_the_connection_goes_on():
    async with _running_peer() as peer:
        stream = peer.conn.open_stream()
        with trio.fail_after(DEADLINE):
            await stream.write(b"request")
            await peer.frames(yx.header(yx.DATA, 0, 1, 300_000) + b"r" * 100_000)
            await trio.testing.wait_all_tasks_blocked()
            assert stream._buffered == 100_000
            await stream.close()  # mid-frame: the buffered part is dropped, so is the rest
            assert stream._buffered == 0 and peer.conn._budget.used == 0
            await peer.frames(b"r" * 200_000, yx.header(yx.PING, yx.SYN, 0, 5))
            await trio.testing.wait_all_tasks_blocked()
            assert _held(peer.conn) == 0 and peer.conn._budget.used == 0
            frames = [await peer.read_frame() for _ in range(4)]  # SYN, DATA, FIN, the ping's answer
            assert frames[-1][:4] == (yx.PING, yx.ACK, 0, 5)
        assert peer.conn.is_open


async def test_bytes_nobody_reads_are_capped_per_connection_and_flow_again_once_read():
    """Three streams whose callers do not read, each filled to its window by the peer: the reader stops reading
    the socket at MAX_CONNECTION_BUFFER (plus one read), and goes on when a caller reads."""
    async with _running_peer() as peer:
        streams = [peer.conn.open_stream() for _ in range(3)]
        piece = b"p" * 1_000_000
        with trio.fail_after(DEADLINE):
            for stream in streams:
                left = RECEIVE_WINDOW
                while left:
                    size = min(left, len(piece))
                    await peer.frames(yx.header(yx.DATA, 0, stream.stream_id, size) + piece[:size])
                    left -= size
            await trio.testing.wait_all_tasks_blocked()
            held = _held(peer.conn)
            assert MAX_CONNECTION_BUFFER <= held <= MAX_CONNECTION_BUFFER + READ_OVERSHOOT
            assert streams[2]._buffered < RECEIVE_WINDOW  # the rest waits in the socket, not in our memory
            got = 0
            while got < RECEIVE_WINDOW:
                got += len(await streams[0].read())
            while streams[2]._buffered < RECEIVE_WINDOW:  # the reader went on
                await trio.testing.wait_all_tasks_blocked()
            assert peer.conn._budget.used == 2 * RECEIVE_WINDOW
        assert peer.conn.is_open


async def test_a_connection_whose_reader_waits_for_its_callers_is_not_taken_for_a_silent_one(autojump_clock):
    """The host's keepalive closes connections whose peer does not answer a ping; while our reader stops reading
    (callers have not taken what it holds) the answer cannot arrive, and that is our backlog, not the peer's."""
    async with _running_peer() as peer:
        stream = peer.conn.open_stream()
        piece = b"s" * 1_000_000
        for _ in range(4):
            await peer.frames(yx.header(yx.DATA, 0, 1, len(piece)) + piece)
        await trio.testing.wait_all_tasks_blocked()
        peer.conn._budget.limit = stream._buffered  # as if the host's budget were spent
        assert peer.conn._budget.full
        assert await peer.conn.ping(DEADLINE) is True  # at once: no PING sent, no wait
        assert trio.current_time() == 0 and peer.conn.is_open


async def test_bytes_nobody_reads_are_capped_per_host_across_connections():
    host = ReceiveBudget(RECEIVE_WINDOW)
    async with _running_peer() as first, _running_peer() as second:
        for peer in (first, second):
            peer.conn._budget = ReceiveBudget(MAX_CONNECTION_BUFFER, host)
        a, b = first.conn.open_stream(), second.conn.open_stream()
        piece = b"q" * 1_000_000
        with trio.fail_after(DEADLINE):
            for _ in range(3):
                await first.frames(yx.header(yx.DATA, 0, 1, len(piece)) + piece)
            await trio.testing.wait_all_tasks_blocked()
            assert host.used == a._buffered == 3_000_000  # under the host's bound: all read
            for _ in range(3):
                await second.frames(yx.header(yx.DATA, 0, 1, len(piece)) + piece)
            await trio.testing.wait_all_tasks_blocked()
            assert RECEIVE_WINDOW <= host.used <= RECEIVE_WINDOW + READ_OVERSHOOT  # the second reader waits
            assert b._buffered < 3_000_000
            got = 0
            while got < 3_000_000:
                got += len(await a.read())
            await trio.testing.wait_all_tasks_blocked()
            assert b._buffered == host.used == 3_000_000  # room again: the second connection was read on


async def test_a_connection_that_ends_gives_its_unread_bytes_back_to_the_host_and_they_stay_readable():
    """A stream nobody closes must not keep the host's budget spent after its connection is gone: every other
    lean reader would wait for room for good."""
    host = ReceiveBudget(RECEIVE_WINDOW)
    async with _running_peer() as peer:
        peer.conn._budget = ReceiveBudget(MAX_CONNECTION_BUFFER, host)
        stream = peer.conn.open_stream()
        with trio.fail_after(DEADLINE):
            await peer.frames(yx.header(yx.DATA, 0, 1, 1000) + b"u" * 1000)
            await trio.testing.wait_all_tasks_blocked()
            assert host.used == 1000
            await peer.conn.aclose("test")
            assert host.used == 0 and peer.conn._budget.used == 0
            assert await stream.read() == b"u" * 1000  # what came before the end is still read, not counted twice
            assert host.used == 0
            await stream.close()
            assert host.used == 0


# ------------------------------------------------------------------ identities (item 2)


def _wrong_signature(key_pair):
    return lambda static: handshake_payload(key_pair, bytes(32))  # signed over another Noise key


def _another_peers_key(_key_pair):
    impostor = new_key_pair()
    return lambda static: handshake_payload(impostor, static)  # valid, but for a peer we did not dial


def _no_payload(_key_pair):
    return lambda static: b""


@pytest.mark.parametrize(
    "payload, reason",
    [
        (_wrong_signature, "signature over its Noise key does not verify"),
        (_another_peers_key, "is 12D3KooW.*, not"),
        (_no_payload, "unreadable Noise handshake payload"),
    ],
)
async def test_a_peer_that_does_not_prove_the_dialled_identity_never_gets_a_call(monkeypatch, payload, reason):
    """Noise completes on the responder's side up to message 2; our dialler refuses it before message 3, so no
    muxer, no stream and no call ever reach the peer: through the host, the call fails with PeerIdentityError."""
    from dht.errors import PeerIdentityError
    from dht.net.transport import open_host

    key_pair = new_key_pair()
    responders: list[NoiseResponder] = []

    async def script(sock) -> None:
        responder = NoiseResponder(sock, payload(key_pair))
        responders.append(responder)
        await responder.handshake()
        await trio.sleep_forever()

    async with scripted_targets(monkeypatch) as scripts, open_host() as client:
        scripts[4001] = script
        peer = peer_id_of(key_pair)
        with trio.fail_after(DEADLINE):
            with pytest.raises(PeerIdentityError, match=reason):
                await dht.net.lean.dial(LocalIdentity(new_key_pair()), "127.0.0.1", 4001, peer)
            client.add_addrs(peer, ["/ip4/127.0.0.1/tcp/4001"])
            with pytest.raises(PeerIdentityError, match=reason):
                await client.call_unary(peer, "Test.echo", b"secret", timeout=DEADLINE)
        assert not client.is_connected(peer) and peer not in client._lean_refused  # no fallback to py-libp2p
    assert len(responders) == 2 and not any(r.reached_message3 or r.secured for r in responders)


async def test_the_responder_script_completes_a_valid_handshake(monkeypatch):
    """The control for the test above: the same script with a right payload gets message 3 and a call."""
    key_pair = new_key_pair()
    responders: list[NoiseResponder] = []
    finished = trio.Event()

    async def script(sock) -> None:
        responder = NoiseResponder(sock, lambda static: handshake_payload(key_pair, static))
        responders.append(responder)
        await responder.handshake()
        finished.set()
        await trio.sleep_forever()

    async with scripted_targets(monkeypatch) as scripts:
        scripts[4001] = script
        with trio.fail_after(DEADLINE):
            conn = await dht.net.lean.dial(LocalIdentity(new_key_pair()), "127.0.0.1", 4001, peer_id_of(key_pair))
            await finished.wait()  # the dial does not wait for the muxer answer: the responder may still be sending it
        await conn.aclose()
    assert responders[0].reached_message3 and responders[0].secured


# ------------------------------------------------------------------ refusals of the lean stack (item 3)


@pytest.mark.timeout(60)
async def test_a_refusal_of_the_lean_stack_expires_and_the_book_is_bounded(monkeypatch, mock_clock):
    """An "na" to /noise comes before any authentication (anyone at an announced address can send it): the peer
    is dialled with py-libp2p for LEAN_REFUSAL_TTL seconds only, then the lean stack is tried again."""
    from dht.errors import PeerUnreachable
    from dht.net.lean import LeanUnsupported
    from dht.net.transport import LEAN_REFUSAL_TTL, MAX_LEAN_REFUSALS, open_host

    lean_dials = []

    async def refuse(identity, host, port, peer_id, **_kwargs):
        lean_dials.append(peer_id)
        raise LeanUnsupported("the peer does not speak /noise")

    async def fallback(peer_id):
        raise OSError("refused")  # py-libp2p's dial (its retries would wait on the mock clock)

    monkeypatch.setattr(dht.net.lean, "dial", refuse)
    peer = peer_id_of(new_key_pair())
    async with open_host() as client:
        monkeypatch.setattr(client.libp2p_host.get_network(), "dial_peer", fallback)
        client.add_addrs(peer, ["/ip4/127.0.0.1/tcp/4001"])
        for _ in range(2):
            with pytest.raises(PeerUnreachable):
                await client._dial_direct(peer)
        assert lean_dials == [peer]  # the second dial went straight to py-libp2p
        mock_clock.jump(LEAN_REFUSAL_TTL - 1)
        with pytest.raises(PeerUnreachable):
            await client._dial_direct(peer)
        assert lean_dials == [peer]
        mock_clock.jump(2)
        with pytest.raises(PeerUnreachable):
            await client._dial_direct(peer)
        assert lean_dials == [peer, peer]  # expired: the lean stack was tried again
        for i in range(MAX_LEAN_REFUSALS + 10):
            client._lean_refused.add(f"peer-{i}")
        assert len(client._lean_refused) == MAX_LEAN_REFUSALS
        assert "peer-0" not in client._lean_refused and "peer-10" in client._lean_refused


# ------------------------------------------------------------------ the reader never writes (items 5, 6)


def _peer_that_does_not_read():
    """A scripted peer on a stream without buffering: our writes wait until it reads, and it reads nothing."""
    peer = _ScriptedPeer()
    peer.conn._sock, peer.sock = trio.testing.lockstep_stream_pair()
    return _running_peer(peer)


async def test_the_reader_goes_on_while_a_peer_that_does_not_read_stalls_our_answers():
    """Our answer to its ping cannot be written, yet the data after the ping reaches its stream at once (the old
    reader waited on that write, up to WRITE_TIMEOUT); a peer that keeps pinging without reading is cut off once
    MAX_PENDING_CONTROL bytes of answers wait."""
    async with _peer_that_does_not_read() as peer:
        stream = peer.conn.open_stream()
        with trio.fail_after(dht.net.lean.WRITE_TIMEOUT / 2):
            await peer.frames(yx.header(yx.PING, yx.SYN, 0, 1))
            await peer.frames(yx.header(yx.DATA, 0, 1, 5) + b"hello")  # a later socket read
            assert await stream.read() == b"hello"
            pings = dht.net.lean.MAX_PENDING_CONTROL // yx.HEADER_LEN + 1
            await peer.frames(*(yx.header(yx.PING, yx.SYN, 0, i) for i in range(pings)))
            with pytest.raises(LeanStreamClosed, match="does not read our answers"):
                await stream.read()


async def test_window_credit_survives_a_read_whose_caller_is_cancelled_while_writes_are_stuck():
    """The read that earns window credit returns its bytes and queues the credit; the credit reaches the peer once
    the writer is free. The old read sent it itself: a deadline while another write held the connection lost both
    the bytes read and the credit (the peer then waited for credit forever)."""
    async with _running_peer() as peer:
        stream = peer.conn.open_stream()
        half = RECEIVE_WINDOW // 2
        with trio.fail_after(DEADLINE):
            await stream.write(b"request")
            await peer.read_frame(), await peer.read_frame()  # the SYN, the request
            await peer.frames(yx.header(yx.DATA, 0, 1, half) + b"d" * half)
            await trio.testing.wait_all_tasks_blocked()
            stuck, release = trio.Event(), trio.Event()

            async def stuck_write() -> None:  # a write of another stream's, stuck on a slow socket
                async with peer.conn._write_lock:
                    stuck.set()
                    await release.wait()

            peer.nursery.start_soon(stuck_write)
            await stuck.wait()
            with trio.move_on_after(0.5) as waited:
                got = await stream.read()
            release.set()
            assert not waited.cancelled_caught and len(got) == half
            kind, flags, sid, credit, _ = await peer.read_frame()
            assert (kind, flags, sid, credit) == (yx.WINDOW_UPDATE, 0, 1, half)


# ------------------------------------------------------------------ GO_AWAY (item 4)


async def test_redialling_a_peer_that_sent_go_away_lets_its_streams_in_flight_finish(monkeypatch):
    """The old connection keeps carrying the call in flight (the old host closed it, killing the call), new calls
    go to the new one, and the old one closes when its last stream ends."""
    from dht.net.transport import open_host

    peer_id = peer_id_of(new_key_pair())
    old, new = _ScriptedPeer(), _ScriptedPeer()
    old.conn.peer_id = new.conn.peer_id = peer_id

    async def dial(identity, host, port, expected_peer_id, **_kwargs):
        return new.conn

    monkeypatch.setattr(dht.net.lean, "dial", dial)
    async with open_host() as client, trio.open_nursery() as nursery:
        with trio.fail_after(DEADLINE):
            client._lean[peer_id] = old.conn
            nursery.start_soon(old.conn.run)
            in_flight = old.conn.open_stream()
            await in_flight.write(b"request")
            await old.frames(yx.header(yx.GO_AWAY, 0, 0, yx.GO_AWAY_NORMAL))
            await trio.testing.wait_all_tasks_blocked()
            assert old.conn.going_away and not old.conn.closed and not client.is_connected(peer_id)
            await client._dial_lean(peer_id, [("127.0.0.1", 4001)])
            assert client._lean_connection(peer_id) is new.conn and not old.conn.closed
            await old.frames(yx.header(yx.DATA, yx.FIN, 1, 5) + b"reply")
            assert await in_flight.read() == b"reply"  # the call in flight finished on the old connection
            await in_flight.close()
            await trio.testing.wait_all_tasks_blocked()
            assert old.conn.closed and "GO_AWAY" in old.conn.error  # drained: closed by us
            sent = [(await old.read_frame())[:3] for _ in range(3)]  # SYN, the request, then our FIN
            assert sent[-1] == (yx.WINDOW_UPDATE, yx.FIN, 1)
            assert new.conn.is_open
        await new.conn.aclose()
        nursery.cancel_scope.cancel()


async def test_go_away_on_a_connection_without_streams_closes_it():
    async with _running_peer() as peer:
        with trio.fail_after(DEADLINE):
            await peer.frames(yx.header(yx.GO_AWAY, 0, 0, yx.GO_AWAY_NORMAL))
            await trio.testing.wait_all_tasks_blocked()
        assert peer.conn.closed


# ------------------------------------------------------------------ the py-libp2p path (item 1, fallback)


async def test_a_listening_host_hangs_up_at_a_data_frame_larger_than_any_window_it_grants():
    """py-libp2p reads a DATA frame whole before it looks its stream up, and allowed 16 MiB: a peer could make a
    connection hold that much for up to 60 s. A header over dht.net.bulk_io.MAX_DATA_FRAME now ends the connection at
    once (we speak to the host with our lean stack, which lets the test send a header without its payload)."""
    from dht.net.bulk_io import MAX_DATA_FRAME
    from dht.net.transport import open_host

    async with open_host(listen=True) as server, open_host() as client:
        peer = await client.connect(server.listen_addrs[0], timeout=DEADLINE)
        conn = client._lean_connection(peer)
        stream = conn.open_stream()
        with trio.fail_after(DEADLINE):
            await stream.write(b"\x13")  # opens the stream: the host waits for the rest of a multistream line
            await conn.send_plain(yx.header(yx.DATA, 0, stream.stream_id, MAX_DATA_FRAME + 1))
            with pytest.raises(LeanStreamClosed, match="closed by the peer"):
                while True:  # the host's multistream header may come first
                    await stream.read()
