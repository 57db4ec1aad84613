"""The network side of the DHT: one py-libp2p host on trio speaking hivemind's unary RPC framing.

``open_host()`` starts a host (client mode by default: it listens on nothing) and yields a :class:`Host`:

- ``connect`` dials a peer by multiaddr (``/ip4/…/tcp/…/p2p/<id>``) or by (peer id, addrs);
- ``call_unary`` opens a NEW stream per call, negotiates the protocol id (``DHTProtocol.rpc_find``, …),
  writes one ``uvarint + PersistentConnectionRequest{callUnary}`` frame, reads one reply frame and returns
  its ``response`` bytes. Every failure is a typed :mod:`dht.errors` exception, raised within the deadline;
- ``set_unary_handler`` serves a unary protocol the way hivemind's daemon does;
- ``identify`` / ``find_peer`` / ``resolve`` turn PeerIDs (FindResults carry no addresses) into addresses;
- peers behind NAT are dialled through circuit relay v2 (``/p2p/<relay>/p2p-circuit/p2p/<peer>``, see
  :mod:`dht.net.circuit`) when that is the only kind of address we know for them, or when direct dials fail;
  ``is_relayed`` / ``relay_limit`` tell callers to keep requests to such peers small.

Peer ids are base58 strings everywhere in this API. Facts about the other side (p2pd from hivemind 1.1.12)
that shape this module, from docs/PROTOCOL.md §7:

- Security Noise first, TLS as fallback; multiplexer yamux only (p2pd offers no mplex).
- Never half-close our write side before the reply: p2pd treats EOF as "caller cancelled" and never answers.
- ``CallUnaryRequest.peer`` is required: we send it empty (p2pd overwrites it with the real caller).
- Replies over 4 MiB are never sent, the caller just waits: only the deadline ends such a call.
- Relayed circuits from go-libp2p carry only ~128 KiB per direction over the connection's whole life (and
  last 2 min): keep requests to relay-only peers small. The relay then resets the circuit; the next call
  dials a fresh one.

Error mapping of ``call_unary``: no deadline left → :class:`CallTimeout`; dial or stream-open failure →
:class:`PeerUnreachable`; multistream "na" → :class:`ProtocolNotSupported`; ``unaryResponse.error`` →
:class:`RemoteError` (its text); truncated / oversize / malformed reply or a stream closed or reset before
a complete reply → :class:`FrameError`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from .. import wire
from ..errors import (
    CallTimeout,
    DHTError,
    DialFailed,
    FrameError,
    PeerIdentityError,
    PeerUnreachable,
    ProtocolNotSupported,
    RemoteError,
)
from ..peerid import is_peer_id_bytes
from ..ttl_cache import TTLSet
from . import yamux_frames
from .circuit import (
    HOP_PROTOCOL,
    CircuitBook,
    RelayLimit,
    circuit_addr,
    hop_connect,
    is_circuit_addr,
    parse_circuit_addr,
)
from .kad import KAD_PROTOCOL, MAX_KAD_MESSAGE, decode_find_node_reply, encode_find_node
from .lean import LeanConnection, LeanUnsupported, LocalIdentity, ReceiveBudget, rank_targets, tcp_target
from .libp2p_patches import CLOSE_TIMEOUT as _CLOSE_TIMEOUT
from .libp2p_patches import close_connections, install_process_patches, patch_host
from .libp2p_patches import reset_stream as _reset
from .streams import BufferedReader, negotiate_outbound

log = logging.getLogger(__name__)

UnaryHandler = Callable[[str, bytes], Awaitable[bytes]]
"""``async handler(caller_peer_id_base58, request_bytes) -> response_bytes``."""

IDENTIFY_PROTOCOL = "/ipfs/id/1.0.0"
MAX_IDENTIFY_MESSAGE = 64 * 1024
DEFAULT_CALL_TIMEOUT = 5.0
HANDLER_READ_TIMEOUT = 10.0  # how long a caller may take to send its request frame
HANDLER_TIMEOUT = 30.0  # how long our own handler may take to answer
ADDR_TTL = 600.0  # seconds a learned address stays in the peerstore
LEAN_IDLE_CLOSE = 600.0  # seconds a lean connection may sit unused before the host closes it
LEAN_REAP_EVERY = 60.0  # how often the host looks for such connections, and pings the others
LEAN_PING_TIMEOUT = 10.0  # a lean connection whose peer does not answer a keepalive ping in this time is closed
MAX_LEAN_CONNECTIONS = 512  # beyond this, the least recently used idle lean connections are closed (file descriptors)
MAX_MULTIADDR_BYTES = 1024  # a longer binary address from a peer is dropped (and never cached)
LEAN_REFUSAL_TTL = 600.0  # seconds a peer that refused the lean stack is dialled with py-libp2p before we retry
MAX_LEAN_REFUSALS = 4096  # such peers remembered at once (oldest forgotten first: it only costs them a retry)
# A request sent with its protocol proposal must fit the stream's initial yamux window (less room for the proposal):
# a peer that answers "na" never grants more, and a write waiting for credit would hide its refusal.
MAX_PIPELINED_REQUEST = yamux_frames.INITIAL_WINDOW - 1024
MAX_LEAN_ADDRS_PER_DIAL = 4  # direct TCP addresses of a peer dialled at once (lean path; public first, first wins)
MAX_RELAYS_PER_DIAL = 3  # circuit addresses (distinct relays) tried for one dial before giving up
DIRECT_DIAL_SHARE = 0.5  # share of the deadline a direct dial may use when circuit addresses are also known
# An address look-up (Host.resolve) gives each node it asks 1/N of the time it has left, N = the nodes still to ask,
# at most this many: with 5 s and nodes that never answer, 1.7 s, 1.1 s, 0.7 s, ..., the last one all that is left.
# So one black-holed node cannot spend the whole deadline, and a node that answers "unknown" at once costs nothing.
RESOLVE_NODES_PER_DEADLINE = 3


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """What a peer says about itself on ``/ipfs/id/1.0.0`` (py-libp2p does not keep the agent version)."""

    peer_id: str
    agent_version: str
    protocol_version: str
    listen_addrs: tuple[str, ...]
    protocols: tuple[str, ...]


# ------------------------------------------------------------------ peer id / multiaddr conversions


@functools.lru_cache(maxsize=4096)
def _peer_id(peer_id: str):
    """base58 text -> py-libp2p ``ID`` (immutable; cached: every call and dial converts one, ~30 us each)."""
    from libp2p.peer.id import ID

    try:
        return ID.from_base58(peer_id)
    except Exception as e:
        raise ValueError(f"not a base58 peer id: {peer_id!r}") from e


@functools.lru_cache(maxsize=4096)
def _addr_text(addr: Any) -> str:
    """``str(Multiaddr)`` (~20 us in py-multiaddr), cached: the same peerstore addresses are read at every dial."""
    return str(addr)


def peer_id_from_bytes(raw: bytes) -> str:
    """Raw multihash PeerID bytes (as in ``nearest_peer_ids``) → base58; ``ValueError`` for anything that is not
    a PeerID's shape (base58 is quadratic: a hostile 32 KB "peer id" would cost seconds)."""
    if not is_peer_id_bytes(raw):
        raise ValueError(f"not a binary peer id ({len(raw) if isinstance(raw, bytes) else type(raw).__name__})")
    return _peer_id_text(raw)


