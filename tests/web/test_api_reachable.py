"""/api/v1/is_reachable: health.petals.dev's keys, PeerID validation, the injected prober, cache, rate limit."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from web_harness import serve

from monitor.snapshot import Reachability
from monitor.web import api
from monitor.web.context import CTX
from monitor.web.settings import WebSettings

QM = "QmNqcDCBdcRjh9nQkdVsfKtTr1GtM4iKJoDKwJzxyFvTQh"


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeProber:
    def __init__(self, results: dict[str, Reachability | Exception] | None = None) -> None:
        self.results = results or {}
        self.calls: list[str] = []

    async def __call__(self, peer_id: str) -> Reachability:
        self.calls.append(peer_id)
        result = self.results.get(peer_id, Reachability(peer_id, ok=True, checked_at=1.0, latency=0.02))
        if isinstance(result, Exception):
            raise result
        return result


def _app(fx, prober, **settings):
    clock = FakeClock()
    live, store = serve(fx.path, prober=prober, monotonic=clock)
    live.app[CTX].settings = dataclasses.replace(live.app[CTX].settings, **settings)
    live.app[CTX].limiter.burst = live.app[CTX].settings.reachability_burst
    live.app[CTX].limiter.rate = live.app[CTX].settings.reachability_per_second
    return live, store, clock


def _peer(fx, k: int = 0) -> str:
    return fx.snapshots[-1].models[0].servers[k].peer_id


def test_reachable_peer_official_keys(fx):
    prober = FakeProber()
    live, store, _ = _app(fx, prober)
    try:
        reply = live.get(f"/api/v1/is_reachable/{QM}")
        body = reply.json()
        assert reply.status == 200
        assert body["success"] is True and body["message"] is None and body["your_ip"] == "127.0.0.1"
        assert body["cached"] is False and prober.calls == [QM]
        again = live.get(f"/api/v1/is_reachable/{QM}").json()
        assert again["cached"] is True and prober.calls == [QM]  # served from the short cache
    finally:
        live.close()
        store.close()


def test_unreachable_joining_and_failing_probes(fx):
    down, joining, boom = _peer(fx, 0), _peer(fx, 1), _peer(fx, 2)
    prober = FakeProber(
        {
            down: Reachability(down, ok=False, checked_at=1.0, error="failed to connect: timed out"),
            joining: Reachability(joining, ok=False, checked_at=1.0, joining=True, error="protocols not supported"),
            boom: RuntimeError("secret internals"),
        }
    )
    live, store, _ = _app(fx, prober, reachability_burst=10)
    try:
        body = live.get(f"/api/v1/is_reachable/{down}").json()
        assert body["success"] is False and body["message"] == "failed to connect: timed out"
        body = live.get(f"/api/v1/is_reachable/{joining}").json()
        assert body["success"] is True and body["joining"] is True  # up, just not serving yet
        body = live.get(f"/api/v1/is_reachable/{boom}").json()
        assert body["success"] is False and "secret" not in body["message"]
        assert body["message"] == "probe failed (RuntimeError)"
    finally:
        live.close()
        store.close()


def test_probe_timeout(fx):
    class Hanging:
        async def __call__(self, peer_id):
            await asyncio.Event().wait()

    live, store, _ = _app(fx, Hanging(), reachability_timeout=0.05)
    try:
        body = live.get(f"/api/v1/is_reachable/{QM}").json()
        assert body == {"success": False, "message": "Failed to connect in 0.05 sec", "your_ip": "127.0.0.1"} | {
            "cached": False,
            "vantage": "main",
            "recorded": None,
        }
    finally:
        live.close()
        store.close()


@pytest.mark.parametrize("bad", ["not-a-peer", "0OIl", "Qm", QM[:-1], QM + "x", "12D3KooW", "%3Cscript%3E", "x" * 300])
def test_malformed_peer_ids_are_400_and_never_probed(fx, bad):
    prober = FakeProber()
    live, store, _ = _app(fx, prober)
    try:
        reply = live.get(f"/api/v1/is_reachable/{bad}")
        assert reply.status == 400
        body = reply.json()
        assert body["success"] is False and "invalid peer id" in body["message"] and body["your_ip"]
        assert prober.calls == []
    finally:
        live.close()
        store.close()


def test_without_a_prober_the_endpoint_says_so(fx):
    live, store = serve(fx.path)
    try:
        reply = live.get(f"/api/v1/is_reachable/{QM}")
        assert reply.status == 503 and reply.json()["success"] is False
    finally:
        live.close()
        store.close()


def test_rate_limit_per_client_with_retry_after_and_refill(fx):
    prober = FakeProber()
    live, store, clock = _app(fx, prober, reachability_burst=2, reachability_per_second=0.5)
    live.app[CTX].reach_cache.ttl = 0  # every call probes
    try:
        peers = [_peer(fx, k) for k in range(4)]
        assert [live.get(f"/api/v1/is_reachable/{p}").status for p in peers[:2]] == [200, 200]
        limited = live.get(f"/api/v1/is_reachable/{peers[2]}")
        assert limited.status == 429 and limited.headers["Retry-After"] == "2"
        assert limited.json()["success"] is False
        assert len(prober.calls) == 2
        clock.t += 2.0  # one token back
        assert live.get(f"/api/v1/is_reachable/{peers[3]}").status == 200
    finally:
        live.close()
        store.close()


def test_concurrent_checks_of_one_peer_share_one_probe(fx):
    gate_holder: dict[str, asyncio.Event] = {}
    calls = []

    async def gated(peer_id: str) -> Reachability:
        calls.append(peer_id)
        await gate_holder["gate"].wait()
        return Reachability(peer_id, ok=True, checked_at=1.0)

    from monitor.web import create_app

    async def main():
        gate_holder["gate"] = asyncio.Event()

        class NoStore:
            pass

        app = create_app(WebSettings(), store=NoStore(), prober=gated)
        ctx = app[CTX]
        tasks = [asyncio.ensure_future(api._probe(ctx, QM)) for _ in range(5)]
        for _ in range(3):
            await asyncio.sleep(0)  # let every task reach the shared future (no timing involved)
        gate_holder["gate"].set()
        results = await asyncio.gather(*tasks)
        return results, ctx

    results, ctx = asyncio.run(main())
    assert calls == [QM]
    assert all(r is not None and r.ok for r, _err in results)
    assert ctx.probes_in_flight == {}
