"""Every runtime patch we apply to py-libp2p 0.8.1, in one place: what each fixes, how we know, when to re-check.

py-libp2p still carries listening hosts, circuit-relayed peers and peers that refuse our lean stack
(:mod:`dht.net.lean`), so its behaviour matters. Each patch below is pinned to ``libp2p==0.8.1`` (pyproject): on
an upgrade, re-read the named upstream function; drop the patch where upstream fixed it, and re-measure the ones
justified by cost (``python -m bench``; bench/README.md has the method). Figures come from the commits that added
them, on the 2-core bench machine (3 models x 80 blocks x 60 servers crawl), so they are rough.

Process-wide (module globals or class attributes, installed once by :func:`install_process_patches`):

1. ``libp2p.network.swarm._HAPPY_EYEBALLS_DELAY`` -> 0. Upstream waits a fixed 250 ms per address before trying
   the next, adding 250 ms to every connection; we dial few, known addresses under a deadline. Only dialling
   order changes, never correctness. Re-check: ``Swarm.dial_peer``'s address loop.
2. ``BaseNoiseMsgReadWriter.write_msg`` runs shielded (bounded by ``ATOMIC_WRITE_TIMEOUT``). Upstream advances
   the Noise nonce, then writes: a deadline landing in between desynchronises the connection ("Failed
   authentication of message" on every later frame). Seen under load in the demo swarm test. Re-check:
   ``libp2p/security/noise/io.py``.
3. ``MultiselectCommunicator.read`` turns ``UnicodeDecodeError`` into ``MultiselectCommunicatorError``.
   Upstream let it escape and stop the whole swarm (one non-UTF-8 proposal took down every node of a demo
   swarm, found by ``bench.web_load``). A test fails without it. Re-check:
   ``libp2p/protocol_muxer/multiselect_communicator.py``.
4. Noise reads in bulk and yamux credit in batches: :mod:`dht.net.bulk_io` (its own module: it is a subclass,
   not a swap). Upstream reads one Noise message per two socket reads and sends a WINDOW_UPDATE after every
   yamux read (~1500 encrypted frames per crawl). Together with patch 6 and the decode memo: cold crawl
   3.2 s -> 2.0 s, interleaved runs. Re-check: ``libp2p/security/noise/io.py``, ``libp2p/stream_muxer/yamux``.

Per host (:func:`patch_host`, before the host runs):

5. AutoConnector switched off: upstream dials peerstore peers in the background to keep a minimum connection
   count; a monitor dials only whom it means to, under a deadline. Re-check: ``Swarm.auto_connector``.
6. Identify answered at once: upstream's handler polls up to 0.5 s for a listen address a client-mode host never
   has (~8 ms of CPU per new connection, 50 rebuilt multiaddrs; a test counts 98 rebuilds -> <= 4). Re-check:
   ``libp2p/identity/identify/identify.py``.
7. No background identify of every peer we connect to: ~5 ms of CPU and two streams per new connection, for
   protocols we never read, and it replaced the addresses we dialled with the peer's own claim. Cold crawl
   2.0 -> 1.7 s together with that commit's other changes. Re-check: ``BasicHost._should_identify_peer``.
8. Protocol handler table safe against a removal mid-negotiation (``_HandlerTable``): upstream's
   ``Multiselect.negotiate`` checks membership, awaits, then indexes, and the KeyError took the host down (a
   clean-clone CI run failed on it). A test drives the race. Re-check: ``Multiselect.negotiate``.

And at shutdown, :func:`close_connections` closes every connection at once: upstream's ``Swarm.close`` closes
them one by one, ~0.2 s each (stopping the demo after ~25 probes: 6 s -> 1 s).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import trio

from ..wire import encode_uvarint

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 1.0  # bound on closing or resetting one stream or connection


def install_process_patches() -> None:
    """Patches 1-3 (idempotent; they change module globals, so every py-libp2p host in this process has them)."""
    _disable_happy_eyeballs_delay()
    _make_noise_writes_atomic()
    _refuse_undecodable_proposals()


def patch_host(lp_host: Any) -> None:
    """Patches 5-8 on one py-libp2p host, before it runs."""
    _disable_auto_connector(lp_host)
    _guard_handler_removal(lp_host)
    _answer_identify_at_once(lp_host)
    _skip_background_identify(lp_host)


async def reset_stream(stream: Any) -> None:
    """Reset a stream, bounded and shielded; a stream that is already gone is fine."""
    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT), contextlib.suppress(Exception):
        await stream.reset()


def _disable_happy_eyeballs_delay() -> None:
    """py-libp2p 0.8.1 waits a fixed 250 ms per address before trying the next one, even when only one
    address is dialled, which adds 250 ms to every connection we open. We dial few, known addresses and
    bound each dial by a deadline, so parallel dialling costs nothing. It is a module global; setting it
    affects every py-libp2p host in this process (and only dialling order, never correctness)."""
    import libp2p.network.swarm as swarm_module

    swarm_module._HAPPY_EYEBALLS_DELAY = 0


ATOMIC_WRITE_TIMEOUT = 10.0  # bound on one shielded Noise message write (a stuck socket is dead anyway)


def _make_noise_writes_atomic() -> None:
    """Let no cancellation land inside a Noise message write (py-libp2p 0.8.1 bug, patched once per process).

    ``BaseNoiseMsgReadWriter.write_msg`` advances the cipher nonce, then writes. A deadline that cancels the
    write in between (our call timeouts do) leaves the peer one nonce behind: every later frame on that
    connection fails with "Failed authentication of message", killing every other stream it carries. So
    the write runs shielded, bounded by ``ATOMIC_WRITE_TIMEOUT``; the caller's deadline takes effect right after.
    """
    from libp2p.security.noise.io import BaseNoiseMsgReadWriter

    original = BaseNoiseMsgReadWriter.write_msg
    if getattr(original, "_atomic", False):
        return

    async def write_msg(self: Any, msg: bytes, prefix_encoded: bool = False) -> None:
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + ATOMIC_WRITE_TIMEOUT
            await original(self, msg, prefix_encoded)
        if scope.cancelled_caught:
            raise OSError(f"a Noise message write did not finish within {ATOMIC_WRITE_TIMEOUT:g} s")
        await trio.lowlevel.checkpoint_if_cancelled()

    write_msg._atomic = True  # type: ignore[attr-defined]
    BaseNoiseMsgReadWriter.write_msg = write_msg  # type: ignore[method-assign]


def _refuse_undecodable_proposals() -> None:
    """A protocol proposal that is not UTF-8 fails its stream, not the host (py-libp2p 0.8.1 bug, patched once
    per process).

    ``MultiselectCommunicator.read`` decodes without catching ``UnicodeDecodeError``; it escaped the connection's
    task group and stopped the whole py-libp2p swarm: one bad proposal (a hostile peer, or a request sent after a
    proposal the host refused) took down every DHT node of a demo swarm. It is now the communicator error py-libp2p
    already turns into a failed negotiation."""
    from libp2p.protocol_muxer.exceptions import MultiselectCommunicatorError
    from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator

    original = MultiselectCommunicator.read
    if getattr(original, "_utf8_checked", False):
        return

    async def read(self: Any) -> str:
        try:
            return await original(self)
        except UnicodeDecodeError as e:
            raise MultiselectCommunicatorError(f"protocol proposal is not UTF-8: {e}") from None

    read._utf8_checked = True  # type: ignore[attr-defined]
    MultiselectCommunicator.read = read  # type: ignore[method-assign]


def _disable_auto_connector(lp_host: Any) -> None:
    """py-libp2p's AutoConnector dials peers from the peerstore in the background to keep a minimum number of
    connections. A monitor must dial only the peers it means to, each under a deadline: switch it off (before
    the swarm starts, so there is no race)."""
    connector = getattr(lp_host.get_network(), "auto_connector", None)
    if connector is None:
        return

    async def no_dials(*_args: Any, **_kwargs: Any) -> None:
        return None

    connector.maybe_connect = no_dials
    connector.run_background_task = no_dials


class _HandlerTable(dict):
    """py-libp2p's protocol → handler table, safe against a handler removed mid-negotiation.

    ``Multiselect.negotiate`` checks ``protocol in handlers``, awaits its reply to the peer, then reads
    ``handlers[protocol]``: a handler removed in between (a DHT node stopping, a demo server going "joining")
    raised KeyError inside py-libp2p's connection task, which took the whole host down. A protocol removed that
    late now gets a handler that resets the stream; one removed earlier is still refused at negotiation."""

    def __missing__(self, _protocol: Any) -> Any:
        return reset_stream


def _answer_identify_at_once(lp_host: Any) -> None:
    """Answer identify requests at once, also in client mode.

    py-libp2p 0.8.1's identify handler first polls for up to 0.5 s, every 10 ms, until the host has a listen
    address; a client-mode host never has one. Every peer we connect to identifies us, so each new
    connection cost ~8 ms of CPU (50 rebuilt multiaddrs) and a 0.5 s-late reply: ~0.45 s of CPU in a cold
    crawl of 54 servers. This handler sends what py-libp2p's would send after its wait, without the wait."""
    from libp2p.identity.identify.identify import ID as IDENTIFY_ID
    from libp2p.identity.identify.identify import (
        _mk_identify_protobuf,
        _prefer_circuit_addr,
        _remote_address_to_multiaddr,
    )

    def observed_addr(stream: Any) -> Any:
        try:
            remote = stream.get_remote_address()
            observed = _remote_address_to_multiaddr(remote) if remote else None
            return _prefer_circuit_addr(lp_host, stream.muxed_conn.peer_id, observed)
        except Exception as e:  # as py-libp2p: answer anyway, without an observed address
            log.debug("identify: no observed address: %s", e)
            return None

    async def handle_identify(stream: Any) -> None:
        try:
            body = _mk_identify_protobuf(lp_host, observed_addr(stream)).SerializeToString()
            await stream.write(encode_uvarint(len(body)) + body)
        except Exception as e:  # the asker went away or the stream broke: nothing of ours depends on it
            log.debug("identify reply failed: %s", e)
            with contextlib.suppress(Exception):
                await stream.reset()
        finally:
            with contextlib.suppress(Exception):
                await stream.close()

    lp_host.set_stream_handler(IDENTIFY_ID, handle_identify)