@functools.lru_cache(maxsize=4096)
def _peer_id_text(raw: bytes) -> str:
    """Cached (at most ~66 bytes each): kad replies name the same nearest peers again and again."""
    from libp2p.peer.id import ID

    return ID(raw).to_base58()


def _multiaddr_from_bytes(raw: bytes) -> Any:
    """Binary multiaddr (kad replies, identify) → py-multiaddr ``Multiaddr``; raises on malformed input."""
    if len(raw) > MAX_MULTIADDR_BYTES:
        raise ValueError(f"a multiaddr of {len(raw)} bytes")
    return _parse_multiaddr_bytes(raw)


def _addrs_from_bytes(raws: Iterable[bytes]) -> list[str]:
    """A peer's binary multiaddrs (identify, kad replies) as text; malformed or oversized ones are dropped."""
    addrs = []
    for raw in raws:
        with contextlib.suppress(Exception):
            addrs.append(_addr_text(_multiaddr_from_bytes(raw)))
    return addrs


@functools.lru_cache(maxsize=4096)
def _parse_multiaddr_bytes(raw: bytes) -> Any:
    """Cached: every kad reply repeats the addresses of the same nearest peers, and parsing one costs ~40 us."""
    from multiaddr import Multiaddr

    return Multiaddr(raw)


@functools.lru_cache(maxsize=4096)
def _multiaddr_from_text(text: str) -> Any:
    from multiaddr import Multiaddr

    return Multiaddr(text)


def peer_id_to_bytes(peer_id: str) -> bytes:
    return _peer_id(peer_id).to_bytes()


def split_p2p_addr(maddr: str) -> tuple[str, str]:
    """``/ip4/1.2.3.4/tcp/5/p2p/<id>`` → (``<id>``, ``/ip4/1.2.3.4/tcp/5``)."""
    from multiaddr import Multiaddr

    addr = Multiaddr(maddr)
    peer = addr.get_peer_id()
    if not peer:
        raise ValueError(f"multiaddr has no /p2p/<peer id> part: {maddr}")
    transport = addr.decapsulate(Multiaddr(f"/p2p/{peer}"))
    return str(peer), str(transport)


# ------------------------------------------------------------------ host construction


def _security_options(key_pair) -> dict:
    """Noise first (what go-libp2p picks), TLS as a fallback; nothing weaker is offered."""
    from libp2p.crypto.x25519 import create_new_key_pair as new_x25519
    from libp2p.custom_types import TProtocol
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
    from libp2p.security.tls.transport import PROTOCOL_ID as TLS_ID
    from libp2p.security.tls.transport import TLSTransport

    from dht.net.bulk_io import BulkNoiseTransport

    return {
        TProtocol(NOISE_ID): BulkNoiseTransport(key_pair, noise_privkey=new_x25519().private_key),
        TProtocol(TLS_ID): TLSTransport(key_pair),
    }


def _muxer_options() -> dict:
    """yamux only: p2pd (hivemind's daemon) does not offer mplex. py-libp2p's, with batched window credit."""
    from libp2p.custom_types import TProtocol
    from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_ID
    from libp2p.stream_muxer.yamux.yamux import Yamux

    from dht.net.bulk_io import use_batched_credit

    use_batched_credit()
    return {TProtocol(YAMUX_ID): Yamux}


