"""Snapshot → JSON documents: the ``/api/v1/state`` document and the other API shapes (pure functions).

``state_document`` is a superset of health.petals.dev's ``/api/v1/state`` so its consumers keep working: same keys
(``bootstrap_states``, ``top_contributors``, ``model_reports[].server_rows[].span.server_info`` ...), enums as
lowercase names, PeerIDs as base58 text, times as Unix seconds. Additions (TTL, per-block redundancy, crawl stats,
the swarm name) are new keys only; no official key changes meaning.

One deliberate choice: a model's ``state`` keeps the official meaning (``healthy`` when every block has an online
server, else ``broken``); our three-level judgement (``healthy``/``degraded``/``broken``) is ``health``. Non-finite
floats (a ping of ``inf``) become ``null``, as the official ``ignore_nan`` did, so the output is strict JSON.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from .rules.vantages import ReachableFrom, VantageVerdicts
from .rules.versions import is_outdated, row_version
from .snapshot import (
    PETALS_STATE_NAMES,
    BlockStat,
    BootstrapPeer,
    CrawlStats,
    InvalidRecord,
    ModelReport,
    Reachability,
    ServerInfo,
    ServerRow,
    Snapshot,
)
from .store.history import CrawlDiff, CrawlSummary, ModelPoint, ServerChange, ServerPoint

# A Hugging Face repo id ("owner/name"): letters, digits, '-', '_', '.'; no leading/trailing '-' or '.', no '--'
# or '..'. Only names matching it ever become links, so a hostile adapter name stays plain text.
_REPO_PART = r"(?!.*(?:--|\.\.))[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"{_REPO_PART}/{_REPO_PART}")
_SAFE_URL = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?(?:\?[^\s\"<>]*)?")
HF_PREFIX = "https://huggingface.co/"


def is_repo_id(name: object) -> bool:
    """True if ``name`` is a strict Hugging Face repo id, safe to turn into a huggingface.co link."""
    return isinstance(name, str) and len(name) <= 96 * 2 + 1 and _REPO_ID.fullmatch(name) is not None


def adapter_url(name: str) -> str | None:
    return HF_PREFIX + name if is_repo_id(name) else None


def safe_http_url(url: object) -> str | None:
    """``url`` if it is a plain http(s) URL with no quotes, spaces or control characters; else None (never a link)."""
    if isinstance(url, str) and len(url) <= 2048 and _SAFE_URL.fullmatch(url):
        return url
    return None


def short_peer_id(peer_id: str) -> str:
    """The official monitor's short form: ``...`` and the last six characters."""
    return "..." + peer_id[-6:]


def finite(value: float | None) -> float | None:
    """``value`` as a float if finite, else None (strict JSON has no inf/nan)."""
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def official_state(report: ModelReport) -> str:
    """health.petals.dev's model state: ``healthy`` when every block has at least one online server."""
    return "healthy" if report.blocks and all(b.online > 0 for b in report.blocks) else "broken"


def cache_tokens_per_block(row: ServerRow) -> int | None:
    """Attention cache tokens left per block (keys and values, hence ``2 *``), as the official monitor computes."""
    if row.cache_tokens_left_per_block is not None:
        return row.cache_tokens_left_per_block
    left = row.info.cache_tokens_left
    if left is None or row.length <= 0:
        return None
    return left // (row.length * 2)


# ---- pieces


def server_info_document(info: ServerInfo) -> dict[str, Any]:
    return {
        "state": PETALS_STATE_NAMES.get(info.state, str(info.state)),
        "throughput": finite(info.throughput),
        "start_block": info.start_block,
        "end_block": info.end_block,
        "public_name": info.public_name,
        "version": info.version,
        "network_rps": finite(info.network_rps),
        "forward_rps": finite(info.forward_rps),
        "inference_rps": finite(info.inference_rps),
        "adapters": list(info.adapters),
        "torch_dtype": info.torch_dtype,
        "quant_type": info.quant_type,
        "using_relay": info.using_relay,
        "cache_tokens_left": info.cache_tokens_left,
        "next_pings": None if info.next_pings is None else {k: finite(v) for k, v in info.next_pings.items()},
    }


def reachability_document(reach: Reachability | None) -> dict[str, Any] | None:
    if reach is None:
        return None
    return {
        "ok": reach.ok,
        "checked_at": reach.checked_at,
        "latency": finite(reach.latency),
        "error": reach.error,
        "joining": reach.joining,
        "version": reach.version,
    }


def reachable_from_document(verdict: ReachableFrom | None) -> dict[str, Any] | None:
    """ "Reachable from k of n" vantage points, with each one's newest result (``monitor.rules.vantages``)."""
    if verdict is None:
        return None
    return {
        "reachable": verdict.reachable,
        "of": verdict.of,
        "vantages": [
            {
                "vantage": r.vantage,
                "ok": r.ok,
                "joining": r.joining,
                "checked_at": r.checked_at,
                "latency": finite(r.latency),
                "error": r.error,
            }
            for r in verdict.results
        ],
    }


