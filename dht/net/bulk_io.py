"""Cheaper reading for py-libp2p connections: bulk Noise reads and batched yamux window credit.

A FIND reply of 64 Petals block keys is ~1 MB; a crawl reads ~20 MB of them. py-libp2p 0.8.1 reads a Noise
connection one message at a time (two socket reads each) and its yamux streams send a WINDOW_UPDATE after every
read (one encrypted frame and one send per ~4-64 KB received): ~35 % of our crawl's profile samples. Two narrow
subclasses change only that, keeping py-libp2p's framing, handshake and stream semantics (measured: cold crawl
3.2 -> 2.9 s; what is left of the 35 % is py-libp2p's own per-frame yamux code):

- :class:`BulkNoiseTransport` hands out sessions whose ``read`` pulls up to ``BULK_READ`` bytes from the socket at
  once and decrypts every whole Noise message in them (bytes on the wire and their order unchanged).
- :class:`BatchedCreditStream` returns yamux receive window in batches (none at all for small exchanges) and
  grants ``EXTRA_WINDOW`` more once a stream proves large, so a ~1 MB reply flows without waiting for credit.

Both are wired in by :func:`dht.net.transport.open_host`; nothing here runs at import. py-libp2p's yamux makes its
streams by the module-global name ``YamuxStream`` whatever the muxer options say, so :func:`use_batched_credit`
points that name at our subclass (every py-libp2p host in the process gets it, as with the other py-libp2p
adjustments in :mod:`dht.net.transport`).
"""

from __future__ import annotations

from typing import Any

from libp2p.io.exceptions import ConnectionClosedError
from libp2p.security.noise.io import NoiseTransportReadWriter
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.secure_session import SecureSession
from libp2p.stream_muxer.yamux.yamux import DEFAULT_WINDOW_SIZE, YamuxStream

from .noise_xx import decrypt_into

BULK_READ = 256 * 1024  # bytes asked of the socket per read: up to four full Noise messages
EXTRA_WINDOW = 1024 * 1024  # receive window granted on top of yamux's 256 KiB once a stream has read 64 KiB
# The most receive window a BatchedCreditStream ever grants, so the largest DATA frame a peer may send us.
# py-libp2p reads a DATA frame whole before it looks its stream up, and allowed 16 MiB: a hostile peer could
# make a connection hold that much for up to 60 s (py-libp2p's frame read timeout). A larger frame now closes it.
MAX_DATA_FRAME = DEFAULT_WINDOW_SIZE + EXTRA_WINDOW


class BulkReadSession(SecureSession):
    """A Noise session whose reads decrypt every whole message a bulk socket read brought in.

    Only instances made by :class:`BulkNoiseTransport` have this class (swapped in after the handshake, which
    py-libp2p's own code performs); ``read`` is the only thing it changes."""

    _cipher: bytearray  # received, not yet decrypted: whole messages then at most one partial
    _plain: bytearray  # decrypted, not yet returned

    def _adopt(self) -> None:
        self._cipher = bytearray()
        self._plain = bytearray(self._drain(None))  # anything py-libp2p had already buffered comes first

    async def _receive(self) -> bool:
        """One socket read into ``_cipher``; False at end of stream."""
        chunk = await self.conn.read_writer.read_write_closer.read(BULK_READ)
        if not chunk:
            return False
        self._cipher += chunk
        state = self.conn.noise_state  # py-libp2p's Noise state decrypts bytes, not views
        decrypt_into(lambda message: state.decrypt(bytes(message)), self._cipher, self._plain)
        return True

    async def read(self, n: int | None = None) -> bytes:
        """Up to ``n`` bytes (``None``: whatever is decrypted, at least one message); short only at end of stream."""
        if n == 0:
            return b""
        plain = self._plain
        want = 1 if n is None else n
        while len(plain) < want:
            if not await self._receive():
                if plain:
                    break  # as py-libp2p's session: what was assembled before the close is returned
                raise ConnectionClosedError("Connection closed")
        take = len(plain) if n is None else min(n, len(plain))
        out = bytes(plain[:take])
        del plain[:take]
        return out


class BulkNoiseTransport(NoiseTransport):
    """py-libp2p's Noise transport (same handshake, same keys), handing out :class:`BulkReadSession` sessions."""

    async def secure_inbound(self, conn: Any) -> Any:
        return _bulk(await super().secure_inbound(conn))

    async def secure_outbound(self, conn: Any, peer_id: Any) -> Any:
        return _bulk(await super().secure_outbound(conn, peer_id))


def _bulk(session: Any) -> Any:
    """Give a fresh Noise transport session bulk reads; anything else (an early-data variant) is left alone."""
    if type(session) is SecureSession and isinstance(session.conn, NoiseTransportReadWriter):
        session.__class__ = BulkReadSession
        session._adopt()
    return session


class BatchedCreditStream(YamuxStream):
    """A yamux stream that returns receive window in batches instead of after every read.

    py-libp2p's stream sends a WINDOW_UPDATE after every read, however small (4 per connection for the
    multistream lines of identify alone). This one stays silent until a quarter of yamux's initial window has
    been read (most streams never get there: they carry a request and a reply of a few KB), then grants
    ``EXTRA_WINDOW`` more with the bytes read, so a large reply keeps flowing; after that it returns credit
    each time half of the window has been read, as go-yamux does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unreported = 0
        self._release_at = DEFAULT_WINDOW_SIZE // 4
        self._grant = EXTRA_WINDOW

    async def _auto_tune_and_send_window_update(self, *, bytes_read: int = 0) -> None:
        self._unreported += bytes_read
        if self._unreported < self._release_at:
            return
        increment = self._unreported + self._grant
        if self._grant:
            self._grant = 0
            self._release_at = (DEFAULT_WINDOW_SIZE + EXTRA_WINDOW) // 2
        self._unreported = 0
        self.recv_window += increment
        await self.send_window_update(increment, skip_lock=True)


def use_batched_credit() -> None:
    """Make py-libp2p's yamux build :class:`BatchedCreditStream` streams, both ways, and refuse DATA frames over
    :data:`MAX_DATA_FRAME` (idempotent; its window auto-tuning, the other user of that bound, is ours now)."""
    import libp2p.stream_muxer.yamux.yamux as yamux

    yamux.YamuxStream = BatchedCreditStream  # type: ignore[misc]
    yamux.MAX_WINDOW_SIZE = MAX_DATA_FRAME
