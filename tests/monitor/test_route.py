"""The route planner (``monitor.rules.route``): Petals' min-latency chain over usable servers, checked against
brute force on small swarms (contiguity, optimality, server-disjoint chains counted right, skips kept out)."""

from __future__ import annotations

import itertools
import math
from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.rules.route import (
    ALLOC_DELAY,
    DEFAULT_DELAY,
    DEFAULT_INFERENCE_RPS,
    MAX_DELAY,
    OVERHEAD_DELAY,
    SESSION_TOKENS,
    penalty_reason,
    plan_route,
    skip_reason,
)
from monitor.snapshot import PETALS_ONLINE, ModelInfo, ModelReport, Reachability, ServerInfo, ServerRow

PEERS = [f"Qm{c * 8}" for c in "ABCDEFGHIJ"]


def row(
    peer: str,
    start: int,
    end: int,
    *,
    state: str = "online",
    rps: float | None = None,
    pings: dict[str, float] | None = None,
    relay: bool | None = False,
    cache: int | None = None,
    reach: Reachability | None = None,
) -> ServerRow:
    info = ServerInfo(
        state=PETALS_ONLINE,
        throughput=1.0,
        start_block=start,
        end_block=end,
        inference_rps=rps,
        using_relay=relay,
        cache_tokens_left=cache,
        next_pings=pings,
    )
    return ServerRow(peer, state, start, end, info, expiration=0.0, ttl=60.0, reachability=reach)  # type: ignore[arg-type]


def report(num_blocks: int, rows: list[ServerRow]) -> ModelReport:
    return ModelReport(ModelInfo("m", num_blocks), "healthy", rows, [])


# ---- brute force


def all_chains(rows: list[ServerRow], n: int) -> list[tuple[ServerRow, ...]]:
    """Every chain under Petals' rules: start at block 0, leave each server at its span's end, enter the next at
    any block it holds, end at block n."""
    out = []

    def extend(chain: tuple[ServerRow, ...], pos: int) -> None:
        if pos == n:
            out.append(chain)
            return
        for r in rows:
            if r not in chain and r.start <= pos < r.end:
                extend((*chain, r), r.end)

    extend((), 0)
    return out


def chain_cost(chain: tuple[ServerRow, ...]) -> float:
    cost, pos, before = 0.0, 0, None
    for r in chain:
        if before is None:
            cost += DEFAULT_DELAY + OVERHEAD_DELAY
        else:
            rtt = (before.info.next_pings or {}).get(r.peer_id)
            cost += (DEFAULT_DELAY if rtt is None else min(rtt / 2, MAX_DELAY)) + OVERHEAD_DELAY
        cost += ALLOC_DELAY if penalty_reason(r) is not None else 0.0  # Petals' penalty: short of cache
        cost += (r.end - pos) / (r.info.inference_rps or DEFAULT_INFERENCE_RPS)
        pos, before = r.end, r
    return cost + DEFAULT_DELAY


def max_disjoint_chains(rows: list[ServerRow], n: int) -> int:
    """Most chains that share no server (exhaustive packing over every chain's server set)."""
    chain_sets = {frozenset(r.peer_id for r in c) for c in all_chains(rows, n)}
    chain_sets = [s for s in chain_sets if not any(o < s for o in chain_sets)]  # minimal ones suffice
    best = 0
    for k in range(1, len(rows) + 1):
        found = any(sum(len(s) for s in pick) == len(frozenset().union(*pick)) for pick in combinations(chain_sets, k))
        if not found:
            break
        best = k
    return best


# ---- properties


@st.composite
def swarms(draw):
    n = draw(st.integers(1, 6))
    k = draw(st.integers(0, 7))
    rows = []
    for peer in PEERS[:k]:
        start = draw(st.integers(0, n - 1))
        end = draw(st.integers(start + 1, min(n, start + 3)))
        state = draw(st.sampled_from(["online"] * 9 + ["joining", "unreachable", "offline"]))
        rps = draw(st.sampled_from([None, 50.0, 300.0, 1000.0]))
        pings = draw(
            st.one_of(st.none(), st.dictionaries(st.sampled_from(PEERS[:k]), st.sampled_from([0.01, 0.2, math.inf])))
        )
        relay = draw(st.sampled_from([False] * 7 + [True]))
        cache = draw(st.sampled_from([None] * 5 + [10**9, 10]))
        rows.append(row(peer, start, end, state=state, rps=rps, pings=pings, relay=relay, cache=cache))
    return n, rows


