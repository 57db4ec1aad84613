"""Deadlines as absolute trio times: one per call, shared by its steps (address look-up, dial, call)."""

from __future__ import annotations

import trio


def seconds_left(deadline: float) -> float:
    """Seconds until ``deadline`` (trio time), never negative: what a step of a call may still use."""
    return max(0.0, deadline - trio.current_time())


def too_little_left(deadline: float, budget: float) -> bool:
    """After an address look-up: is less than a quarter of the call's ``budget`` (at most 1 s) left? A call made
    with less would mostly time out, and a timed-out call counts against the peer (a traversal drops it, a node
    evicts it from its routing table), when the time went to our look-up, not to the peer."""
    return seconds_left(deadline) < min(1.0, budget / 4)


__all__ = ["seconds_left", "too_little_left"]
