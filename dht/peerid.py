"""Text PeerIDs: telling a well-formed base58 libp2p PeerID from anything else, without importing libp2p.

Peer ids arrive from strangers (Petals subkeys, URLs, nearest-peer lists), so the check is strict: canonical
base58, and a multihash that is either sha2-256 (``Qm…``) or an identity hash of a small inlined public key
(``12D3KooW…`` for Ed25519, ``16Uiu2…`` for secp256k1).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable

import base58

MAX_PEER_ID_TEXT = 128
MAX_NEIGHBOURS = 20  # nearest peers taken from one key's FindResult: hivemind sends its bucket_size (k = 20)
MAX_INLINED_KEY = 64  # bytes of public key libp2p inlines as an identity multihash (Ed25519: 36)
_IDENTITY, _SHA2_256 = 0x00, 0x12


def is_peer_id(text: object) -> bool:
    """True for a canonical base58 libp2p PeerID."""
    if not isinstance(text, str) or not 0 < len(text) <= MAX_PEER_ID_TEXT:
        return False
    return _is_peer_id_text(text)


@functools.lru_cache(maxsize=16384)
def _is_peer_id_text(text: str) -> bool:
    """Cached (at most ~2 MB): a crawl meets each server's id once per record and replica, tens of thousands of
    times, and a base58 round trip in pure Python was most of the CPU its early probes spent (bench/README.md)."""
    try:
        raw = base58.b58decode(text)
    except ValueError:
        return False
    if base58.b58encode(raw).decode() != text:  # leading-zero or non-canonical spellings
        return False
    return is_peer_id_bytes(raw)


def is_peer_id_bytes(raw: object) -> bool:
    """True for the binary form (a multihash: sha2-256, or identity of a small inlined key), as FindResults
    carry in ``nearest_node_ids``' peer ids."""
    if not isinstance(raw, bytes) or len(raw) < 2:
        return False
    code, length, digest = raw[0], raw[1], raw[2:]
    if length != len(digest) or length >= 0x80:
        return False
    if code == _SHA2_256:
        return length == 32
    return code == _IDENTITY and 0 < length <= MAX_INLINED_KEY


def peer_id_text(raw: object) -> str | None:
    """The base58 text of a binary PeerID (as FindResults carry them), or None when ``raw`` is not one.

    Every FIND reply names the same few neighbours for each of its keys: each is converted once (the cache holds
    valid ids only, so at most ~66 bytes each)."""
    return _base58_text(raw) if is_peer_id_bytes(raw) else None


def valid_neighbours(nearest: Iterable[tuple[bytes, bytes]], limit: int = MAX_NEIGHBOURS) -> list[tuple[bytes, str]]:
    """Of the first ``limit`` ``(node id, binary peer id)`` pairs of a FindResult's nearest list, those whose peer
    id has a PeerID's shape, as ``(node id, base58 peer id)``; the rest is never chased. A reply naming more than
    hivemind sends, or garbage, costs neither lookups nor memory (only ``limit`` shape checks); garbage within the
    first ``limit`` takes slots, so a hostile node can only name fewer neighbours, never more."""
    return [(node, pid) for node, raw in itertools.islice(nearest, limit) if (pid := peer_id_text(raw)) is not None]


@functools.lru_cache(maxsize=16384)
def _base58_text(raw: bytes) -> str:
    return base58.b58encode(raw).decode()