def server_row_document(
    row: ServerRow, *, min_version: str | None = None, vantages: VantageVerdicts | None = None
) -> dict[str, Any]:
    """One server row; with ``min_version`` also ``outdated`` (True/False, or None for an unreadable version), with
    ``vantages`` also ``reachable_from`` (None when no vantage point has a result for it)."""
    doc: dict[str, Any] = {
        "short_peer_id": short_peer_id(row.peer_id),
        "peer_id": row.peer_id,
        "peer_ip_info": "unknown",  # the official monitor's GeoIP lookup; we do not send IPs to third parties
        "show_public_name": row.show_public_name,
        "state": row.state,
        "span": {
            "peer_id": row.peer_id,
            "start": row.start,
            "end": row.end,
            "length": row.length,
            "state": row.state,
            "throughput": finite(row.info.throughput),
            "server_info": server_info_document(row.info),
        },
        "adapters": [
            {"name": name, "short_name": name.split("/")[-1], "url": adapter_url(name)} for name in row.info.adapters
        ],
        "pings_to_me": {origin: finite(rtt) for origin, rtt in row.pings_to_me.items()},
        # ours
        "expiration": finite(row.expiration),
        "ttl": finite(row.ttl),
        "reachability": reachability_document(row.reachability),
    }
    per_block = cache_tokens_per_block(row)
    if per_block is not None:
        doc["cache_tokens_left_per_block"] = per_block
    if min_version:
        doc["outdated"] = is_outdated(row_version(row), min_version)
    if vantages is not None:
        doc["reachable_from"] = reachable_from_document(vantages.get(row.peer_id))
    return doc


def block_document(block: BlockStat) -> dict[str, Any]:
    return {
        "index": block.index,
        "online": block.online,
        "joining": block.joining,
        "offline": block.offline,
        "unreachable": block.unreachable,
        "expired": block.expired,
        "throughput": finite(block.throughput),
    }


def model_report_document(
    report: ModelReport, *, min_version: str | None = None, vantages: VantageVerdicts | None = None
) -> dict[str, Any]:
    model = report.model
    name = model.display_name
    return {
        "name": name,
        "short_name": name.split("/")[-1],
        "dht_prefix": model.dht_prefix,
        "repository": model.repository,
        "num_blocks": model.num_blocks,
        "official": model.official,
        "limited": False,
        "state": official_state(report),
        "server_rows": [server_row_document(row, min_version=min_version, vantages=vantages) for row in report.servers],
        # ours
        "health": report.state,
        "min_online": report.min_online,
        "blocks_covered": report.blocks_covered,
        "blocks": [block_document(b) for b in report.blocks],
    }


def bootstrap_document(peer: BootstrapPeer) -> dict[str, Any]:
    return {
        "address": peer.address,
        "peer_id": peer.peer_id,
        "state": peer.state,
        "latency": finite(peer.latency),
        "error": peer.error,
    }


def invalid_document(record: InvalidRecord) -> dict[str, Any]:
    return {"key": record.key, "subkey": record.subkey, "reason": record.reason, "detail": record.detail}


def stats_document(stats: CrawlStats) -> dict[str, Any]:
    return {**stats.counts(), "invalid_by_reason": dict(stats.invalid_by_reason)}


def reachability_issues(snapshot: Snapshot) -> list[dict[str, Any]]:
    """Servers whose reachability probe failed, once each, sorted by peer id (the official ``{peer_id, err}``)."""
    issues: dict[str, str] = {}
    for report in snapshot.models:
        for row in report.servers:
            reach = row.reachability
            if reach is not None and not reach.ok:
                issues.setdefault(row.peer_id, reach.error or "unreachable")
    return [{"peer_id": peer_id, "err": err} for peer_id, err in sorted(issues.items())]


def model_invalid_records(snapshot: Snapshot, dht_prefix: str) -> list[InvalidRecord]:
    """Invalid records under this model's block keys (``<dht_prefix>.<block>``)."""
    prefix = dht_prefix + "."
    return [r for r in snapshot.invalid if r.key.startswith(prefix) and r.key[len(prefix) :].isdigit()]


# ---- the state document


