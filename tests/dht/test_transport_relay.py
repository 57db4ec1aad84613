"""Circuit relay dials of dht.net.transport against relays of our own on 127.0.0.1 (no hivemind needed).

The stand-in relay serves ``/libp2p/circuit/relay/0.2.0/hop``: on CONNECT to a peer it holds a "reservation"
for, it answers STATUS OK (with go-libp2p's default limit) and hands the rest of the HOP stream to that peer's
swarm as an inbound connection. So the NAT'd target never listens: the relay's stream is its only way in,
exactly what a real relay gives a peer behind NAT. Real go-libp2p relays: tests/interop/test_interop_relay.py.
"""

from __future__ import annotations

import socket
import time
from functools import partial

import pytest
import trio

from dht.errors import CallTimeout, FrameError, PeerUnreachable
from dht.net.circuit import (
    HOP_PROTOCOL,
    CircuitBook,
    RelayLimit,
    circuit_addr,
    decode_hop_status,
    encode_hop_connect,
    is_circuit_addr,
    parse_circuit_addr,
)
from dht.net.streams import BufferedReader
from dht.net.transport import Host, open_host, peer_id_from_bytes, peer_id_to_bytes

ECHO = "Test.echo"
DEADLINE = 10.0  # for calls that must succeed: generous, a loaded 2-core CI machine is slow
GO_DEFAULT_LIMIT = RelayLimit(duration=120, data=128 * 1024)


async def _echo(caller: str, data: bytes) -> bytes:
    return b"echo:" + data


def _hop_reply(status: int, limit: RelayLimit | None = None) -> bytes:
    from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, Limit

    msg = HopMessage(type=HopMessage.STATUS, status=status)
    if limit is not None:
        msg.limit.CopyFrom(Limit(duration=limit.duration, data=limit.data))
    body = msg.SerializeToString()
    from dht.wire import encode_uvarint

    return encode_uvarint(len(body)) + body


class StandInRelay:
    """A HOP service on ``host``: CONNECT to a peer in ``reserved`` becomes an inbound connection of that peer."""

    def __init__(self, host: Host, limit: RelayLimit | None = GO_DEFAULT_LIMIT) -> None:
        from libp2p.custom_types import TProtocol

        self.host = host
        self.limit = limit
        self.reserved: dict[str, Host] = {}
        self.connects: list[str] = []
        host.libp2p_host.set_stream_handler(TProtocol(HOP_PROTOCOL), self._serve)

    def addr_for(self, target: Host, *, with_transport: bool = True, with_target: bool = True) -> str:
        transport = self.host.listen_addrs[0].rsplit("/p2p/", 1)[0] if with_transport else None
        full = circuit_addr(self.host.peer_id, target.peer_id, transport)
        return full if with_target else full.rsplit("/p2p/", 1)[0]

    async def _serve(self, stream) -> None:
        from libp2p.abc import ConnectionType
        from libp2p.network.connection.raw_connection import RawConnection
        from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, Status
        from multiaddr import Multiaddr

        msg = HopMessage()
        msg.ParseFromString(await BufferedReader(stream).read_frame(4096))
        target_id = peer_id_from_bytes(msg.peer.id)
        self.connects.append(target_id)
        target = self.reserved.get(target_id)
        if msg.type != HopMessage.CONNECT or target is None:
            await stream.write(_hop_reply(Status.NO_RESERVATION))
            await stream.close()
            return
        await stream.write(_hop_reply(Status.OK, self.limit))
        raw = RawConnection(stream, initiator=False, connection_type=ConnectionType.RELAYED)
        await target.libp2p_host.upgrade_inbound_connection(raw, Multiaddr(f"/p2p/{self.host.peer_id}/p2p-circuit"))
        await trio.sleep_forever()  # the stream is the relayed connection: keep it until the relay stops


@pytest.fixture
async def relay():
    async with open_host(listen=True) as host:
        yield StandInRelay(host)