@contextlib.asynccontextmanager
async def open_host(
    *,
    key_pair: Any = None,
    listen: bool | Sequence[str] = False,
    max_concurrent_calls: int = 64,
    max_calls_per_peer: int = 8,
    lean: bool | None = None,
) -> AsyncIterator[Host]:
    """Run one py-libp2p host for the duration of the block.

    ``key_pair``: a py-libp2p ``KeyPair`` (random Ed25519 when ``None``). ``listen``: ``False`` = client mode,
    no listening socket; ``True`` = a random port on 127.0.0.1; or a list of multiaddrs to listen on.
    ``lean``: dial direct TCP addresses with :mod:`dht.net.lean` (our Noise + yamux, several times cheaper than
    py-libp2p's) instead of py-libp2p; default: in client mode only, since a lean connection serves nothing
    and a listening node must answer calls on the connections it opened.
    Leaving the block closes every connection and stops every task the host started.
    """
    import libp2p
    from multiaddr import Multiaddr

    install_process_patches()
    if key_pair is None:
        key_pair = libp2p.generate_new_ed25519_identity()
    if listen is True:
        listen_addrs = [Multiaddr("/ip4/127.0.0.1/tcp/0")]
    elif listen is False:
        listen_addrs = []
    else:
        listen_addrs = [Multiaddr(a) for a in listen]
    lp_host = libp2p.new_host(
        key_pair=key_pair,
        sec_opt=_security_options(key_pair),
        muxer_opt=_muxer_options(),
        listen_addrs=listen_addrs or None,
    )
    patch_host(lp_host)
    host = Host(lp_host, max_concurrent_calls=max_concurrent_calls, max_calls_per_peer=max_calls_per_peer)
    use_lean = (not listen_addrs) if lean is None else lean
    if use_lean:
        host._lean_identity = LocalIdentity(key_pair)
    try:
        async with lp_host.run(listen_addrs=listen_addrs), trio.open_nursery() as lean_tasks:
            host._lean_tasks = lean_tasks
            if host._lean_identity is not None:
                lean_tasks.start_soon(host._reap_idle_lean)
            try:
                yield host
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    host._lean_tasks = None  # dials finishing from now on close their connection
                    await host._close_lean()
                    await close_connections(lp_host)
                    await lp_host.close()
                lean_tasks.cancel_scope.cancel()
    finally:
        host._closed = True


# ------------------------------------------------------------------ the host


