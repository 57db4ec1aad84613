"""Alert rules: pure functions from (previous alert state, one crawl's outcome) to (new state, events).

A *condition* is one thing that can be wrong, named by ``(swarm, kind, subject)``: model ``broken`` (subject:
the dht_prefix), ``degraded`` (degraded; or broken when ``broken`` alerts are off: one condition, one alert),
``not_runnable`` (no chain of usable servers covers the model, ``monitor.rules.route``; a broken model already
fires ``broken``, so this fires when every block is online but a client still cannot run it: its servers there
are unreachable or short of cache),
``low_redundancy`` (some block has fewer than ``min_online`` online
servers), ``bootstrap_down`` (subject: the peer's address), ``crawl_failing`` (``crawl_failures`` failed crawls
in a row; subject: the swarm) and ``server_down`` (a watched peer id that is not online).

No storm: a condition fires once when it becomes true and resolves once when it stops being true; in between
every crawl that still sees it says nothing. A failed crawl tells nothing about models or peers, so it only
advances the failure count; their conditions keep their state until a crawl succeeds again. Times are the
crawl's own (``finished_at``), so tests drive the rules with plain numbers instead of a clock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..rules.route import SESSION_TOKENS, plan_route
from ..snapshot import ModelReport, Snapshot

AlertKind = Literal[
    "broken", "degraded", "not_runnable", "low_redundancy", "bootstrap_down", "crawl_failing", "server_down"
]
ALERT_KINDS: tuple[AlertKind, ...] = (
    "broken",
    "degraded",
    "not_runnable",
    "low_redundancy",
    "bootstrap_down",
    "crawl_failing",
    "server_down",
)
Severity = Literal["critical", "warning"]
SEVERITY: dict[str, Severity] = {
    "broken": "critical",
    "degraded": "warning",
    "not_runnable": "critical",
    "low_redundancy": "warning",
    "bootstrap_down": "warning",
    "crawl_failing": "critical",
    "server_down": "warning",
}
EventStatus = Literal["firing", "resolved"]
MAX_LISTED_BLOCKS = 8


@dataclass(frozen=True, slots=True)
class AlertRules:
    """What fires (``monitor.config.AlertsConfig`` holds the same knobs)."""

    model_states: tuple[str, ...] = ("broken", "degraded")
    not_runnable: bool = True
    min_online: int = 0
    bootstrap_down: bool = True
    crawl_failures: int = 3
    watch_servers: tuple[str, ...] = ()  # "PEER_ID" (every swarm) or "SWARM:PEER_ID" (that swarm only)
    session_tokens: int = SESSION_TOKENS  # the route planner's session (``[route] session_tokens``)

    def watched(self, swarm: str) -> list[str]:
        """The peer ids watched in ``swarm``."""
        peers = []
        for entry in self.watch_servers:
            scope, sep, peer_id = entry.rpartition(":")
            if not sep or scope == swarm:
                peers.append(peer_id)
        return list(dict.fromkeys(peers))

    @classmethod
    def from_config(cls, alerts: object, route: object = None) -> AlertRules:
        return cls(
            session_tokens=int(getattr(route, "session_tokens", SESSION_TOKENS)),
            model_states=tuple(getattr(alerts, "model_states", cls.model_states)),
            not_runnable=bool(getattr(alerts, "not_runnable", True)),
            min_online=int(getattr(alerts, "min_online", 0)),
            bootstrap_down=bool(getattr(alerts, "bootstrap_down", True)),
            crawl_failures=int(getattr(alerts, "crawl_failures", 3)),
            watch_servers=tuple(getattr(alerts, "watch_servers", ())),
        )


AlertKey = tuple[str, str, str]  # (swarm, kind, subject)


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A condition started (``firing``) or stopped (``resolved``) being true."""

    swarm: str
    kind: str
    subject: str
    status: EventStatus
    severity: Severity
    ts: float
    message: str
    crawl_id: int | None = None
    fired_at: float | None = None  # for a resolved event: when the condition fired

    @property
    def key(self) -> AlertKey:
        return (self.swarm, self.kind, self.subject)


