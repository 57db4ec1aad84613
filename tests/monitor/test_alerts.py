"""monitor.alerts.rules: pure rules over (state, crawl) → events; one firing per condition, one resolve on recovery."""

from __future__ import annotations

from monitor.alerts.rules import (
    ActiveAlert,
    AlertRules,
    AlertState,
    evaluate_failure,
    evaluate_snapshot,
    restore_state,
    snapshot_conditions,
)
from monitor.rules.health import model_state
from monitor.snapshot import (
    BlockStat,
    BootstrapPeer,
    CrawlStats,
    ModelInfo,
    ModelReport,
    ServerInfo,
    ServerRow,
    Snapshot,
)

T0 = 1_700_000_000.0
PEER_A = "12D3KooWA" + "a" * 43
PEER_B = "12D3KooWB" + "b" * 43
BOOT = "/ip4/127.0.0.1/tcp/31337/p2p/QmedTaZXmULqwspJXz44SsPZyTNKxhnnFvYRajfH7MGhCY"


def report(prefix: str, online: list[int], servers: list[tuple[str, str]] = ()) -> ModelReport:
    blocks = [BlockStat(index=i, online=n) for i, n in enumerate(online)]
    rows = [
        ServerRow(peer, state, 0, len(online), ServerInfo(state=2, throughput=1.0), T0 + 60, 60.0)
        for peer, state in servers
    ]
    # the online servers the block counts say, one block each, so the route planner sees what the blocks say
    rows += [
        ServerRow(f"12D3KooWfill{i}x{k}", "online", i, i + 1, ServerInfo(state=2, throughput=1.0), T0 + 60, 60.0)
        for i, n in enumerate(online)
        for k in range(n)
    ]
    return ModelReport(ModelInfo(prefix, len(online)), model_state(blocks, 2), rows, blocks)


def snap(t: float, *reports: ModelReport, boot_up: bool = True, swarm: str = "s", crawl_id: int = 1) -> Snapshot:
    peer = BootstrapPeer(BOOT, None, "online" if boot_up else "unreachable", error=None if boot_up else "refused")
    return Snapshot(swarm, "succeeded", t - 5, t, t, [peer], list(reports), [], CrawlStats(), crawl_id=crawl_id)


RULES = AlertRules(model_states=("broken", "degraded"), min_online=3, crawl_failures=2, watch_servers=(f"s:{PEER_A}",))


def kinds(events) -> list[tuple[str, str, str]]:
    return [(e.status, e.kind, e.subject) for e in events]


def test_conditions_of_one_snapshot():
    s = snap(T0, report("m", [2, 0, 0, 1], [(PEER_A, "unreachable")]), boot_up=False)
    found = snapshot_conditions(s, RULES)
    assert set(found) == {
        ("broken", "m"),
        ("low_redundancy", "m"),
        ("bootstrap_down", BOOT),
        ("server_down", PEER_A),
    }
    assert "blocks 1–2 have no online server" in found[("broken", "m")]
    assert "4 block(s) have fewer than 3" in found[("low_redundancy", "m")]
    assert "unreachable" in found[("server_down", PEER_A)] and "refused" in found[("bootstrap_down", BOOT)]


def test_rules_can_be_switched_off():
    s = snap(T0, report("m", [0, 1]), boot_up=False)
    off = AlertRules(model_states=(), not_runnable=False, min_online=0, bootstrap_down=False, crawl_failures=0)
    assert snapshot_conditions(s, off) == {}
    only_broken = AlertRules(model_states=("broken",), bootstrap_down=False)
    assert set(snapshot_conditions(s, only_broken)) == {("broken", "m")}


