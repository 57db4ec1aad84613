"""Byte-level helpers on one libp2p stream: buffered uvarint frames and multistream-select.

We negotiate protocols ourselves instead of through ``BasicHost.new_stream`` so that a refusal ("na") is
told apart from a broken stream (py-libp2p folds both into one ``StreamFailure``), and so the handshake
and the protocol proposal go out in one write (one round trip less; go-libp2p accepts the pipelined form).
All reads are bounded: a frame longer than its limit is refused before anything is buffered for it.
"""

from __future__ import annotations

from typing import Protocol

from ..errors import FrameError, ProtocolNotSupported
from ..wire import check_length, decode_uvarint, encode_uvarint

MULTISTREAM_ID = "/multistream/1.0.0"
_NOT_AVAILABLE = "na"
MAX_NEGOTIATION_LINE = 1024
_READ_CHUNK = 64 * 1024


class ByteStream(Protocol):
    """The part of py-libp2p's ``INetStream`` we use."""

    async def read(self, n: int | None = None) -> bytes: ...

    async def write(self, data: bytes) -> None: ...


class StreamClosed(FrameError):
    """The peer closed (or reset) the stream before a complete frame arrived."""


class BufferedReader:
    """Reads exact byte counts and uvarint-prefixed frames from a stream, keeping any over-read bytes."""

    def __init__(self, stream: ByteStream) -> None:
        self._stream = stream
        self._buf = bytearray()
        self.bytes_read = 0

    async def _read_some(self, n: int, have: int) -> bytes:
        """Up to ``n`` bytes from the stream, ``have`` bytes into the frame; EOF or reset → :class:`StreamClosed`."""
        try:
            chunk = await self._stream.read(n)
        except Exception as e:  # StreamEOF, StreamReset, StreamError: all end this frame
            raise StreamClosed(f"stream closed after {self.bytes_read + have} bytes ({type(e).__name__})") from None
        if not chunk:
            raise StreamClosed(f"stream closed after {self.bytes_read + have} bytes")
        return chunk

    async def _fill(self, want: int) -> None:
        """Read until at least ``want`` bytes are buffered; EOF or reset → :class:`StreamClosed`."""
        while len(self._buf) < want:
            self._buf += await self._read_some(min(_READ_CHUNK, max(want - len(self._buf), 1)), len(self._buf))

    def _take(self, n: int) -> bytes:
        out = bytes(self._buf[:n])
        del self._buf[:n]
        self.bytes_read += n
        return out

    async def read_exactly(self, n: int) -> bytes:
        if len(self._buf) >= n:
            return self._take(n)
        # A large frame (a FIND reply is ~1 MB): gather the stream's chunks and join once, instead of growing
        # and then slicing the buffer (callers bound ``n`` before reading: see ``read_frame``).
        parts, have = [bytes(self._buf)], len(self._buf)
        self._buf.clear()
        while have < n:
            try:
                chunk = await self._read_some(n - have, have)
            except StreamClosed:
                self._buf += b"".join(parts)  # what arrived stays readable, as with _fill
                raise
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        if have > n:  # a stream that returned more than asked: keep the rest
            self._buf += data[n:]
            data = data[:n]
        self.bytes_read += n
        return data

    async def read_uvarint(self) -> int:
        want = 1
        while True:
            await self._fill(want)
            head = decode_uvarint(self._buf)  # FrameError past 10 bytes
            if head is not None:
                value, end = head
                self._take(end)
                return value
            want = len(self._buf) + 1

    async def read_frame(self, limit: int) -> bytes:
        """One ``uvarint(len) + payload`` frame; lengths over ``limit`` are refused unread."""
        try:
            length = await self.read_uvarint()
        except StreamClosed as e:
            raise StreamClosed(f"truncated length prefix: {e}") from None
        check_length(length, limit)
        try:
            return await self.read_exactly(length)
        except StreamClosed as e:
            raise StreamClosed(f"truncated frame of {length} bytes: {e}") from None


def encode_multistream_line(text: str) -> bytes:
    """A multistream-select message: ``uvarint(len+1) + text + "\\n"``."""
    body = text.encode() + b"\n"
    return encode_uvarint(len(body)) + body


def multistream_text(raw: bytes) -> str:
    """The text of one multistream message body (``text + "\n"``, UTF-8), or :class:`FrameError`."""
    if not raw.endswith(b"\n"):
        raise FrameError(f"multistream message without trailing newline: {raw[:64]!r}")
    try:
        return raw[:-1].decode()
    except UnicodeDecodeError:
        raise FrameError(f"multistream message is not UTF-8: {raw[:64]!r}") from None


def protocol_selected(header: str, answer: str, protocol: str) -> bool:
    """Whether the listener's two answers to our proposal accept ``protocol`` (False: "na"); anything else than
    the multistream header and then "na" or the protocol itself is a :class:`FrameError`."""
    if header != MULTISTREAM_ID:
        raise FrameError(f"unexpected multistream header {header[:64]!r}")
    if answer == _NOT_AVAILABLE:
        return False
    if answer != protocol:
        raise FrameError(f"peer selected {answer[:64]!r} instead of {protocol!r}")
    return True


async def read_multistream_line(reader: BufferedReader) -> str:
    return multistream_text(await reader.read_frame(MAX_NEGOTIATION_LINE))


async def negotiate_outbound(stream: ByteStream, reader: BufferedReader, protocol: str, then: bytes = b"") -> None:
    """Select ``protocol`` as the dialer; the peer's "na" → :class:`ProtocolNotSupported`.

    ``then`` (a request) goes out in the same write as the proposal, a round trip less, but only for a peer known
    to accept ``protocol``: after an "na" the peer reads those bytes as its next proposal (go-multistream resets
    the stream; an unpatched py-libp2p host crashed on them, see ``dht.net.transport._open_stream``)."""
    try:
        await stream.write(encode_multistream_line(MULTISTREAM_ID) + encode_multistream_line(protocol) + then)
    except Exception as e:  # StreamError, StreamReset, a broken connection: typed like a failed read
        raise StreamClosed(f"stream closed while proposing {protocol!r} ({type(e).__name__})") from None
    header = await read_multistream_line(reader)
    if not protocol_selected(header, await read_multistream_line(reader), protocol):
        # The same wording p2pd uses, so callers can match one substring for both transports.
        raise ProtocolNotSupported(f"failed to negotiate protocol: protocols not supported: [{protocol}]")