@pytest.fixture
async def target():
    """A peer behind NAT: listens on nothing, serves ``Test.echo``."""
    async with open_host() as host:
        host.set_unary_handler(ECHO, _echo)
        yield host


@pytest.fixture
async def dialer():
    async with open_host() as host:
        yield host


# ------------------------------------------------------------------ dialling through a relay


async def test_circuit_address_reaches_a_peer_that_listens_on_nothing(relay, target, dialer):
    relay.reserved[target.peer_id] = target
    assert target.listen_addrs == []

    peer = await dialer.connect(relay.addr_for(target), timeout=DEADLINE)

    assert peer == target.peer_id
    assert await dialer.call_unary(peer, ECHO, b"hi", timeout=DEADLINE) == b"echo:hi"
    assert dialer.is_relayed(peer)
    assert dialer.relay_limit(peer) == GO_DEFAULT_LIMIT
    assert dialer.is_connected(relay.host.peer_id) and not dialer.is_relayed(relay.host.peer_id)
    assert relay.connects == [target.peer_id]


async def test_the_target_sees_the_real_caller(relay, target, dialer):
    callers: list[str] = []

    async def who(caller: str, data: bytes) -> bytes:
        callers.append(caller)
        return b""

    target.set_unary_handler("Test.who", who)
    relay.reserved[target.peer_id] = target
    await dialer.connect(relay.addr_for(target), timeout=DEADLINE)
    await dialer.call_unary(target.peer_id, "Test.who", b"", timeout=DEADLINE)
    assert callers == [dialer.peer_id]


async def test_bare_circuit_address_as_kad_and_identify_report_it(relay, target, dialer):
    """go-libp2p advertises ``<relay addr>/p2p/<relay>/p2p-circuit`` (no target): enough to dial on demand."""
    relay.reserved[target.peer_id] = target
    bare = relay.addr_for(target, with_target=False)
    assert bare.endswith("/p2p-circuit")

    dialer.add_addrs(target.peer_id, [bare])

    assert dialer.known_addrs(target.peer_id) == [relay.addr_for(target)]
    assert await dialer.call_unary(target.peer_id, ECHO, b"x", timeout=DEADLINE) == b"echo:x"
    assert dialer.is_relayed(target.peer_id)


async def test_the_monitor_path_kad_names_a_relay_route_and_rpc_info_goes_through_it(relay, target, dialer):
    """SwarmClient.rpc_info on a bare peer id: kad FIND_NODE (asked of a node we are connected to) answers
    with the relay route go-libp2p advertises for a NAT'd peer, and the probe goes through that relay."""
    from libp2p.custom_types import TProtocol
    from libp2p.kad_dht.pb.kademlia_pb2 import Message
    from multiaddr import Multiaddr

    from dht import wire
    from dht.protocol import RPC_INFO, build_info_response, parse_info_response
    from dht.swarm import SwarmClient

    info = {"version": "2.3.0", "using_relay": True}

    async def rpc_info(caller: str, data: bytes) -> bytes:
        return build_info_response(info)

    async def kad(stream) -> None:
        request = Message.FromString(await BufferedReader(stream).read_frame(65536))
        reply = Message(type=Message.MessageType.FIND_NODE)
        peer = reply.closerPeers.add()
        peer.id = request.key
        peer.addrs.append(Multiaddr(relay.addr_for(target, with_target=False)).to_bytes())
        await stream.write(wire.frame(reply.SerializeToString()))
        await stream.close()

    target.set_unary_handler(RPC_INFO, rpc_info)
    relay.reserved[target.peer_id] = target
    relay.host.libp2p_host.set_stream_handler(TProtocol("/ipfs/kad/1.0.0"), kad)
    await dialer.connect(relay.host.listen_addrs[0], timeout=DEADLINE)
    assert dialer.known_addrs(target.peer_id) == []

    reply, _ = await SwarmClient(dialer, timeout=DEADLINE).rpc_info(target.peer_id)

    assert parse_info_response(reply) == info
    assert dialer.is_relayed(target.peer_id)