def test_fires_once_then_stays_quiet_then_resolves_once():
    state = AlertState()
    broken = report("m", [2, 0], [(PEER_A, "online")])
    state, events = evaluate_snapshot(state, RULES, snap(T0, broken, crawl_id=1))
    assert sorted(kinds(events)) == [("firing", "broken", "m"), ("firing", "low_redundancy", "m")]
    assert all(e.ts == T0 and e.crawl_id == 1 for e in events)
    assert {e.severity for e in events if e.kind == "broken"} == {"critical"}
    for i in range(2, 6):  # no storm: the same conditions over and over say nothing
        state, events = evaluate_snapshot(state, RULES, snap(T0 + 60 * i, broken, crawl_id=i))
        assert events == []
    healthy = report("m", [3, 3], [(PEER_A, "online")])
    state, events = evaluate_snapshot(state, RULES, snap(T0 + 600, healthy, crawl_id=9))
    assert sorted(kinds(events)) == [("resolved", "broken", "m"), ("resolved", "low_redundancy", "m")]
    assert all(e.fired_at == T0 and e.ts == T0 + 600 for e in events)
    assert state.active == {}
    state, events = evaluate_snapshot(state, RULES, snap(T0 + 660, healthy))
    assert events == []


def test_a_broken_model_is_one_alert_not_also_a_degraded_warning():
    """Broken fires "broken" (critical) alone; "degraded" stands in for it only when "broken" is switched off."""
    broken = snap(T0, report("m", [0, 1], [(PEER_A, "online")]))
    _state, events = evaluate_snapshot(AlertState(), RULES, broken)
    assert [(e.kind, e.severity) for e in events if e.kind in ("broken", "degraded")] == [("broken", "critical")]
    only_degraded = AlertRules(model_states=("degraded",), bootstrap_down=False)
    (message,) = snapshot_conditions(broken, only_degraded).values()
    assert "not healthy (broken)" in message


def test_broken_then_degraded_is_a_new_condition():
    state, _ = evaluate_snapshot(AlertState(), RULES, snap(T0, report("m", [0, 1], [(PEER_A, "online")])))
    state, events = evaluate_snapshot(state, RULES, snap(T0 + 60, report("m", [1, 1], [(PEER_A, "online")])))
    assert kinds(events) == [("resolved", "broken", "m"), ("firing", "degraded", "m")]
    assert ("s", "degraded", "m") in state.active and ("s", "broken", "m") not in state.active


def test_crawl_failures_fire_at_k_in_a_row_and_resolve_on_success():
    rules = AlertRules(crawl_failures=3, model_states=(), bootstrap_down=False)
    state = AlertState()
    for i in range(2):
        state, events = evaluate_failure(state, rules, "s", T0 + i, "boom")
        assert events == []
    state, events = evaluate_failure(state, rules, "s", T0 + 2, "no bootstrap peer answered", crawl_id=7)
    assert kinds(events) == [("firing", "crawl_failing", "s")]
    assert "3 crawls failed in a row" in events[0].message and "no bootstrap peer" in events[0].message
    state, events = evaluate_failure(state, rules, "s", T0 + 3, "boom")
    assert events == [] and state.failures["s"] == 4
    # another swarm's success does not touch this one
    state, events = evaluate_snapshot(state, rules, snap(T0 + 4, report("m", [1]), swarm="other"))
    assert events == [] and state.failures["s"] == 4
    state, events = evaluate_snapshot(state, rules, snap(T0 + 5, report("m", [1])))
    assert kinds(events) == [("resolved", "crawl_failing", "s")] and state.failures["s"] == 0


def test_a_failed_crawl_keeps_model_alerts_as_they_are():
    state, _ = evaluate_snapshot(AlertState(), RULES, snap(T0, report("m", [0, 3])))
    before = dict(state.active)
    state, events = evaluate_failure(state, RULES, "s", T0 + 60, "boom")
    assert events == [] and dict(state.active) == before


def test_watched_server_absent_then_back():
    rules = AlertRules(model_states=(), bootstrap_down=False, watch_servers=(PEER_A, PEER_B))
    state, events = evaluate_snapshot(AlertState(), rules, snap(T0, report("m", [1], [(PEER_A, "online")])))
    assert kinds(events) == [("firing", "server_down", PEER_B)]
    assert "announces no block" in events[0].message
    state, events = evaluate_snapshot(state, rules, snap(T0 + 60, report("m", [1], [(PEER_B, "online")])))
    assert sorted(kinds(events)) == [("firing", "server_down", PEER_A), ("resolved", "server_down", PEER_B)]


