"""One long-lived trio loop in its own thread, awaited from asyncio (the web and the scheduler).

The DHT lives on trio (py-libp2p), the web on asyncio (aiohttp). Rather than mixing loops, the process runs a
single trio thread that owns a resource (the libp2p host) for its whole lifetime; asyncio code hands it
coroutine functions and awaits the result. A cancelled asyncio await cancels the trio task too, so nothing is
left dangling, and stopping the bridge closes the resource inside trio, where it was opened.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeVar

import trio

log = logging.getLogger(__name__)

R = TypeVar("R")
T = TypeVar("T")

ResourceFactory = Callable[[], AbstractAsyncContextManager[T]]


async def await_call(fut: concurrent.futures.Future[R], cancel: Callable[[concurrent.futures.Future], None]) -> R:
    """Await a bridge call's future from asyncio; a cancelled await also cancels the call on the other side."""
    try:
        return await asyncio.wrap_future(fut)
    except asyncio.CancelledError:
        cancel(fut)
        raise


class BridgeError(RuntimeError):
    """The trio side is not running (not started, failed to start, or stopped)."""


@contextlib.asynccontextmanager
async def _no_resource():
    yield None


class TrioBridge(Generic[T]):
    """Run ``resource_factory()`` (an async context manager) in a trio thread and call into it from asyncio.

    Functions passed to :meth:`submit` / :meth:`run` are trio coroutine functions called as ``fn(resource, *args)``.
    """

    def __init__(self, resource_factory: ResourceFactory[T] | None = None, *, name: str = "trio-bridge") -> None:
        self._factory = resource_factory or _no_resource  # type: ignore[assignment]
        self._name = name
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._send: trio.MemorySendChannel | None = None
        self._startup_error: BaseException | None = None
        self._stopped = threading.Event()
        self._scopes: dict[concurrent.futures.Future, trio.CancelScope] = {}  # touched only on the trio thread

    # ---- lifecycle (called from any thread)

    def start(self, timeout: float = 30.0) -> None:
        """Start the trio thread and wait until the resource is open (or raise what opening it raised)."""
        if self._thread is not None:
            raise BridgeError("bridge already started")
        self._thread = threading.Thread(target=self._thread_main, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise BridgeError(f"trio side did not start within {timeout} s")
        if self._startup_error is not None:
            raise BridgeError(f"trio side failed to start: {self._startup_error!r}") from self._startup_error

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel running tasks, close the resource, join the thread. Safe to call twice."""
        if self._thread is None:
            return
        send, token = self._send, self._token
        if send is not None and token is not None and not self._stopped.is_set():
            with contextlib.suppress(trio.RunFinishedError, RuntimeError):
                trio.from_thread.run_sync(send.close, trio_token=token)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("trio bridge thread did not stop within %.1f s", timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._ready.is_set() and self._startup_error is None and not self._stopped.is_set()

    # ---- calls

    def submit(self, fn: Callable[..., Awaitable[R]], *args: Any) -> concurrent.futures.Future[R]:
        """Schedule ``fn(resource, *args)`` on the trio loop; the returned future can be cancelled."""
        if not self.running or self._token is None or self._send is None:
            raise BridgeError("trio bridge is not running")
        fut: concurrent.futures.Future[R] = concurrent.futures.Future()
        try:
            trio.from_thread.run_sync(self._send.send_nowait, (fn, args, fut), trio_token=self._token)
        except (trio.RunFinishedError, trio.ClosedResourceError, trio.BrokenResourceError) as e:
            raise BridgeError("trio bridge is stopping") from e
        return fut

    async def run(self, fn: Callable[..., Awaitable[R]], *args: Any) -> R:
        """Await ``fn(resource, *args)`` from asyncio; cancelling this await cancels the trio task."""
        return await await_call(self.submit(fn, *args), self.cancel)

    def cancel(self, fut: concurrent.futures.Future) -> None:
        """Cancel the trio task behind ``fut`` (a running concurrent future cannot cancel itself)."""
        if not fut.cancel() and self._token is not None:
            with contextlib.suppress(trio.RunFinishedError, RuntimeError):
                self._token.run_sync_soon(self._cancel_in_trio, fut)

    def _cancel_in_trio(self, fut: concurrent.futures.Future) -> None:
        scope = self._scopes.get(fut)
        if scope is not None:
            scope.cancel()

    # ---- the trio side

    def _thread_main(self) -> None:
        try:
            trio.run(self._trio_main)
        except BaseException as e:  # startup failure is reported through start()
            if not self._ready.is_set():
                self._startup_error = e
            else:
                log.exception("trio bridge loop crashed")
        finally:
            self._stopped.set()
            self._ready.set()

    async def _trio_main(self) -> None:
        send, receive = trio.open_memory_channel[tuple](1000)
        async with self._factory() as resource, trio.open_nursery() as nursery:
            self._token = trio.lowlevel.current_trio_token()
            self._send = send
            self._ready.set()
            async with receive:
                async for fn, args, fut in receive:
                    if fut.set_running_or_notify_cancel():
                        nursery.start_soon(self._run_one, resource, fn, args, fut)
            nursery.cancel_scope.cancel()

    async def _run_one(self, resource: T, fn: Callable[..., Awaitable[Any]], args: tuple, fut) -> None:
        with trio.CancelScope() as scope:
            self._scopes[fut] = scope
            try:
                result = await fn(resource, *args)
            except BaseException as e:
                if isinstance(e, trio.Cancelled):
                    fut.set_exception(BridgeError("cancelled"))
                    raise
                fut.set_exception(e)
                if isinstance(e, KeyboardInterrupt | SystemExit):
                    raise
                return
            else:
                fut.set_result(result)
            finally:
                del self._scopes[fut]
