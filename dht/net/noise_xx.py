"""Noise XX as libp2p uses it (``/noise``), initiator side, sans-IO.

``Noise_XX_25519_ChaChaPoly_SHA256`` with an empty prologue (the Noise spec, rev. 34, §5 and §7.5) and the libp2p
handshake payload (libp2p's noise spec): each side proves its libp2p identity by signing
``"noise-libp2p-static-key:" + its static X25519 key``. Handshake and transport messages travel with a 2-byte
big-endian length; a transport message holds at most 65,535 bytes of ciphertext (65,519 of plaintext).

Why our own: py-libp2p's Noise (through the ``noise`` package) cost ~3.2 ms of CPU per handshake and rebuilt the
AEAD for every message; this is three X25519 exchanges, one Ed25519 verification and a handful of hashes
(~0.4 ms), and one AEAD object per direction. Only the initiator is here: our listening hosts keep py-libp2p's.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..errors import FrameError

PROTOCOL_ID = "/noise"
PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_SHA256"  # exactly HASHLEN (32) bytes: h starts as the name itself
SIGNED_PREFIX = b"noise-libp2p-static-key:"
KEY_LEN = 32
TAG_LEN = 16
MAX_MESSAGE = 65535  # bytes of ciphertext per message (the 2-byte length)
MAX_PLAINTEXT = MAX_MESSAGE - TAG_LEN


class NoiseError(FrameError):
    """A handshake or transport message that does not authenticate or does not parse."""


class CipherState:
    """One direction of a Noise channel: a ChaCha20-Poly1305 key and its 64-bit message counter."""

    __slots__ = ("_aead", "nonce")

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self.nonce = 0

    def _next_nonce(self) -> bytes:
        if self.nonce >= 2**64 - 1:  # the spec reserves the last value; a connection never gets there
            raise NoiseError("Noise nonce exhausted")
        return b"\x00\x00\x00\x00" + self.nonce.to_bytes(8, "little")

    def encrypt(self, plaintext: bytes, ad: bytes = b"") -> bytes:
        out = self._aead.encrypt(self._next_nonce(), plaintext, ad)
        self.nonce += 1
        return out

    def decrypt(self, ciphertext: bytes | memoryview, ad: bytes = b"") -> bytes:
        try:
            out = self._aead.decrypt(self._next_nonce(), ciphertext, ad)
        except InvalidTag:
            raise NoiseError("a Noise message failed authentication") from None
        self.nonce += 1
        return out


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")


def _hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """The Noise spec's HKDF with two outputs."""
    temp = _hmac(chaining_key, ikm)
    out1 = _hmac(temp, b"\x01")
    return out1, _hmac(temp, out1 + b"\x02")


class _SymmetricState:
    def __init__(self) -> None:
        self.h = PROTOCOL_NAME
        self.ck = PROTOCOL_NAME
        self.cipher: CipherState | None = None
        self.mix_hash(b"")  # the (empty) prologue

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, key = _hkdf2(self.ck, ikm)
        self.cipher = CipherState(key)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        out = self.cipher.encrypt(plaintext, self.h) if self.cipher else plaintext
        self.mix_hash(out)
        return out

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        out = self.cipher.decrypt(ciphertext, self.h) if self.cipher else ciphertext
        self.mix_hash(ciphertext)
        return out

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = _hkdf2(self.ck, b"")
        return CipherState(k1), CipherState(k2)


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError as e:  # a low-order point: the all-zero shared secret
        raise NoiseError(f"unusable X25519 key from the peer: {e}") from None


@dataclass(frozen=True, slots=True)
class NoiseResult:
    """The handshake's outcome: the peer's payload (its libp2p identity) and the two transport directions."""

    remote_payload: bytes
    remote_static: bytes
    send: CipherState
    receive: CipherState


