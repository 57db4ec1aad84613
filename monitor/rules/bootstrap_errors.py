"""Why no bootstrap peer answered, in one line a person can act on.

``"no bootstrap peer answered: 127.0.0.1:9 connection refused; boot.example.org:31337 timed out"`` instead of
the dial error's full chain. Pure: the crawl's bootstrap results in, text out (the crawl's ``error``, which
the CLI prints and the crawl log stores).
"""

from __future__ import annotations

from collections.abc import Sequence

from dht.net.lean import tcp_target

from ..snapshot import BootstrapPeer

MAX_LISTED = 4  # a long list of initial peers ends with "+N more"
MAX_REASON = 100
# (what the error text contains, lowercased) -> the short reason shown
_SHORT_REASONS = (
    ("connection refused", "connection refused"),
    ("timeout", "timed out"),
    ("timed out", "timed out"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network unreachable"),
    ("name or service not known", "host name not found"),
    ("temporary failure in name resolution", "host name not found"),
    ("nodename nor servname", "host name not found"),
    ("protocols not supported", "does not serve the hivemind DHT"),
    ("connection reset", "connection reset"),
)


def endpoint(address: str) -> str:
    """``/ip4/127.0.0.1/tcp/9/p2p/Qm…`` → ``127.0.0.1:9`` (``[::1]:9`` for IPv6); other addresses as given."""
    target = tcp_target(address.split("/p2p/", 1)[0])
    if target is None:
        return address
    host, port = target
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def short_reason(error: str | None) -> str:
    """The gist of a dial or ping error; unknown errors are kept, made printable and cut short."""
    if not error:
        return "no answer"
    lowered = error.lower()
    for needle, reason in _SHORT_REASONS:
        if needle in lowered:
            return reason
    text = "".join(c if c.isprintable() else "?" for c in error)
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def no_bootstrap_answered(peers: Sequence[BootstrapPeer]) -> str:
    """The crawl error when no initial peer answered a DHT ping, naming each peer and why (at most a few)."""
    if not peers:
        return "no bootstrap peer answered: none configured"
    listed = [f"{endpoint(p.address)} {short_reason(p.error)}" for p in peers[:MAX_LISTED]]
    more = f"; +{len(peers) - MAX_LISTED} more" if len(peers) > MAX_LISTED else ""
    return "no bootstrap peer answered: " + "; ".join(listed) + more
