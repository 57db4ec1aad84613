"""Store round trips for migration 3: alert events (active = newest event firing), failure streaks, the version
rollout from raw crawls and rollups, and where servers are (reachability's address and place)."""

from __future__ import annotations

import dataclasses

from factories import T0, make_snapshot

from monitor.alerts.rules import AlertEvent
from monitor.rules.versions import NO_VERSION
from monitor.store.sqlite import Store, StoreWriter


def ev(kind: str, subject: str, status: str, ts: float, swarm: str = "s", severity: str = "warning") -> AlertEvent:
    return AlertEvent(swarm, kind, subject, status, severity, ts, f"{kind} {subject} {status}", crawl_id=1)


def test_alert_events_round_trip_and_active_alerts(db_location):
    path = db_location
    events = [
        ev("degraded", "m", "firing", T0),
        ev("broken", "m", "firing", T0 + 1, severity="critical"),
        ev("bootstrap_down", "/ip4/1.2.3.4/tcp/1/p2p/Qm", "firing", T0 + 2, swarm="other"),
        ev("broken", "m", "resolved", T0 + 3, severity="critical"),
        ev("broken", "m", "firing", T0 + 4, severity="critical"),  # flapped back
        ev("degraded", "m", "resolved", T0 + 5),
    ]
    with StoreWriter(path) as writer:
        ids = writer.record_alert_events(events)
        assert writer.record_alert_events([]) == []
    assert ids == sorted(ids) and len(ids) == 6
    with Store(path) as store:
        newest = store.alert_events()
        assert [e for _, e in newest] == events[::-1]
        assert [i for i, _ in newest] == ids[::-1]
        page = store.alert_events(limit=2, before_id=ids[3])
        assert [e.ts for _, e in page] == [T0 + 2, T0 + 1]
        assert [e.swarm for _, e in store.alert_events("other")] == ["other"]
        active = store.active_alerts()
        expected = [("broken", "s", T0 + 4), ("bootstrap_down", "other", T0 + 2)]  # critical first
        assert [(a.kind, a.swarm, a.since) for a in active] == expected
        assert [a.kind for a in store.active_alerts("other")] == ["bootstrap_down"]


def test_failure_streaks_count_failed_crawls_since_the_last_good_one(db_location):
    path = db_location
    with StoreWriter(path) as writer:
        for i in range(2):
            writer.fail_crawl(writer.begin_crawl("a", T0 + i), "boom", finished_at=T0 + i)
        writer.write_snapshot(make_snapshot("a", t=T0 + 10))
        for i in range(3):
            writer.fail_crawl(writer.begin_crawl("a", T0 + 20 + i), "boom", finished_at=T0 + 20 + i)
        writer.fail_crawl(writer.begin_crawl("b", T0), "boom", finished_at=T0)
        writer.write_snapshot(make_snapshot("c", t=T0))
        writer.begin_crawl("c", T0 + 60)  # still running: not a failure
    with Store(path) as store:
        assert store.failure_streaks() == {"a": 3, "b": 1}


def test_version_history_per_crawl_and_per_bucket(db_location):
    path = db_location
    snaps = []
    for i, t in enumerate((T0, T0 + 60, T0 + 3600)):
        snap = make_snapshot("s", t=t, seed=1, step=i, hostile=False)
        snaps.append(snap)
    with StoreWriter(path) as writer:
        for snap in snaps:
            writer.write_snapshot(snap)
    with Store(path) as store:
        points = store.version_history("s", T0 - 1, T0 + 7200)
        assert [p.ts for p in points] == [s.finished_at for s in snaps]
        for point, snap in zip(points, snaps, strict=True):
            expected: dict[str, set[str]] = {}
            for report in snap.models:
                for row in report.servers:
                    expected.setdefault(row.info.version or NO_VERSION, set()).add(row.peer_id)
            assert point.counts == {v: len(peers) for v, peers in expected.items()}
        hourly = store.version_history("s", T0 - 1, T0 + 7200, step=3600)
        assert len(hourly) == 2 and hourly[0].ts == (T0 // 3600) * 3600
        assert hourly[0].total >= points[0].total
        assert store.version_history("nope", T0 - 1, T0 + 7200) == []


def test_server_places_round_trip(db_location):
    path = db_location
    snap = make_snapshot("s", t=T0, hostile=False)
    report = snap.models[0]
    i, row = next((i, r) for i, r in enumerate(report.servers) if r.reachability is not None)
    placed = dataclasses.replace(
        row.reachability, public_ip="1.1.1.1", country="AU", country_name="Australia", asn="CLOUDFLARENET"
    )
    report.servers[i] = dataclasses.replace(row, reachability=placed)
    j, other = next(
        (j, r) for j, r in enumerate(report.servers) if r.reachability is not None and r.peer_id != row.peer_id
    )
    local = dataclasses.replace(other.reachability, private_only=True)
    report.servers[j] = dataclasses.replace(other, reachability=local)
    with StoreWriter(path) as writer:
        crawl_id = writer.write_snapshot(snap).id
    with Store(path) as store:
        back = store.snapshot(crawl_id)
    rows = {r.peer_id: r for r in back.models[0].servers}
    assert rows[row.peer_id].reachability == placed
    assert rows[other.peer_id].reachability.private_only is True


def test_retention_prunes_old_alert_events_but_keeps_each_conditions_newest(db_location):
    path = db_location
    day = 86400.0
    now = T0 + 100 * day
    events = [
        ev("broken", "m", "firing", now - 60 * day),  # old and superseded: deleted
        ev("broken", "m", "resolved", now - 59 * day),  # old, but the newest of its condition: kept
        ev("degraded", "m", "firing", now - 50 * day),  # still firing, however old: kept
        ev("bootstrap_down", "x", "firing", now - 40 * day),  # old and superseded: deleted
        ev("bootstrap_down", "x", "resolved", now - 10 * day),  # recent: kept
    ]
    with StoreWriter(path) as writer:
        writer.record_alert_events(events)
        report = writer.apply_retention(now, raw_days=7, hourly_days=30)
    assert report.alert_events_deleted == 2
    with Store(path) as store:
        left = [(e.kind, e.status) for _, e in store.alert_events()]
        assert left == [("bootstrap_down", "resolved"), ("degraded", "firing"), ("broken", "resolved")]
        assert [a.kind for a in store.active_alerts()] == ["degraded"]
