"""dht.net.transport against our own py-libp2p peers on 127.0.0.1 (no hivemind needed).

The misbehaving peers are raw stream handlers on a second host: each answers a unary call with one kind of
broken reply, and every such call must end in its typed error within the deadline while the same host
keeps answering good calls.
"""

from __future__ import annotations

import re
import time

import pytest
import trio

from dht import wire
from dht.errors import CallTimeout, FrameError, PeerUnreachable, ProtocolNotSupported, RemoteError
from dht.net.streams import BufferedReader, encode_multistream_line, negotiate_outbound
from dht.net.transport import Host, open_host, peer_id_from_bytes, peer_id_to_bytes, split_p2p_addr

ECHO = "Test.echo"
DEADLINE = 5.0  # for calls that succeed or fail fast: generous, a loaded 2-core CI machine is slow


async def _read_request(stream) -> wire.UnaryCall:
    return wire.decode_call(await BufferedReader(stream).read_frame(wire.MAX_MESSAGE_SIZE))


def _raw(host: Host, proto: str, handler) -> None:
    from libp2p.custom_types import TProtocol

    host.libp2p_host.set_stream_handler(TProtocol(proto), handler)


async def _echo(caller: str, data: bytes) -> bytes:
    return b"echo:" + data


@pytest.fixture
async def server():
    async with open_host(listen=True) as host:
        host.set_unary_handler(ECHO, _echo)
        yield host


@pytest.fixture
async def client():
    async with open_host() as host:
        yield host


async def _connected(client: Host, server: Host) -> str:
    return await client.connect(server.listen_addrs[0], timeout=DEADLINE)


# ------------------------------------------------------------------ happy paths


async def test_client_mode_listens_on_nothing(client):
    assert client.listen_addrs == []
    assert client.peer_id.startswith("12D3KooW")  # Ed25519 identity


async def test_unary_roundtrip_passes_caller_id_and_bytes(server, client):
    seen = []

    async def handler(caller: str, data: bytes) -> bytes:
        seen.append((caller, data))
        return data[::-1]

    server.set_unary_handler("Test.reverse", handler)
    peer = await _connected(client, server)
    assert peer == server.peer_id
    assert await client.call_unary(peer, "Test.reverse", b"abc", timeout=DEADLINE) == b"cba"
    assert await client.call_unary(peer, "Test.reverse", b"", timeout=DEADLINE) == b""
    assert seen == [(client.peer_id, b"abc"), (client.peer_id, b"")]


async def test_call_dials_by_known_addrs_without_explicit_connect(server, client):
    peer, addr = split_p2p_addr(server.listen_addrs[0])
    client.add_addrs(peer, [addr])
    assert not client.is_connected(peer)
    assert await client.call_unary(peer, ECHO, b"x", timeout=DEADLINE) == b"echo:x"
    assert client.is_connected(peer)


async def test_request_frame_is_hivemind_shaped_and_never_half_closed(server, client):
    """One callUnary frame with an empty ``peer``; the caller's write side stays open until the reply."""
    observed = {}

    async def handler(stream):
        reader = BufferedReader(stream)
        call = wire.decode_call(await reader.read_frame(wire.MAX_MESSAGE_SIZE))
        observed["call"] = call
        observed["half_closed"] = False
        with trio.move_on_after(0.3):
            try:
                extra = await stream.read(1)
                observed["half_closed"] = extra == b""
            except Exception:  # StreamEOF: the caller half-closed
                observed["half_closed"] = True
        await stream.write(wire.frame(wire.encode_reply(call.call_id, response=b"ok")))
        await stream.close()

    _raw(server, "Test.spy", handler)
    peer = await _connected(client, server)
    assert await client.call_unary(peer, "Test.spy", b"\x01\x02", timeout=DEADLINE + 1) == b"ok"
    call = observed["call"]
    assert (call.proto, call.data, call.peer, len(call.call_id)) == ("Test.spy", b"\x01\x02", b"", 16)
    assert observed["half_closed"] is False


