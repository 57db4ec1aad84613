"""The client's-eye view of a model: the chain of servers a Petals client would use now, and how fast it would be.

Petals 2.2.0's client (``RemoteSequenceManager.make_sequence(mode="min_latency")``, used for inference) builds a
graph over the ONLINE servers' announced spans and takes the cheapest path from block 0 to the last block:

* entering a server costs the network delay into it (``rtt / 2``, capped at 5 s; 0.15 s when the RTT is unknown)
  plus 18 ms of serialization overhead; the RTT between two servers is what the first one announced in its
  ``next_pings``; between the client and a server it is the client's own ping (we assume Petals' unknown default);
* each block costs ``1 / inference_rps`` (300 rps when the server announced none);
* a server once chosen is used up to the end of its span (no switching mid-span);
* a server whose ``cache_tokens_left`` cannot hold the session (``max_length * 2 * span length``, its pessimistic
  rule, with the session's own ``max_length``) is kept, but entering it costs 10 s more (``alloc_delay``).

Expected speed is ``1 / total cost`` steps per second, Petals' own "Expected speed" line. We follow the same
costs, with a dynamic program over span ends instead of Dijkstra (the graph only goes forward in blocks), and we
are stricter about whom a client can use: servers that are joining, offline, expired or unreachable from the
monitor are *skipped*, each with its reason. Servers short of cache for a session of ``session_tokens`` (``[route]
session_tokens``) are kept with Petals' penalty and listed as *penalized* with the reason: the real client still
routes through them when nothing else covers their blocks, so a model is runnable when the usable servers, the
penalized ones included, cover every block.

Servers reachable only through a libp2p relay are *not* skipped: Petals' client reaches them through the relay
(that is what Petals servers behind a NAT announce ``using_relay`` for), and on the public swarm they hold a large
share of the blocks. Their hops say ``relay`` so a reader sees which links go through one.

``disjoint_chains`` is the number of server-disjoint chains: by Menger's theorem the smallest set of servers whose
loss cuts every chain, and for intervals on a line that is the fewest usable servers over any one block (a k-fold
cover of a segment by intervals splits into k covers). So the model survives ``disjoint_chains - 1`` failures.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from ..snapshot import ModelReport, ServerRow
from .health import pings_by_target

# Petals 2.2.0's constants (petals/client/routing/sequence_manager.py)
OVERHEAD_DELAY = 0.018  # serialization overhead per hop, measured by Petals
DEFAULT_DELAY = 0.15  # network delay when the RTT is unknown
MAX_DELAY = 5.0  # an unreachable next server still gets an edge, this slow
DEFAULT_INFERENCE_RPS = 300.0
ALLOC_DELAY = 10.0  # penalty for entering a server short of cache for the session
# The session a client is assumed to open: Petals sizes the cache check to the client's max_length (the prompt plus
# the new tokens of one generate() call), not to the servers' 2048-token limit; 512 covers a typical chat turn.
SESSION_TOKENS = 512

SKIP_REASONS = ("joining", "offline", "expired", "unreachable", "empty_span")
PENALTY_REASONS = ("short_of_cache",)


@dataclass(frozen=True, slots=True)
class Hop:
    """One server of a chain, used for blocks ``[start, end)``; ``network`` is the delay into it (with the
    overhead), ``compute`` the time its blocks take; ``rtt_known``: the delay came from an announced ping."""

    peer_id: str
    start: int
    end: int
    network: float
    compute: float
    rtt_known: bool
    inference_rps: float | None
    relay: bool = False  # the server announced it is reachable only through a relay
    penalty: float = 0.0  # Petals' alloc_delay, inside ``network``: the server is short of cache for the session

    @property
    def seconds(self) -> float:
        return self.network + self.compute


@dataclass(frozen=True, slots=True)
class Skipped:
    peer_id: str
    reason: str  # one of SKIP_REASONS (not used) or PENALTY_REASONS (used, with a penalty)
    detail: str


@dataclass(frozen=True, slots=True)
class Route:
    """What a client would get. ``chain`` is empty unless ``runnable``; ``missing`` are the blocks no usable
    server covers; ``seconds`` the cost of one inference step along the chain (client delays included)."""

    num_blocks: int
    runnable: bool
    chain: tuple[Hop, ...]
    seconds: float | None
    disjoint_chains: int
    usable: tuple[str, ...]
    skipped: tuple[Skipped, ...]
    missing: tuple[int, ...]
    session_tokens: int
    penalized: tuple[Skipped, ...] = ()  # usable, but short of cache: a client pays ALLOC_DELAY to enter them

    @property
    def steps_per_second(self) -> float | None:
        return 1.0 / self.seconds if self.seconds else None

    @property
    def missing_ranges(self) -> list[tuple[int, int]]:
        """``missing`` as ``[start, end)`` runs of consecutive blocks."""
        runs: list[list[int]] = []
        for index in self.missing:
            if runs and runs[-1][1] == index:
                runs[-1][1] = index + 1
            else:
                runs.append([index, index + 1])
        return [(start, end) for start, end in runs]

    @property
    def bottleneck(self) -> Hop | None:
        """The slowest hop (its network delay and compute together)."""
        return max(self.chain, key=lambda hop: hop.seconds, default=None)


def rtt_to_delay(rtt: float | None) -> float:
    """Petals' ``_rtt_to_delay``: half the round trip, capped; unknown is the default."""
    if rtt is None or math.isnan(rtt):
        return DEFAULT_DELAY
    return min(max(rtt / 2, 0.0), MAX_DELAY)  # a negative RTT (an announcement is anyone's) counts as zero