@settings(max_examples=300, deadline=None)
@given(swarms())
def test_route_properties_against_brute_force(swarm):
    n, rows = swarm
    route = plan_route(report(n, rows))
    skipped = {s.peer_id for s in route.skipped}
    assert skipped.isdisjoint(route.usable) and skipped | set(route.usable) == {r.peer_id for r in rows}
    usable = [r for r in rows if r.peer_id in route.usable]
    assert all(skip_reason(r) is None for r in usable)
    covered = {b for r in usable for b in range(r.start, r.end)}
    assert route.missing == tuple(b for b in range(n) if b not in covered)
    chains = all_chains(usable, n)
    assert route.runnable == bool(chains) == (not route.missing)
    if route.runnable:
        # contiguous from 0 to n, through usable servers only, never a skipped one, no server twice
        assert route.chain[0].start == 0 and route.chain[-1].end == n
        assert all(a.end == b.start for a, b in itertools.pairwise(route.chain))
        assert all(h.start < h.end for h in route.chain)
        ids = [h.peer_id for h in route.chain]
        assert len(set(ids)) == len(ids) and not set(ids) & skipped
        by_id = {r.peer_id: r for r in usable}
        assert all(by_id[h.peer_id].start <= h.start and h.end == by_id[h.peer_id].end for h in route.chain)
        # the cheapest chain there is, and its cost is what the hops add up to
        assert route.seconds == pytest.approx(min(chain_cost(c) for c in chains))
        assert route.seconds == pytest.approx(sum(h.seconds for h in route.chain) + DEFAULT_DELAY)
        assert route.steps_per_second == pytest.approx(1 / route.seconds)
        assert route.bottleneck is not None and route.bottleneck.seconds == max(h.seconds for h in route.chain)
    else:
        assert route.chain == () and route.seconds is None and route.bottleneck is None
    assert route.disjoint_chains == max_disjoint_chains(usable, n)


def test_a_hole_is_not_runnable_and_names_the_missing_blocks():
    route = plan_route(report(6, [row(PEERS[0], 0, 3), row(PEERS[1], 4, 6)]))
    assert not route.runnable and route.missing == (3,) and route.disjoint_chains == 0 and route.chain == ()
    route = plan_route(report(9, [row(PEERS[0], 2, 4), row(PEERS[1], 5, 6)]))
    assert route.missing_ranges == [(0, 2), (4, 5), (6, 9)]


