"""The demo scenario is a pure, seeded model: same seed, same swarm; life events where they were designed."""

from __future__ import annotations

import itertools

import pytest

from monitor.demo.announce import AnnouncementSchedule
from monitor.demo.scenario import (
    NUM_DESIGNED_SERVERS,
    OUTDATED_VERSION,
    XSS_NAME,
    Behaviour,
    Reach,
    Scenario,
    ScenarioParams,
)
from monitor.snapshot import PETALS_JOINING, PETALS_OFFLINE, PETALS_ONLINE


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return Scenario(ScenarioParams(seed=1))


def _online_coverage(scenario: Scenario, prefix: str, t: float) -> list[int]:
    model = scenario.model(prefix)
    counts = [0] * model.num_blocks
    for plan in scenario.servers_of(prefix):
        seen = scenario.visible(plan, t)
        if seen is not None and seen.state == "online":
            for block in range(*seen.span):
                counts[block] += 1
    return counts


def _first_segment(scenario: Scenario, name: str, predicate):
    plan = scenario.server(name)
    return plan, next(seg for seg in scenario.timeline(plan, 0, scenario.params.cycle) if predicate(seg))


def test_same_seed_same_swarm_other_seed_other_ids() -> None:
    a, b = Scenario(ScenarioParams(seed=7)), Scenario(ScenarioParams(seed=7))
    assert [s.peer_id for s in a.servers] == [s.peer_id for s in b.servers]
    assert a.announcements(-1, 400) == b.announcements(-1, 400)
    c = Scenario(ScenarioParams(seed=8))
    assert not {s.peer_id for s in a.servers} & {s.peer_id for s in c.servers}
    assert [s.span for s in a.servers] == [s.span for s in c.servers]  # the designed cast does not move
    assert a.announcements(-1, 400) != c.announcements(-1, 400)  # but its life events do


def test_peer_ids_are_unique_ed25519(scenario: Scenario) -> None:
    ids = [s.peer_id for s in scenario.servers]
    assert len(set(ids)) == len(ids) == NUM_DESIGNED_SERVERS
    assert all(i.startswith("12D3KooW") and len(i) == 52 for i in ids)


def test_cast_has_every_feature_the_dashboard_must_show(scenario: Scenario) -> None:
    servers = scenario.servers
    assert [s.public_name for s in servers].count(XSS_NAME) == 1
    assert any(s.using_relay for s in servers)
    assert any(s.adapters for s in servers)
    assert sum(s.public_name is not None for s in servers) >= 5
    versions = {s.version for s in servers}
    assert OUTDATED_VERSION in versions and len(versions) >= 3
    assert {s.reach for s in servers} == {Reach.SERVE, Reach.SILENT, Reach.DOWN}
    assert {s.behaviour for s in servers} == set(Behaviour)
    assert all(s.has_host == (s.reach != Reach.DOWN) for s in servers)
    prefixes = [m.dht_prefix for m in scenario.config_models()]
    assert len(prefixes) >= 3 and "demo/Mystery-12" not in prefixes
    assert "demo/Mystery-12" in [m.dht_prefix for m in scenario.models]


def test_at_start_stable_servers_are_online_and_late_joiners_absent(scenario: Scenario) -> None:
    for plan in scenario.servers:
        seen = scenario.visible(plan, 1.0)
        if plan.behaviour == Behaviour.LATE_JOINER:
            assert seen is None
        elif plan.behaviour == Behaviour.STUCK_JOINING:
            assert seen is not None and seen.state == "joining"
        else:
            assert seen is not None and seen.state == "online" and seen.span == plan.span, plan.name


def test_leaver_says_offline_then_vanishes_then_rejoins(scenario: Scenario) -> None:
    exp = scenario.params.expiration
    plan, gone = _first_segment(scenario, "a4", lambda s: s.status == "absent")
    assert gone.offline_span == plan.span and gone.start < 60  # visible within the first minute
    assert scenario.visible(plan, gone.start - 0.5).state == "online"
    assert scenario.visible(plan, gone.start + 1) == scenario.visible(plan, gone.start + 1)
    offline = scenario.visible(plan, gone.start + 1)
    assert offline.state == "offline" and offline.span == plan.span
    if gone.start + exp < gone.end:
        assert scenario.visible(plan, gone.start + exp + 0.5) is None  # the OFFLINE record ran out
    assert scenario.visible(plan, gone.end + 0.5).state == "joining"
    assert scenario.visible(plan, gone.end + scenario.params.joining + 0.5).state == "online"
    assert [a.state for a in scenario.announcements_of(plan, gone.start - 0.01, gone.start)] == [PETALS_OFFLINE]


