"""Scripted listeners for dht.net.lean tests: the other side of a real handshake, over an in-memory stream.

:func:`scripted_targets` makes ``dht.net.lean``'s TCP connect hand out one end of an in-memory stream whose other end
runs a script of the test's (no socket is opened: everything stays in the test's process, and
``trio.testing.wait_all_tasks_blocked`` tells when the reader has taken every byte sent). :class:`NoiseResponder`
is a responder of the ``noise`` package behind multistream, with the libp2p handshake payload of the test's
choosing (a wrong signature, another peer's key, none), then yamux, then frames of the script's.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import trio
import trio.testing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from noise.connection import Keypair, NoiseConnection

import dht.net.lean
from dht.errors import PeerUnreachable
from dht.net import noise_xx
from dht.net import yamux_frames as yx
from dht.net.streams import MULTISTREAM_ID, encode_multistream_line

Script = Callable[[Any], Awaitable[None]]


def new_key_pair() -> Any:
    import libp2p

    return libp2p.generate_new_ed25519_identity()


def peer_id_of(key_pair: Any) -> str:
    from libp2p.peer.id import ID

    return ID.from_pubkey(key_pair.public_key).to_base58()


def handshake_payload(key_pair: Any, signed_static: bytes) -> bytes:
    """libp2p's Noise payload: ``key_pair``'s public key and its signature over ``signed_static``."""
    from libp2p.security.noise.pb import noise_pb2

    signature = key_pair.private_key.sign(noise_xx.SIGNED_PREFIX + signed_static)
    return noise_pb2.NoiseHandshakePayload(
        identity_key=key_pair.public_key.serialize(), identity_sig=signature
    ).SerializeToString()


class NoiseResponder:
    """Our dialler's peer: multistream, Noise XX as responder with ``payload(static_public)``, then yamux."""

    def __init__(self, sock: Any, payload: Callable[[bytes], bytes]) -> None:
        self.sock = sock
        self._static = X25519PrivateKey.generate()
        self._payload = payload
        self._noise = NoiseConnection.from_name(b"Noise_XX_25519_ChaChaPoly_SHA256")
        self._noise.set_as_responder()
        raw = self._static.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        self._noise.set_keypair_from_private_bytes(Keypair.STATIC, raw)
        self._noise.start_handshake()
        self.reached_message3 = False
        self.secured = False

    async def handshake(self) -> bool:
        """Run the responder's side; False when the dialler hung up before finishing it (it refused us)."""
        reader = dht.net.lean._HandshakeReader(self.sock)
        try:
            assert await reader.line("header") == MULTISTREAM_ID
            assert await reader.line("proposal") == noise_xx.PROTOCOL_ID
            self._noise.read_message(await reader.noise_message())
            static_public = self._static.public_key().public_bytes_raw()
            message2 = self._noise.write_message(self._payload(static_public))
            selected = encode_multistream_line(MULTISTREAM_ID) + encode_multistream_line(noise_xx.PROTOCOL_ID)
            await self.sock.send_all(selected + noise_xx.frame(message2))
            self._noise.read_message(await reader.noise_message())
            self.reached_message3 = True
            plain = bytearray()
            while plain.count(b"\n") < 2:  # the dialler's muxer proposal: two multistream lines
                noise_xx.decrypt_into(lambda m: self._noise.decrypt(bytes(m)), reader.buf, plain)
                if plain.count(b"\n") < 2:
                    await reader.fill(len(reader.buf) + 1, "the muxer proposal")
        except (PeerUnreachable, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        await self.send_plain(encode_multistream_line(MULTISTREAM_ID) + encode_multistream_line(yx.PROTOCOL_ID))
        self.secured = True
        return True

    async def send_plain(self, data: bytes) -> None:
        """``data`` encrypted, in transport messages of at most MAX_PLAINTEXT bytes (one at a time: a flood
        is never built whole in memory)."""
        for start in range(0, len(data), noise_xx.MAX_PLAINTEXT):
            piece = data[start : start + noise_xx.MAX_PLAINTEXT]
            await self.sock.send_all(noise_xx.frame(self._noise.encrypt(piece)))

    async def send_zeros(self, size: int) -> None:
        """``size`` bytes of payload, generated a message at a time."""
        zeros = bytes(noise_xx.MAX_PLAINTEXT)
        while size > 0:
            take = min(size, noise_xx.MAX_PLAINTEXT)
            await self.sock.send_all(noise_xx.frame(self._noise.encrypt(zeros[:take])))
            size -= take


@contextlib.asynccontextmanager
async def scripted_targets(monkeypatch: Any) -> AsyncIterator[dict[int, Script]]:
    """Yields a ``{port: script}`` map to fill: ``dht.net.lean``'s dials of ``127.0.0.1:<port>`` then reach
    ``script(stream)``, run in a nursery that ends with the block."""
    scripts: dict[int, Script] = {}
    async with trio.open_nursery() as nursery:

        async def connect(host: str, port: int) -> Any:
            if port not in scripts:
                raise OSError(f"nothing scripted at {host}:{port}")
            ours, theirs = trio.testing.memory_stream_pair()
            nursery.start_soon(scripts[port], theirs)
            return ours

        monkeypatch.setattr(dht.net.lean, "_connect_tcp", connect)
        yield scripts
        nursery.cancel_scope.cancel()