async def test_relay_known_only_by_id_is_dialled_from_its_known_address(relay, target, dialer):
    relay.reserved[target.peer_id] = target
    dialer.add_addrs(relay.host.peer_id, [relay.host.listen_addrs[0].rsplit("/p2p/", 1)[0]])
    await dialer.connect(relay.addr_for(target, with_transport=False), timeout=DEADLINE)
    assert dialer.is_relayed(target.peer_id)


async def test_unknown_relay_is_unreachable_without_recursion(target, dialer):
    """A relay we have no direct address for is not itself looked for through relays."""
    async with open_host() as stranger:
        addr = circuit_addr(stranger.peer_id, target.peer_id)
    t0 = time.monotonic()
    with pytest.raises(PeerUnreachable, match="no known address"):
        await dialer.connect(addr, timeout=DEADLINE)
    assert time.monotonic() - t0 < DEADLINE / 2  # refused at once, not timed out


async def test_refusal_names_the_relay_status(relay, target, dialer):
    t0 = time.monotonic()
    with pytest.raises(PeerUnreachable, match="NO_RESERVATION"):
        await dialer.connect(relay.addr_for(target), timeout=DEADLINE)
    assert time.monotonic() - t0 < DEADLINE / 2  # refused at once, not timed out
    assert relay.connects == [target.peer_id]
    assert not dialer.is_connected(target.peer_id)


async def test_a_second_relay_is_tried_when_the_first_refuses(relay, target, dialer):
    async with open_host(listen=True) as other_host:
        other = StandInRelay(other_host, limit=None)
        other.reserved[target.peer_id] = target
        dialer.add_addrs(target.peer_id, [relay.addr_for(target), other.addr_for(target)])

        assert await dialer.call_unary(target.peer_id, ECHO, b"2", timeout=DEADLINE) == b"echo:2"

        assert relay.connects == [target.peer_id] and other.connects == [target.peer_id]
        assert dialer.relay_limit(target.peer_id) == RelayLimit(None, None)


async def test_a_host_without_hop_is_not_a_relay(target, dialer):
    async with open_host(listen=True) as plain:
        transport = plain.listen_addrs[0].rsplit("/p2p/", 1)[0]
        with pytest.raises(PeerUnreachable, match="is not a relay"):
            await dialer.connect(circuit_addr(plain.peer_id, target.peer_id, transport), timeout=DEADLINE)


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed on exit: nothing listens there


async def test_a_refused_direct_address_falls_back_to_the_relay(relay, target, dialer):
    relay.reserved[target.peer_id] = target
    dialer.add_addrs(target.peer_id, [f"/ip4/127.0.0.1/tcp/{_refused_port()}", relay.addr_for(target)])

    assert await dialer.call_unary(target.peer_id, ECHO, b"d", timeout=DEADLINE) == b"echo:d"
    assert dialer.is_relayed(target.peer_id)