def test_crasher_stops_refreshing_and_its_records_expire(scenario: Scenario) -> None:
    exp = scenario.params.expiration
    plan, crash = _first_segment(scenario, "a5", lambda s: s.status == "absent")
    assert crash.offline_span is None and crash.start < 60
    last = scenario.announcements_of(plan, -1, crash.start)[-1]
    assert last.state == PETALS_ONLINE and crash.start - last.t <= scenario.params.update_period
    assert scenario.visible(plan, last.t + exp - 0.1).state == "online"  # records outlive the crash
    assert scenario.visible(plan, last.t + exp + 0.1).state == "expired"
    assert not scenario.announcements_of(plan, crash.start, crash.end - 0.001)


def test_mover_goes_offline_on_old_span_and_joins_the_new_one(scenario: Scenario) -> None:
    plan, move = _first_segment(scenario, "a6", lambda s: s.offline_span is not None)
    assert move.offline_span == plan.span and move.span == plan.alt_span and move.status == "joining"
    at_move = scenario.announcements_of(plan, move.start - 0.001, move.start)
    assert [(a.state, a.span) for a in at_move] == [(PETALS_OFFLINE, plan.span), (PETALS_JOINING, plan.alt_span)]
    assert scenario.visible(plan, move.start + 0.5).span == plan.alt_span
    assert scenario.visible(plan, move.start + scenario.params.joining + 0.5).state == "online"
    # next cycle it moves back
    C = scenario.params.cycle
    back = next(s for s in scenario.timeline(plan, C, 2 * C) if s.offline_span is not None and s.start >= C)
    assert back.offline_span == plan.alt_span and back.span == plan.span


def test_late_joiner_joins_in_the_first_half_minute(scenario: Scenario) -> None:
    plan, join = _first_segment(scenario, "a7", lambda s: s.status == "joining")
    assert 0 < join.start < 30
    assert scenario.visible(plan, join.start - 0.1) is None
    assert scenario.visible(plan, join.start + 0.1).state == "joining"


@pytest.mark.parametrize("num_servers", [None, 400])
def test_designed_health_states_hold_at_all_times(num_servers: int | None) -> None:
    scenario = Scenario(ScenarioParams(seed=3, extra_models=2, num_servers=num_servers))
    for t in range(1, 600, 7 if num_servers is None else 37):
        tiny = _online_coverage(scenario, "demo/TinyLlama-A", t)
        assert min(tiny) >= 2, t  # healthy
        wide = _online_coverage(scenario, "demo/Wide-80", t)
        assert wide[56:64] == [0] * 8 and min(wide[:56]) >= 1, t  # broken exactly at the hole
        falcon = _online_coverage(scenario, "demo/Falcon-B", t)
        assert falcon[16:] == [1] * 16 and min(falcon[:16]) >= 2, t  # degraded
        assert min(_online_coverage(scenario, "demo/Mystery-12", t)) >= 1, t


def test_refreshes_keep_every_record_alive(scenario: Scenario) -> None:
    P = scenario.params.update_period
    for plan in scenario.servers:
        if plan.behaviour != Behaviour.STABLE:
            continue
        times = [a.t for a in scenario.announcements_of(plan, -1, 300)]
        assert times[0] == 0.0
        assert all(0 < b - a <= P + 1e-9 for a, b in itertools.pairwise(times))


def test_schedule_hands_out_each_announcement_once_whatever_the_ticks(scenario: Scenario) -> None:
    schedule = AnnouncementSchedule(scenario)
    got, t = [], 0.0
    for step in [0.0, 0.3, 2.5, 0.01, 7.0, 16.0, 1.0] * 12:
        t += step
        got.extend(schedule.due(t))
    assert got == scenario.announcements(-1e-9, t)
    assert len(got) > 100


def test_scale_fills_extra_models_and_keeps_hosts_bounded() -> None:
    params = ScenarioParams(seed=5, extra_models=3, blocks_per_extra_model=40, num_servers=600, max_hosts=50)
    scenario = Scenario(params)
    assert len(scenario.servers) == 600 and len({s.peer_id for s in scenario.servers}) == 600
    assert sum(s.has_host for s in scenario.servers) <= 50
    synth = [m for m in scenario.models if m.role == "synthetic"]
    assert len(synth) == 3
    for model in synth:
        assert min(_online_coverage(scenario, model.dht_prefix, 1.0)) >= 2  # the two tilings
    for plan in scenario.servers[NUM_DESIGNED_SERVERS:]:
        model = scenario.model(plan.dht_prefix)
        for span in (plan.span, plan.alt_span or plan.span):
            assert 0 <= span[0] < span[1] <= model.num_blocks
            assert not any(span[0] < hi and lo < span[1] for lo, hi in model.reserved)


@pytest.mark.parametrize(
    "params",
    [
        ScenarioParams(update_period=0),
        ScenarioParams(update_period=10, expiration_time=10),
        ScenarioParams(update_period=10, joining_time=100),
        ScenarioParams(num_servers=3),
    ],
)
def test_bad_params_are_refused(params: ScenarioParams) -> None:
    with pytest.raises(ValueError):
        Scenario(params)