def test_skips_say_why():
    rows = [
        row(PEERS[0], 0, 4, state="joining"),
        row(PEERS[1], 0, 4, state="unreachable", reach=Reachability(PEERS[1], False, 0.0, error="dial failed")),
        row(PEERS[2], 0, 4, relay=True),
        row(PEERS[3], 0, 4, cache=SESSION_TOKENS * 2 * 4 - 1),
        row(PEERS[4], 0, 4, cache=SESSION_TOKENS * 2 * 4),
        row(PEERS[5], 0, 4, state="expired"),
    ]
    route = plan_route(report(4, rows))
    reasons = {s.peer_id: (s.reason, s.detail) for s in route.skipped}
    assert reasons[PEERS[0]][0] == "joining" and reasons[PEERS[5]][0] == "expired"
    assert reasons[PEERS[1]] == ("unreachable", "dial failed")
    assert PEERS[2] not in reasons  # a client reaches it through the relay
    # short of cache: still usable, as in Petals, but said so, and never chosen over a server with room
    assert PEERS[3] not in reasons and route.usable == (PEERS[2], PEERS[3], PEERS[4])
    [short] = route.penalized
    assert (short.peer_id, short.reason) == (PEERS[3], "short_of_cache") and str(SESSION_TOKENS) in short.detail
    assert route.disjoint_chains == 3 and PEERS[3] not in {h.peer_id for h in route.chain}
    relayed = {h.peer_id: h.relay for h in route.chain}
    assert relayed in ({PEERS[2]: True}, {PEERS[4]: False})
    # a shorter session fits the server that was short
    assert plan_route(report(4, rows), session_tokens=SESSION_TOKENS // 2).penalized == ()


def test_a_chain_only_through_servers_short_of_cache_is_runnable_with_petals_penalty():
    """Petals keeps such a server with alloc_delay (10 s to enter it): the model runs, slowly; not a hole."""
    rows = [row(PEERS[0], 0, 2), row(PEERS[1], 2, 4, cache=10)]
    route = plan_route(report(4, rows))
    assert route.runnable and route.skipped == () and route.missing == ()
    first, second = route.chain
    assert (first.penalty, second.penalty) == (0.0, ALLOC_DELAY)
    assert second.network == pytest.approx(DEFAULT_DELAY + OVERHEAD_DELAY + ALLOC_DELAY)
    assert route.steps_per_second < 0.1


def test_petals_costs_pick_the_fast_link_and_the_bottleneck_is_the_slowest_hop():
    # a then (b or c): a measured 10 ms to b and infinity to c (unreachable from a)
    a = row(PEERS[0], 0, 2, rps=100.0, pings={PEERS[1]: 0.01, PEERS[2]: math.inf})
    b = row(PEERS[1], 2, 4, rps=10.0)
    c = row(PEERS[2], 2, 4, rps=1000.0)
    route = plan_route(report(4, [a, b, c]))
    assert [(h.peer_id, h.start, h.end) for h in route.chain] == [(PEERS[0], 0, 2), (PEERS[1], 2, 4)]
    first, second = route.chain
    assert first.network == pytest.approx(DEFAULT_DELAY + OVERHEAD_DELAY) and not first.rtt_known
    assert second.network == pytest.approx(0.005 + OVERHEAD_DELAY) and second.rtt_known
    assert second.compute == pytest.approx(2 / 10.0)
    assert route.bottleneck == second
    assert route.seconds == pytest.approx(first.seconds + second.seconds + DEFAULT_DELAY)
    assert route.disjoint_chains == 1
    # without a's pings both links cost the default, and c's faster blocks win
    a2 = row(PEERS[0], 0, 2, rps=100.0)
    assert [h.peer_id for h in plan_route(report(4, [a2, b, c])).chain] == [PEERS[0], PEERS[2]]


def test_a_server_is_entered_mid_span_but_left_at_its_end():
    a = row(PEERS[0], 0, 3)
    b = row(PEERS[1], 1, 5)
    route = plan_route(report(5, [a, b]))
    assert [(h.peer_id, h.start, h.end) for h in route.chain] == [(PEERS[0], 0, 3), (PEERS[1], 3, 5)]


def test_disjoint_chains_is_the_weakest_block_of_usable_servers():
    rows = [row(PEERS[0], 0, 2), row(PEERS[1], 2, 4), row(PEERS[2], 0, 3), row(PEERS[3], 1, 4)]
    assert plan_route(report(4, rows)).disjoint_chains == 2
    rows.append(row(PEERS[4], 0, 4, state="joining"))  # not usable: no third chain
    assert plan_route(report(4, rows)).disjoint_chains == 2
    rows.append(row(PEERS[5], 0, 4))
    assert plan_route(report(4, rows)).disjoint_chains == 3


def test_no_blocks_no_route():
    route = plan_route(report(0, []))
    assert not route.runnable and route.disjoint_chains == 0


def test_the_document_says_what_was_assumed():
    from monitor.route_report import route_document

    a = row(PEERS[0], 0, 2, rps=0.0, pings={PEERS[1]: 0.02})  # a zero rps is not divided by: assumed
    b = row(PEERS[1], 2, 3, rps=100.0, relay=True)
    c = row(PEERS[2], 3, 4)  # b announced no pings: the b -> c link is assumed
    doc = route_document(plan_route(report(4, [a, b, c])))
    estimate = doc["estimate"]
    assert (estimate["hops_with_announced_rtt"], estimate["hops_with_assumed_rtt"]) == (1, 1)
    assert estimate["hops_with_assumed_rps"] == 2 and estimate["session_tokens"] == SESSION_TOKENS
    assert [h["rtt"] for h in doc["chain"]] == ["assumed", "announced", "assumed"]
    assert [h["relay"] for h in doc["chain"]] == [False, True, False]
    assert doc["chain"][0]["compute_seconds"] == pytest.approx(2 / DEFAULT_INFERENCE_RPS)
    assert doc["bottleneck"]["share"] == pytest.approx(doc["bottleneck"]["seconds"] / doc["seconds_per_step"])
    assert doc["failures_survived"] == 0 and doc["missing_ranges"] == []