async def test_handler_exception_becomes_error_reply_with_repr(server, client):
    async def failing(caller: str, data: bytes) -> bytes:
        raise ValueError("bad key")

    server.set_unary_handler("Test.fail", failing)
    peer = await _connected(client, server)
    with pytest.raises(RemoteError) as info:
        await client.call_unary(peer, "Test.fail", b"", timeout=DEADLINE)
    assert str(info.value) == "ValueError('bad key')"
    assert type(info.value) is RemoteError


async def test_unserved_protocol_is_protocol_not_supported(server, client):
    peer = await _connected(client, server)
    with pytest.raises(ProtocolNotSupported, match=re.escape("protocols not supported: [DHTProtocol.rpc_ping]")):
        await client.call_unary(peer, "DHTProtocol.rpc_ping", b"", timeout=DEADLINE)
    assert await client.call_unary(peer, ECHO, b"still", timeout=DEADLINE) == b"echo:still"


async def test_removed_handler_is_no_longer_served(server, client):
    peer = await _connected(client, server)
    server.remove_unary_handler(ECHO)
    with pytest.raises(ProtocolNotSupported):
        await client.call_unary(peer, ECHO, b"", timeout=DEADLINE)


class _RemovingCommunicator:
    """Plays a peer negotiating ``proto``; while py-libp2p confirms it, ``remove`` runs (a concurrent stop)."""

    def __init__(self, proto: str, remove) -> None:
        self._reads = ["/multistream/1.0.0", proto]
        self._proto, self._remove = proto, remove

    async def read(self) -> str:
        return self._reads.pop(0)

    async def write(self, text: str) -> None:
        if text == self._proto:
            self._remove()
        await trio.lowlevel.checkpoint()


async def test_a_handler_removed_during_negotiation_resets_the_stream_instead_of_crashing_the_host(server):
    """py-libp2p checks ``proto in handlers``, awaits its confirmation, then reads ``handlers[proto]``: a removal
    in between raised KeyError in the connection task and brought the host down (a demo node stopping while
    announcements arrived). The late lookup now yields a stream reset."""
    mux = server.libp2p_host.get_mux()
    proto, handler = await mux.negotiate(_RemovingCommunicator(ECHO, lambda: server.remove_unary_handler(ECHO)))
    assert proto == ECHO and handler is not None
    stream = _ResettableStream()
    await handler(stream)
    assert stream.was_reset
    assert ECHO not in mux.handlers  # a later negotiation is refused as before ("na": protocols not supported)


class _ResettableStream:
    was_reset = False

    async def reset(self) -> None:
        self.was_reset = True


# ------------------------------------------------------------------ broken peers


async def _reply_truncated_varint(stream):
    await _read_request(stream)
    await stream.write(b"\x80\x80")  # a uvarint that never ends
    await stream.close()


async def _reply_oversize_length(stream):
    await _read_request(stream)
    await stream.write(wire.encode_uvarint(wire.MAX_MESSAGE_SIZE + 1) + b"\x00" * 16)
    await trio.sleep(5)  # keep the stream open: only the declared length may end the call


async def _reply_garbage_protobuf(stream):
    await _read_request(stream)
    await stream.write(wire.frame(b"\xff\xff\xff\xff"))
    await stream.close()


async def _reply_wrong_message(stream):
    call = await _read_request(stream)
    await stream.write(wire.frame(wire.encode_call("x", b"", call_id=call.call_id)))
    await stream.close()


async def _reply_error(stream):
    call = await _read_request(stream)
    await stream.write(wire.frame(wire.encode_reply(call.call_id, error=b"KeyError('nope')")))
    await stream.close()


async def _never_answer(stream):
    await _read_request(stream)
    await trio.sleep(30)


async def _close_mid_reply(stream):
    call = await _read_request(stream)
    await stream.write(wire.frame(wire.encode_reply(call.call_id, response=b"x" * 1000))[:500])
    await stream.close()


async def _reset_without_reply(stream):
    await _read_request(stream)
    await stream.reset()


