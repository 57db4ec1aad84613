"""Parsing and validating what clients send (path parts and query parameters): bad input is a 400, never a 500."""

from __future__ import annotations

import math

from dht.peerid import is_peer_id

UNIX_TIME_FLOOR = 1_000_000_000  # ``?at=`` values at or above this are Unix times, below it crawl ids


class ClientError(Exception):
    """A request the client got wrong: ``status`` 400 or 404 with a message safe to show."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ClientError):
    status = 404


def peer_id(text: str) -> str:
    if not is_peer_id(text):
        raise ClientError("invalid peer id: expected a base58 libp2p PeerID (Qm… or 12D3KooW…)")
    return text


def positive_int(text: str, name: str, *, maximum: int = 2**62) -> int:
    if not text.isdigit() or len(text) > 19:
        raise ClientError(f"invalid {name}: expected a positive integer")
    value = int(text)
    if not 0 < value <= maximum:
        raise ClientError(f"invalid {name}: out of range")
    return value


def crawl_id(text: str) -> int:
    return positive_int(text, "crawl id")


def timestamp(text: str, name: str) -> float:
    """A Unix time in seconds (integer or decimal)."""
    try:
        value = float(text)
    except ValueError:
        raise ClientError(f"invalid {name}: expected Unix seconds") from None
    if not math.isfinite(value) or not 0 <= value < 1e11:
        raise ClientError(f"invalid {name}: out of range")
    return value


def at(text: str | None) -> tuple[str, float] | None:
    """``?at=``: a crawl id (``("crawl", id)``) or a Unix time (``("time", ts)``); integers below 10⁹ are ids."""
    if text is None or text == "":
        return None
    if text.isdigit() and len(text) < 12 and int(text) < UNIX_TIME_FLOOR:
        return ("crawl", crawl_id(text))
    return ("time", timestamp(text, "at"))


def limit(text: str | None, *, default: int = 100, maximum: int = 1000) -> int:
    if text is None or text == "":
        return default
    return positive_int(text, "limit", maximum=maximum)


def step(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    value = timestamp(text, "step")
    if value < 1:
        raise ClientError("invalid step: at least 1 second")
    return value


def time_range(since: str | None, until: str | None, *, now: float, default_span: float) -> tuple[float, float]:
    end = now if until in (None, "") else timestamp(until, "until")
    start = end - default_span if since in (None, "") else timestamp(since, "since")
    if start > end:
        raise ClientError("invalid range: since is after until")
    return start, end


def swarm(text: str | None, known: list[str]) -> str | None:
    """``?swarm=``: must name a known swarm (404 otherwise); None when absent."""
    if text is None or text == "":
        return None
    if text not in known:
        raise NotFound("unknown swarm")
    return text
