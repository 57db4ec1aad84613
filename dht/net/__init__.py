"""The network stack under the DHT: how bytes reach a peer, never what they mean.

- ``transport``       the host: dial, unary calls with deadlines, serving handlers, identify, resolve
- ``lean``            our dialler-side connection stack for client-mode hosts (multistream, Noise XX, yamux)
- ``noise_xx``        the Noise XX handshake and transport ciphers ``lean`` uses
- ``yamux_frames``    yamux frame headers
- ``streams``         buffered frame reading and multistream-select on a libp2p stream
- ``circuit``         our circuit-relay v2 client (dialling peers behind NAT)
- ``kad``             libp2p Kademlia FIND_NODE, only to turn peer ids into addresses
- ``bulk_io``         bulk Noise reads and batched yamux credit for the connections py-libp2p still makes
- ``libp2p_patches``  every runtime patch of py-libp2p, with what it fixes and when to re-check it

It depends on ``dht.wire``, ``dht.errors``, ``dht.peerid`` and ``dht.ttl_cache`` only; the DHT proper
(``dht.swarm``, ``dht.node``, ``dht.cli``) builds on it. Importing it opens nothing (py-libp2p is imported when a
host opens).
"""

from .transport import (
    ADDR_TTL,
    DEFAULT_CALL_TIMEOUT,
    Host,
    PeerIdentity,
    RelayLimit,
    UnaryHandler,
    open_host,
    peer_id_from_bytes,
    peer_id_to_bytes,
    split_p2p_addr,
)

__all__ = [
    "ADDR_TTL",
    "DEFAULT_CALL_TIMEOUT",
    "Host",
    "PeerIdentity",
    "RelayLimit",
    "UnaryHandler",
    "open_host",
    "peer_id_from_bytes",
    "peer_id_to_bytes",
    "split_p2p_addr",
]
