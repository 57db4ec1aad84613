"""Lean outbound libp2p connections: TCP, multistream-select, Noise XX and yamux of our own, dialler side only.

Why: a cold crawl opens a connection to every server it probes, and py-libp2p spent ~16 ms of CPU on each (Noise
in pure Python, the swarm's task bookkeeping, ~80 trio lock operations per stream) and ~3.7 ms per later call:
more than half of the crawl. This path does the same protocol work in ~2 ms per connection and well under a
millisecond per call. It is used by client-mode hosts (a monitor, the CLI) for direct TCP addresses only;
listening hosts (DHT nodes that must answer calls on the connections they open), circuit-relayed peers and
peers that refuse ``/noise`` or ``/yamux/1.0.0`` keep py-libp2p (``dht.net.transport`` falls back on
:class:`LeanUnsupported`). py-libp2p still supplies the identity keys, peer ids and the handshake payload format.

One connection = one trio task reading the socket (:meth:`LeanConnection.run`), which decrypts every whole Noise
message a socket read brought and hands yamux frames to their streams, and never writes: its answers (pings,
resets) and the streams' window credit go to a writer task beside it. Writers encrypt and send under one lock,
shielded, so a cancelled caller never leaves the peer a nonce behind. The peer's streams (go-libp2p identifies
every new connection) are refused with RST: a client-mode host serves nothing.

Limits against hostile peers: a handshake message or multistream line over its bound, a DATA frame larger than
what is left of its stream's window (decided at its header), an unknown frame type or version, or a message that
fails authentication closes the connection with :class:`FrameError` for every stream on it. DATA goes to its
stream as it arrives; DATA for a stream we do not have (never opened, closed, reset) is dropped as it arrives,
never held. Bytes waiting for their stream's reader are capped per connection and per host (:class:`ReceiveBudget`).
Every call path runs under its caller's deadline.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import trio

from .. import wire
from ..errors import FrameError, PeerIdentityError, PeerUnreachable
from ..wire import decode_uvarint
from . import noise_xx
from . import yamux_frames as yx
from .streams import MAX_NEGOTIATION_LINE, MULTISTREAM_ID, encode_multistream_line, multistream_text, protocol_selected

log = logging.getLogger(__name__)

BULK_READ = 256 * 1024  # bytes asked of the socket per read
# per stream, granted with SYN: a whole hivemind reply (at most 4 MiB) never waits for credit, and a hostile peer
# cannot park more than this in one stream's buffer
RECEIVE_WINDOW = wire.MAX_MESSAGE_SIZE + 64 * 1024
STREAM_GRANT = RECEIVE_WINDOW - yx.INITIAL_WINDOW
MAX_DATA_FRAME = 256 * 1024  # what we put in one DATA frame
WRITE_TIMEOUT = 10.0  # bound on one shielded write (a socket stuck that long is dead anyway)
MAX_INBOUND_RESETS = 64  # peer-opened streams refused per period before we call the peer hostile and hang up
INBOUND_RESET_PERIOD = 60.0  # seconds (go-libp2p opens one identify stream per connection, and a push on changes)
MAX_PENDING_CONTROL = 64 * 1024  # bytes of our answers a peer may leave unread (~5,000 ping answers), then cut off
# Bytes received on our streams and not yet read by their callers. Past a bound the connection's reader stops
# reading its socket (TCP then holds the peer back) until callers read or close streams, so a peer can make us
# hold at most MAX_CONNECTION_BUFFER + one socket read (BULK_READ + a partial Noise message) per connection, and
# all peers together MAX_HOST_BUFFER + that much per connection. Callers read their replies as they come, so
# neither bound is reached by a peer that only answers what we asked.
MAX_CONNECTION_BUFFER = 2 * RECEIVE_WINDOW  # two whole replies waiting to be read
MAX_HOST_BUFFER = 64 * 1024 * 1024  # 16 whole replies: a crawl's 64 calls read theirs as they arrive


class LeanUnsupported(PeerUnreachable):
    """The peer refused ``/noise`` or ``/yamux/1.0.0``: dial it another way (py-libp2p: TLS, other muxers)."""


class LeanStreamClosed(FrameError):
    """The stream was reset, or its connection ended, before the bytes asked for arrived."""


class ReceiveBudget:
    """Bytes that arrived on streams and wait for their callers, counted for one connection (``parent``: its
    host's budget, charged with every byte too) or for one host.

    When it is :attr:`full` the reader of a connection waits in :meth:`wait_for_room` before its next socket
    read; reads, closes and resets of streams give the bytes back and wake it."""

    def __init__(self, limit: int = MAX_HOST_BUFFER, parent: ReceiveBudget | None = None) -> None:
        self.limit = limit
        self.used = 0
        self._parent = parent
        self._room = trio.lowlevel.ParkingLot()

    @property
    def full(self) -> bool:
        return self.used >= self.limit or (self._parent is not None and self._parent.full)

    def charge(self, size: int) -> None:
        self.used += size
        if self._parent is not None:
            self._parent.charge(size)

    def release(self, size: int) -> None:
        was_full = self.used >= self.limit
        self.used -= size
        if was_full and self.used < self.limit:
            self._room.unpark_all()
        if self._parent is not None:
            self._parent.release(size)

    def wake(self) -> None:
        """Wake every waiting reader (one of them closes: it must not wait for room it no longer needs)."""
        self._room.unpark_all()
        if self._parent is not None:
            self._parent.wake()

    async def wait_for_room(self) -> None:
        """Until neither this budget nor its parent is full, or :meth:`wake`."""
        if self.used >= self.limit:
            await self._room.park()
        elif self._parent is not None and self._parent.full:
            await self._parent.wait_for_room()


class LocalIdentity:
    """What our side of every handshake needs, made once per host: a static X25519 key and the signed payload."""

    def __init__(self, key_pair: Any) -> None:
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
        from libp2p.security.noise.pb import noise_pb2

        self.static = X25519PrivateKey.generate()
        static_public = self.static.public_key().public_bytes_raw()
        signature = key_pair.private_key.sign(noise_xx.SIGNED_PREFIX + static_public)
        self.payload = noise_pb2.NoiseHandshakePayload(
            identity_key=key_pair.public_key.serialize(), identity_sig=signature
        ).SerializeToString()


def verified_peer_id(payload: bytes, remote_static: bytes) -> bytes:
    """The peer id (multihash bytes) the handshake payload proves, or :class:`PeerIdentityError` (no readable key,
    or a signature over our peer's Noise key that does not verify)."""
    from libp2p.crypto.serialization import deserialize_public_key
    from libp2p.peer.id import ID
    from libp2p.security.noise.pb import noise_pb2

    try:
        msg = noise_pb2.NoiseHandshakePayload.FromString(payload)
        key = deserialize_public_key(msg.identity_key)
        valid = key.verify(noise_xx.SIGNED_PREFIX + remote_static, msg.identity_sig)
    except Exception as e:
        raise PeerIdentityError(f"unreadable Noise handshake payload: {e}") from None
    if not valid:
        raise PeerIdentityError("the peer's identity signature over its Noise key does not verify")
    return ID.from_pubkey(key).to_bytes()


def tcp_target(addr: str) -> tuple[str, int] | None:
    """``/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>`` → (host, port); anything else (circuits, ws, quic) → None."""
    parts = addr.split("/")
    if len(parts) != 5 or parts[0] or parts[1] not in ("ip4", "ip6", "dns", "dns4", "dns6") or parts[3] != "tcp":
        return None
    try:
        port = int(parts[4])
    except ValueError:
        return None
    return (parts[2], port) if 0 < port < 65536 and parts[2] else None


def _reach_rank(host: str) -> int:
    """0 public (or a DNS name: announced on purpose), 1 private/shared/link-local, 2 loopback, 3 unusable."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return 2
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return 0
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return 2
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return 3
    return 0 if ip.is_global else 1  # is_global: not 100.64/10 (CGNAT, Tailscale) nor documentation ranges


def rank_targets(targets: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """Distinct targets, public ones first, then private, shared and link-local, then loopback, then multicast and
    unspecified ones (each group in its order).

    A Petals server announces its loopback, LAN and container addresses beside its public one, often first, and
    only the first few targets are dialled: a LAN address that swallows packets must not crowd out the one that
    answers. Loopback stays last but dialled, for a monitor on the servers' own machine."""
    return sorted(dict.fromkeys(targets), key=lambda t: _reach_rank(t[0]))


# ------------------------------------------------------------------ dialling


@functools.lru_cache(maxsize=4096)
def _peer_id_bytes(peer_id: str) -> bytes:
    from libp2p.peer.id import ID

    try:
        return ID.from_base58(peer_id).to_bytes()
    except Exception:
        return b""  # matches no peer: the dial fails as "wrong peer"


class _HandshakeReader:
    """Buffered reads of the bytes before the connection task takes over the socket."""

    def __init__(self, sock: trio.SocketStream) -> None:
        self.sock = sock
        self.buf = bytearray()

    async def fill(self, want: int, what: str) -> None:
        while len(self.buf) < want:
            chunk = await self.sock.receive_some(BULK_READ)
            if not chunk:
                raise PeerUnreachable(f"connection closed during {what}")
            self.buf += chunk

    async def line(self, what: str) -> str:
        """One multistream message (``uvarint(len) + text + "\\n"``) from the plaintext socket."""
        while (text := _take_line(self.buf, what)) is None:
            await self.fill(len(self.buf) + 1, what)
        return text

    async def noise_message(self) -> bytes:
        await self.fill(2, "the Noise handshake")
        size = (self.buf[0] << 8) | self.buf[1]
        await self.fill(2 + size, "the Noise handshake")
        return self.take(2, size)

    def take(self, start: int, length: int) -> bytes:
        out = bytes(self.buf[start : start + length])
        del self.buf[: start + length]
        return out


def _take_line(buf: bytearray, what: str) -> str | None:
    """One multistream message from the front of ``buf`` (removed), or None if it is not all there yet."""
    head = decode_uvarint(buf)
    if head is None:
        return None
    length, start = head
    if length > MAX_NEGOTIATION_LINE:
        raise FrameError(f"{what}: multistream message of {length} bytes")
    if len(buf) < start + length:
        return None
    raw = bytes(buf[start : start + length])
    del buf[: start + length]
    return multistream_text(raw)


async def _expect_selected(next_line: Callable[[], Any], protocol: str) -> None:
    header = await next_line()
    if not protocol_selected(header, await next_line(), protocol):
        raise LeanUnsupported(f"the peer does not speak {protocol}")


async def _connect_tcp(host: str, port: int) -> trio.SocketStream:
    """A TCP connection; an IP literal is connected directly, half the CPU of ``trio.open_tcp_stream`` (which
    resolves and runs happy eyeballs in a nursery even for one numeric address). Names go the long way."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return await trio.open_tcp_stream(host, port)
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def dial(
    identity: LocalIdentity, host: str, port: int, expected_peer_id: str, *, host_budget: ReceiveBudget | None = None
) -> LeanConnection:
    """TCP connect, select ``/noise``, run XX (checking the peer is ``expected_peer_id``), select yamux.

    Each proposal travels with the first message of what it proposes (Noise message 1; then Noise message 3
    with the yamux proposal): both sides of go-libp2p and py-libp2p read multistream exactly, and a peer that
    answers "na" drops the rest with the connection. The yamux answer is not waited for: the connection reads
    it before the first frame (every libp2p host of a Petals swarm speaks yamux; one that refuses it fails its
    first call and is dialled with py-libp2p next time). Two writes and one round trip after TCP's.

    ``host_budget``: the dialling host's :class:`ReceiveBudget` (the connection's own is charged to it).
    Runs under the caller's deadline. Raises :class:`PeerUnreachable` (refused, closed; its
    :class:`PeerIdentityError` before message 3 when the peer proves another identity or none),
    :class:`LeanUnsupported` or :class:`FrameError`; the socket is closed on any failure."""
    try:
        sock = await _connect_tcp(host, port)
    except OSError as e:
        raise PeerUnreachable(f"cannot connect to {host}:{port}: {e}") from None
    try:
        reader = _HandshakeReader(sock)
        initiator = noise_xx.XXInitiator(identity.static, identity.payload)
        proposal = encode_multistream_line(MULTISTREAM_ID) + encode_multistream_line(noise_xx.PROTOCOL_ID)
        await sock.send_all(proposal + noise_xx.frame(initiator.message1()))
        await _expect_selected(lambda: reader.line("security negotiation"), noise_xx.PROTOCOL_ID)
        remote_payload = initiator.read_message2(await reader.noise_message())
        message3, result = initiator.message3()
        peer_id = verified_peer_id(remote_payload, result.remote_static)
        if peer_id != _peer_id_bytes(expected_peer_id):
            from libp2p.peer.id import ID

            raise PeerIdentityError(f"{host}:{port} is {ID(peer_id).to_base58()}, not {expected_peer_id}")
        proposal = encode_multistream_line(MULTISTREAM_ID) + encode_multistream_line(yx.PROTOCOL_ID)
        await sock.send_all(noise_xx.frame(message3) + noise_xx.encrypt_stream(result.send, proposal))
        conn = LeanConnection(
            sock, result, expected_peer_id, (host, port), cipher=reader.buf, plain=bytearray(), host_budget=host_budget
        )
        conn.expect_muxer_answer()
        return conn
    except BaseException as e:
        with trio.CancelScope(shield=True):
            await sock.aclose()
        if isinstance(e, PeerUnreachable) or not isinstance(e, Exception):  # ours, or Cancelled / KeyboardInterrupt
            raise
        raise PeerUnreachable(f"handshake with {host}:{port} failed: {e or type(e).__name__}") from None


# ------------------------------------------------------------------ the connection


class LeanConnection:
    """One secured, multiplexed connection we dialled. Start :meth:`run` in a nursery right after :func:`dial`."""

    def __init__(
        self,
        sock: trio.SocketStream,
        keys: noise_xx.NoiseResult,
        peer_id: str,
        remote: tuple[str, int],
        *,
        cipher: bytearray,
        plain: bytearray,
        host_budget: ReceiveBudget | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.remote = remote
        self._sock = sock
        self._send_cipher = keys.send
        self._receive_cipher = keys.receive
        self._cipher = cipher  # received, not yet decrypted
        self._plain = plain  # decrypted, not yet parsed into frames (at most a partial header after a read)
        self._budget = ReceiveBudget(MAX_CONNECTION_BUFFER, host_budget)
        # the DATA frame whose payload is arriving: bytes still to come, its stream (None: dropped), id and flags
        self._data_left = 0
        self._data_to: LeanStream | None = None
        self._data_stream_id = 0
        self._data_flags = 0
        self._streams: dict[int, LeanStream] = {}
        self._next_id = 1
        self._write_lock = trio.Lock()
        self._inbound_resets = 0
        self._inbound_since = trio.current_time()
        self.closed = False
        self.going_away = False
        self.error: str | None = None
        self.last_used = trio.current_time()  # for the host's idle reaping
        self.last_received = trio.current_time()  # the peer's last bytes: as good as a ping's answer
        self._reads = 0  # socket reads that brought bytes
        self._pings: dict[int, trio.Event] = {}  # our PINGs awaiting their ACK, by opaque value
        self._next_ping = 0
        self._control = bytearray()  # frames for the writer task, bounded by MAX_PENDING_CONTROL
        self._control_ready = trio.Event()
        self._drained = False  # going away and no stream left: the writer task closes the connection
        self._muxer_answer: list[str] | None = None  # lines of the yamux answer read so far, while awaited
        self.refused_muxer = False

    @property
    def is_open(self) -> bool:
        return not self.closed and not self.going_away

    @property
    def is_idle(self) -> bool:
        """No stream of ours is open on it."""
        return not self._streams

    def open_stream(self) -> LeanStream:
        """A new stream; its SYN goes out with its first write (or its close)."""
        if not self.is_open:
            raise PeerUnreachable(f"connection to {self.peer_id} is closed ({self.error or 'going away'})")
        stream_id = self._next_id
        self._next_id += 2
        self.last_used = trio.current_time()
        stream = self._streams[stream_id] = LeanStream(self, stream_id)
        return stream

    async def run(self) -> None:
        """Read the socket until it closes or breaks the protocol; then fail every stream. Raises only Cancelled.

        Beside the reader runs the writer of :meth:`_queue_control`'s frames: the reader never waits on a write."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_control)
            try:
                await self._read_socket()
            finally:
                nursery.cancel_scope.cancel()

    async def _read_socket(self) -> None:
        reason = "closed"
        try:
            if self._cipher or self._plain:
                self._absorb(b"")
            while True:
                while self._budget.full and not self.closed:  # callers have not read what we hold: wait for them
                    await self._budget.wait_for_room()
                chunk = await self._sock.receive_some(BULK_READ)
                if not chunk:
                    reason = "closed by the peer"
                    return
                self.last_received = trio.current_time()
                self._reads += 1
                self._absorb(chunk)
        except trio.ClosedResourceError:
            pass
        except Exception as e:  # the peer broke the protocol or the socket broke: this connection is over
            reason = str(e) or type(e).__name__
        finally:
            await self.aclose(reason)

    async def aclose(self, reason: str = "closed by us") -> None:
        """Fail every stream and close the socket (the reader task then ends)."""
        self._fail(reason)
        with trio.CancelScope(shield=True):
            await self._sock.aclose()

    async def ping(self, timeout: float) -> bool:
        """A yamux PING: ``True`` when the peer's ACK, or any other bytes of the peer's, arrive within ``timeout``
        (the ACK queues behind the data the peer is sending: a busy peer is a live one, as go-yamux counts it).

        The keepalive go-yamux runs every 30 s, on demand: a peer behind a NAT that dropped our mapping, or a
        machine that vanished, never sends the RST that would close the socket, and every call on the connection
        would time out until TCP gives up. ``True`` at once while the reader waits for callers to read what the
        connection holds (:class:`ReceiveBudget`): the answer would wait behind our own backlog."""
        if not self.is_open:
            return False
        if self._budget.full:
            return True
        reads = self._reads
        opaque = self._next_ping = (self._next_ping + 1) & 0xFFFFFFFF
        answered = self._pings[opaque] = trio.Event()
        try:
            with trio.move_on_after(timeout):
                await self.send_plain(yx.header(yx.PING, yx.SYN, 0, opaque))
                await answered.wait()
        except PeerUnreachable:  # the write failed: the connection is closed already
            return False
        finally:
            self._pings.pop(opaque, None)
        return (answered.is_set() or self._reads > reads) and not self.closed

    def _fail(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.error = reason
            log.debug("lean connection to %s ended: %s", self.peer_id, reason)
        for stream in list(self._streams.values()):
            stream._on_gone(reason)
        self._streams.clear()
        for waiter in self._pings.values():  # wakes ping(), which then sees the connection closed
            waiter.set()
        self._pings.clear()
        self._budget.wake()  # a reader waiting for room ends

    def expect_muxer_answer(self) -> None:
        """The peer's answer to our yamux proposal comes first, before any frame (see :func:`dial`)."""
        self._muxer_answer = []

    def _take_muxer_answer(self) -> bool:
        """Consume the answer to the yamux proposal from the plaintext; True once it is all in and says yes."""
        answer = self._muxer_answer
        assert answer is not None
        while len(answer) < 2:  # the multistream header, then the selected protocol (or "na")
            text = _take_line(self._plain, "muxer negotiation")
            if text is None:
                return False
            answer.append(text)
        if not protocol_selected(answer[0], answer[1], yx.PROTOCOL_ID):
            self.refused_muxer = True
            raise LeanUnsupported(f"the peer does not speak {yx.PROTOCOL_ID}")
        self._muxer_answer = None
        return True

    def _absorb(self, chunk: bytes) -> None:
        self._cipher += chunk
        noise_xx.decrypt_into(self._receive_cipher.decrypt, self._cipher, self._plain)
        if self._muxer_answer is not None and not self._take_muxer_answer():
            return
        buf, pos, end = self._plain, 0, len(self._plain)
        replies: list[bytes] = []
        try:
            while pos < end:
                if self._data_left:  # a DATA frame's payload: to its stream as it arrives, or dropped
                    take = min(self._data_left, end - pos)
                    if self._data_to is not None:
                        self._data_to._on_data(bytes(buf[pos : pos + take]))
                    pos += take
                    self._data_left -= take
                    if not self._data_left:
                        self._end_data_frame()
                    continue
                if end - pos < yx.HEADER_LEN:
                    break
                version, frame_type, flags, stream_id, length = yx.HEADER.unpack_from(buf, pos)
                if version != yx.VERSION:
                    raise FrameError(f"yamux version {version}")
                pos += yx.HEADER_LEN
                if frame_type == yx.DATA:
                    self._start_data_frame(stream_id, flags, length, replies)
                elif frame_type == yx.WINDOW_UPDATE:
                    if (stream := self._stream_for(stream_id, flags, replies)) is not None:
                        stream._on_frame(flags, length)
                elif frame_type == yx.PING:
                    if flags & yx.SYN:
                        replies.append(yx.header(yx.PING, yx.ACK, 0, length))
                    elif flags & yx.ACK and (answered := self._pings.pop(length, None)) is not None:
                        answered.set()
                elif frame_type == yx.GO_AWAY:
                    self.retire()
                else:
                    raise FrameError(f"unknown yamux frame type {frame_type}")
        finally:
            del buf[:pos]
        if replies:
            self._queue_control(b"".join(replies))
            if len(self._control) > MAX_PENDING_CONTROL:
                raise FrameError(f"the peer does not read our answers ({len(self._control)} bytes of them wait)")

    def _queue_control(self, frames: bytes) -> None:
        """Frames for :meth:`_write_control` to send (ping answers, resets of the peer's streams, window credit)."""
        if not self.closed:
            self._control += frames
            self._control_ready.set()

    async def _write_control(self) -> None:
        """Send what :meth:`_queue_control` gathered, as it comes: a peer that stops reading stalls this task (up
        to WRITE_TIMEOUT, then the connection is closed), never the reader, and credit queued is never lost."""
        while True:
            await self._control_ready.wait()
            self._control_ready = trio.Event()
            frames, self._control = bytes(self._control), bytearray()
            try:
                if frames:
                    await self.send_plain(frames)
            except PeerUnreachable:  # the connection is closed
                return
            if self._drained:
                async with self._write_lock:  # after the FIN or RST that ended the last stream
                    pass
                await self.aclose("going away (GO_AWAY), and our last stream ended")
                return

    def _start_data_frame(self, stream_id: int, flags: int, length: int, replies: list[bytes]) -> None:
        """Decide at the header where a DATA frame's payload goes: its stream, within what is left of the stream's
        window (more is a :class:`FrameError`), or nowhere (a stream we do not have or that the peer ended)."""
        stream = self._stream_for(stream_id, flags, replies)
        if stream is not None and stream._remote_closed:
            stream = None  # data after the peer's FIN: dropped
        window = RECEIVE_WINDOW if stream is None else stream._receive_left
        if length > window:
            raise FrameError(f"yamux DATA frame of {length} bytes on stream {stream_id} (window {window})")
        if stream is not None:
            stream._receive_left -= length
        self._data_left, self._data_to, self._data_stream_id, self._data_flags = length, stream, stream_id, flags
        if not length:
            self._end_data_frame()

    def _end_data_frame(self) -> None:
        """The frame's payload is all there: its flags (FIN, RST) take effect after it."""
        stream = self._streams.get(self._data_stream_id)
        self._data_to = None
        if stream is not None:
            stream._on_frame(self._data_flags, 0)

    def _stream_for(self, stream_id: int, flags: int, replies: list[bytes]) -> LeanStream | None:
        """Our open stream ``stream_id``, or None; a stream the peer opens is refused (a client serves nothing)."""
        stream = self._streams.get(stream_id)
        if stream is None and flags & yx.SYN and stream_id % 2 == 0:
            now = trio.current_time()
            if now - self._inbound_since > INBOUND_RESET_PERIOD:
                self._inbound_since, self._inbound_resets = now, 0
            self._inbound_resets += 1
            if self._inbound_resets > MAX_INBOUND_RESETS:
                raise FrameError(f"the peer opened over {MAX_INBOUND_RESETS} streams in {INBOUND_RESET_PERIOD:g} s")
            replies.append(yx.header(yx.WINDOW_UPDATE, yx.RST, stream_id, 0))
        return stream

    def _forget(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)
        self._close_if_drained()

    def retire(self) -> None:
        """No new streams (the peer sent GO_AWAY, or the host dialled a newer connection); the streams in flight
        finish, and the connection closes when the last one ends (at once when none is open)."""
        self.going_away = True
        self._close_if_drained()

    def _close_if_drained(self) -> None:
        if self.going_away and not self._streams:
            self._drained = True
            self._control_ready.set()  # the writer task closes the connection

    async def send_plain(self, data: bytes) -> None:
        """Encrypt and send, atomically: a cancellation cannot cut a Noise message (the nonces would diverge)."""
        async with self._write_lock:
            if self.closed:  # checked under the lock: a write that failed before us may have left half a message
                raise PeerUnreachable(f"connection to {self.peer_id} is closed ({self.error})")
            failure = None
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + WRITE_TIMEOUT
                try:
                    await self._sock.send_all(noise_xx.encrypt_stream(self._send_cipher, data))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                    failure = f"connection to {self.peer_id} broke while writing: {e}"
            if scope.cancelled_caught:
                failure = f"a write to {self.peer_id} did not finish within {WRITE_TIMEOUT:g} s"
            if failure is not None:  # the peer may hold part of a message: the connection is unusable
                await self.aclose(failure)
                raise PeerUnreachable(failure)
        await trio.lowlevel.checkpoint_if_cancelled()


class LeanStream:
    """A yamux stream on a :class:`LeanConnection`, with py-libp2p's stream methods (read/write/close/reset)."""

    def __init__(self, conn: LeanConnection, stream_id: int) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self._chunks: deque[bytes] = deque()  # received, not yet read (handed out without copying)
        self._offset = 0  # bytes of the first chunk already read
        self._buffered = 0  # unread bytes in _chunks, charged to the connection's ReceiveBudget (while _charged)
        self._charged = True  # False once the connection ended and gave the bytes back (see _on_gone)
        self._taking = True  # False once we closed or reset it: what still arrives is dropped
        self._waiter: trio.Event | None = None
        self._syn_sent = False
        self._remote_closed = False
        self._gone: str | None = None  # reset by either side, or the connection ended
        self._send_window = yx.INITIAL_WINDOW
        self._receive_left = RECEIVE_WINDOW
        self._consumed = 0

    # -- from the connection's reader task
    def _wake(self) -> None:
        if self._waiter is not None:
            self._waiter.set()
            self._waiter = None

    def _on_data(self, data: bytes) -> None:
        """Part of a DATA frame whose size the connection already checked against our window."""
        if self._taking:
            self._chunks.append(data)
            self._buffered += len(data)
            self._conn._budget.charge(len(data))
            self._wake()

    def _on_frame(self, flags: int, credit: int) -> None:
        self._send_window += credit
        if flags & yx.FIN:
            self._remote_closed = True
        if flags & yx.RST:
            self._gone = "reset by the peer"
            self._conn._forget(self.stream_id)
        self._wake()

    def _drop_buffered(self) -> None:
        """Closed or reset by us: nobody will read what is buffered, and what still arrives is dropped."""
        self._taking = False
        if self._buffered and self._charged:
            self._conn._budget.release(self._buffered)
        self._chunks.clear()
        self._offset = self._buffered = 0

    def _on_gone(self, reason: str) -> None:
        """The connection ended: what is buffered stays readable, but no longer counts against the host's
        budget (a stream nobody closes would otherwise hold the host's readers back for good)."""
        if self._gone is None:
            self._gone = f"connection ended: {reason}"
        if self._buffered and self._charged:
            self._conn._budget.release(self._buffered)
        self._charged = False
        self._wake()

    async def _wait(self) -> None:
        """Until the reader task brings data, credit, a close or a reset (readers and writers share one event)."""
        if self._waiter is None:
            self._waiter = trio.Event()
        await self._waiter.wait()

    # -- py-libp2p's stream interface
    @property
    def muxed_conn(self) -> LeanConnection:
        return self._conn

    def get_remote_address(self) -> tuple[str, int]:
        return self._conn.remote

    async def read(self, n: int | None = None) -> bytes:
        """Up to ``n`` bytes (``None`` or negative: all buffered); ``b""`` once the peer has closed and all was
        read. After the peer's reset, what came before it, then :class:`LeanStreamClosed`; after our own close or
        reset, :class:`LeanStreamClosed` (what was buffered was dropped)."""
        if n is not None and n < 0:
            n = None
        if n == 0:
            return b""
        chunks = self._chunks
        while not chunks:
            if self._gone is not None:
                raise LeanStreamClosed(f"yamux stream {self.stream_id}: {self._gone}")
            if self._remote_closed:
                return b""
            await self._wait()
        if n is None or n >= self._buffered:
            if self._offset:
                chunks[0], self._offset = chunks[0][self._offset :], 0
            out = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
        else:  # n < buffered: copy only what is returned (the head chunk is consumed from an offset)
            parts, size = [], 0
            while size < n:
                head, start = chunks[0], self._offset
                take = min(len(head) - start, n - size)
                if start + take == len(head):
                    parts.append(head[start:] if start else head)
                    chunks.popleft()
                    self._offset = 0
                else:
                    parts.append(head[start : start + take])
                    self._offset = start + take
                size += take
            out = parts[0] if len(parts) == 1 else b"".join(parts)
        self._buffered -= len(out)
        if self._charged:
            self._conn._budget.release(len(out))
        self._consumed += len(out)
        if self._consumed >= RECEIVE_WINDOW // 2 and not self._remote_closed and self._gone is None:
            credit, self._consumed = self._consumed, 0
            self._receive_left += credit
            self._conn._queue_control(yx.header(yx.WINDOW_UPDATE, 0, self.stream_id, credit))
        return out

    async def write(self, data: bytes) -> None:
        """Send ``data`` within the peer's window; the first write also opens the stream (SYN + our window)."""
        view = memoryview(data)
        while view:
            if self._gone is not None:  # reset, connection ended, or closed by us
                raise LeanStreamClosed(f"yamux stream {self.stream_id}: {self._gone}")
            if self._send_window == 0:
                await self._wait()
                continue
            size = min(len(view), self._send_window, MAX_DATA_FRAME)
            out = b""
            if not self._syn_sent:
                self._syn_sent = True
                out = yx.header(yx.WINDOW_UPDATE, yx.SYN, self.stream_id, STREAM_GRANT)
            out += yx.header(yx.DATA, 0, self.stream_id, size) + bytes(view[:size])
            self._send_window -= size
            view = view[size:]
            await self._conn.send_plain(out)

    async def close(self) -> None:
        """Half-close (FIN) and forget the stream: whatever the peer still sends on it is dropped."""
        self._conn._forget(self.stream_id)
        self._drop_buffered()
        if self._gone is not None:
            return
        self._gone = "closed by us"  # forgotten: nothing more arrives, so a later read must not wait for it
        self._wake()
        if self._syn_sent and not self._conn.closed:
            await self._conn.send_plain(yx.header(yx.WINDOW_UPDATE, yx.FIN, self.stream_id, 0))

    async def reset(self) -> None:
        was_open = self._gone is None and self._syn_sent
        self._gone = self._gone or "reset by us"
        self._conn._forget(self.stream_id)
        self._drop_buffered()
        if was_open and not self._conn.closed:
            await self._conn.send_plain(yx.header(yx.WINDOW_UPDATE, yx.RST, self.stream_id, 0))


__all__ = [
    "MAX_CONNECTION_BUFFER",
    "MAX_HOST_BUFFER",
    "LeanConnection",
    "LeanStream",
    "LeanStreamClosed",
    "LeanUnsupported",
    "LocalIdentity",
    "ReceiveBudget",
    "dial",
    "rank_targets",
    "tcp_target",
    "verified_peer_id",
]
