"""A hivemind-compatible DHT client and node on py-libp2p + trio.

Module map (each has one job):

- ``ids``        DHTID (SHA-1 of hivemind's msgpack of a key) and XOR distance
- ``serializer`` hivemind's msgpack dialect (ext 0x40 tuple, ext 0x50 dictionary value), strict decoding
- ``value``      DHTValue / DictionaryValue / DHTValueBuilder: payloads with absolute expirations
- ``wire``       uvarint-delimited PersistentConnectionRequest envelopes (one per direction)
- ``errors``     the typed errors everything here raises

This package never imports ``monitor``.
"""

from .errors import (
    CallTimeout,
    DecodeError,
    DHTError,
    FrameError,
    PeerUnreachable,
    ProtocolNotSupported,
    RemoteError,
    RequestIdError,
)

__all__ = [
    "CallTimeout",
    "DHTError",
    "DecodeError",
    "FrameError",
    "PeerUnreachable",
    "ProtocolNotSupported",
    "RemoteError",
    "RequestIdError",
]