BROKEN_PEERS = {
    "truncated_varint": (_reply_truncated_varint, FrameError, "truncated length prefix"),
    "oversize_length": (_reply_oversize_length, FrameError, "exceeds"),
    "garbage_protobuf": (_reply_garbage_protobuf, FrameError, "malformed"),
    "wrong_message": (_reply_wrong_message, FrameError, "expected unaryResponse"),
    "error_reply": (_reply_error, RemoteError, "KeyError\\('nope'\\)"),
    "never_answers": (_never_answer, CallTimeout, "no answer within"),
    "closes_mid_reply": (_close_mid_reply, FrameError, "truncated frame"),
    "resets_stream": (_reset_without_reply, FrameError, "closed"),
}


@pytest.mark.parametrize("kind", list(BROKEN_PEERS))
async def test_broken_reply_is_typed_error_within_deadline_and_host_keeps_serving(kind, server, client):
    handler, error, message = BROKEN_PEERS[kind]
    _raw(server, f"Broken.{kind}", handler)
    peer = await _connected(client, server)
    deadline = 0.7
    async with trio.open_nursery() as nursery:
        good: list[bytes] = []

        async def good_call() -> None:
            good.append(await client.call_unary(peer, ECHO, b"meanwhile", timeout=DEADLINE))

        started = time.monotonic()
        nursery.start_soon(good_call)
        with pytest.raises(error, match=message):
            await client.call_unary(peer, f"Broken.{kind}", b"req", timeout=deadline)
        elapsed = time.monotonic() - started
    assert elapsed < deadline + 1.0  # within the deadline (slack for a loaded machine)
    assert good == [b"echo:meanwhile"]
    assert await client.call_unary(peer, ECHO, b"after", timeout=DEADLINE) == b"echo:after"


async def test_max_reply_size_refuses_a_larger_reply(server, client):
    async def big(caller: str, data: bytes) -> bytes:
        return b"z" * 10_000

    server.set_unary_handler("Test.big", big)
    peer = await _connected(client, server)
    with pytest.raises(FrameError, match="exceeds the 1000-byte limit"):
        await client.call_unary(peer, "Test.big", b"", timeout=DEADLINE, max_reply_size=1000)
    assert len(await client.call_unary(peer, "Test.big", b"", timeout=DEADLINE)) == 10_000


# ------------------------------------------------------------------ bad callers against our handler


async def _raw_exchange(client: Host, peer: str, proto: str, payload: bytes) -> bytes:
    """Negotiate ``proto`` by hand, send ``payload`` as is, return whatever comes back before EOF."""
    stream = await client.libp2p_host.get_network().new_stream(
        __import__("libp2p.peer.id", fromlist=["ID"]).ID.from_base58(peer)
    )
    reader = BufferedReader(stream)
    await negotiate_outbound(stream, reader, proto)
    await stream.write(payload)
    received = b""
    with trio.move_on_after(2):
        while True:
            try:
                chunk = await stream.read(1024)
            except Exception:
                break
            if not chunk:
                break
            received += chunk
    return received


@pytest.mark.parametrize(
    "payload",
    [
        wire.frame(b"\xff\xff\xff"),  # not a PersistentConnectionRequest
        wire.frame(wire.encode_reply(b"\x00" * 16, response=b"")),  # a reply where a call belongs
        wire.frame(wire.encode_call(ECHO, b"", call_id=b"short")),  # callId is not a UUID
        wire.encode_uvarint(wire.MAX_MESSAGE_SIZE + 1),  # oversize declared length
    ],
    ids=["garbage", "reply_not_call", "bad_call_id", "oversize"],
)
async def test_bad_envelope_closes_stream_without_reply(payload, server, client):
    peer = await _connected(client, server)
    assert await _raw_exchange(client, peer, ECHO, payload) == b""
    assert await client.call_unary(peer, ECHO, b"ok", timeout=DEADLINE) == b"echo:ok"


# ------------------------------------------------------------------ dialling


