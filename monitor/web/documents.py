"""Rendered documents kept as ready-to-send bytes: encoded once, gzipped once, with a strong ETag.

A page or JSON document that depends only on stored crawls is rendered once per crawl (see
:class:`~monitor.web.context.RenderCache`); serving it again is then a dictionary lookup and a socket write: no
JSON dump, no UTF-8 encoding, no compression per request. Clients that send ``If-None-Match`` with the current
ETag get a bodiless 304; clients that accept gzip get the pre-compressed bytes.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass

from aiohttp import web

GZIP_MIN_BYTES = 1024  # below this, gzip saves too little to matter
GZIP_LEVEL = 6


@dataclass(frozen=True, slots=True)
class Document:
    body: bytes
    gzipped: bytes | None  # None when not worth it
    etag: str  # quoted, strong
    content_type: str  # with charset when textual


def make_document(content: str | bytes, content_type: str) -> Document:
    """Encode, hash and compress once (call it off the event loop: compressing 200 KB takes a few ms)."""
    body = content.encode() if isinstance(content, str) else content
    if isinstance(content, str) and "charset" not in content_type:
        content_type += "; charset=utf-8"
    etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
    gzipped = None
    if len(body) >= GZIP_MIN_BYTES:
        packed = gzip.compress(body, GZIP_LEVEL, mtime=0)
        gzipped = packed if len(packed) < len(body) else None
    return Document(body, gzipped, etag, content_type)


def accepts_gzip(header: str | None) -> bool:
    """``Accept-Encoding`` allows gzip (``gzip;q=0`` refuses it; ``*`` allows it unless gzip is refused)."""
    if not header:
        return False
    allowed: dict[str, bool] = {}
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        allowed[name.strip().lower()] = q > 0
    if "gzip" in allowed:
        return allowed["gzip"]
    return allowed.get("*", False)


def etag_matches(header: str | None, etag: str) -> bool:
    """``If-None-Match`` names ``etag`` (weak comparison, as RFC 9110 asks for this header) or is ``*``."""
    if not header:
        return False
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def document_response(request: web.Request, doc: Document, *, status: int = 200) -> web.Response:
    """The response for ``doc``: 304 when the client has it, gzipped bytes when it accepts them."""
    headers = {"ETag": doc.etag, "Vary": "Accept-Encoding"}
    if status == 200 and etag_matches(request.headers.get("If-None-Match"), doc.etag):
        return web.Response(status=304, headers=headers)
    headers["Content-Type"] = doc.content_type
    if doc.gzipped is not None and accepts_gzip(request.headers.get("Accept-Encoding")):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=doc.gzipped, status=status, headers=headers)
    return web.Response(body=doc.body, status=status, headers=headers)
