"""A hivemind-compatible DHT client and node on py-libp2p + trio (byte-compatible with hivemind 1.1.12).

Module map (each has one job):

- ``ids``        DHTID (SHA-1 of hivemind's msgpack of a key; ``bytes`` keys hashed raw) and XOR distance
- ``msgpack_codec`` hivemind's msgpack dialect (ext 0x40 tuple, 0x50 dictionary, 0x51 tensor), strict bounded decoding
- ``serializer`` that dialect with ext 0x50 as ``DictionaryValue``: what everything imports
- ``value``      DHTValue / DictionaryValue / DHTValueBuilder: payloads with absolute expirations, replica merges
- ``wire``       uvarint-delimited PersistentConnectionRequest envelopes (one per direction of a unary call)
- ``protocol``   the DHT protobufs both ways (ping, store, the unified find: values + nearest peers), rpc_info
- ``client``     HivemindDHT: sans-IO requests with ids, ``handle_response`` / ``handle_error``
- ``net``        the network stack: py-libp2p host, our lean Noise + yamux dialler, relays, kad (see ``dht.net``)
- ``traverse``   the batched multi-key search (one FIND per node for every key it is near)
- ``swarm``      SwarmClient: awaitable calls over a host, bootstrap, swarm-wide lookup merged like latest=True
- ``storage``    hivemind's storage acceptance rules (newest expiration wins), bounded tiers
- ``routing``    the k-bucket routing table
- ``node``       DHTNode: a small DHT node serving ping/store/find
- ``cli``        ``python -m dht``: ping, get, store, lookup, sweep
- ``errors``     the typed errors everything here raises

Importing this package starts nothing and opens nothing. It never imports ``monitor``.
"""

from .client import (
    FindData,
    FoundValue,
    HivemindDHT,
    OutgoingRequest,
    PingResult,
    RequestFailed,
    StoreEntry,
    StoreResults,
)
from .errors import (
    AddressLookupTimeout,
    CallTimeout,
    DecodeError,
    DHTError,
    FrameError,
    PeerUnreachable,
    ProtocolNotSupported,
    RemoteError,
    RequestIdError,
)
from .ids import DHTID, dhtid_of, xor_distance
from .protocol import RPC_FIND, RPC_INFO, RPC_PING, RPC_STORE, FindResult, ResultType, StoreItem
from .serializer import DecodeLimits, TensorDescriptor, dumps, loads
from .value import DHTValue, DHTValueBuilder, DictionaryValue, StoreValue, ValueWithExpiration

__all__ = [
    "DHTID",
    "RPC_FIND",
    "RPC_INFO",
    "RPC_PING",
    "RPC_STORE",
    "AddressLookupTimeout",
    "CallTimeout",
    "DHTError",
    "DHTValue",
    "DHTValueBuilder",
    "DecodeError",
    "DecodeLimits",
    "DictionaryValue",
    "FindData",
    "FindResult",
    "FoundValue",
    "FrameError",
    "HivemindDHT",
    "OutgoingRequest",
    "PeerUnreachable",
    "PingResult",
    "ProtocolNotSupported",
    "RemoteError",
    "RequestFailed",
    "RequestIdError",
    "ResultType",
    "StoreEntry",
    "StoreItem",
    "StoreResults",
    "StoreValue",
    "TensorDescriptor",
    "ValueWithExpiration",
    "dhtid_of",
    "dumps",
    "loads",
    "xor_distance",
]