def state_document(
    snapshot: Snapshot,
    *,
    update_period: float | None = None,
    last_crawl: CrawlSummary | None = None,
    stale: bool = False,
) -> dict[str, Any]:
    """The ``/api/v1/state`` document for one swarm's snapshot (the last good crawl).

    ``last_crawl`` is the most recent crawl of any status: when it failed after ``snapshot`` it is reported
    under ``last_crawl`` while the data stays that of the last good crawl.
    """
    return {
        "bootstrap_states": [peer.state for peer in snapshot.bootstrap],
        "top_contributors": dict(snapshot.top_contributors),
        "model_reports": [model_report_document(report) for report in snapshot.models],
        "reachability_issues": reachability_issues(snapshot),
        "last_updated": snapshot.finished_at,
        "update_period": update_period,
        "update_duration": snapshot.duration,
        # ours
        "swarm": snapshot.swarm,
        "crawl_id": snapshot.crawl_id,
        "crawl": {
            "id": snapshot.crawl_id,
            "status": snapshot.status,
            "started_at": snapshot.started_at,
            "finished_at": snapshot.finished_at,
            "duration": snapshot.duration,
            "dht_time": snapshot.dht_time,
            "error": snapshot.error,
            **stats_document(snapshot.stats),
        },
        "last_crawl": None if last_crawl is None else crawl_summary_document(last_crawl),
        "stale": stale,
        "bootstrap_peers": [bootstrap_document(peer) for peer in snapshot.bootstrap],
        "invalid_records": [invalid_document(r) for r in snapshot.invalid],
    }


# ---- history shapes


def crawl_summary_document(summary: CrawlSummary) -> dict[str, Any]:
    return {
        "id": summary.id,
        "swarm": summary.swarm,
        "status": summary.status,
        "started_at": summary.started_at,
        "finished_at": summary.finished_at,
        "duration": summary.duration,
        "peers_contacted": summary.peers_contacted,
        "peers_failed": summary.peers_failed,
        "rpcs": summary.rpcs,
        "keys": summary.keys,
        "records": summary.records,
        "invalid_by_reason": dict(summary.invalid_by_reason),
        "error": summary.error,
        "vantage": summary.vantage,
    }


def _placement(value: tuple[str, int, int] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    state, start, end = value
    return {"state": state, "start": start, "end": end}


def server_change_document(change: ServerChange) -> dict[str, Any]:
    return {
        "dht_prefix": change.dht_prefix,
        "peer_id": change.peer_id,
        "before": _placement(change.before),
        "after": _placement(change.after),
    }


def diff_document(diff: CrawlDiff) -> dict[str, Any]:
    def changes(items: Iterable[ServerChange]) -> list[dict[str, Any]]:
        return [server_change_document(c) for c in items]

    return {
        "a": diff.a,
        "b": diff.b,
        "joined": changes(diff.joined),
        "left": changes(diff.left),
        "moved": changes(diff.moved),
        "state_changed": changes(diff.state_changed),
        "model_state_changed": [
            {"dht_prefix": prefix, "before": before, "after": after}
            for prefix, before, after in diff.model_state_changed
        ],
    }


def model_point_document(point: ModelPoint) -> dict[str, Any]:
    return {
        "ts": point.ts,
        "state": point.state,
        "blocks_covered": point.blocks_covered,
        "num_blocks": point.num_blocks,
        "min_online": point.min_online,
        "servers_online": point.servers_online,
        "throughput": finite(point.throughput),
    }


def server_point_document(point: ServerPoint) -> dict[str, Any]:
    return {
        "ts": point.ts,
        "crawl_id": point.crawl_id,
        "dht_prefix": point.dht_prefix,
        "state": point.state,
        "start": point.start,
        "end": point.end,
        "version": point.version,
        "throughput": finite(point.throughput),
    }


SERVER_ROW_COLUMNS: tuple[str, ...] = (
    "crawl_id",
    "swarm",
    "dht_prefix",
    "peer_id",
    "state",
    "start",
    "end",
    "length",
    "throughput",
    "inference_rps",
    "forward_rps",
    "network_rps",
    "public_name",
    "version",
    "torch_dtype",
    "quant_type",
    "adapters",
    "using_relay",
    "cache_tokens_left",
    "expiration",
    "ttl",
    "reachable",
    "reachability_error",
)


def flat_server_rows(snapshot: Snapshot) -> list[dict[str, Any]]:
    """Every server row of every model, flattened for CSV/NDJSON export (columns: ``SERVER_ROW_COLUMNS``)."""
    rows = []
    for report in snapshot.models:
        for row in report.servers:
            info = row.info
            rows.append(
                {
                    "crawl_id": snapshot.crawl_id,
                    "swarm": snapshot.swarm,
                    "dht_prefix": report.model.dht_prefix,
                    "peer_id": row.peer_id,
                    "state": row.state,
                    "start": row.start,
                    "end": row.end,
                    "length": row.length,
                    "throughput": finite(info.throughput),
                    "inference_rps": finite(info.inference_rps),
                    "forward_rps": finite(info.forward_rps),
                    "network_rps": finite(info.network_rps),
                    "public_name": info.public_name,
                    "version": info.version,
                    "torch_dtype": info.torch_dtype,
                    "quant_type": info.quant_type,
                    "adapters": list(info.adapters),
                    "using_relay": info.using_relay,
                    "cache_tokens_left": info.cache_tokens_left,
                    "expiration": finite(row.expiration),
                    "ttl": finite(row.ttl),
                    "reachable": None if row.reachability is None else row.reachability.ok,
                    "reachability_error": None if row.reachability is None else row.reachability.error,
                }
            )
    return rows