def skip_reason(row: ServerRow) -> Skipped | None:
    """Why a client could not use this server now, or None when it could."""
    if row.state != "online":
        detail = {
            "joining": "still loading its blocks",
            "offline": "announced OFFLINE",
            "expired": "its announcements expired",
            "unreachable": (row.reachability.error if row.reachability and row.reachability.error else "probe failed"),
        }.get(row.state, row.state)
        return Skipped(row.peer_id, row.state, detail)
    if row.length <= 0:
        return Skipped(row.peer_id, "empty_span", "its span holds no block of this model")
    return None


def penalty_reason(row: ServerRow, session_tokens: int = SESSION_TOKENS) -> Skipped | None:
    """Why a client would pay Petals' alloc_delay to enter this server (short of cache), or None."""
    left = row.info.cache_tokens_left
    needed = session_tokens * 2 * row.length
    if left is not None and needed > left:
        return Skipped(
            row.peer_id, "short_of_cache", f"{left} cache tokens left, a {session_tokens}-token session needs {needed}"
        )
    return None


def usable_rps(rps: float | None) -> float | None:
    """An announced ``inference_rps`` the planner can divide by (positive and finite), else None (assumed)."""
    return rps if rps is not None and rps > 0 and math.isfinite(rps) else None


def _compute(row: ServerRow, start: int) -> float:
    return (row.end - start) / (usable_rps(row.info.inference_rps) or DEFAULT_INFERENCE_RPS)


def _ping(origin: ServerRow, target: str) -> float | None:
    pings = origin.info.next_pings
    return None if pings is None else pings.get(target)


def min_usable_per_block(rows: Iterable[ServerRow], num_blocks: int) -> list[int]:
    """How many of ``rows`` cover each block (a difference array: O(servers + blocks))."""
    delta = [0] * (num_blocks + 1)
    for row in rows:
        start, end = max(row.start, 0), min(row.end, num_blocks)
        if start < end:
            delta[start] += 1
            delta[end] -= 1
    counts, running = [], 0
    for index in range(num_blocks):
        running += delta[index]
        counts.append(running)
    return counts


