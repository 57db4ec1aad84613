"""The DHT worker process (monitor.crawl.worker.ProcessBridge): results, errors, cancellation, crashes, clean stop.

Each test spawns a real child interpreter (as the monitor does); the calls it runs live in tests/worker_helpers.py.
"""

from __future__ import annotations

import asyncio
import functools
import os

import pytest

from monitor.crawl.bridge import BridgeError
from monitor.crawl.worker import ProcessBridge
from tests import worker_helpers as h


@pytest.fixture
def bridge(tmp_path):
    marker = tmp_path / "resource"
    b = ProcessBridge(functools.partial(h.resource, str(marker)), name="test-worker")
    b.start(timeout=60)
    b.marker = marker
    yield b
    b.stop()


def test_results_and_errors_cross_the_process_boundary(bridge):
    assert bridge.running and bridge.marker.read_text() == "open"

    async def main():
        assert await bridge.run(h.add, 2, 3) == 5
        assert await bridge.run(h.pid) == bridge.pid != os.getpid()
        with pytest.raises(ValueError, match="boom"):
            await bridge.run(h.fail)
        with pytest.raises(BridgeError, match="Unpicklable: needs two arguments"):
            await bridge.run(h.fail_unpicklable)  # still ends, as a BridgeError naming it
        assert await asyncio.gather(*(bridge.run(h.add, i, i) for i in range(50))) == [2 * i for i in range(50)]

    asyncio.run(main())


def test_stop_closes_the_resource_in_the_child_and_refuses_new_calls(bridge):
    pending = bridge.submit(h.forever)
    bridge.stop()
    assert bridge.marker.read_text() == "closed"  # the child left its `async with` in order
    with pytest.raises(BridgeError):
        pending.result(timeout=10)
    with pytest.raises(BridgeError, match="stopping"):
        bridge.submit(h.add, 1, 2)
    assert not bridge.running


def test_only_stop_reaps_the_stopping_child(bridge, monkeypatch, caplog):
    """The reply thread and stop() both used to join the exiting child: two threads reaping one pid race, the
    loser's ECHILD reads as "still running", and stop() warned and killed a pid that was no longer ours."""
    import threading

    child, reapers = bridge.pid, []
    waitpid = os.waitpid

    def spy(pid, options):
        if pid == child:
            reapers.append(threading.current_thread().name)
        return waitpid(pid, options)

    monkeypatch.setattr(os, "waitpid", spy)
    bridge.stop()
    assert reapers and set(reapers) == {threading.current_thread().name}
    assert "did not stop" not in caplog.text and not bridge.running


def test_cancelling_the_await_cancels_the_task_in_the_child(bridge):
    async def main():
        task = asyncio.ensure_future(bridge.run(h.forever))
        # add is sent first (the task above has not run yet); forever follows, and its cancel comes right after
        # it: the child may read the cancel before forever's task first ran (see the test below)
        assert await bridge.run(h.add, 0, 0) == 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await bridge.run(h.was_cancelled) is True  # its finally ran in the child

    asyncio.run(main())


def test_a_crashed_child_fails_its_calls_and_is_replaced(bridge):
    first = bridge.pid
    with pytest.raises(BridgeError, match="exited with code 3"):
        bridge.submit(h.die).result(timeout=30)

    async def main():
        return await bridge.run(h.pid)

    assert asyncio.run(main()) not in (first, None)
    assert bridge.restarts == 1 and bridge.running


def test_startup_failure_is_reported(tmp_path):
    b = ProcessBridge(functools.partial(h.broken, str(tmp_path / "x")))
    with pytest.raises(BridgeError, match="cannot listen"):
        b.start(timeout=60)
    assert not b.running
    b.stop()


def test_unpicklable_call_is_refused_before_it_reaches_the_child(bridge):
    with pytest.raises(BridgeError, match="could not send"):
        bridge.submit(lambda res: None)
    assert asyncio.run(bridge.run(h.add, 1, 1)) == 2  # the pipe is still in sync


def test_a_service_managers_sigterm_leaves_the_stopping_to_the_parent(bridge):
    import signal

    os.kill(bridge.pid, signal.SIGTERM)  # what systemd sends to the whole group on stop
    assert asyncio.run(bridge.run(h.add, 2, 2)) == 4  # still serving: the parent decides when it ends
    bridge.stop()
    assert bridge.marker.read_text() == "closed" and bridge.restarts == 0


def test_the_child_freezes_its_start_up_heap(bridge):
    """Its crawls' full collections must not walk the imports and the host (monitor.heap)."""
    assert asyncio.run(bridge.run(h.is_frozen)) is True


def test_a_cancel_read_before_its_call_started_is_not_dropped(tmp_path, monkeypatch):
    """The parent sends "call" and "cancel" back to back; the child may read the cancel before the call's task
    first ran. The child's loop runs here on a trio thread over a real pipe, with every pair already queued, so
    each cancel is read right after its call: every call must end "cancelled" (before the fix, about half of
    them were never cancelled and never answered)."""
    import multiprocessing
    import threading

    import trio

    from monitor.crawl import worker

    monkeypatch.setattr(worker, "freeze_startup_heap", lambda: None)  # not in pytest's own process
    parent, child = multiprocessing.Pipe()
    calls = 20
    for call_id in range(1, calls + 1):
        parent.send(("call", call_id, h.forever, ()))
        parent.send(("cancel", call_id))
    factory = functools.partial(h.resource, str(tmp_path / "resource"))
    thread = threading.Thread(target=trio.run, args=(worker._child_trio, child, factory), daemon=True)
    thread.start()
    try:
        assert parent.poll(30) and parent.recv() == ("ready",)
        replies = {}
        for _ in range(calls):
            assert parent.poll(5), f"{calls - len(replies)} of {calls} cancelled calls were never cancelled"
            _, call_id, ok, value = parent.recv()
            replies[call_id] = (ok, repr(value))
        assert replies == {i: (False, repr(BridgeError("cancelled"))) for i in range(1, calls + 1)}
    finally:
        parent.send(("stop",))
        thread.join(10)
    assert not thread.is_alive()