async def test_unreachable_address_is_peer_unreachable_within_deadline(client):
    async with open_host(listen=True) as gone:
        addr = gone.listen_addrs[0]
    started = time.monotonic()
    with pytest.raises(PeerUnreachable):
        await client.connect(addr, timeout=3)
    assert time.monotonic() - started < 3


async def test_peer_without_address_is_unreachable(client):
    async with open_host() as other:
        stranger = other.peer_id
    with pytest.raises(PeerUnreachable, match="no known address"):
        await client.call_unary(stranger, ECHO, b"", timeout=DEADLINE)


async def test_connect_to_ourselves_is_refused(server):
    with pytest.raises(PeerUnreachable):
        await server.call_unary(server.peer_id, ECHO, b"", timeout=DEADLINE)


def test_peer_id_conversions_roundtrip():
    peer = "12D3KooWHv9JtiqVnSkzTu92nbFXsMvyDnbv6Vd3beJjEHuSVhxX"
    raw = peer_id_to_bytes(peer)
    assert raw[:6] == bytes.fromhex("002408011220")  # identity multihash of an Ed25519 key
    assert peer_id_from_bytes(raw) == peer
    assert split_p2p_addr(f"/ip4/127.0.0.1/tcp/1234/p2p/{peer}") == (peer, "/ip4/127.0.0.1/tcp/1234")
    with pytest.raises(ValueError):
        split_p2p_addr("/ip4/127.0.0.1/tcp/1234")
    with pytest.raises(ValueError):
        peer_id_to_bytes("not-a-peer-id")


