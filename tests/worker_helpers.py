"""Module-level resources and calls for tests/monitor/test_worker.py: the DHT worker is spawned, so whatever it runs
must be importable by name in a fresh interpreter (and import little: each test spawns one)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import trio


class Resource:
    def __init__(self, marker: Path) -> None:
        self.marker = marker
        self.cancelled = trio.Event()


@contextlib.asynccontextmanager
async def resource(marker: str):
    res = Resource(Path(marker))
    res.marker.write_text("open")
    try:
        yield res
    finally:
        res.marker.write_text("closed")


@contextlib.asynccontextmanager
async def broken(marker: str):
    raise OSError("cannot listen")
    yield  # pragma: no cover


async def add(res: Resource, a: int, b: int) -> int:
    await trio.lowlevel.checkpoint()
    return a + b


async def pid(res: Resource) -> int:
    return os.getpid()


async def is_frozen(res: Resource) -> bool:
    """Whether the resource, made at start-up, sits in the collector's permanent generation."""
    import gc

    if gc.get_freeze_count() == 0 or any(o is res for o in gc.get_objects()):
        return False  # frozen objects are in no generation
    gc.unfreeze()  # thaw to see it is still tracked (so it was frozen, not untracked), then freeze back
    try:
        return any(o is res for o in gc.get_objects(generation=2))
    finally:
        gc.freeze()


async def fail(res: Resource) -> None:
    raise ValueError("boom")


class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickle re-creates it with one argument: that fails
        super().__init__(f"needs two arguments, got {a} and {b}")


async def fail_unpicklable(res: Resource) -> None:
    raise Unpicklable(1, 2)


async def forever(res: Resource) -> None:
    try:
        await trio.sleep_forever()
    finally:
        res.cancelled.set()


async def was_cancelled(res: Resource) -> bool:
    with trio.fail_after(10):
        await res.cancelled.wait()
    return True


async def die(res: Resource) -> None:
    os._exit(3)  # a crash: no cleanup, no reply