def _cheapest_chain(
    usable: list[ServerRow], num_blocks: int, penalized: frozenset[str] = frozenset()
) -> tuple[tuple[Hop, ...], float] | None:
    """Petals' min-latency path, as a dynamic program over span ends (each server is left at its end).

    ``best[peer]`` is the cheapest way to have run blocks ``[0, row.end)`` with ``peer`` last, as (cost, hops,
    previous peer, entry block, network delay, measured?). Ties go to fewer hops, then to the smaller previous
    peer id, so the answer does not depend on input order. Most links have no announced RTT and cost the same
    default, so per entry block only the cheapest server without a ping to this one can win among those; servers
    that announced a ping to it are tried one by one (3,000 servers of one model: ~10^4 tries, not ~10^6)."""
    by_end: dict[int, list[ServerRow]] = defaultdict(list)
    for row in usable:
        by_end[row.end].append(row)
    rows = {row.peer_id: row for row in usable}
    pings = pings_by_target(usable)  # type: ignore[arg-type]  # rows carry peer_id and info, as spans do
    best: dict[str, tuple[float, int, str, int, float, bool]] = {}
    done_at: dict[int, list[tuple[float, int, str]]] = {}  # block -> (cost, hops, peer) of servers ending there
    for end in sorted(by_end):
        for row in by_end[end]:
            penalty = ALLOC_DELAY if row.peer_id in penalized else 0.0  # the same for every way into this server
            start_network = DEFAULT_DELAY + OVERHEAD_DELAY + penalty
            default_network = rtt_to_delay(None) + OVERHEAD_DELAY + penalty
            options = []
            if row.start == 0:
                options.append((start_network + _compute(row, 0), 1, "", 0, start_network, False))
            measured = pings.get(row.peer_id, {})
            for entry in range(max(row.start, 1), row.end):
                for cost, hops, before in done_at.get(entry, ()):
                    if before not in measured:
                        compute = _compute(row, entry)
                        options.append(
                            (cost + default_network + compute, hops + 1, before, entry, default_network, False)
                        )
                        break
            for before, rtt in measured.items():
                done = best.get(before)
                entry = rows[before].end if done is not None else 0
                if done is not None and row.start <= entry < row.end and entry >= 1:
                    network = rtt_to_delay(rtt) + OVERHEAD_DELAY + penalty
                    options.append(
                        (done[0] + network + _compute(row, entry), done[1] + 1, before, entry, network, True)
                    )
            if options:
                best[row.peer_id] = min(options, key=lambda option: option[:3])
        done_at[end] = sorted(
            (best[r.peer_id][0], best[r.peer_id][1], r.peer_id) for r in by_end[end] if r.peer_id in best
        )
    finals = [(cost + DEFAULT_DELAY, hops, peer) for cost, hops, peer in done_at.get(num_blocks, ())]
    if not finals:
        return None
    cost, _hops, peer = min(finals)
    hops_out: list[Hop] = []
    while peer:
        _cost, _n, previous, entry, network, known = best[peer]
        row = rows[peer]
        relay = bool(row.info.using_relay)
        penalty = ALLOC_DELAY if peer in penalized else 0.0
        hops_out.append(
            Hop(peer, entry, row.end, network, _compute(row, entry), known, row.info.inference_rps, relay, penalty)
        )
        peer = previous
    return tuple(reversed(hops_out)), cost


def plan_route(report: ModelReport, session_tokens: int = SESSION_TOKENS) -> Route:
    """The route a Petals client would take through ``report``'s servers now (see the module docstring)."""
    num_blocks = report.model.num_blocks
    skipped: list[Skipped] = []
    penalized: list[Skipped] = []
    usable: list[ServerRow] = []
    for row in report.servers:
        reason = skip_reason(row)
        if reason is not None:
            skipped.append(reason)
            continue
        usable.append(row)
        if (penalty := penalty_reason(row, session_tokens)) is not None:
            penalized.append(penalty)
    counts = min_usable_per_block(usable, num_blocks)
    missing = tuple(index for index, count in enumerate(counts) if count == 0)
    short = frozenset(p.peer_id for p in penalized)
    found = _cheapest_chain(usable, num_blocks, short) if num_blocks > 0 and not missing else None
    chain, seconds = found if found is not None else ((), None)
    return Route(
        num_blocks=num_blocks,
        runnable=found is not None,
        chain=chain,
        seconds=seconds,
        disjoint_chains=min(counts) if counts and found is not None else 0,
        usable=tuple(sorted(row.peer_id for row in usable)),
        skipped=tuple(sorted(skipped, key=lambda s: (s.reason, s.peer_id))),
        missing=missing,
        session_tokens=session_tokens,
        penalized=tuple(sorted(penalized, key=lambda s: s.peer_id)),
    )