async def test_a_silent_direct_address_gets_only_its_share_of_the_deadline(relay, target, dialer):
    """A LAN address of a NAT'd peer may accept nothing and answer nothing: the relay still gets its turn."""
    relay.reserved[target.peer_id] = target
    accepted: list[trio.SocketStream] = []

    async def hold_silently(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, hold_silently, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        dialer.add_addrs(target.peer_id, [f"/ip4/127.0.0.1/tcp/{port}", relay.addr_for(target)])
        timeout = 4.0
        t0 = time.monotonic()
        await dialer.connect(target.peer_id, timeout=timeout)
        elapsed = time.monotonic() - t0
        nursery.cancel_scope.cancel()
    assert accepted, "the direct address was tried first"
    assert dialer.is_relayed(target.peer_id)
    assert elapsed > timeout * 0.4  # the silent direct address had its share of the deadline first


async def test_concurrent_calls_share_one_circuit(relay, target, dialer):
    relay.reserved[target.peer_id] = target
    dialer.add_addrs(target.peer_id, [relay.addr_for(target)])
    replies: list[bytes] = []

    async def call(i: int) -> None:
        replies.append(await dialer.call_unary(target.peer_id, ECHO, bytes([i]), timeout=DEADLINE))

    async with trio.open_nursery() as nursery:
        for i in range(6):
            nursery.start_soon(call, i)
    assert sorted(replies) == sorted(b"echo:" + bytes([i]) for i in range(6))
    assert relay.connects == [target.peer_id]


async def test_circuit_addresses_outlive_identify_and_reconnects_use_them(relay, target, dialer):
    """py-libp2p's identify replaces a peer's peerstore addresses with what it advertises (nothing, here)."""
    relay.reserved[target.peer_id] = target
    await dialer.connect(relay.addr_for(target), timeout=DEADLINE)
    await dialer.identify(target.peer_id, timeout=DEADLINE)
    await dialer.disconnect(target.peer_id)
    with trio.fail_after(DEADLINE):
        while dialer.is_connected(target.peer_id):
            await trio.sleep(0.01)

    assert relay.addr_for(target) in dialer.known_addrs(target.peer_id)
    assert await dialer.call_unary(target.peer_id, ECHO, b"again", timeout=DEADLINE) == b"echo:again"
    assert relay.connects == [target.peer_id, target.peer_id]


async def test_direct_connections_are_not_relayed(dialer):
    async with open_host(listen=True) as server:
        peer = await dialer.connect(server.listen_addrs[0], timeout=DEADLINE)
        assert not dialer.is_relayed(peer)
        assert dialer.relay_limit(peer) is None
    assert not dialer.is_relayed(peer)  # not connected at all


async def test_a_relay_that_never_answers_ends_in_call_timeout(target, dialer):
    async with open_host(listen=True) as mute_host:
        from libp2p.custom_types import TProtocol

        async def mute(stream) -> None:
            await trio.sleep_forever()

        mute_host.libp2p_host.set_stream_handler(TProtocol(HOP_PROTOCOL), mute)
        transport = mute_host.listen_addrs[0].rsplit("/p2p/", 1)[0]
        t0 = time.monotonic()
        with pytest.raises((CallTimeout, PeerUnreachable)):
            await dialer.connect(circuit_addr(mute_host.peer_id, target.peer_id, transport), timeout=1.0)
        assert time.monotonic() - t0 < 1.0 + 2.0  # ended by the deadline (slack for a loaded machine)


# ------------------------------------------------------------------ addresses and the book


def test_add_addrs_keeps_only_circuits_towards_that_peer(relay_ids):
    relay_id, target_id, other_id = relay_ids
    book_host = _BookOnly()
    book_host.add(target_id, f"/p2p/{relay_id}/p2p-circuit/p2p/{other_id}")  # someone else's circuit
    book_host.add(target_id, f"/p2p/{target_id}/p2p-circuit")  # itself as its own relay
    book_host.add(target_id, f"/ip4/1.2.3.4/tcp/1/p2p/{relay_id}/p2p-circuit")
    assert book_host.known(target_id) == [f"/ip4/1.2.3.4/tcp/1/p2p/{relay_id}/p2p-circuit/p2p/{target_id}"]


class _BookOnly:
    """Host.add_addrs' circuit branch without a running host (Host's methods need only these attributes)."""

    def __init__(self) -> None:
        self.peer_id = "self"
        self._circuits = CircuitBook()

    def add(self, peer: str, addr: str) -> None:
        Host._remember_circuit(self, peer, addr, 60.0)  # type: ignore[arg-type]

    def known(self, peer: str) -> list[str]:
        return self._circuits.get(peer, time.monotonic())


@pytest.fixture
def relay_ids() -> tuple[str, str, str]:
    return _new_id(), _new_id(), _new_id()


def _new_id() -> str:
    import libp2p
    from libp2p.peer.id import ID

    return ID.from_pubkey(libp2p.generate_new_ed25519_identity().public_key).to_base58()


def test_circuit_book_expires_and_is_bounded():
    book = CircuitBook(max_peers=2, max_per_peer=2)
    book.add("p", "a1", ttl=10, now=0)
    book.add("p", "a2", ttl=20, now=0)
    book.add("p", "a3", ttl=20, now=0)
    assert book.get("p", now=5) == ["a2", "a3"]  # newest two kept
    assert book.get("p", now=25) == [] and len(book) == 0  # all expired: the peer is forgotten
    book.add("x", "b", ttl=10, now=0)
    book.add("y", "c", ttl=100, now=0)
    book.add("z", "d", ttl=100, now=50)  # over max_peers: x (expired) goes first
    assert (book.get("x", 50), book.get("y", 50), book.get("z", 50)) == ([], ["c"], ["d"])
    book.add("w", "e", ttl=100, now=50)  # nothing expired: the oldest told-about peer goes
    assert book.get("y", 50) == [] and book.get("w", 50) == ["e"] and len(book) == 2


def test_parse_circuit_addr_forms():
    r, t = _new_id(), _new_id()
    short = parse_circuit_addr(f"/p2p/{r}/p2p-circuit/p2p/{t}")
    assert (short.relay_peer_id, short.relay_transport, short.target_peer_id) == (r, None, t)
    assert short.relay_maddr == f"/p2p/{r}"
    full = parse_circuit_addr(f"/ip4/10.0.0.1/tcp/4001/p2p/{r}/p2p-circuit/p2p/{t}")
    assert (full.relay_peer_id, full.relay_transport, full.target_peer_id) == (r, "/ip4/10.0.0.1/tcp/4001", t)
    assert full.relay_maddr == f"/ip4/10.0.0.1/tcp/4001/p2p/{r}"
    bare = parse_circuit_addr(f"/ip6/::1/udp/1/quic-v1/p2p/{r}/p2p-circuit")
    assert (bare.relay_transport, bare.target_peer_id) == ("/ip6/::1/udp/1/quic-v1", None)
    assert is_circuit_addr(f"/p2p/{r}/p2p-circuit") and not is_circuit_addr(f"/ip4/1.2.3.4/tcp/1/p2p/{r}")


@pytest.mark.parametrize(
    "shape",
    [
        "/ip4/1.2.3.4/tcp/1/p2p/{t}",  # no circuit at all
        "/p2p-circuit/p2p/{t}",  # no relay
        "/ip4/1.2.3.4/tcp/1/p2p-circuit/p2p/{t}",  # relay transport without its id
        "/p2p/{r}/p2p-circuit/p2p/{t}/p2p-circuit/p2p/{r}",  # two hops
        "/p2p/{r}/p2p-circuit/ip4/1.2.3.4",  # junk after the circuit
        "not a multiaddr",
    ],
)
def test_parse_circuit_addr_refuses(shape):
    with pytest.raises(ValueError):
        parse_circuit_addr(shape.format(r=_new_id(), t=_new_id()))


def test_hop_connect_message_and_status_decoding():
    from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, Status

    target = peer_id_to_bytes(_new_id())
    framed = encode_hop_connect(target)
    msg = HopMessage()
    msg.ParseFromString(framed[1:])
    assert framed[0] == len(framed) - 1
    assert (msg.type, msg.peer.id) == (HopMessage.CONNECT, target)

    assert decode_hop_status(_hop_reply(Status.OK, GO_DEFAULT_LIMIT)[1:]) == GO_DEFAULT_LIMIT
    assert decode_hop_status(_hop_reply(Status.OK)[1:]) == RelayLimit(None, None)
    for status in ("RESOURCE_LIMIT_EXCEEDED", "PERMISSION_DENIED", "CONNECTION_FAILED", "NO_RESERVATION"):
        with pytest.raises(PeerUnreachable, match=status):
            decode_hop_status(_hop_reply(Status.Value(status))[1:])
    with pytest.raises(FrameError, match="not STATUS"):
        decode_hop_status(HopMessage(type=HopMessage.CONNECT).SerializeToString())
    with pytest.raises(FrameError, match="malformed"):
        decode_hop_status(b"\xff\xff\xff")
