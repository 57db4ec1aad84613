"""Read the pixels of a PNG that headless Chromium saved (8-bit RGB or RGBA, not interlaced), without an imaging
library: a browser test can then say that something is *visible*, not only present in the DOM."""

from __future__ import annotations

import struct
import zlib
from collections import Counter
from pathlib import Path

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """``(width, height, rows)``; each row holds ``width`` RGB triples (alpha dropped)."""
    data = path.read_bytes()
    assert data[:8] == SIGNATURE, "not a PNG"
    pos, chunks, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        elif kind == b"IEND":
            break
    assert header is not None
    width, height, depth, color, _compression, _filter, interlace = header
    assert depth == 8 and interlace == 0 and color in (2, 6), f"unsupported PNG: {header}"
    n = 3 if color == 2 else 4
    stride = width * n
    raw = zlib.decompress(b"".join(chunks))
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(n, stride):
                line[i] = (line[i] + line[i - n]) & 255
        elif kind == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev, strict=True))
        elif kind == 3:
            for i in range(stride):
                line[i] = (line[i] + ((line[i - n] if i >= n else 0) + prev[i]) // 2) & 255
        elif kind == 4:
            for i in range(stride):
                left, up_left = (line[i - n], prev[i - n]) if i >= n else (0, 0)
                line[i] = (line[i] + _paeth(left, prev[i], up_left)) & 255
        prev = line
        rows.append(bytes(line) if n == 3 else bytes(b for i, b in enumerate(line) if i % 4 != 3))
    return width, height, rows


def colour_counts(path: Path) -> Counter[tuple[int, int, int]]:
    _width, _height, rows = pixels(path)
    return Counter((row[i], row[i + 1], row[i + 2]) for row in rows for i in range(0, len(row), 3))
