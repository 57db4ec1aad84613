"""yamux framing (hashicorp/yamux ``spec.md``, as go-yamux speaks it): a 12-byte header, then data.

Header: version (0), type, flags (uint16), stream id (uint32), length (uint32), big-endian. ``length`` is the
payload size of a DATA frame, the credit of a WINDOW_UPDATE, the opaque value of a PING and the error code of a
GO_AWAY. Streams we open have odd ids; each starts with a 256 KiB receive window in both directions.
"""

from __future__ import annotations

import struct

PROTOCOL_ID = "/yamux/1.0.0"
VERSION = 0
DATA, WINDOW_UPDATE, PING, GO_AWAY = 0, 1, 2, 3
SYN, ACK, FIN, RST = 1, 2, 4, 8
HEADER = struct.Struct(">BBHII")
HEADER_LEN = HEADER.size
INITIAL_WINDOW = 256 * 1024
GO_AWAY_NORMAL = 0


def header(frame_type: int, flags: int, stream_id: int, length: int) -> bytes:
    return HEADER.pack(VERSION, frame_type, flags, stream_id, length)


__all__ = [
    "ACK",
    "DATA",
    "FIN",
    "GO_AWAY",
    "GO_AWAY_NORMAL",
    "HEADER",
    "HEADER_LEN",
    "INITIAL_WINDOW",
    "PING",
    "PROTOCOL_ID",
    "RST",
    "SYN",
    "VERSION",
    "WINDOW_UPDATE",
    "header",
]