class Host:
    """Our side of the libp2p network. Create it with :func:`open_host`."""

    def __init__(self, lp_host: Any, *, max_concurrent_calls: int, max_calls_per_peer: int) -> None:
        self._host = lp_host
        self._calls = trio.CapacityLimiter(max_concurrent_calls)
        self.max_concurrent_calls = max_concurrent_calls  # calls in flight at once, host-wide
        self._max_calls_per_peer = max_calls_per_peer
        self._peer_limiters: dict[str, trio.CapacityLimiter] = {}
        self._closed = False
        self.peer_id: str = lp_host.get_id().to_base58()
        # connections we made through a relay, with the limit the relay announced for each
        self._relayed: weakref.WeakKeyDictionary[Any, RelayLimit] = weakref.WeakKeyDictionary()
        self._dial_locks: dict[str, trio.Lock] = {}
        self._lean_dial_locks: dict[str, trio.Lock] = {}  # apart from _dial_locks: a circuit dial holds the
        # target's lock while it dials the relay, and a relay may be lean-dialled itself
        self._circuits = CircuitBook()
        # our own connection stack for direct dials (dht.net.lean), set up by open_host in client mode
        self._lean_identity: LocalIdentity | None = None
        self._lean_tasks: trio.Nursery | None = None
        self._lean: dict[str, LeanConnection] = {}
        # peers that refused /noise or yamux (before any authentication: anyone at an announced address can say
        # so): py-libp2p dials them, for a while only, and the book is bounded
        self._lean_refused: TTLSet[str] = TTLSet(LEAN_REFUSAL_TTL, clock=trio.current_time, max_items=MAX_LEAN_REFUSALS)
        self._lean_budget = ReceiveBudget()  # bytes all lean connections hold for their callers
        self._accepted = AcceptedProtocols()  # (peer, protocol) the peer selected before: requests pipelined

    @property
    def libp2p_host(self) -> Any:
        """The underlying py-libp2p ``BasicHost`` (raw stream handlers, tests, diagnostics)."""
        return self._host

    # ---- identity and addresses
    @property
    def listen_addrs(self) -> list[str]:
        """Where others can dial us, each with ``/p2p/<our id>`` (empty in client mode)."""
        return [f"{a}/p2p/{self.peer_id}" if "/p2p/" not in str(a) else str(a) for a in self._host.get_addrs()]

    def known_addrs(self, peer_id: str) -> list[str]:
        """Addresses of ``peer_id`` we know (dialled, from kad, from :meth:`identify`), circuit addresses included."""
        try:
            stored = [_addr_text(a) for a in self._host.get_peerstore().addrs(_peer_id(peer_id))]
        except Exception:  # PeerStoreError: unknown peer
            stored = []
        circuits = self._circuits.get(peer_id, time.monotonic())
        return stored + [a for a in circuits if a not in stored]

    def forget_addrs(self, peer_id: str) -> None:
        """Drop the addresses the peerstore holds for ``peer_id`` (they stopped working; circuits stay)."""
        with contextlib.suppress(Exception):  # an unknown peer
            self._host.get_peerstore().clear_addrs(_peer_id(peer_id))

    def add_addrs(self, peer_id: str, addrs: Iterable[str], ttl: float = ADDR_TTL) -> None:
        """Remember addresses of ``peer_id`` (without the trailing ``/p2p/<peer_id>``) for ``ttl`` seconds.

        Circuit addresses go to a book of our own: py-libp2p's identify would replace them with whatever the
        peer advertises, and a NAT'd peer need not advertise its relays."""
        parsed = []
        for addr in addrs:
            if is_circuit_addr(addr):
                self._remember_circuit(peer_id, addr, ttl)
                continue
            try:
                parsed.append(_multiaddr_from_text(addr))
            except Exception:
                log.debug("ignoring unparsable multiaddr %r for %s", addr, peer_id)
        if parsed:
            self._host.get_peerstore().add_addrs(_peer_id(peer_id), parsed, int(ttl))

    def _remember_circuit(self, peer_id: str, addr: str, ttl: float) -> None:
        try:
            circuit = parse_circuit_addr(addr)
            _peer_id(peer_id)
        except ValueError:
            log.debug("ignoring malformed circuit address %r for %s", addr, peer_id)
            return
        if circuit.target_peer_id not in (None, peer_id) or circuit.relay_peer_id in (peer_id, self.peer_id):
            log.debug("ignoring circuit address %r: not a relay route to %s", addr, peer_id)
            return
        full = circuit_addr(circuit.relay_peer_id, peer_id, circuit.relay_transport)
        self._circuits.add(peer_id, full, ttl, time.monotonic())

    def connected_peers(self) -> list[str]:
        libp2p_peers = [p.to_base58() for p in self._host.get_network().connections]
        lean_peers = [p for p, conn in self._lean.items() if conn.is_open]
        return list(dict.fromkeys(lean_peers + [p for p in libp2p_peers if self.is_connected(p)]))

    def is_connected(self, peer_id: str) -> bool:
        return self._lean_connection(peer_id) is not None or bool(self._open_connections(peer_id))

    def _lean_connection(self, peer_id: str) -> LeanConnection | None:
        conn = self._lean.get(peer_id)
        if conn is not None and not conn.is_open:
            conn = None
        return conn

    def is_relayed(self, peer_id: str) -> bool:
        """True when every open connection to ``peer_id`` runs through a circuit relay (keep requests small:
        go-libp2p relays end a circuit after ~128 KiB per direction)."""
        if self._lean_connection(peer_id) is not None:
            return False
        conns = self._open_connections(peer_id)
        return bool(conns) and all(c in self._relayed for c in conns)

    def relay_limit(self, peer_id: str) -> RelayLimit | None:
        """The relay's announced limit on our relayed connection to ``peer_id`` (``None`` if not relayed)."""
        if not self.is_relayed(peer_id):
            return None
        return next(self._relayed[c] for c in self._open_connections(peer_id))

    def _open_connections(self, peer_id: str) -> list[Any]:
        return [c for c in self._host.get_network().get_connections(_peer_id(peer_id)) if not c.is_closed]

    # ---- dialing
    async def connect(self, target: str, addrs: Sequence[str] = (), *, timeout: float = DEFAULT_CALL_TIMEOUT) -> str:
        """Dial ``target`` = a ``…/p2p/<id>`` multiaddr, or a peer id with ``addrs``. Returns the peer id.

        Circuit addresses (``[<relay addr>]/p2p/<relay>/p2p-circuit/p2p/<id>``) are dialled through the relay.
        Reuses an open connection. Raises :class:`PeerUnreachable` or :class:`CallTimeout`.
        """
        if target.startswith("/"):
            peer_id, transport_addr = split_p2p_addr(target)
            addrs = [transport_addr, *addrs]
        else:
            peer_id = target
        if addrs:
            self.add_addrs(peer_id, addrs)
        with _deadline(timeout, f"dial {peer_id}"):
            await self._ensure_connection(peer_id)
        return peer_id

    async def disconnect(self, peer_id: str) -> None:
        conn = self._lean.pop(peer_id, None)
        if conn is not None:
            await conn.aclose()
        with trio.move_on_after(_CLOSE_TIMEOUT):
            await self._host.disconnect(_peer_id(peer_id))

    async def _reap_idle_lean(self) -> None:
        """Every :data:`LEAN_REAP_EVERY` s, close lean connections unused for :data:`LEAN_IDLE_CLOSE` s (a
        long-running monitor would otherwise keep one to every server it ever probed; the next crawl reuses
        those that are still fresh, a closed one is simply dialled again), then those whose peer went silent."""
        while True:
            await trio.sleep(LEAN_REAP_EVERY)
            await self._close_idle_lean(trio.current_time())
            await self._close_silent_lean(LEAN_PING_TIMEOUT)

    async def _close_silent_lean(self, timeout: float) -> int:
        """Ping every open lean connection at once and close those whose peer does not answer within ``timeout``
        (see :meth:`LeanConnection.ping`): the next call then dials afresh. Returns how many were closed."""
        silent: list[LeanConnection] = []
        heard_since = trio.current_time() - LEAN_REAP_EVERY  # a peer that sent us bytes since is alive: no ping

        async def check(conn: LeanConnection) -> None:
            if not await conn.ping(timeout):
                silent.append(conn)

        async with trio.open_nursery() as nursery:
            for conn in self._lean.values():  # going away: its streams finish first
                if conn.is_open and conn.last_received < heard_since:
                    nursery.start_soon(check, conn)
        for conn in silent:
            await self._retire_lean(conn, f"no answer to a keepalive ping within {timeout:g} s")
        return len(silent)

    async def _close_idle_lean(self, now: float, *, keep: int | None = None) -> int:
        """Close idle lean connections unused since ``now - LEAN_IDLE_CLOSE``, then, oldest first, idle ones
        beyond ``keep`` (default :data:`MAX_LEAN_CONNECTIONS`). Returns how many were closed."""
        keep = MAX_LEAN_CONNECTIONS if keep is None else keep
        idle = sorted((c for c in self._lean.values() if c.is_idle), key=lambda c: c.last_used)
        excess = max(0, len(self._lean) - keep)
        doomed = [c for i, c in enumerate(idle) if i < excess or now - c.last_used > LEAN_IDLE_CLOSE]
        for conn in doomed:
            await self._retire_lean(conn, "idle")
        return len(doomed)

    def _forget_lean(self, conn: LeanConnection) -> None:
        """Unregister ``conn`` unless a newer connection to its peer took its place."""
        if self._lean.get(conn.peer_id) is conn:
            del self._lean[conn.peer_id]

    async def _retire_lean(self, conn: LeanConnection, reason: str) -> None:
        self._forget_lean(conn)
        await conn.aclose(reason)

    async def _close_lean(self) -> None:
        conns, self._lean = list(self._lean.values()), {}
        for conn in conns:
            await conn.aclose()

    async def _ensure_connection(self, peer_id: str, *, allow_relay: bool = True) -> None:
        """Connect unless connected: direct addresses first, then circuit addresses (each through its relay).

        When both kinds are known, the direct dial gets only a share of the remaining time, so an address
        that swallows packets (a NAT'd peer's LAN address) cannot use up the deadline the relays need."""
        if peer_id == self.peer_id:
            raise PeerUnreachable("refusing to dial ourselves")
        if self.is_connected(peer_id):
            return
        known = self.known_addrs(peer_id)
        circuits = _distinct_relays(peer_id, known) if allow_relay else []
        direct = [a for a in known if not is_circuit_addr(a)]
        if not direct and not circuits:
            raise PeerUnreachable(f"no known address for {peer_id}")
        failures: list[str] = []
        if direct:
            if not circuits:
                await self._dial_direct(peer_id)
                return
            with trio.move_on_after(_share_of_deadline(DIRECT_DIAL_SHARE)):
                try:
                    await self._dial_direct(peer_id)
                    return
                except PeerUnreachable as e:
                    failures.append(str(e))
            if not failures:
                failures.append(f"direct dial of {peer_id} took its share of the deadline")
        for i, addr in enumerate(circuits):
            with trio.move_on_after(_share_of_deadline(1 / (len(circuits) - i))):
                try:
                    await self._dial_circuit(peer_id, addr)
                    return
                except PeerUnreachable as e:
                    failures.append(f"via {addr}: {e}")
                    continue
            failures.append(f"via {addr}: took its share of the deadline")
        raise DialFailed(f"cannot dial {peer_id}: " + "; ".join(failures))

    async def _dial_direct(self, peer_id: str) -> None:
        """Our lean dial when this host uses it and the peer has a TCP address, else py-libp2p's own dial (which
        skips circuit addresses: it has no relay transport)."""
        if self._lean_identity is not None and peer_id not in self._lean_refused:
            targets = rank_targets(t for t in map(tcp_target, self.known_addrs(peer_id)) if t is not None)
            if targets:
                try:
                    await self._dial_lean(peer_id, targets[:MAX_LEAN_ADDRS_PER_DIAL])
                    return
                except LeanUnsupported as e:
                    log.debug("%s: %s; dialling it with py-libp2p", peer_id, e)
                    self._lean_refused.add(peer_id)
        try:
            conns = await self._host.get_network().dial_peer(_peer_id(peer_id))
            for conn in conns:
                started = getattr(conn, "event_started", None)
                if started is not None:
                    await started.wait()
        except trio.Cancelled:
            raise
        except Exception as e:
            raise DialFailed(f"cannot dial {peer_id}: {_describe(e)}") from None

    async def _dial_lean(self, peer_id: str, targets: list[tuple[str, int]]) -> None:
        """Dial every target at once; the first finished handshake wins (registered and started at once, so a
        deadline cannot orphan it) and the others are cancelled. Concurrent dials of one peer share a lock."""
        from . import lean

        assert self._lean_identity is not None
        async with _peer_lock(self._lean_dial_locks, peer_id):
            if self._lean_connection(peer_id) is not None:
                return
            won: list[LeanConnection] = []
            failures: list[PeerUnreachable] = []

            async def attempt(host: str, port: int, nursery: trio.Nursery) -> None:
                try:
                    conn = await lean.dial(self._lean_identity, host, port, peer_id, host_budget=self._lean_budget)
                except LeanUnsupported as e:  # the peer itself refused: fall back now, not after the deadline
                    failures.append(e)
                    nursery.cancel_scope.cancel()
                    return
                except PeerUnreachable as e:
                    failures.append(e)
                    return
                except Exception as e:  # lean.dial maps what it knows; anything else is still a failed dial
                    failures.append(PeerUnreachable(f"{host}:{port}: {_describe(e)}"))
                    return
                if won or self._lean_tasks is None:  # another address finished first, or the host is closing
                    await conn.aclose()
                    return
                won.append(conn)
                old = self._lean.get(peer_id)
                self._lean[peer_id] = conn
                self._lean_tasks.start_soon(self._run_lean, conn)
                nursery.cancel_scope.cancel()
                if old is not None:  # closed, or going away: its streams in flight finish first
                    old.retire()
                if len(self._lean) > MAX_LEAN_CONNECTIONS:
                    await self._close_idle_lean(trio.current_time())

            async with trio.open_nursery() as nursery:
                for host, port in targets:
                    nursery.start_soon(attempt, host, port, nursery)
            if not won:
                unsupported = [e for e in failures if isinstance(e, LeanUnsupported)]
                if unsupported:
                    raise unsupported[0]
                if self._lean_tasks is None:
                    raise PeerUnreachable("host is closed")
                refused = failures and all(isinstance(e, PeerIdentityError) for e in failures)  # an impostor
                raise (PeerIdentityError if refused else DialFailed)(
                    f"cannot dial {peer_id}: " + "; ".join(map(str, failures))
                )

    async def _run_lean(self, conn: LeanConnection) -> None:
        try:
            await conn.run()
        finally:
            self._forget_lean(conn)
            if conn.refused_muxer:  # found after the dial returned (lean.dial does not wait for the answer)
                self._lean_refused.add(conn.peer_id)

    async def _dial_circuit(self, peer_id: str, addr: str) -> None:
        """One circuit: connect to the relay (directly), HOP CONNECT, then secure + multiplex the relayed stream
        exactly like a TCP connection. Concurrent dials of one peer share a lock, so only one circuit is built."""
        from libp2p.abc import ConnectionType
        from libp2p.network.connection.raw_connection import RawConnection
        from multiaddr import Multiaddr

        circuit = parse_circuit_addr(addr)
        relay = circuit.relay_peer_id
        if relay in (peer_id, self.peer_id):
            raise PeerUnreachable(f"unusable relay in {addr}")
        try:
            async with _peer_lock(self._dial_locks, peer_id):
                if self.is_connected(peer_id):
                    return
                if circuit.relay_transport:
                    self.add_addrs(relay, [circuit.relay_transport])
                await self._ensure_connection(relay, allow_relay=False)
                stream, reader = await self._open_stream(relay, HOP_PROTOCOL)
                try:
                    limit = await hop_connect(stream, reader, peer_id_to_bytes(peer_id))
                    route = [Multiaddr(circuit_addr(relay, peer_id, circuit.relay_transport))]
                    raw = RawConnection(stream, initiator=True, connection_type=ConnectionType.RELAYED, addresses=route)
                    conn = await self._host.upgrade_outbound_connection(raw, _peer_id(peer_id))
                except trio.Cancelled:
                    await _reset(stream)
                    raise
                except DHTError:
                    await _reset(stream)
                    raise
                except Exception as e:
                    await _reset(stream)
                    raise PeerUnreachable(f"relayed handshake with {peer_id} failed: {_describe(e)}") from None
                self._relayed[conn] = limit
                started = getattr(conn, "event_started", None)
                if started is not None:
                    await started.wait()
                log.debug("connected to %s through relay %s (limit %s)", peer_id, relay, limit)
        except ProtocolNotSupported:
            raise PeerUnreachable(f"{relay} is not a relay (no {HOP_PROTOCOL})") from None
        except (FrameError, CallTimeout) as e:
            raise PeerUnreachable(f"relay {relay}: {e}") from None

    async def _open_stream(self, peer_id: str, protocol: str, then: bytes = b"") -> tuple[Any, BufferedReader]:
        """A new stream to ``peer_id`` with ``protocol`` negotiated (dials when not connected).

        Callers write their request only after this returns: after an "na" a peer reads whatever follows the
        proposal as its next proposal (go-multistream then resets the stream, losing the "na" on py-libp2p's
        streams; an unpatched py-libp2p host crashed on the non-UTF-8 bytes), and a joining server must read as
        "not supported"."""
        await self._ensure_connection(peer_id)
        lean = self._lean_connection(peer_id)
        try:
            if lean is not None:
                stream = lean.open_stream()
            else:
                stream = await self._host.get_network().new_stream(_peer_id(peer_id))
        except trio.Cancelled:
            raise
        except Exception as e:
            raise PeerUnreachable(f"cannot open a stream to {peer_id}: {_describe(e)}") from None
        reader = BufferedReader(stream)
        try:
            await negotiate_outbound(stream, reader, protocol, then)
        except BaseException:
            await _reset(stream)
            raise
        return stream, reader

    async def _open_and_send(
        self, peer_id: str, protocol: str, request: bytes, pipeline: bool = False
    ) -> tuple[Any, BufferedReader]:
        """A stream with ``request`` written: with the proposal in one write (one round trip less) when the peer
        selected ``protocol`` before or ``pipeline`` says it serves it, else after its answer (see
        :meth:`_open_stream`). Only on our own (lean) connections: on a py-libp2p stream the peer's reset after
        its "na" can overtake the "na", and a refusal would read as a broken stream. Nor when the request does
        not fit the stream's initial window (with room for the proposal): the write would wait for credit that a
        refusing peer never grants, and the refusal would read as a broken stream too."""
        await self._ensure_connection(peer_id)
        lean = self._lean_connection(peer_id) is not None
        fits = len(request) <= MAX_PIPELINED_REQUEST
        if lean and fits and (pipeline or self._accepted.knows(peer_id, protocol)):
            try:
                return await self._open_stream(peer_id, protocol, request)
            except ProtocolNotSupported:
                self._accepted.forget(peer_id, protocol)
                raise
        stream, reader = await self._open_stream(peer_id, protocol)
        self._accepted.add(peer_id, protocol)
        try:
            await _write(stream, request)
        except BaseException:
            await _reset(stream)
            raise
        return stream, reader

    # ---- unary calls
    def _peer_limiter(self, peer_id: str) -> trio.CapacityLimiter:
        limiter = self._peer_limiters.get(peer_id)
        if limiter is None:
            if len(self._peer_limiters) > 4096:  # forget idle peers so the map stays bounded
                for key in [k for k, v in self._peer_limiters.items() if v.borrowed_tokens == 0]:
                    del self._peer_limiters[key]
            limiter = self._peer_limiters[peer_id] = trio.CapacityLimiter(self._max_calls_per_peer)
        return limiter

    async def call_unary(
        self,
        peer_id: str,
        proto_id: str,
        data: bytes,
        *,
        timeout: float = DEFAULT_CALL_TIMEOUT,
        max_reply_size: int = wire.MAX_MESSAGE_SIZE,
        pipeline: bool = False,
    ) -> bytes:
        """One hivemind unary RPC on a new stream; returns the ``response`` bytes.

        The whole call (waiting for a concurrency slot, dialling, negotiating, writing, reading) shares
        one deadline of ``timeout`` seconds. ``pipeline``: the peer surely serves ``proto_id``, so the request
        goes with the proposal (one round trip less; see :meth:`_open_and_send`).
        """
        if self._closed:
            raise PeerUnreachable("host is closed")
        request = wire.frame(wire.encode_call(proto_id, data, peer=b""))
        with _deadline(timeout, f"{proto_id} to {peer_id}"):
            async with self._calls, self._peer_limiter(peer_id):
                # No close_write() after the request: p2pd would take EOF as a cancelled call.
                payload = await self._exchange(peer_id, proto_id, request, max_reply_size, pipeline)
        reply = wire.decode_reply(payload)
        if reply.error is not None:
            raise RemoteError(reply.error.decode(errors="replace"))
        assert reply.response is not None
        return reply.response

    async def _exchange(self, peer_id: str, protocol: str, request: bytes, max_reply: int, pipeline: bool) -> bytes:
        """``request`` on a new stream, its one reply frame back. Once more if it failed because its lean
        connection was refused yamux: lean.dial does not wait for the muxer's answer, so the refusal shows only
        as the first call's broken stream. The peer never saw that request (no muxer, no stream); the second
        try dials it afresh with py-libp2p."""
        refused_before = peer_id in self._lean_refused
        for again in (False, True):
            stream = None
            try:
                stream, reader = await self._open_and_send(peer_id, protocol, request, pipeline)
                payload = await reader.read_frame(max_reply)
            except BaseException as e:
                if stream is not None:  # (a stream that failed to open was reset there)
                    await _reset(stream)
                if not isinstance(e, DHTError) or again or refused_before or not self._note_muxer_refusal(peer_id):
                    raise
                log.debug("%s refused yamux after the dial: asking again on a new connection", peer_id)
                continue
            await _close(stream)
            return payload
        raise AssertionError("unreachable")  # pragma: no cover

    def _note_muxer_refusal(self, peer_id: str) -> bool:
        """True if the peer's lean connection was refused yamux (its next dial goes to py-libp2p)."""
        conn = self._lean.get(peer_id)
        if conn is not None and conn.refused_muxer:
            self._forget_lean(conn)
            self._lean_refused.add(peer_id)
            return True
        return peer_id in self._lean_refused  # the connection's task already noted it and let it go

    # ---- serving
    def set_unary_handler(self, proto_id: str, handler: UnaryHandler) -> None:
        """Serve ``proto_id``: one request frame in, one reply frame out, like hivemind's daemon.

        A handler exception becomes an error reply with ``repr(exception)`` (what hivemind sends); a bad
        envelope, a slow caller or an oversize response closes the stream without a reply.
        """
        from libp2p.custom_types import TProtocol

        async def serve(stream: Any) -> None:
            caller = stream.muxed_conn.peer_id.to_base58()
            try:
                await self._serve_unary(stream, caller, handler)
            except DHTError as e:
                log.debug("%s from %s: dropped (%s)", proto_id, caller, e)
                await _reset(stream)
            except Exception:
                log.exception("%s from %s: transport failure", proto_id, caller)
                await _reset(stream)

        self._host.set_stream_handler(TProtocol(proto_id), serve)

    def remove_unary_handler(self, proto_id: str) -> None:
        from libp2p.custom_types import TProtocol

        self._host.remove_stream_handler(TProtocol(proto_id))

    async def _serve_unary(self, stream: Any, caller: str, handler: UnaryHandler) -> None:
        reader = BufferedReader(stream)
        with _deadline(HANDLER_READ_TIMEOUT, f"request from {caller}"):
            call = wire.decode_call(await reader.read_frame(wire.MAX_MESSAGE_SIZE))
        try:
            with trio.fail_after(HANDLER_TIMEOUT):
                response = await handler(caller, call.data)
            reply = wire.encode_reply(call.call_id, response=response)
            if len(reply) > wire.MAX_MESSAGE_SIZE:
                reply = wire.encode_reply(call.call_id, error=b"response size exceeds message size limit")
        except Exception as e:  # the handler's failure is the caller's answer
            reply = wire.encode_reply(call.call_id, error=repr(e).encode())
        with _deadline(HANDLER_READ_TIMEOUT, f"reply to {caller}"):
            await _write(stream, wire.frame(reply))
        await _close(stream)

    # ---- identify and peer routing
    async def identify(self, peer_id: str, *, timeout: float = DEFAULT_CALL_TIMEOUT) -> PeerIdentity:
        """Ask the peer who it is; its listen addresses are remembered in the peerstore."""
        from libp2p.identity.identify.pb.identify_pb2 import Identify

        with _deadline(timeout, f"identify {peer_id}"):
            async with self._calls:
                stream, reader = await self._open_stream(peer_id, IDENTIFY_PROTOCOL)
                try:
                    payload = await reader.read_frame(MAX_IDENTIFY_MESSAGE)
                except BaseException:
                    await _reset(stream)
                    raise
                await _close(stream)
        msg = Identify()
        try:
            msg.ParseFromString(payload)
        except Exception as e:
            raise FrameError(f"malformed identify message: {e}") from None
        addrs = _addrs_from_bytes(msg.listen_addrs)
        self.add_addrs(peer_id, addrs)
        return PeerIdentity(peer_id, msg.agent_version, msg.protocol_version, tuple(addrs), tuple(msg.protocols))

    async def find_peer(self, via: str, target: str, *, timeout: float = DEFAULT_CALL_TIMEOUT) -> dict[str, list[str]]:
        """libp2p kad ``FIND_NODE(target)`` sent to ``via``: ``{peer id: [addrs]}`` of every peer it named
        (including ``target`` when ``via`` knows its addresses). The addresses go into the peerstore."""
        request = wire.frame(encode_find_node(peer_id_to_bytes(target)))
        with _deadline(timeout, f"kad FIND_NODE via {via}"):
            async with self._calls, self._peer_limiter(via):
                # pipelined: whoever we ask is a DHT node, and an "na" fails the lookup either way
                payload = await self._exchange(via, KAD_PROTOCOL, request, MAX_KAD_MESSAGE, pipeline=True)
        found: dict[str, list[str]] = {}
        for peer in decode_find_node_reply(payload):
            try:
                pid = peer_id_from_bytes(peer.peer_id)
            except Exception:
                continue
            addrs = _addrs_from_bytes(peer.addrs)
            found[pid] = addrs
            if pid != self.peer_id:
                self.add_addrs(pid, addrs)
        return found

    async def resolve(
        self,
        peer_id: str,
        *,
        via: Sequence[str] = (),
        timeout: float = DEFAULT_CALL_TIMEOUT,
        on_call: Callable[[], None] | None = None,
        refresh: bool = False,
    ) -> list[str]:
        """Addresses for ``peer_id``: the peerstore first, else kad FIND_NODE against ``via`` (default: the
        peers we are connected to), asked one after another until one knows. Empty if nobody does.
        ``timeout`` bounds the whole look-up; each node asked gets a share of what is left of it (see
        :data:`RESOLVE_NODES_PER_DEADLINE`), so one node that never answers cannot use it all.
        ``on_call`` runs once per FIND_NODE sent (the caller counts the RPCs it puts on the swarm).
        ``refresh``: ask even though the peerstore has addresses (they stopped working); those are replaced only
        once an answer brings the peer's current ones, so a look-up that fails leaves them as they were."""
        known = self.known_addrs(peer_id)
        if known and not refresh:
            return known
        candidates = [p for p in (via or self.connected_peers()) if p not in (peer_id, self.peer_id)]
        with trio.move_on_after(timeout):
            for i, candidate in enumerate(candidates):
                if on_call is not None:
                    on_call()
                share = 1 / min(len(candidates) - i, RESOLVE_NODES_PER_DEADLINE)
                try:
                    found = await self.find_peer(candidate, peer_id, timeout=_share_of_deadline(share))
                except DHTError as e:
                    log.debug("kad FIND_NODE %s via %s failed: %s", peer_id, candidate, e)
                    continue
                if found.get(peer_id):
                    if refresh:
                        self.forget_addrs(peer_id)
                        self.add_addrs(peer_id, found[peer_id])
                    return found[peer_id]
        return []