def test_restored_state_does_not_fire_again():
    s = snap(T0, report("m", [0, 1]))
    _state, first = evaluate_snapshot(AlertState(), RULES, s)
    active = [ActiveAlert(e.swarm, e.kind, e.subject, e.severity, e.ts, e.message) for e in first]
    restored = restore_state(active, {"s": 0})
    _, events = evaluate_snapshot(restored, RULES, snap(T0 + 60, report("m", [0, 1])))
    assert events == []


def test_watched_servers_can_be_scoped_to_one_swarm():
    rules = AlertRules(watch_servers=(PEER_A, f"b:{PEER_B}"))
    assert rules.watched("a") == [PEER_A]
    assert rules.watched("b") == [PEER_A, PEER_B]


def test_swarms_are_independent():
    state, events = evaluate_snapshot(AlertState(), RULES, snap(T0, report("m", [0]), swarm="a"))
    assert {e.swarm for e in events} == {"a"}
    state, events = evaluate_snapshot(state, RULES, snap(T0, report("m", [3]), swarm="b"))
    assert events == [] and all(k[0] == "a" for k in state.active)


def _served(
    prefix: str, spans: list[tuple[str, int, int, int | None]], num_blocks: int, unreachable: tuple[str, ...] = ()
) -> ModelReport:
    """A model from (peer, start, end, cache tokens left) rows, online unless ``unreachable``, its blocks counted
    from the online ones."""
    from monitor.rules.health import block_stats

    rows = [
        ServerRow(
            peer,
            "unreachable" if peer in unreachable else "online",
            a,
            b,
            ServerInfo(2, 1.0, a, b, cache_tokens_left=cache),
            T0 + 60,
            60.0,
        )
        for peer, a, b, cache in spans
    ]
    blocks = block_stats([r for r in rows if r.state == "online"], num_blocks)
    return ModelReport(ModelInfo(prefix, num_blocks), model_state(blocks, 1), rows, blocks)


def test_not_runnable_fires_when_no_chain_is_usable_and_resolves():
    rules = AlertRules(bootstrap_down=False, model_states=())  # broken (blocks 2-3 have no online server) apart
    full = _served("m", [(PEER_A, 0, 2, None), (PEER_B, 2, 4, None)], 4, unreachable=(PEER_B,))
    state, events = evaluate_snapshot(AlertState(), rules, snap(T0, full))
    assert kinds(events) == [("firing", "not_runnable", "m")]
    assert events[0].severity == "critical"
    assert "blocks 2–3" in events[0].message and "1 unreachable" in events[0].message
    freed = _served("m", [(PEER_A, 0, 2, None), (PEER_B, 2, 4, None)], 4)
    state, events = evaluate_snapshot(state, rules, snap(T0 + 60, freed, crawl_id=2))
    assert kinds(events) == [("resolved", "not_runnable", "m")] and "runnable again" in events[0].message
    off = AlertRules(not_runnable=False, bootstrap_down=False, model_states=())
    assert set(snapshot_conditions(snap(T0, full), off)) == set()


def test_a_server_short_of_cache_is_a_penalty_not_a_critical_alert():
    """Petals' client still routes through a server short of cache (with a 10 s penalty), so the model runs."""
    short = _served("m", [(PEER_A, 0, 2, None), (PEER_B, 2, 4, 10)], 4)  # B: 10 cache tokens left, far too few
    assert short.state == "healthy"
    assert snapshot_conditions(snap(T0, short), AlertRules(bootstrap_down=False)) == {}


def test_a_broken_model_fires_broken_only_unless_broken_alerts_are_off():
    hole = _served("m", [(PEER_A, 0, 2, None)], 4)
    assert set(snapshot_conditions(snap(T0, hole), AlertRules(bootstrap_down=False))) == {("broken", "m")}
    found = snapshot_conditions(snap(T0, hole), AlertRules(model_states=(), bootstrap_down=False))
    assert set(found) == {("not_runnable", "m")} and "no server at all" in found[("not_runnable", "m")]
