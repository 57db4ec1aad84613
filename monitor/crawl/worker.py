"""The DHT in a child process: the same calls as :class:`~monitor.crawl.bridge.TrioBridge`, on the other core.

A crawl is CPU work in Python (decoding replies, Noise, yamux, judging). In the web's process it competes with
the event loop for the GIL: on 2 cores, ``/api/v1/state`` fell from ~2000 to ~600 req/s and its p99 rose from
32 to 170 ms while crawls ran. Here the libp2p host, the crawls and the judging live in one spawned child with
its own trio loop; the web's process only pickles a request and unpickles a :class:`~monitor.snapshot.Snapshot`.

Protocol on one ``multiprocessing`` pipe (pickles; both ends are ours):

* parent → child: ``("call", id, fn, args)``, ``("cancel", id)``, ``("stop",)``;
* child → parent: ``("ready",)`` or ``("failed", text)`` once, then ``("done", id, ok, value)`` per call.

``fn`` is a module-level trio coroutine function called as ``fn(resource, *args)``. A child that dies (killed,
out of memory) fails the calls in flight with :class:`BridgeError`; the next call starts a new child, so one
crash costs one crawl, never the monitor. The child also exits when the parent's end of the pipe closes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import trio

from ..heap import freeze_startup_heap
from .bridge import BridgeError, ResourceFactory, await_call

log = logging.getLogger(__name__)

# Crawls are background work: when the CPU is contended, pages should win. Measured on 2 cores with wrk and a
# local demo swarm competing: niceness 10 halved the event loop's p99 lag while crawling (27 -> 15 ms). Kept
# moderate (a quarter of a normal process's share under full contention) so that probes, which have 5 s
# deadlines, are not starved into false "unreachable" verdicts on a busy machine.
WORKER_NICENESS = 5
START_TIMEOUT = 60.0  # spawning an interpreter, importing py-libp2p and opening the host, on a loaded machine

R = TypeVar("R")
T = TypeVar("T")


class ProcessBridge(Generic[T]):
    """Run ``resource_factory()`` in a spawned child's trio loop and call into it from asyncio or threads.

    ``resource_factory`` and every ``fn``/``args`` must pickle (module-level functions, ``functools.partial``
    of them, plain data): the child is spawned, never forked, so it shares nothing with the web's threads.
    """

    def __init__(self, resource_factory: ResourceFactory[T], *, name: str = "dht-worker") -> None:
        self._factory = resource_factory
        self._name = name
        self._lock = threading.Lock()  # guards the fields below and the pipe's send side
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Any = None
        self._reader: threading.Thread | None = None
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._ids = itertools.count(1)
        self._stopping = False
        self.restarts = 0

    # ---- lifecycle

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Spawn the child and wait until its resource is open (or raise what opening it raised)."""
        with self._lock:
            if self._proc is not None:
                raise BridgeError("worker already started")
            self._stopping = False
            self._spawn(timeout)

    def _spawn(self, timeout: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        level = logging.getLogger().getEffectiveLevel()
        proc = ctx.Process(target=_child_main, args=(child, self._factory, level), name=self._name, daemon=True)
        proc.start()
        child.close()
        try:
            hello = parent.recv() if parent.poll(timeout) else ("failed", f"no answer within {timeout:.0f} s")
        except (EOFError, OSError) as e:
            hello = ("failed", f"exited with code {proc.exitcode} before it was ready ({type(e).__name__})")
        if hello[0] != "ready":
            _end(proc)
            parent.close()
            raise BridgeError(f"DHT worker failed to start: {hello[1]}")
        self._proc, self._conn = proc, parent
        self._reader = threading.Thread(target=self._read_replies, args=(proc, parent), name=f"{self._name}-replies")
        self._reader.daemon = True
        self._reader.start()

    def stop(self, timeout: float = 15.0) -> None:
        """Ask the child to close its resource and exit; kill it if it does not. Safe to call twice."""
        with self._lock:
            proc, conn, reader = self._proc, self._conn, self._reader
            self._stopping = True
            if proc is None:
                return
            with contextlib.suppress(OSError, ValueError):
                conn.send(("stop",))
        proc.join(timeout)
        if proc.is_alive():
            log.warning("DHT worker did not stop within %.0f s: killing it", timeout)
            _end(proc)
        if reader is not None:
            reader.join(5.0)
        with self._lock:
            self._proc = self._conn = self._reader = None
            self._fail_pending("DHT worker stopped")
        with contextlib.suppress(OSError):
            conn.close()

    @property
    def running(self) -> bool:
        with self._lock:
            return not self._stopping and self._proc is not None and not _exited(self._proc)

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    # ---- calls

    def submit(self, fn: Callable[..., Awaitable[R]], *args: Any) -> concurrent.futures.Future[R]:
        """Send ``fn(resource, *args)`` to the child; a child that died is replaced first."""
        with self._lock:
            if self._stopping:
                raise BridgeError("DHT worker is stopping")
            if self._needs_spawn():
                self._replace_dead_child()
            call_id = next(self._ids)
            fut: concurrent.futures.Future[R] = concurrent.futures.Future()
            fut.set_running_or_notify_cancel()
            self._pending[call_id] = fut
            try:
                self._conn.send(("call", call_id, fn, args))
            except (OSError, ValueError, pickle.PicklingError, AttributeError, TypeError) as e:
                del self._pending[call_id]
                raise BridgeError(f"could not send {getattr(fn, '__name__', fn)!r} to the DHT worker: {e}") from e
            fut.call_id = call_id  # type: ignore[attr-defined]
        return fut

    async def run(self, fn: Callable[..., Awaitable[R]], *args: Any) -> R:
        """Await ``fn(resource, *args)``; cancelling this await cancels the task in the child."""
        fut = await asyncio.to_thread(self.submit, fn, *args) if self._needs_spawn() else self.submit(fn, *args)
        return await await_call(fut, self.cancel)

    def cancel(self, fut: concurrent.futures.Future) -> None:
        """Cancel the child's task behind ``fut``; ``fut`` then fails with :class:`BridgeError`."""
        call_id = getattr(fut, "call_id", None)
        with self._lock:
            if call_id is None or call_id not in self._pending or self._conn is None:
                return
            with contextlib.suppress(OSError, ValueError):
                self._conn.send(("cancel", call_id))

    # ---- internals (called with self._lock held, except the reader thread)

    def _needs_spawn(self) -> bool:
        proc = self._proc
        return proc is None or _exited(proc)

    def _replace_dead_child(self) -> None:
        if self._proc is None:
            raise BridgeError("DHT worker is not running")
        self._proc.join()  # _needs_spawn saw its sentinel: it has exited, and its exit code is one waitpid away
        log.warning("DHT worker (pid %s) exited with code %s: starting a new one", self._proc.pid, self._proc.exitcode)
        with contextlib.suppress(OSError):
            self._conn.close()
        self._fail_pending(f"DHT worker exited with code {self._proc.exitcode}")
        self._proc = self._conn = self._reader = None
        self.restarts += 1
        self._spawn(START_TIMEOUT)

    def _fail_pending(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(BridgeError(why))

    def _read_replies(self, proc: Any, conn: Any) -> None:
        """The reply thread: resolves futures until the child's end closes (exit, crash or stop)."""
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            except Exception as e:  # an unpicklable reply: that call fails, the pipe is still in sync
                log.error("DHT worker sent an unreadable reply: %r", e)
                continue
            if message[0] != "done":
                continue
            _, call_id, ok, value = message
            with self._lock:
                fut = self._pending.pop(call_id, None)
            if fut is None or fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        exited = _exited(proc, 1.0)
        with self._lock:  # while stopping, stop() reaps the child: never two threads (ECHILD reads as "alive")
            if self._proc is proc and not self._stopping:
                if exited:
                    proc.join()  # its files are closed, it is about to be a zombie: waitpid returns at once
                self._fail_pending(f"DHT worker exited with code {proc.exitcode}")


def _exited(proc: Any, timeout: float = 0.0) -> bool:
    """Whether the child has exited (waiting up to ``timeout``), without reaping it: ``is_alive``, ``exitcode`` and
    ``join`` call waitpid, and two threads reaping one child race (the loser gets ECHILD, which multiprocessing
    reads as "still running"; stop() then killed a pid that was no longer ours)."""
    return bool(multiprocessing.connection.wait([proc.sentinel], timeout))


def _end(proc: Any) -> None:
    """The child ignores SIGTERM (see ``_child_main``) and had its chance to stop: kill it."""
    proc.kill()
    proc.join(5.0)


# ---------------------------------------------------------------------------------------------- the child


def _child_main(conn: Any, factory: ResourceFactory[Any], log_level: int) -> None:
    # Ctrl-C and a service manager's SIGTERM reach the whole process group: the parent stops us in order (or we
    # see its end of the pipe close), so that a crawl in flight is recorded as failed by the parent, not cut.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s [worker]: %(message)s")
    try:
        trio.run(_child_trio, conn, factory)
    finally:
        with contextlib.suppress(OSError):
            conn.close()


async def _child_trio(conn: Any, factory: ResourceFactory[Any]) -> None:
    send_lock = trio.Lock()

    async def send(message: tuple) -> None:
        try:
            data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
            if message[0] == "done" and not message[2]:
                pickle.loads(data)  # an exception class whose __init__ cannot take its args back would
        except Exception as e:  # otherwise be unreadable in the parent, and its call would never end
            error = message[3] if message[0] == "done" and not message[2] else e
            data = pickle.dumps(("done", message[1], False, BridgeError(f"{type(error).__name__}: {error}")))
        async with send_lock:  # a large snapshot blocks until the parent reads it: not on the trio loop
            await trio.to_thread.run_sync(conn.send_bytes, data)

    try:
        async with factory() as resource, trio.open_nursery() as nursery:
            freeze_startup_heap()  # the worker's crawls then never walk its imports and host (monitor.heap)
            await send(("ready",))
            # Each call's scope is made when its "call" is read, not when its task first runs: a "cancel" read
            # before the task was scheduled (the parent sends them back to back) must still find it.
            scopes: dict[int, trio.CancelScope] = {}

            async def run_one(call_id: int, scope: trio.CancelScope, fn: Callable[..., Awaitable[Any]], args: tuple):
                try:
                    with scope:  # already cancelled if its "cancel" came first: fn stops at its first checkpoint
                        try:
                            reply = ("done", call_id, True, await fn(resource, *args))
                        except Exception as e:
                            reply = ("done", call_id, False, e)
                finally:
                    del scopes[call_id]
                if scope.cancelled_caught:
                    reply = ("done", call_id, False, BridgeError("cancelled"))
                with contextlib.suppress(OSError, trio.BrokenResourceError):
                    await send(reply)

            while True:
                try:
                    await trio.lowlevel.wait_readable(conn.fileno())
                    message = conn.recv()
                except (EOFError, OSError):  # the parent is gone
                    break
                if message[0] == "call":
                    scopes[message[1]] = trio.CancelScope()
                    nursery.start_soon(run_one, message[1], scopes[message[1]], *message[2:])
                elif message[0] == "cancel" and message[1] in scopes:
                    scopes[message[1]].cancel()
                elif message[0] == "stop":
                    break
            nursery.cancel_scope.cancel()
    except Exception as e:
        with contextlib.suppress(Exception):
            await send(("failed", f"{type(e).__name__}: {e}"))
        raise


__all__ = ["ProcessBridge"]