@dataclass(frozen=True, slots=True)
class ActiveAlert:
    swarm: str
    kind: str
    subject: str
    severity: Severity
    since: float
    message: str


@dataclass(frozen=True, slots=True)
class AlertState:
    """Firing conditions and each swarm's count of failed crawls in a row."""

    active: Mapping[AlertKey, ActiveAlert] = field(default_factory=dict)
    failures: Mapping[str, int] = field(default_factory=dict)


# ---- conditions true in one snapshot


def _ranges(indices: Iterable[int]) -> str:
    """``[0, 1, 2, 5]`` → ``"0–2, 5"``; at most ``MAX_LISTED_BLOCKS`` ranges, then ``…``."""
    spans: list[list[int]] = []
    for i in sorted(indices):
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    text = ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in spans[:MAX_LISTED_BLOCKS])
    return text + (", …" if len(spans) > MAX_LISTED_BLOCKS else "")


def snapshot_conditions(snapshot: Snapshot, rules: AlertRules) -> dict[tuple[str, str], str]:
    """``(kind, subject) -> message`` for every condition true in ``snapshot``."""
    found: dict[tuple[str, str], str] = {}
    for report in snapshot.models:
        name, prefix = report.model.display_name, report.model.dht_prefix
        holes = [b.index for b in report.blocks if b.online == 0]
        if "broken" in rules.model_states and report.state == "broken":
            where = f"blocks {_ranges(holes)} have no online server" if holes else "no block is known"
            found[("broken", prefix)] = f"model {name} is broken: {where}"
        covered_by_broken = report.state == "broken" and "broken" in rules.model_states
        if "degraded" in rules.model_states and report.state != "healthy" and not covered_by_broken:
            found[("degraded", prefix)] = (
                f"model {name} is not healthy ({report.state}): its least-served block has {report.min_online} "
                "online server(s)"
            )
        if rules.not_runnable and not covered_by_broken and (message := _not_runnable(report, rules)) is not None:
            found[("not_runnable", prefix)] = message
        if rules.min_online > 0:
            low = [b.index for b in report.blocks if b.online < rules.min_online]
            if low:
                found[("low_redundancy", prefix)] = (
                    f"model {name}: {len(low)} block(s) have fewer than {rules.min_online} online servers "
                    f"({_ranges(low)})"
                )
    if rules.bootstrap_down:
        for peer in snapshot.bootstrap:
            if peer.state != "online":
                found[("bootstrap_down", peer.address)] = f"bootstrap peer {peer.address} is down" + (
                    f": {peer.error}" if peer.error else ""
                )
    watched = rules.watched(snapshot.swarm)
    if watched:
        states: dict[str, list[str]] = {}
        for report in snapshot.models:
            for row in report.servers:
                states.setdefault(row.peer_id, []).append(row.state)
        for peer_id in watched:
            seen = states.get(peer_id)
            if not seen:
                found[("server_down", peer_id)] = f"watched server {peer_id} announces no block"
            elif "online" not in seen:
                found[("server_down", peer_id)] = f"watched server {peer_id} is {', '.join(sorted(set(seen)))}"
    return found


def _not_runnable(report: ModelReport, rules: AlertRules) -> str | None:
    """Why a client cannot run the model now (which blocks, and why their servers were skipped), or None."""
    route = plan_route(report, rules.session_tokens)
    if route.runnable:
        return None
    name = report.model.display_name
    if not route.missing:
        return f"model {name} is not runnable: it has no blocks"
    missing = set(route.missing)
    rows = {row.peer_id: row for row in report.servers}
    reasons = Counter(
        s.reason for s in route.skipped if any(b in missing for b in range(rows[s.peer_id].start, rows[s.peer_id].end))
    )
    why = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items())) or "no server at all"
    return (
        f"model {name} is not runnable: no usable server holds blocks {_ranges(route.missing)} (skipped there: {why})"
    )


