"""The JSON shape of a model's route (``/api/v1/models/{dht_prefix}/route`` and the model page's route panel).

Pure: one :class:`~monitor.rules.route.Route` in, one dictionary out. The page renders this same dictionary, so
the panel and the API cannot disagree.
"""

from __future__ import annotations

from typing import Any

from .report import finite
from .rules.route import (
    ALLOC_DELAY,
    DEFAULT_DELAY,
    DEFAULT_INFERENCE_RPS,
    MAX_DELAY,
    OVERHEAD_DELAY,
    Hop,
    Route,
    Skipped,
    usable_rps,
)

METHOD = (
    "Petals 2.2.0's min-latency routing (the inference client's): per hop, half the announced RTT from the previous "
    "server (next_pings; capped at 5 s, 0.15 s when unknown) plus 18 ms overhead, then 1/inference_rps per block "
    "(300 when unknown); 10 s more to enter a server short of cache for the session (its span's length x 2 x "
    "session_tokens); 0.15 s each way between the client and the chain, since the client's own pings are not "
    "known here. Steps per second = 1 / the chain's total."
)


def hop_document(hop: Hop) -> dict[str, Any]:
    return {
        "peer_id": hop.peer_id,
        "start": hop.start,
        "end": hop.end,
        "inference_rps": finite(hop.inference_rps),
        "network_seconds": hop.network,
        "compute_seconds": hop.compute,
        "seconds": hop.seconds,
        "rtt": "announced" if hop.rtt_known else "assumed",
        "relay": hop.relay,
        "penalty_seconds": hop.penalty,
    }


def _reasons(entries: tuple[Skipped, ...]) -> list[dict[str, str]]:
    return [{"peer_id": s.peer_id, "reason": s.reason, "detail": s.detail} for s in entries]


def route_document(route: Route) -> dict[str, Any]:
    bottleneck = route.bottleneck
    return {
        "num_blocks": route.num_blocks,
        "runnable": route.runnable,
        "chain": [hop_document(hop) for hop in route.chain],
        "steps_per_second": route.steps_per_second,
        "seconds_per_step": route.seconds,
        "estimate": {
            "method": METHOD,
            "session_tokens": route.session_tokens,
            "client_delay_seconds": DEFAULT_DELAY,
            "overhead_seconds": OVERHEAD_DELAY,
            "alloc_delay_seconds": ALLOC_DELAY,
            "max_delay_seconds": MAX_DELAY,
            "default_inference_rps": DEFAULT_INFERENCE_RPS,
            "hops_with_announced_rtt": sum(1 for hop in route.chain[1:] if hop.rtt_known),
            "hops_with_assumed_rtt": sum(1 for hop in route.chain[1:] if not hop.rtt_known),
            "hops_with_assumed_rps": sum(1 for hop in route.chain if usable_rps(hop.inference_rps) is None),
        },
        "bottleneck": None
        if bottleneck is None or not route.seconds
        else {**hop_document(bottleneck), "share": bottleneck.seconds / route.seconds},
        "disjoint_chains": route.disjoint_chains,
        "failures_survived": max(route.disjoint_chains - 1, 0),
        "missing_blocks": list(route.missing),
        "missing_ranges": [list(run) for run in route.missing_ranges],
        "usable": list(route.usable),
        "skipped": _reasons(route.skipped),
        "penalized": _reasons(route.penalized),
    }
