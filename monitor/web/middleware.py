"""Errors and security headers for every response.

Errors: a :class:`~monitor.web.params.ClientError` becomes its 400/404 with the message; anything unexpected is
logged and becomes a bare 500. A client never sees a stack trace. API paths answer JSON, pages answer HTML.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from ..store.dbcheck import one_line
from ..store.pg import is_connection_error
from .context import CTX
from .params import ClientError
from .reader import ReadTimeout

log = logging.getLogger(__name__)
DB_RETRY_AFTER = 5  # seconds: a pooled reader reconnects on the next request

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "interest-cohort=()",
}


def wants_json(request: web.Request) -> bool:
    return request.path.startswith("/api/") or request.path == "/healthz"


def error_response(request: web.Request, status: int, message: str) -> web.Response:
    if wants_json(request):
        body = json.dumps({"error": {"status": status, "message": message}})
        return web.Response(status=status, text=body, content_type="application/json")
    ctx = request.app[CTX]
    try:
        html = ctx.env.get_template("error.html").render(
            status=status,
            message=message,
            title=str(status),
            at=None,
            json_url=None,
            refresh=None,
            now=ctx.clock(),
            path=request.path,
        )
    except Exception:  # the error page itself must never fail
        log.exception("error page failed to render")
        return web.Response(status=status, text=f"{status}: {message}", content_type="text/plain")
    return web.Response(status=status, text=html, content_type="text/html")


_REASONS = {400: "Bad request", 404: "Not found", 405: "Method not allowed", 413: "Request too large"}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ClientError as e:
        return error_response(request, e.status, e.message)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        message = _REASONS.get(e.status, e.reason)
        response = error_response(request, e.status, message)
        for header in ("Allow", "Retry-After"):
            if header in e.headers:
                response.headers[header] = e.headers[header]
        return response
    except Exception as e:
        # the database is gone (PostgreSQL restarting, network) or hangs: say so, retry later
        if is_connection_error(e) or isinstance(e, ReadTimeout):
            log.warning("database unavailable on %s %s: %s", request.method, request.path, one_line(e))
            response = error_response(request, 503, "Database unavailable")
            response.headers["Retry-After"] = str(DB_RETRY_AFTER)
            return response
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(request, 500, "Internal server error")


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response, static files and errors included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers["Server"] = "petals-monitor"
    if request.path.startswith("/api/"):
        # health.petals.dev allowed any origin; its browser consumers (e.g. chat UIs) rely on that.
        response.headers.setdefault("Access-Control-Allow-Origin", "*")
    if request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "public, max-age=300")
    else:
        response.headers.setdefault("Cache-Control", "no-cache")
