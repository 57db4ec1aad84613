"""Seeded Ed25519 identities for simulated servers: the same seed always gives the same PeerIDs.

Each server's 32-byte key seed is ``SHA-256("petals-monitor-demo/<seed>/<index>")``; the PeerID is the
identity multihash of its Ed25519 public key (base58 ``12D3KooW…``), exactly what a real Petals server with
an Ed25519 identity announces as its subkey. py-libp2p is imported lazily (it takes about a second).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any


def key_seed(seed: int, index: int) -> bytes:
    """The 32-byte Ed25519 seed of simulated server ``index`` in the scenario seeded with ``seed``."""
    return hashlib.sha256(f"petals-monitor-demo/{seed}/{index}".encode()).digest()


def key_pair(seed32: bytes) -> Any:
    """A py-libp2p Ed25519 ``KeyPair`` from a 32-byte seed (for hosts that must own this PeerID)."""
    from libp2p.crypto.ed25519 import create_new_key_pair

    if len(seed32) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    return create_new_key_pair(seed32)


@lru_cache(maxsize=65536)
def peer_id(seed32: bytes) -> str:
    """The base58 PeerID that a host built from ``seed32`` has."""
    from libp2p.peer.id import ID

    return ID.from_pubkey(key_pair(seed32).public_key).to_base58()
