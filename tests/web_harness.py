"""Test harness for the web app: a real store file filled with factory snapshots, and the app served on a
background asyncio loop (pytest-trio owns pytest's loop, so aiohttp runs in its own thread), with a blocking
client. Owned by the web tests; no dependency beyond aiohttp's test utilities.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from factories import T0, make_snapshot, make_snapshots

from monitor.snapshot import Snapshot
from monitor.store.sqlite import Store, StoreWriter

SWARM = "test"
OTHER_SWARM = "private"
INTERVAL = 60.0
N_CRAWLS = 6
MIXTRAL = "mistralai/Mixtral-8x22B-Instruct-v0-1"  # a dht_prefix with a slash, as the real Mixtral has
NOW = T0 + (N_CRAWLS - 1) * INTERVAL + 30  # just after the last good crawl

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
JS_URL = "javascript:alert(1)"


def _with_hostile_first_row(snap: Snapshot) -> Snapshot:
    """Make sure a shown row carries the hostile strings (factories draw them at random)."""
    report = snap.models[0]
    row = report.servers[0]
    info = dataclasses.replace(
        row.info, public_name=SCRIPT, version=f"{SCRIPT}2.3", adapters=(JS_URL, IMG, "artek0chumak/guanaco-65b")
    )
    report.servers[0] = dataclasses.replace(row, info=info, show_public_name=True)
    second = report.servers[1]
    report.servers[1] = dataclasses.replace(
        second, info=dataclasses.replace(second.info, public_name=JS_URL), show_public_name=True
    )
    return snap


def _slash_prefix(snap: Snapshot) -> Snapshot:
    """Model 2 gets Mixtral's real dht_prefix, which contains a slash."""
    report = snap.models[2]
    report.model = dataclasses.replace(report.model, dht_prefix=MIXTRAL)
    return snap


def snapshots() -> list[Snapshot]:
    snaps = make_snapshots(SWARM, count=N_CRAWLS, interval=INTERVAL, seed=3)
    return [_slash_prefix(_with_hostile_first_row(s)) for s in snaps]


@dataclass
class Fixture:
    path: Path
    crawl_ids: list[int]  # the good crawls of SWARM, oldest first
    failed_id: int  # a failed crawl of SWARM after the good ones
    other_ids: list[int]  # crawls of OTHER_SWARM
    snapshots: list[Snapshot]


def build_store(path: Path) -> Fixture:
    """A store file: N_CRAWLS good crawls of SWARM, then a failed one; one crawl of a second swarm."""
    snaps = snapshots()
    ids = []
    with StoreWriter(path) as writer:
        for snap in snaps:
            ids.append(writer.write_snapshot(snap).id)
        failed = writer.begin_crawl(SWARM, NOW - 10)
        writer.fail_crawl(failed, f"bootstrap unreachable {SCRIPT}", finished_at=NOW - 5)
        other = make_snapshot(OTHER_SWARM, t=NOW - 100, seed=9, n_models=1, hostile=False)
        other_ids = [writer.write_snapshot(other).id]
    return Fixture(path, ids, failed, other_ids, snaps)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


class LiveApp:
    """An aiohttp app served on 127.0.0.1 by a loop in a background thread; ``get`` blocks until the reply."""

    def __init__(self, make_app: Callable[[], Any]) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="web-test-loop", daemon=True)
        self._thread.start()

        async def start() -> TestClient:
            client = TestClient(TestServer(make_app(), host="127.0.0.1"))
            await client.start_server()
            return client

        self.client = self._run(start())
        self.app = self.client.server.app

    def _run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def get(self, path: str, *, headers: dict[str, str] | None = None, method: str = "GET", **kw) -> Reply:
        async def fetch() -> Reply:
            async with self.client.request(method, path, headers=headers, allow_redirects=False, **kw) as r:
                return Reply(r.status, dict(r.headers), await r.read())

        return self._run(fetch())

    def gather(self, paths: list[str]) -> list[Reply]:
        """Many GETs at once (concurrency tests)."""

        async def one(path: str) -> Reply:
            async with self.client.get(path) as r:
                return Reply(r.status, dict(r.headers), await r.read())

        async def all_of() -> list[Reply]:
            return list(await asyncio.gather(*(one(p) for p in paths)))

        return self._run(all_of())

    def close(self) -> None:
        try:
            self._run(self.client.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


def open_store(path: Path) -> Store:
    return Store(path, create=False)


@contextlib.contextmanager
def served(path: Path, **kwargs: Any) -> Iterator[LiveApp]:
    """:func:`serve` for a ``with`` block: the app and its store are closed on the way out."""
    live, store = serve(path, **kwargs)
    try:
        yield live
    finally:
        live.close()
        store.close()


def serve(
    path: Path, *, prober=None, clock: Callable[[], float] = lambda: NOW, config: Any = None, **kwargs: Any
) -> tuple[LiveApp, Store]:
    """The app over a read-only store of ``path`` (``config``: a ``Config``, default settings without); close both
    when done (``LiveApp.close``, ``Store.close``)."""
    from monitor.config import Config
    from monitor.web import create_app

    store = open_store(path)
    live = LiveApp(lambda: create_app(config or Config(), store=store, prober=prober, clock=clock, **kwargs))
    return live, store
