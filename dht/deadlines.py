"""Deadlines as absolute trio times: one per call, shared by its steps (address look-up, dial, call)."""

from __future__ import annotations

import trio


def seconds_left(deadline: float) -> float:
    """Seconds until ``deadline`` (trio time), never negative: what a step of a call may still use."""
    return max(0.0, deadline - trio.current_time())


__all__ = ["seconds_left"]