def _skip_background_identify(lp_host: Any) -> None:
    """Do not identify every peer we connect to in the background (py-libp2p does, like go-libp2p).

    It cost ~5 ms of CPU and two streams per new connection (~10 % of a cold crawl of 54 servers) to learn the
    peer's protocols, which nothing of ours reads, and its self-declared listen addresses, which py-libp2p then
    puts in place of the ones we had. Without it the peerstore keeps what we dialled and what kad returned (the
    DHT nodes' view: the addresses the peer declared to them plus the ones they observed), and that is what a
    probe reports as the server's address (``monitor.crawl.crawler._known_addrs``, the GeoIP lookup). ``Host.identify``
    still asks a peer explicitly. Per host."""
    lp_host._should_identify_peer = lambda peer_id: False


def _guard_handler_removal(lp_host: Any) -> None:
    mux = lp_host.get_mux()
    mux.handlers = _HandlerTable(mux.handlers)


async def close_connections(lp_host: Any) -> None:
    """Close every connection at once: py-libp2p's ``Swarm.close`` closes them one after another, ~0.2 s each,
    which made stopping a monitor that had probed a few dozen servers take seconds."""
    network = lp_host.get_network()
    conns = [conn for group in list(getattr(network, "connections", {}).values()) for conn in list(group)]

    async def close_one(conn: Any) -> None:
        with contextlib.suppress(Exception), trio.move_on_after(CLOSE_TIMEOUT):
            await conn.close()

    async with trio.open_nursery() as nursery:
        for conn in conns:
            nursery.start_soon(close_one, conn)