# ------------------------------------------------------------------ small helpers


class AcceptedProtocols:
    """Which protocols each peer selected before, bounded (a peer forgotten costs one round trip, no more)."""

    MAX_PEERS = 16_384

    def __init__(self) -> None:
        self._by_peer: dict[str, set[str]] = {}

    def knows(self, peer_id: str, protocol: str) -> bool:
        return protocol in self._by_peer.get(peer_id, ())

    def add(self, peer_id: str, protocol: str) -> None:
        if peer_id not in self._by_peer and len(self._by_peer) >= self.MAX_PEERS:
            self._by_peer.pop(next(iter(self._by_peer)))  # the oldest peer
        self._by_peer.setdefault(peer_id, set()).add(protocol)

    def forget(self, peer_id: str, protocol: str) -> None:
        self._by_peer.get(peer_id, set()).discard(protocol)


@contextlib.asynccontextmanager
async def _peer_lock(locks: dict[str, trio.Lock], peer_id: str) -> AsyncIterator[None]:
    """Hold ``peer_id``'s lock in ``locks`` (one dial per peer at a time); the entry goes once nobody holds or
    waits for it, so the map stays as small as the dials in flight."""
    lock = locks.setdefault(peer_id, trio.Lock())
    try:
        async with lock:
            yield
    finally:
        if lock.statistics().tasks_waiting == 0 and not lock.locked():
            locks.pop(peer_id, None)