def test_oversized_peer_ids_and_addresses_from_peers_are_refused_before_any_work():
    """base58 is quadratic and both conversions are cached: a hostile kad reply must not buy either."""
    from dht.net.transport import MAX_MULTIADDR_BYTES, _multiaddr_from_bytes

    with pytest.raises(ValueError, match="not a binary peer id"):
        peer_id_from_bytes(b"\x00\x80" + b"x" * 32_000)
    with pytest.raises(ValueError, match="not a binary peer id"):
        peer_id_from_bytes(b"\x12\x20" + b"x" * 31)  # a sha2-256 multihash one byte short
    ok = bytes.fromhex("047f000001060fa1")  # /ip4/127.0.0.1/tcp/4001
    assert str(_multiaddr_from_bytes(ok)) == "/ip4/127.0.0.1/tcp/4001"
    with pytest.raises(ValueError, match="a multiaddr of"):
        _multiaddr_from_bytes(ok * (MAX_MULTIADDR_BYTES // len(ok) + 1))


# ------------------------------------------------------------------ identify, kad, concurrency, shutdown


async def test_identify_reports_listen_addrs_and_protocols(server, client):
    peer = await _connected(client, server)
    identity = await client.identify(peer, timeout=DEADLINE)
    assert identity.peer_id == server.peer_id
    assert ECHO in identity.protocols
    listen = split_p2p_addr(server.listen_addrs[0])[1]
    assert listen in identity.listen_addrs
    assert listen in client.known_addrs(peer)


async def test_kad_find_node_reads_closer_peers(server, client):
    """A stand-in kad server answering FIND_NODE with one peer and its address."""
    from libp2p.kad_dht.pb.kademlia_pb2 import Message
    from multiaddr import Multiaddr

    target = "12D3KooWHv9JtiqVnSkzTu92nbFXsMvyDnbv6Vd3beJjEHuSVhxX"
    asked = []

    async def kad(stream):
        request = Message.FromString(await BufferedReader(stream).read_frame(65536))
        asked.append((request.type, request.key))
        reply = Message(type=Message.MessageType.FIND_NODE)
        peer = reply.closerPeers.add()
        peer.id = peer_id_to_bytes(target)
        peer.addrs.append(Multiaddr("/ip4/127.0.0.1/tcp/4001").to_bytes())
        await stream.write(wire.frame(reply.SerializeToString()))
        await stream.close()

    _raw(server, "/ipfs/kad/1.0.0", kad)
    peer = await _connected(client, server)
    assert await client.resolve(target, timeout=DEADLINE) == ["/ip4/127.0.0.1/tcp/4001"]
    assert asked == [(Message.MessageType.FIND_NODE, peer_id_to_bytes(target))]
    assert client.known_addrs(target) == ["/ip4/127.0.0.1/tcp/4001"]
    # Known now: no second question.
    assert await client.resolve(target, via=[peer], timeout=DEADLINE) == ["/ip4/127.0.0.1/tcp/4001"]
    assert len(asked) == 1


async def test_a_refreshing_resolve_asks_and_replaces_the_known_addresses_only_with_an_answer(server, client):
    """``refresh``: the known addresses failed to dial; they go only once the DHT has told us the current ones."""
    from libp2p.kad_dht.pb.kademlia_pb2 import Message
    from multiaddr import Multiaddr

    target = "12D3KooWHv9JtiqVnSkzTu92nbFXsMvyDnbv6Vd3beJjEHuSVhxX"
    old, new = "/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.1/tcp/4002"
    answer: list[str] = []

    async def kad(stream):
        await BufferedReader(stream).read_frame(65536)
        reply = Message(type=Message.MessageType.FIND_NODE)
        if answer:
            peer = reply.closerPeers.add()
            peer.id = peer_id_to_bytes(target)
            peer.addrs.append(Multiaddr(answer[0]).to_bytes())
        await stream.write(wire.frame(reply.SerializeToString()))
        await stream.close()

    _raw(server, "/ipfs/kad/1.0.0", kad)
    await _connected(client, server)
    client.add_addrs(target, [old])
    assert await client.resolve(target, timeout=DEADLINE, refresh=True) == []  # nobody knows it
    assert client.known_addrs(target) == [old]
    answer.append(new)
    assert await client.resolve(target, timeout=DEADLINE, refresh=True) == [new]
    assert client.known_addrs(target) == [new]


async def test_resolve_without_answers_is_empty(server, client):
    await _connected(client, server)  # serves no kad: the FIND_NODE fails, resolve gives up quietly
    assert await client.resolve("12D3KooWHv9JtiqVnSkzTu92nbFXsMvyDnbv6Vd3beJjEHuSVhxX", timeout=DEADLINE) == []


class ResolveOnly:
    """``Host.resolve`` over stand-in kad nodes: ``black_holed`` ones never answer (their FIND_NODE ends at its
    deadline), ``ignorant`` ones answer at once without the target, the others know it after 0.1 s."""

    resolve = Host.resolve
    peer_id = "me"

    def __init__(self, black_holed: set[str], ignorant: set[str] = frozenset()) -> None:
        self.black_holed, self.ignorant = black_holed, ignorant
        self.asked: list[tuple[str, float]] = []  # (node, seconds it was given)

    def known_addrs(self, peer_id: str) -> list[str]:
        return []

    async def find_peer(self, via: str, target: str, *, timeout: float) -> dict[str, list[str]]:
        self.asked.append((via, timeout))
        if via in self.black_holed:
            await trio.sleep(timeout)
            raise CallTimeout(f"kad FIND_NODE via {via}: no answer within {timeout:g} s")
        if via in self.ignorant:
            return {}
        await trio.sleep(0.1)
        return {target: ["/ip4/127.0.0.1/tcp/4001"]}


async def test_a_black_holed_node_cannot_spend_a_look_ups_whole_deadline(autojump_clock):
    """Each node asked gets a share of what is left (1/3 while three or more remain): it gave the first node the
    whole deadline, so one silent node made the look-up fail although the next one knew the peer."""
    host = ResolveOnly(black_holed={"silent"})
    t0 = trio.current_time()
    found = await host.resolve("target", via=["silent", "knows", "other"], timeout=6.0)
    assert found == ["/ip4/127.0.0.1/tcp/4001"]
    assert host.asked == [("silent", pytest.approx(2.0)), ("knows", pytest.approx(2.0))]
    assert trio.current_time() - t0 == pytest.approx(2.1)


async def test_a_look_up_gives_the_last_node_all_that_is_left_and_ends_at_its_deadline(autojump_clock):
    host = ResolveOnly(black_holed={"a", "c"}, ignorant={"b"})
    t0 = trio.current_time()
    assert await host.resolve("target", via=["a", "b", "c"], timeout=6.0) == []
    assert host.asked == [("a", pytest.approx(2.0)), ("b", pytest.approx(2.0)), ("c", pytest.approx(4.0))]
    assert trio.current_time() - t0 == pytest.approx(6.0)


async def test_calls_per_peer_are_bounded():
    async with open_host(listen=True) as server, open_host(max_calls_per_peer=2) as client:
        active = 0
        peak = 0

        async def slow(caller: str, data: bytes) -> bytes:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await trio.sleep(0.1)
            active -= 1
            return data

        server.set_unary_handler("Test.slow", slow)
        peer = await _connected(client, server)
        results = []
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(
                    lambda i=i: _append(results, client.call_unary(peer, "Test.slow", bytes([i]), timeout=5))
                )
        assert sorted(results) == [bytes([i]) for i in range(6)]
        assert peak == 2


async def _append(out: list, awaitable) -> None:
    out.append(await awaitable)


async def test_closing_the_host_leaves_no_tasks_and_refuses_calls():
    stats_before = trio.lowlevel.current_statistics().tasks_living
    async with open_host(listen=True) as server, open_host() as client:
        server.set_unary_handler(ECHO, _echo)
        peer = await _connected(client, server)
        assert await client.call_unary(peer, ECHO, b"1", timeout=DEADLINE) == b"echo:1"
    # Background tasks wind down within a bounded time after the blocks exit.
    with trio.move_on_after(3):
        while trio.lowlevel.current_statistics().tasks_living > stats_before:
            await trio.sleep(0.01)
    assert trio.lowlevel.current_statistics().tasks_living <= stats_before
    with pytest.raises(PeerUnreachable, match="closed"):
        await client.call_unary(peer, ECHO, b"", timeout=DEADLINE)


def test_multistream_line_encoding():
    assert encode_multistream_line("/multistream/1.0.0") == b"\x13/multistream/1.0.0\n"


def _first_try_broken(client: Host, peer: str, *, refused_muxer: bool) -> list[str]:
    """The first call's stream breaks as on a lean connection whose yamux proposal the peer answered "na" after
    the dial returned (``LeanConnection`` notes ``refused_muxer``, then ends), or, without ``refused_muxer``,
    as on a connection that simply dropped. Later tries go through. Returns the peers each try was sent to."""
    from dht.net.lean import LeanStreamClosed

    original, tries = client._open_and_send, []

    async def open_and_send(peer_id, protocol, request, pipeline=False):
        tries.append(peer_id)
        if len(tries) == 1:
            client._lean[peer].refused_muxer = refused_muxer
            raise LeanStreamClosed("the connection ended before the reply")
        return await original(peer_id, protocol, request, pipeline)

    client._open_and_send = open_and_send
    return tries


async def test_a_call_broken_by_a_yamux_refusal_after_the_dial_goes_once_more_on_a_new_connection(server):
    """lean.dial does not wait for the answer to its yamux proposal, so a refusal broke the first call to the peer
    (its probe said unreachable). That call now goes again on a fresh connection, dialled with py-libp2p."""
    async with open_host(lean=True) as client:
        peer = await _connected(client, server)
        assert client._lean_connection(peer) is not None
        tries = _first_try_broken(client, peer, refused_muxer=True)
        assert await client.call_unary(peer, ECHO, b"x", timeout=DEADLINE) == b"echo:x"
        assert tries == [peer, peer] and peer in client._lean_refused
        assert client._lean_connection(peer) is None and client.is_connected(peer)  # py-libp2p's connection


async def test_a_call_broken_otherwise_is_not_sent_again(server):
    async with open_host(lean=True) as client:
        peer = await _connected(client, server)
        tries = _first_try_broken(client, peer, refused_muxer=False)
        with pytest.raises(FrameError):
            await client.call_unary(peer, ECHO, b"x", timeout=DEADLINE)
        assert tries == [peer] and peer not in client._lean_refused