class XXInitiator:
    """The three messages of XX from the dialler's side: ``message1()``, ``read_message2(m)``, ``message3()``.

    ``static`` is our X25519 key, ``payload`` our serialized libp2p handshake payload (sent in message 3)."""

    def __init__(self, static: X25519PrivateKey, payload: bytes) -> None:
        self._s = static
        self._payload = payload
        self._sym = _SymmetricState()
        self._e: X25519PrivateKey | None = None
        self._re = b""
        self._remote_payload: bytes | None = None
        self._remote_static = b""

    def message1(self) -> bytes:
        """-> e (and an empty payload)."""
        self._e = X25519PrivateKey.generate()
        e_pub = self._e.public_key().public_bytes_raw()
        self._sym.mix_hash(e_pub)
        return e_pub + self._sym.encrypt_and_hash(b"")

    def read_message2(self, message: bytes) -> bytes:
        """<- e, ee, s, es (and the responder's payload, returned: the caller checks the identity in it)."""
        assert self._e is not None, "message1 first"
        if len(message) < KEY_LEN + KEY_LEN + TAG_LEN + TAG_LEN:
            raise NoiseError(f"Noise handshake message 2 too short ({len(message)} bytes)")
        self._re = bytes(message[:KEY_LEN])
        self._sym.mix_hash(self._re)
        self._sym.mix_key(_dh(self._e, self._re))
        self._remote_static = self._sym.decrypt_and_hash(bytes(message[KEY_LEN : 2 * KEY_LEN + TAG_LEN]))
        self._sym.mix_key(_dh(self._e, self._remote_static))
        self._remote_payload = self._sym.decrypt_and_hash(bytes(message[2 * KEY_LEN + TAG_LEN :]))
        return self._remote_payload

    def message3(self) -> tuple[bytes, NoiseResult]:
        """-> s, se (and our payload); also returns the finished handshake."""
        assert self._remote_payload is not None, "read_message2 first"
        encrypted_s = self._sym.encrypt_and_hash(self._s.public_key().public_bytes_raw())
        self._sym.mix_key(_dh(self._s, self._re))
        message = encrypted_s + self._sym.encrypt_and_hash(self._payload)
        send, receive = self._sym.split()
        return message, NoiseResult(self._remote_payload, self._remote_static, send, receive)


def frame(message: bytes) -> bytes:
    """A handshake or transport message on the wire: ``uint16_be(len) + message``."""
    if len(message) > MAX_MESSAGE:
        raise ValueError(f"Noise message of {len(message)} bytes (limit {MAX_MESSAGE})")
    return len(message).to_bytes(2, "big") + message


def encrypt_stream(cipher: CipherState, plaintext: bytes) -> bytes:
    """``plaintext`` as consecutive framed transport messages (each at most :data:`MAX_PLAINTEXT` bytes)."""
    if len(plaintext) <= MAX_PLAINTEXT:  # nearly every write: no list, no join
        return frame(cipher.encrypt(plaintext))
    chunks = range(0, len(plaintext), MAX_PLAINTEXT)
    return b"".join(frame(cipher.encrypt(plaintext[start : start + MAX_PLAINTEXT])) for start in chunks)


def decrypt_into(decrypt: Callable[[memoryview], bytes], buffer: bytearray, out: bytearray) -> None:
    """Decrypt every whole transport message at the front of ``buffer`` onto ``out`` and remove them from
    ``buffer``; a partial message stays. ``decrypt`` is one direction's (``CipherState.decrypt``, or py-libp2p's
    Noise state for its connections). An authentication failure raises; the messages before it stay decrypted in
    ``out`` and gone from ``buffer`` (never decrypted twice)."""
    pos, end = 0, len(buffer)
    view = memoryview(buffer)
    try:
        while end - pos >= 2:
            size = (buffer[pos] << 8) | buffer[pos + 1]
            start = pos + 2
            if end - start < size:
                break
            with view[start : start + size] as message:  # released even on failure: the buffer is resized below
                out += decrypt(message)
            pos = start + size
    finally:
        view.release()
        if pos:
            del buffer[:pos]


__all__ = [
    "MAX_MESSAGE",
    "MAX_PLAINTEXT",
    "PROTOCOL_ID",
    "SIGNED_PREFIX",
    "CipherState",
    "NoiseError",
    "NoiseResult",
    "XXInitiator",
    "decrypt_into",
    "encrypt_stream",
    "frame",
]
