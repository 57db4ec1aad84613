"""libp2p Kademlia ``FIND_NODE`` answers on the demo's DHT nodes, so a monitor can find simulated servers.

A hivemind ``rpc_find`` names peers without addresses; real swarms resolve them through go-libp2p-kad-dht on
``/ipfs/kad/1.0.0``, whose servers learned addresses through identify (PROTOCOL.md §7.6). Our DHT nodes
do not run kad-dht, and the simulated servers never dial them, so the demo tells its nodes where everything
listens (an address book it keeps up to date as hosts start) and answers FIND_NODE from it: the target itself
when known, else the other DHT nodes, the way a kad server names closer peers it knows.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import trio

from dht import wire
from dht.net.kad import KAD_PROTOCOL, MAX_KAD_MESSAGE
from dht.net.streams import BufferedReader
from dht.net.transport import Host, peer_id_from_bytes, peer_id_to_bytes

log = logging.getLogger(__name__)

AddressBook = Mapping[str, Sequence[str]]  # base58 peer id -> transport multiaddrs ("/ip4/127.0.0.1/tcp/N")
_REQUEST_TIMEOUT = 10.0
_CONNECTABLE = 1  # kad Message.ConnectionType.CONNECTED would claim a live connection; CAN_CONNECT is honest


def find_node_reply(request: bytes, address_book: AddressBook, fallback: Sequence[str] = ()) -> bytes:
    """The FIND_NODE answer (without its uvarint prefix) for ``request``; raises ``ValueError`` if malformed."""
    from libp2p.kad_dht.pb.kademlia_pb2 import Message
    from multiaddr import Multiaddr

    msg = Message()
    try:
        msg.ParseFromString(request)
        target = peer_id_from_bytes(msg.key)
    except Exception as e:
        raise ValueError(f"malformed FIND_NODE request: {e}") from None
    if msg.type != Message.MessageType.FIND_NODE:
        raise ValueError(f"unsupported kad message type {msg.type}")
    named = [target] if address_book.get(target) else [p for p in fallback if p != target]
    reply = Message(type=Message.MessageType.FIND_NODE, key=msg.key)
    for peer_id in named:
        peer = reply.closerPeers.add()
        peer.id = peer_id_to_bytes(peer_id)
        peer.connection = _CONNECTABLE  # type: ignore[assignment]
        for addr in address_book.get(peer_id, ()):
            with contextlib.suppress(Exception):
                peer.addrs.append(Multiaddr(addr).to_bytes())
    return reply.SerializeToString()


def serve_find_node(host: Host, address_book: AddressBook, fallback: Callable[[], Sequence[str]] = tuple) -> None:
    """Answer ``/ipfs/kad/1.0.0`` FIND_NODE on ``host`` from ``address_book`` (read at each request)."""
    from libp2p.custom_types import TProtocol

    async def handle(stream: Any) -> None:
        try:
            with trio.fail_after(_REQUEST_TIMEOUT):
                request = await BufferedReader(stream).read_frame(MAX_KAD_MESSAGE)
                await stream.write(wire.frame(find_node_reply(request, address_book, fallback())))
                await stream.close()
        except Exception as e:  # a broken or hostile caller only loses its own stream
            log.debug("kad FIND_NODE on %s failed: %s", host.peer_id, e)
            with contextlib.suppress(Exception):
                await stream.reset()

    host.libp2p_host.set_stream_handler(TProtocol(KAD_PROTOCOL), handle)
