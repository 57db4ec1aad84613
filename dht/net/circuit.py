"""Circuit relay v2 addresses and the one HOP exchange a dialer needs (``/libp2p/circuit/relay/0.2.0/hop``).

A peer behind NAT (a Petals server with ``using_relay=True``) holds a reservation on a relay and is reached at
``/p2p/<relay>/p2p-circuit/p2p/<peer>`` (optionally with the relay's transport address in front). The dialer
opens a HOP stream to the relay, sends ``HopMessage{CONNECT, peer}`` and, on ``STATUS OK``, the same stream
carries a brand-new libp2p connection to the peer (Noise + yamux on top, as on TCP).

We speak HOP ourselves instead of using py-libp2p's ``CircuitV2Transport``: that class also asks the relay for a
reservation of our own, retries every stored circuit address without a deadline and writes circuit addresses
with an unlimited TTL into the peerstore. A monitor only ever dials out, so it needs none of that.

The relay's STATUS may carry a ``limit`` (go-libp2p's default relay: 2 min and 128 KiB per direction over the
whole relayed connection). The relay resets the circuit once either is used up, so requests over relays stay small.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FrameError, PeerUnreachable
from ..wire import encode_uvarint
from .streams import BufferedReader, ByteStream

HOP_PROTOCOL = "/libp2p/circuit/relay/0.2.0/hop"
MAX_HOP_MESSAGE = 4096  # a STATUS reply is tens of bytes; go-libp2p caps HOP messages at 4 KiB
_CIRCUIT = "p2p-circuit"


@dataclass(frozen=True, slots=True)
class CircuitAddr:
    """``[<relay transport>]/p2p/<relay>/p2p-circuit[/p2p/<target>]`` taken apart."""

    relay_peer_id: str
    relay_transport: str | None  # e.g. ``/ip4/1.2.3.4/tcp/31337``; None when only the relay's id is given
    target_peer_id: str | None

    @property
    def relay_maddr(self) -> str:
        """The relay as a dialable ``…/p2p/<relay>`` multiaddr (``/p2p/<relay>`` alone when no transport)."""
        return f"{self.relay_transport or ''}/p2p/{self.relay_peer_id}"


@dataclass(frozen=True, slots=True)
class RelayLimit:
    """What the relay said it allows on one relayed connection (``None``: no limit announced)."""

    duration: int | None  # seconds
    data: int | None  # bytes, in each direction


def is_circuit_addr(maddr: str) -> bool:
    """True for any multiaddr with a ``/p2p-circuit`` component (cheap: no full parse)."""
    return f"/{_CIRCUIT}" in maddr


def parse_circuit_addr(maddr: str) -> CircuitAddr:
    """Split a circuit multiaddr; ``ValueError`` unless it is ``…/p2p/<relay>/p2p-circuit[/p2p/<target>]``."""
    from multiaddr import Multiaddr

    try:
        parts = [(p.name, v) for p, v in Multiaddr(maddr).items()]
    except Exception as e:
        raise ValueError(f"not a multiaddr: {maddr!r}") from e
    names = [name for name, _ in parts]
    if names.count(_CIRCUIT) != 1:
        raise ValueError(f"not a single-hop circuit address: {maddr}")
    at = names.index(_CIRCUIT)
    before, after = parts[:at], parts[at + 1 :]
    if not before or before[-1][0] != "p2p":
        raise ValueError(f"circuit address without /p2p/<relay> before /p2p-circuit: {maddr}")
    if after and (len(after) != 1 or after[0][0] != "p2p"):
        raise ValueError(f"circuit address must end with /p2p-circuit[/p2p/<peer>]: {maddr}")
    relay = _peer_text(before[-1][1])
    transport = "".join(f"/{name}/{value}" if value not in (None, "") else f"/{name}" for name, value in before[:-1])
    target = _peer_text(after[0][1]) if after else None
    return CircuitAddr(relay, transport or None, target)


def circuit_addr(relay_peer_id: str, target_peer_id: str, relay_transport: str | None = None) -> str:
    """``[<relay transport>]/p2p/<relay>/p2p-circuit/p2p/<target>``."""
    return f"{relay_transport or ''}/p2p/{relay_peer_id}/{_CIRCUIT}/p2p/{target_peer_id}"


def _peer_text(value: object) -> str:
    return value.to_base58() if hasattr(value, "to_base58") else str(value)


class CircuitBook:
    """Circuit addresses per peer, kept apart from py-libp2p's peerstore: its identify replaces a peer's
    addresses with the ones the peer advertises, which on a NAT'd peer need not include its relays.

    Bounded: at most ``max_per_peer`` addresses per peer (newest kept) and ``max_peers`` peers (expired, then
    oldest forgotten first). Times are ``time.monotonic()`` seconds unless a clock is passed in.
    """

    def __init__(self, *, max_peers: int = 10_000, max_per_peer: int = 8) -> None:
        self._book: dict[str, dict[str, float]] = {}
        self.max_peers = max_peers
        self.max_per_peer = max_per_peer

    def add(self, peer_id: str, addr: str, ttl: float, now: float) -> None:
        addrs = self._book.pop(peer_id, {})  # re-inserted last: most recently told about
        addrs.pop(addr, None)
        addrs[addr] = now + ttl
        while len(addrs) > self.max_per_peer:
            del addrs[next(iter(addrs))]
        self._book[peer_id] = addrs
        if len(self._book) > self.max_peers:
            self._evict(now)

    def get(self, peer_id: str, now: float) -> list[str]:
        addrs = self._book.get(peer_id)
        if not addrs:
            return []
        live = [a for a, expiry in addrs.items() if expiry > now]
        if len(live) != len(addrs):
            self._book[peer_id] = {a: addrs[a] for a in live}
            if not live:
                del self._book[peer_id]
        return live

    def __len__(self) -> int:
        return len(self._book)

    def _evict(self, now: float) -> None:
        for peer in [p for p, addrs in self._book.items() if all(e <= now for e in addrs.values())]:
            del self._book[peer]
        while len(self._book) > self.max_peers:
            del self._book[next(iter(self._book))]


# ------------------------------------------------------------------ the HOP CONNECT exchange


def encode_hop_connect(target_peer_id: bytes) -> bytes:
    """``uvarint(len) + HopMessage{type: CONNECT, peer: {id}}``."""
    from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, PeerId

    body = HopMessage(type=HopMessage.CONNECT, peer=PeerId(id=target_peer_id)).SerializeToString()
    return encode_uvarint(len(body)) + body


def decode_hop_status(payload: bytes) -> RelayLimit:
    """The relay's answer to CONNECT: its limit on OK, else :class:`PeerUnreachable` naming the status."""
    from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage, Status

    msg = HopMessage()
    try:
        msg.ParseFromString(payload)
    except Exception as e:
        raise FrameError(f"malformed HOP message from relay: {e}") from None
    if msg.type != HopMessage.STATUS:
        raise FrameError(f"relay answered CONNECT with HOP type {msg.type}, not STATUS")
    if msg.status != Status.OK:
        try:
            name = Status.Name(msg.status)
        except ValueError:
            name = str(msg.status)
        raise PeerUnreachable(f"relay refused the circuit: {name}")
    if not msg.HasField("limit"):
        return RelayLimit(None, None)
    limit = msg.limit
    return RelayLimit(
        limit.duration if limit.HasField("duration") and limit.duration else None,
        limit.data if limit.HasField("data") and limit.data else None,
    )


async def hop_connect(stream: ByteStream, reader: BufferedReader, target_peer_id: bytes) -> RelayLimit:
    """Ask the relay (``stream`` already negotiated to :data:`HOP_PROTOCOL`) to connect us to the target.

    On return the stream is a raw pipe to the target. ``reader`` reads exactly what each frame needs, so no
    byte of the target's side has been consumed (the target waits for our first handshake message anyway).
    """
    try:
        await stream.write(encode_hop_connect(target_peer_id))
    except Exception as e:
        raise PeerUnreachable(f"relay stream closed while sending CONNECT: {e}") from None
    return decode_hop_status(await reader.read_frame(MAX_HOP_MESSAGE))


__all__ = [
    "HOP_PROTOCOL",
    "CircuitAddr",
    "CircuitBook",
    "RelayLimit",
    "circuit_addr",
    "decode_hop_status",
    "encode_hop_connect",
    "hop_connect",
    "is_circuit_addr",
    "parse_circuit_addr",
]