def _distinct_relays(peer_id: str, addrs: Iterable[str]) -> list[str]:
    """Circuit addresses of ``peer_id`` to try, one per relay (the first seen), at most
    :data:`MAX_RELAYS_PER_DIAL`; malformed ones and those naming another target are skipped."""
    chosen: dict[str, str] = {}
    for addr in addrs:
        if not is_circuit_addr(addr):
            continue
        try:
            circuit = parse_circuit_addr(addr)
        except ValueError:
            continue
        if circuit.target_peer_id not in (None, peer_id) or circuit.relay_peer_id in chosen:
            continue
        chosen[circuit.relay_peer_id] = addr
        if len(chosen) >= MAX_RELAYS_PER_DIAL:
            break
    return list(chosen.values())


def _share_of_deadline(share: float) -> float:
    """Seconds = ``share`` of the time left before the enclosing deadline (inf without one)."""
    left = trio.current_effective_deadline() - trio.current_time()
    return left * share if left != float("inf") else float("inf")


@contextlib.contextmanager
def _deadline(timeout: float, what: str):
    """``trio.fail_after`` that raises our :class:`CallTimeout`."""
    try:
        with trio.fail_after(timeout):
            yield
    except trio.TooSlowError:
        raise CallTimeout(f"{what}: no answer within {timeout:g} s") from None


async def _write(stream: Any, data: bytes) -> None:
    try:
        await stream.write(data)
    except trio.Cancelled:
        raise
    except Exception as e:
        raise FrameError(f"stream closed while writing: {_describe(e)}") from None


async def _close(stream: Any) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT):
        try:
            await stream.close()
        except Exception:
            await _reset(stream)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "…"


__all__ = [
    "ADDR_TTL",
    "DEFAULT_CALL_TIMEOUT",
    "IDENTIFY_PROTOCOL",
    "Host",
    "PeerIdentity",
    "ProtocolNotSupported",
    "RelayLimit",
    "UnaryHandler",
    "open_host",
    "peer_id_from_bytes",
    "peer_id_to_bytes",
    "split_p2p_addr",
]
