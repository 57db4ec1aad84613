"""From the scenario's announcements to DHT store operations, exactly as Petals writes them (PROTOCOL.md §6).

* Block keys ``"<dht_prefix>.<block>"``, subkey = the server's base58 PeerID, value = msgpack of the
  ServerInfo 3-tuple ``(state, throughput, extra_info)`` with all 13 extra fields in Petals' order (nil when
  unset, ``adapters`` a tuple), expiration = announcement time + ``expiration`` (30 s in the demo).
* ``"_petals.models"``: subkey = dht_prefix, value ``{"num_blocks", "repository"}``, written with every
  JOINING/ONLINE announcement (never with OFFLINE, never for prefixes starting with ``_``).
* An OFFLINE announcement carries ``next_pings = nil``; others ping the "next" servers (§6.8): a relay-only
  or absent target gets ``inf``.

Measurements change every update period (seeded noise), so throughput, cache and pings move on the dashboard.
:class:`AnnouncementSchedule` hands out what is due at each tick, touching only the servers whose next
announcement has come (cheap with thousands of servers).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dht.serializer import dumps

from ..snapshot import PETALS_OFFLINE
from .scenario import MODELS_KEY, Announcement, Scenario, ServerPlan, Span, unit_hash


@dataclass(frozen=True, slots=True)
class StoreOp:
    """One dictionary entry to store: raw key (hashed by the DHT layer), subkey object, msgpack value."""

    key: str
    subkey: str
    value: bytes
    expiration: float  # absolute DHT time (Unix seconds)


def _measurements(scenario: Scenario, plan: ServerPlan, t: float, blocks: int) -> dict[str, Any]:
    """``cache_tokens_left`` as Petals counts it: a key and a value per token per block held, so a server with
    ``cache_tokens`` per block has ``2 * cache_tokens * blocks`` when idle (here 20-100 % of it is free)."""
    r = scenario.measurement_noise(plan, t)
    throughput = round(plan.throughput * r.uniform(0.8, 1.2), 3)
    return {
        "throughput": float(throughput),
        "network_rps": float(round(throughput * r.uniform(1.5, 4.0), 3)),
        "forward_rps": float(round(throughput * r.uniform(2.0, 6.0), 3)),
        "inference_rps": float(round(r.uniform(50.0, 800.0), 3)),
        "cache_tokens_left": int(2 * plan.cache_tokens * max(blocks, 1) * r.uniform(0.2, 1.0)),
    }


def _pair_rtt(scenario: Scenario, a: ServerPlan, b: ServerPlan, t: float) -> float:
    """A stable base RTT per pair (5–120 ms) with ±20 % jitter per period."""
    seed, period = scenario.params.seed, math.floor(t / scenario.params.update_period)
    base = 0.005 + 0.115 * unit_hash(seed, "rtt", min(a.index, b.index), max(a.index, b.index))
    jitter = 0.8 + 0.4 * unit_hash(seed, "jitter", a.index, b.index, period)
    return float(round(base * jitter, 6))


def next_pings(scenario: Scenario, plan: ServerPlan, span: Span, t: float) -> dict[str, float]:
    """RTTs to the "next" servers; ``inf`` for relay-only targets (client-mode DHT, §6.8) and absent ones."""
    pings: dict[str, float] = {}
    for other in scenario.next_servers(plan, span, t):
        if other.using_relay or scenario.status_at(other, t).status == "absent":
            pings[other.peer_id] = math.inf
        else:
            pings[other.peer_id] = _pair_rtt(scenario, plan, other, t)
    return pings


def server_info_tuple(scenario: Scenario, ann: Announcement) -> tuple[int, float, dict[str, Any]]:
    """The ``ServerInfo.to_tuple()`` a Petals server would announce for ``ann``."""
    plan = scenario.servers[ann.server]
    m = _measurements(scenario, plan, ann.t, ann.span[1] - ann.span[0])
    extra = {
        "start_block": ann.span[0],
        "end_block": ann.span[1],
        "public_name": plan.public_name,
        "version": plan.version,
        "network_rps": m["network_rps"],
        "forward_rps": m["forward_rps"],
        "inference_rps": m["inference_rps"],
        "adapters": tuple(plan.adapters),
        "torch_dtype": plan.torch_dtype,
        "quant_type": plan.quant_type,
        "using_relay": plan.using_relay,
        "cache_tokens_left": m["cache_tokens_left"],
        "next_pings": None if ann.state == PETALS_OFFLINE else next_pings(scenario, plan, ann.span, ann.t),
    }
    return (ann.state, m["throughput"], extra)


def model_info_value(scenario: Scenario, dht_prefix: str) -> bytes:
    model = scenario.model(dht_prefix)
    return dumps({"num_blocks": model.num_blocks, "repository": model.repository})


def store_ops(scenario: Scenario, announcements: Iterable[Announcement], wall_start: float) -> list[StoreOp]:
    """Store operations for ``announcements`` (scenario time ``t`` ↦ DHT time ``wall_start + t``).

    Within one batch, a later operation on the same (key, subkey) replaces an earlier one: a mover's OFFLINE
    and JOINING at the same instant on a shared block must leave JOINING (the DHT would reject the second store
    with an equal expiration), and ``_petals.models`` is written once per prefix with the newest expiration.
    """
    expiration = scenario.params.expiration
    ops: dict[tuple[str, str], StoreOp] = {}
    for ann in announcements:
        plan = scenario.servers[ann.server]
        exp = wall_start + ann.t + expiration
        value = dumps(server_info_tuple(scenario, ann))
        model = scenario.model(plan.dht_prefix)
        for block in range(ann.span[0], ann.span[1]):
            key = model.block_uid(block)
            ops[(key, plan.peer_id)] = StoreOp(key, plan.peer_id, value, exp)
        if ann.state != PETALS_OFFLINE and not plan.dht_prefix.startswith("_"):
            previous = ops.get((MODELS_KEY, plan.dht_prefix))
            if previous is None or previous.expiration <= exp:
                ops[(MODELS_KEY, plan.dht_prefix)] = StoreOp(
                    MODELS_KEY, plan.dht_prefix, model_info_value(scenario, plan.dht_prefix), exp
                )
    return list(ops.values())


class AnnouncementSchedule:
    """Hands out, tick by tick, the announcements that have come due, exactly once each.

    Keeps a heap of (next announcement time, server) so a tick only touches the servers that are due.
    """

    def __init__(self, scenario: Scenario, servers: Sequence[ServerPlan] | None = None) -> None:
        self.scenario = scenario
        self._cursor: dict[int, float] = {}
        self._heap: list[tuple[float, int]] = []
        for plan in servers if servers is not None else scenario.servers:
            self._cursor[plan.index] = -math.inf
            nxt = self._next_time(plan, -1e-9)
            if nxt is not None:
                heapq.heappush(self._heap, (nxt, plan.index))

    def _next_time(self, plan: ServerPlan, after: float) -> float | None:
        """The first announcement time of ``plan`` strictly after ``after`` (looking ahead two cycles)."""
        step = self.scenario.params.update_period
        horizon = 2 * self.scenario.params.cycle + step
        lo = after
        while lo - after < horizon:
            found = self.scenario.announcements_of(plan, lo, lo + step)
            if found:
                return found[0].t
            lo += step
        return None

    @property
    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def due(self, t: float) -> list[Announcement]:
        """Every announcement at a time in (previous call's ``t``, ``t``], ordered by time and server."""
        out: list[Announcement] = []
        while self._heap and self._heap[0][0] <= t:
            _, index = heapq.heappop(self._heap)
            plan = self.scenario.servers[index]
            start = max(self._cursor[index], -1e-9)
            out.extend(self.scenario.announcements_of(plan, start, t))
            self._cursor[index] = t
            nxt = self._next_time(plan, t)
            if nxt is not None:
                heapq.heappush(self._heap, (nxt, index))
        out.sort(key=lambda a: (a.t, a.server, a.state != PETALS_OFFLINE))
        return out
