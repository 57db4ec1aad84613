"""libp2p Kademlia ``FIND_NODE`` on ``/ipfs/kad/1.0.0``: how a PeerID from a FindResult gets an address.

hivemind's ``rpc_find`` names peers without addresses (PROTOCOL.md §7.6). Every full hivemind node runs
go-libp2p-kad-dht in server mode; asked ``FIND_NODE(target)`` it answers with its nearest peers *and* the
target itself when it knows the target's addresses. We only build the request and read the answer here;
the stream is opened by :mod:`dht.net.transport`. The message schema is py-libp2p's bundled ``kademlia_pb2``
(the go-libp2p-kad-dht ``dht.pb`` ``Message``).
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError as _PbDecodeError

from ..errors import FrameError

KAD_PROTOCOL = "/ipfs/kad/1.0.0"
MAX_KAD_MESSAGE = 1024 * 1024  # a FIND_NODE answer is 20 peers with a few addresses each
# go-libp2p-kad-dht answers with its bucket size (k = 20) of closest peers, then APPENDS the target itself when
# it knows it (handleFindPeer): 21 in all. More is a flood of the peerstore; fewer loses the very peer asked for.
MAX_CLOSER_PEERS = 21


@dataclass(frozen=True, slots=True)
class KadPeer:
    peer_id: bytes  # raw multihash
    addrs: tuple[bytes, ...]  # binary multiaddrs


def _message_class():
    from libp2p.kad_dht.pb.kademlia_pb2 import Message

    return Message


def encode_find_node(target_peer_id: bytes) -> bytes:
    """The request payload (without its uvarint prefix)."""
    message_cls = _message_class()
    msg = message_cls()
    msg.type = message_cls.MessageType.FIND_NODE
    msg.key = target_peer_id
    return msg.SerializeToString()


def decode_find_node_reply(payload: bytes) -> list[KadPeer]:
    """The first :data:`MAX_CLOSER_PEERS` ``closerPeers`` of a FIND_NODE reply (go-libp2p's k nearest, then the
    target when it knows it); a malformed reply is a :class:`FrameError`."""
    message_cls = _message_class()
    msg = message_cls()
    try:
        msg.ParseFromString(payload)
    except _PbDecodeError as e:
        raise FrameError(f"malformed kad message: {e}") from None
    if msg.type != message_cls.MessageType.FIND_NODE:
        raise FrameError(f"expected a FIND_NODE reply, got message type {msg.type}")
    return [KadPeer(bytes(p.id), tuple(bytes(a) for a in p.addrs)) for p in msg.closerPeers[:MAX_CLOSER_PEERS]]