# ---- transitions


def _fire(swarm: str, kind: str, subject: str, message: str, ts: float, crawl_id: int | None) -> AlertEvent:
    return AlertEvent(swarm, kind, subject, "firing", SEVERITY.get(kind, "warning"), ts, message, crawl_id)


def _resolve(alert: ActiveAlert, ts: float, message: str, crawl_id: int | None) -> AlertEvent:
    return AlertEvent(
        alert.swarm, alert.kind, alert.subject, "resolved", alert.severity, ts, message, crawl_id, alert.since
    )


def _apply(state: AlertState, events: list[AlertEvent], failures: Mapping[str, int]) -> AlertState:
    active = dict(state.active)
    for event in events:
        if event.status == "firing":
            active[event.key] = ActiveAlert(
                event.swarm, event.kind, event.subject, event.severity, event.ts, event.message
            )
        else:
            active.pop(event.key, None)
    return AlertState(active, failures)


def forget(state: AlertState, events: Iterable[AlertEvent], before: AlertState) -> AlertState:
    """``state`` with the transitions of ``events`` undone (each key as in ``before``), failure counts kept: events
    that could not be recorded are found again by the next evaluation instead of being lost."""
    active = dict(state.active)
    for event in events:
        if event.key in before.active:
            active[event.key] = before.active[event.key]
        else:
            active.pop(event.key, None)
    return AlertState(active, state.failures)


def evaluate_snapshot(state: AlertState, rules: AlertRules, snapshot: Snapshot) -> tuple[AlertState, list[AlertEvent]]:
    """A succeeded crawl of ``snapshot.swarm``: fire what became true, resolve what stopped being true."""
    swarm, ts, crawl_id = snapshot.swarm, snapshot.finished_at, snapshot.crawl_id
    now_true = {(swarm, kind, subject): msg for (kind, subject), msg in snapshot_conditions(snapshot, rules).items()}
    events: list[AlertEvent] = []
    for key, alert in sorted(state.active.items()):
        if key[0] == swarm and key not in now_true:
            events.append(_resolve(alert, ts, _resolved_message(alert), crawl_id))
    for key, message in now_true.items():
        if key not in state.active:
            events.append(_fire(*key, message, ts, crawl_id))
    failures = {**state.failures, swarm: 0}
    return _apply(state, events, failures), events


def evaluate_failure(
    state: AlertState, rules: AlertRules, swarm: str, ts: float, error: str, crawl_id: int | None = None
) -> tuple[AlertState, list[AlertEvent]]:
    """A failed crawl: one more in a row; ``crawl_failing`` fires when the count reaches ``crawl_failures``."""
    count = state.failures.get(swarm, 0) + 1
    failures = {**state.failures, swarm: count}
    events: list[AlertEvent] = []
    key = (swarm, "crawl_failing", swarm)
    if rules.crawl_failures > 0 and count >= rules.crawl_failures and key not in state.active:
        message = f"swarm {swarm}: {count} crawls failed in a row, the last with: {error}"
        events.append(_fire(*key, message, ts, crawl_id))
    return _apply(state, events, failures), events


def _resolved_message(alert: ActiveAlert) -> str:
    what = {
        "broken": "is no longer broken",
        "degraded": "is healthy again",
        "not_runnable": "is runnable again",
        "low_redundancy": "has enough online servers on every block again",
        "bootstrap_down": "answers again",
        "crawl_failing": "crawls succeed again",
        "server_down": "is online again",
    }.get(alert.kind, "resolved")
    return f"{alert.kind} {alert.subject}: {what}"


def restore_state(active: Iterable[ActiveAlert], failures: Mapping[str, int]) -> AlertState:
    """The state a restarted monitor resumes from (what the store says is firing), so nothing fires twice."""
    return AlertState({(a.swarm, a.kind, a.subject): a for a in active}, dict(failures))
