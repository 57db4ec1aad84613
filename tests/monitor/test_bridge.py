"""The asyncio → trio bridge: results, errors, cancellation both ways, clean stop."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import trio

from monitor.crawl.bridge import BridgeError, TrioBridge


class Resource:
    def __init__(self) -> None:
        self.opened = False
        self.closed = False
        self.cancelled = trio.Event()  # set from the trio side
        self.started = None


def make_bridge(res: Resource) -> TrioBridge[Resource]:
    @contextlib.asynccontextmanager
    async def factory():
        res.opened = True
        try:
            yield res
        finally:
            res.closed = True

    return TrioBridge(factory)


async def _add(res: Resource, a: int, b: int) -> int:
    await trio.lowlevel.checkpoint()
    assert trio.lowlevel.current_trio_token() is not None  # really on trio
    return a + b


async def _fail(res: Resource) -> None:
    raise ValueError("boom")


async def _forever(res: Resource, started) -> None:
    try:
        started.set()  # a threading.Event
        await trio.sleep_forever()
    finally:
        res.cancelled.set()


def test_results_and_errors_cross_the_bridge():
    res = Resource()
    bridge = make_bridge(res)
    bridge.start()
    try:
        assert res.opened and bridge.running

        async def main():
            assert await bridge.run(_add, 2, 3) == 5
            with pytest.raises(ValueError, match="boom"):
                await bridge.run(_fail)
            # many at once
            assert await asyncio.gather(*(bridge.run(_add, i, i) for i in range(50))) == [2 * i for i in range(50)]

        asyncio.run(main())
    finally:
        bridge.stop()
    assert res.closed and not bridge.running


def test_asyncio_cancellation_cancels_the_trio_task():
    import threading

    res = Resource()
    bridge = make_bridge(res)
    bridge.start()
    started = threading.Event()
    try:

        async def main():
            task = asyncio.ensure_future(bridge.run(_forever, started))
            await asyncio.to_thread(started.wait, 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        # the trio task's finally ran: wait for it via the trio side, bounded
        fut = bridge.submit(_wait_event, res.cancelled)
        assert fut.result(timeout=10) is True
    finally:
        bridge.stop()


async def _wait_event(res: Resource, ev: trio.Event) -> bool:
    with trio.fail_after(10):
        await ev.wait()
    return True


def test_stop_cancels_running_tasks_and_refuses_new_ones():
    import threading

    res = Resource()
    bridge = make_bridge(res)
    bridge.start()
    started = threading.Event()
    fut = bridge.submit(_forever, started)
    assert started.wait(10)
    bridge.stop()
    assert res.closed
    with pytest.raises(BridgeError):
        fut.result(timeout=5)
    with pytest.raises(BridgeError):
        bridge.submit(_add, 1, 2)


def test_startup_failure_is_reported():
    @contextlib.asynccontextmanager
    async def broken():
        raise OSError("cannot listen")
        yield  # pragma: no cover

    bridge = TrioBridge(broken)
    with pytest.raises(BridgeError, match="cannot listen"):
        bridge.start()
    bridge.stop()
