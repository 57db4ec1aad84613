"""Reachability probes under a caller's deadline (fake client, trio's autojump clock)."""

from __future__ import annotations

import trio

from dht.errors import CallTimeout
from dht.protocol import build_info_response
from monitor.crawler import ReachabilityCache, probe

FAST, SLOW = "fast-peer", "slow-peer"


class FakeClient:
    rpcs = 0
    host = None  # no peerstore: no address recorded

    async def rpc_info(self, peer_id: str, *, timeout: float):
        if peer_id == FAST:
            await trio.sleep(0.1)
            return build_info_response({"version": "2.3.0", "dht_client_mode": False}), 0.1
        await trio.sleep(timeout)  # a silent peer: the real client's deadline ends the call
        raise CallTimeout(f"rpc_info to {peer_id}: no answer within {timeout} s")


async def test_a_deadline_keeps_the_probes_that_finished(autojump_clock):
    results: dict = {}
    with trio.move_on_after(1.0):
        await probe(FakeClient(), [FAST, SLOW], timeout=30, concurrency=4, cache=ReachabilityCache(60), into=results)
    assert set(results) == {FAST}
    assert results[FAST].ok and results[FAST].version == "2.3.0"


async def test_a_probe_past_its_own_timeout_is_unreachable(autojump_clock):
    results = await probe(FakeClient(), [FAST, SLOW], timeout=2, concurrency=4, cache=ReachabilityCache(60))
    assert results[FAST].ok
    assert not results[SLOW].ok and "Failed to connect in 2 sec" in results[SLOW].error
