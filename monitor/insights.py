"""JSON shapes for what goes beyond the official monitor: alerts, versions, places and fix-it hints (pure).

Public IPs are never published: a server's place is its country and AS (or ``private``/``unknown``), which is
what health.petals.dev showed too; the IP itself stays in the database.
"""

from __future__ import annotations

from typing import Any

from .alerts.delivery import event_document
from .alerts.rules import ActiveAlert, AlertEvent
from .geo import Breakdown, model_breakdown
from .report import model_invalid_records
from .rules.hints import invalid_for_peer, model_hints, server_hints
from .rules.versions import VersionCount, VersionPoint, is_outdated, row_version
from .snapshot import ModelReport, Reachability, ServerRow, Snapshot


def alert_event_document(event_id: int, event: AlertEvent) -> dict[str, Any]:
    return {"id": event_id, **event_document(event)}


def active_alert_document(alert: ActiveAlert) -> dict[str, Any]:
    return {
        "swarm": alert.swarm,
        "kind": alert.kind,
        "subject": alert.subject,
        "severity": alert.severity,
        "since": alert.since,
        "message": alert.message,
    }


def place_document(reach: Reachability | None) -> dict[str, Any]:
    """``scope``: ``public`` (a country/AS may follow), ``private`` (only private/loopback addresses) or
    ``unknown`` (not probed, or no IP address known)."""
    if reach is not None and (reach.public_ip or reach.country):
        scope = "public"
    elif reach is not None and reach.private_only:
        scope = "private"
    else:
        scope = "unknown"
    return {
        "scope": scope,
        "country": reach.country if reach else None,
        "country_name": reach.country_name if reach else None,
        "asn": reach.asn if reach else None,
    }


def breakdown_document(breakdown: Breakdown) -> dict[str, Any]:
    return {
        "servers": breakdown.total,
        "located": breakdown.located,
        "countries": [{"country": c, "country_name": name, "servers": n} for c, name, n in breakdown.countries],
        "asns": [{"asn": a, "servers": n} for a, n in breakdown.asns],
    }


def server_row_insights(row: ServerRow, snapshot: Snapshot, min_version: str | None) -> dict[str, Any]:
    """What a server page (and its JSON) adds to a row: its version verdict, its place, what to fix."""
    version = row_version(row)
    return {
        "version": version,
        "outdated": is_outdated(version, min_version),
        "place": place_document(row.reachability),
        "hints": [
            h.document()
            for h in server_hints(row, min_version=min_version, invalid=invalid_for_peer(snapshot.invalid, row.peer_id))
        ],
    }


def model_insights(
    report: ModelReport, snapshot: Snapshot, min_version: str | None, min_redundancy: int = 2
) -> dict[str, Any]:
    invalid = model_invalid_records(snapshot, report.model.dht_prefix)
    hints = model_hints(report, min_version=min_version, invalid=invalid, min_redundancy=min_redundancy)
    return {
        "hints": [h.document() for h in hints],
        "places": breakdown_document(model_breakdown(report)),
    }


def version_count_document(count: VersionCount) -> dict[str, Any]:
    return {"version": count.version, "servers": count.servers, "outdated": count.outdated}


def version_point_document(point: VersionPoint) -> dict[str, Any]:
    return {"ts": point.ts, "counts": dict(point.counts), "total": point.total}
