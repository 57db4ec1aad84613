"""160-bit DHT identifiers, exactly as hivemind computes them (PROTOCOL.md §1.1, §1.4).

A key's ID is ``SHA-1(msgpack(key))`` read as a big-endian integer; a ``bytes`` key is hashed raw, so
``b"\\xa3abc"`` and ``"abc"`` share an ID. Node IDs are the same kind of number but are random per process
and unauthenticated: identify servers by PeerID, never by node ID.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

from .serializer import dumps

HASH_NBYTES = 20  # SHA-1 digest size; every DHTID on the wire is exactly this long
HASH_NBITS = 8 * HASH_NBYTES
MIN_ID = 0
MAX_ID = 2**HASH_NBITS  # exclusive


class DHTID(int):
    """An integer in ``[0, 2**160)``: a key ID or a node ID. Ordering and hashing are the integer's."""

    __slots__ = ()

    def __new__(cls, value: int) -> DHTID:
        value = int(value)
        if not MIN_ID <= value < MAX_ID:
            raise ValueError(f"DHTID must be in [0, 2**160), got {value:#x}")
        return super().__new__(cls, value)

    @classmethod
    def from_key(cls, key: Any) -> DHTID:
        """The ID a hivemind node uses for ``key``: SHA-1 of raw ``bytes`` or of hivemind's msgpack of anything else."""
        return cls.from_bytes(hashlib.sha1(hashed_input(key)).digest())

    @classmethod
    def from_bytes(  # type: ignore[override]
        cls, raw: bytes | bytearray | memoryview, byteorder: str = "big", *, signed: bool = False
    ) -> DHTID:
        """Read a big-endian integer; ``b""`` is 0 (what an empty ``NodeInfo.node_id`` means)."""
        if signed:
            raise ValueError("DHTIDs are unsigned")
        return cls(int.from_bytes(raw, byteorder))  # type: ignore[arg-type]

    @classmethod
    def random(cls, randbytes: Callable[[int], bytes] = os.urandom) -> DHTID:
        """A fresh node ID, uniform over 160 bits (hivemind hashes random bytes the same way)."""
        return cls.from_bytes(hashlib.sha1(randbytes(32)).digest())

    def to_bytes(  # type: ignore[override]
        self, length: int = HASH_NBYTES, byteorder: str = "big", *, signed: bool = False
    ) -> bytes:
        """Always 20 bytes, big-endian, zero-padded on the left (unless another length is asked for)."""
        return int.to_bytes(self, length, byteorder, signed=signed)  # type: ignore[arg-type]

    def xor_distance(self, other: int | bytes) -> int:
        """Kademlia distance to ``other`` (a DHTID, an int or 20 raw bytes)."""
        return xor_distance(self, other)

    def __repr__(self) -> str:
        return f"DHTID({self.to_bytes().hex()})"

    __str__ = __repr__


def _as_int(value: int | bytes | bytearray) -> int:
    if isinstance(value, (bytes, bytearray)):
        return int.from_bytes(value, "big")
    return int(value)


def hashed_input(key: Any) -> bytes:
    """The bytes hivemind feeds to SHA-1 for ``key``: the key itself if it is ``bytes``, else its msgpack."""
    if isinstance(key, bytes):
        return key
    return dumps(key)


def dhtid_of(key: Any) -> bytes:
    """The 20-byte wire form of ``key``'s ID (what goes into ``FindRequest.keys``/``StoreRequest.keys``)."""
    return hashlib.sha1(hashed_input(key)).digest()


def xor_distance(a: int | bytes, b: int | bytes) -> int:
    """``int(a) XOR int(b)``; bytes are read big-endian like :meth:`DHTID.from_bytes`."""
    return _as_int(a) ^ _as_int(b)


def longest_common_prefix_length(*ids: int | bytes) -> int:
    """Number of leading bits (out of 160) shared by all ``ids``; 160 if they are all equal."""
    if not ids:
        raise ValueError("need at least one id")
    values = [_as_int(i) for i in ids]
    differing = 0
    for value in values[1:]:
        differing |= value ^ values[0]
    return HASH_NBITS - differing.bit_length()
