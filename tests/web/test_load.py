"""200 concurrent loopback clients against pages and API while crawls are being written: correctness under load.

The web runs in a process of its own (``bench._load_server``, the real ``create_app`` over a store file), so its
RSS is its own. This process writes a new crawl every ~0.3 s from a writer thread (as ``crawl --once`` from
cron would, through a second connection) while 200 clients, each on its own connection, cycle through pages and
their JSON twins. Asserted: no 5xx, no connection error, every reply a 200; RSS growth bounded; new crawls
visible during the run; ``is_reachable``'s per-IP budget (burst 5) answers 429 with Retry-After to a client over
it while another client address is unaffected. Nothing about speed: that is ``bench/web_load.py``'s job.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import pytest
from factories import T0, make_peer_id, make_snapshot
from web_harness import SWARM, build_store

from monitor.store.sqlite import StoreWriter

REPO = Path(__file__).resolve().parents[2]
CLIENTS = 200
DURATION = 8.0  # seconds of load
WRITE_EVERY = 0.3
RSS_GROWTH_BOUND_KB = 200 * 1024
START_TIMEOUT = 60.0
LIMITED, UNLIMITED = "127.0.0.2", "127.0.0.3"  # other loopback sources: is_reachable budgets are per client IP


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _read_ready(proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    buffer = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            assert time.monotonic() < deadline, "server did not start"
            assert proc.poll() is None, f"server exited {proc.returncode}"
            if sel.select(0.2):
                chunk = os.read(proc.stdout.fileno(), 4096)
                assert chunk, "server closed its stdout"
                buffer += chunk
    line = buffer.split(b"\n", 1)[0].decode()
    assert line.startswith("READY "), line
    return line.split()[1]


@pytest.fixture
def server(tmp_path):
    fx = build_store(tmp_path / "monitor.db")
    config = tmp_path / "server.json"
    config.write_text(json.dumps({"db": str(fx.path), "fake_prober": True}))
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._load_server", str(config)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        yield fx, proc, _read_ready(proc, START_TIMEOUT)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
    assert b"Traceback" not in (tmp_path / "server.log").read_bytes()


def _writer(path: Path, stop: threading.Event, written: list[int]) -> None:
    """New crawls of SWARM (with churn), one every WRITE_EVERY s, until ``stop``; bounded in count."""
    with StoreWriter(path) as writer:
        for k in range(1, 200):
            if stop.wait(WRITE_EVERY):
                return
            snap = make_snapshot(SWARM, t=T0 + 3600 + k, seed=3, step=k, hostile=True)
            written.append(writer.write_snapshot(snap).id)


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str], bytes]:
    async with session.get(url, allow_redirects=False) as r:
        return r.status, dict(r.headers), await r.read()


async def _load(base: str, paths: list[str], deadline: float) -> tuple[dict[int, int], dict[str, int], set[int]]:
    statuses: dict[int, int] = {}
    errors: dict[str, int] = {}
    crawl_ids: set[int] = set()
    timeout = aiohttp.ClientTimeout(total=60)

    async def client(i: int) -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=timeout) as session:
            while time.monotonic() < deadline:
                path = paths[i % len(paths)]
                i += 1
                try:
                    status, _headers, body = await _get(session, base + path)
                except (aiohttp.ClientError, TimeoutError, OSError) as e:
                    errors[f"{path}: {type(e).__name__}"] = errors.get(f"{path}: {type(e).__name__}", 0) + 1
                    continue
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200 and path.startswith("/api/v1/state"):
                    crawl_ids.add(json.loads(body)["crawl_id"])

    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    return statuses, errors, crawl_ids


async def _reachability(base: str, source: str, peers: list[str]) -> list[tuple[int, dict[str, str], dict]]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        out = []
        for peer in peers:
            status, headers, body = await _get(session, f"{base}/api/v1/is_reachable/{peer}")
            out.append((status, headers, json.loads(body)))
        return out


def test_200_clients_while_crawls_are_written(server):
    fx, proc, base = server
    rng = random.Random(7)
    last = fx.snapshots[-1]
    model = last.models[0].model.dht_prefix
    peer = last.models[0].servers[0].peer_id
    paths = [
        "/",
        f"/api/v1/state?swarm={SWARM}",
        "/api/v1/swarms",
        f"/models/{model}?swarm={SWARM}",
        f"/api/v1/models/{model}?swarm={SWARM}",
        f"/servers/{peer}",
        "/crawls",
        "/api/v1/crawls?limit=20",
        f"/api/v1/crawls/{fx.crawl_ids[-1]}",
        "/healthz",
        "/metrics",
        "/static/css/monitor.css",
    ]

    async def everything():
        async with aiohttp.ClientSession() as warm:  # first renders, then the baseline RSS
            for path in paths:
                assert (await _get(warm, base + path))[0] == 200, path
        rss_before = _rss_kb(proc.pid)
        deadline = time.monotonic() + DURATION
        stop = threading.Event()
        written: list[int] = []
        thread = threading.Thread(target=_writer, args=(fx.path, stop, written), daemon=True)
        thread.start()
        try:
            limited_peers = [make_peer_id(rng) for _ in range(8)]
            other_peers = [make_peer_id(rng) for _ in range(4)] + limited_peers[:1]

            async def checks():  # one address over its budget, then another one, both under the load
                return await _reachability(base, LIMITED, limited_peers), await _reachability(
                    base, UNLIMITED, other_peers
                )

            load, (limited, unlimited) = await asyncio.gather(_load(base, paths, deadline), checks())
        finally:
            stop.set()
            thread.join(30)
        return rss_before, _rss_kb(proc.pid), load, limited, unlimited, written

    rss_before, rss_after, (statuses, errors, crawl_ids), limited, unlimited, written = asyncio.run(everything())

    assert not errors, errors
    assert set(statuses) == {200}, statuses
    assert sum(statuses.values()) >= CLIENTS  # every client got answers, not just connected
    assert len(written) >= 3, "the writer thread should have stored crawls during the load"
    assert len(crawl_ids) >= 2 and max(crawl_ids) > fx.crawl_ids[-1], "new crawls must show while under load"
    assert rss_after - rss_before < RSS_GROWTH_BOUND_KB, (rss_before, rss_after)

    # the budget: 5 checks at once, then 429 + Retry-After (0.2 tokens/s: about 5 s to the next one)
    assert [s for s, _h, _b in limited[:5]] == [200] * 5, limited
    for status, headers, body in limited[5:]:
        assert status == 429 and body["success"] is False and body["your_ip"] == LIMITED
        assert 1 <= int(headers["Retry-After"]) <= 10
    # another address is not affected, and a peer just checked comes from the cache, without spending budget
    assert [s for s, _h, _b in unlimited] == [200] * 5, unlimited
    assert all(b["success"] and b["your_ip"] == UNLIMITED for _s, _h, b in unlimited)
    assert unlimited[-1][2]["cached"] is True
