"""The OpenAPI 3.1 document of ``/api/v1`` (served at ``/api/v1/openapi.json``; tests validate responses by it)."""

from __future__ import annotations

import functools
from typing import Any

from ..report import SERVER_ROW_COLUMNS
from ..rules.route import PENALTY_REASONS, SKIP_REASONS
from ..snapshot import SERVER_STATES
from .server_table import SORT_KEYS, STATES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], *, required: list[str] | None = None, extra: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props, "required": required or list(props)}
    if not extra:
        schema["additionalProperties"] = False
    return schema


def _arr(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}
N_STR = {"type": ["string", "null"]}
N_INT = {"type": ["integer", "null"]}
N_NUM = {"type": ["number", "null"]}
N_BOOL = {"type": ["boolean", "null"]}
SERVER_STATE = {"type": "string", "enum": list(SERVER_STATES)}
HEALTH = {"type": "string", "enum": ["healthy", "degraded", "broken"]}
CRAWL_STATUS = {"type": "string", "enum": ["started", "succeeded", "failed"]}
COUNTS = {"type": "object", "additionalProperties": INT}


def _schemas() -> dict[str, Any]:
    server_info = _obj(
        {
            "state": {"type": "string", "enum": ["offline", "joining", "online"]},
            "throughput": N_NUM,
            "start_block": N_INT,
            "end_block": N_INT,
            "public_name": N_STR,
            "version": N_STR,
            "network_rps": N_NUM,
            "forward_rps": N_NUM,
            "inference_rps": N_NUM,
            "adapters": _arr(STR),
            "torch_dtype": N_STR,
            "quant_type": N_STR,
            "using_relay": N_BOOL,
            "cache_tokens_left": N_INT,
            "next_pings": {"type": ["object", "null"], "additionalProperties": N_NUM},
        }
    )
    reachability = {
        "oneOf": [
            {"type": "null"},
            _obj(
                {
                    "ok": BOOL,
                    "checked_at": NUM,
                    "latency": N_NUM,
                    "error": N_STR,
                    "joining": BOOL,
                    "version": N_STR,
                }
            ),
        ]
    }
    reachable_from = _obj(
        {
            "reachable": INT,
            "of": INT,
            "vantages": _arr(
                _obj(
                    {
                        "vantage": STR,
                        "ok": BOOL,
                        "joining": BOOL,
                        "checked_at": NUM,
                        "latency": N_NUM,
                        "error": N_STR,
                    }
                )
            ),
        }
    )
    server_row = _obj(
        {
            "short_peer_id": STR,
            "peer_id": STR,
            "peer_ip_info": {},
            "show_public_name": BOOL,
            "state": SERVER_STATE,
            "span": _obj(
                {
                    "peer_id": STR,
                    "start": INT,
                    "end": INT,
                    "length": INT,
                    "state": SERVER_STATE,
                    "throughput": N_NUM,
                    "server_info": _ref("ServerInfo"),
                }
            ),
            "adapters": _arr(_obj({"name": STR, "short_name": STR, "url": N_STR})),
            "pings_to_me": {"type": "object", "additionalProperties": N_NUM},
            "cache_tokens_left_per_block": INT,
            "expiration": N_NUM,
            "ttl": N_NUM,
            "reachability": _ref("Reachability"),
            "reachable_from": {
                "oneOf": [{"type": "null"}, _ref("ReachableFrom")],
                "description": "Each vantage point's newest result (model and server documents; null: none yet)",
            },
            "outdated": {
                "type": ["boolean", "null"],
                "description": "Older than [versions] min_version (null: unreadable version); absent when no minimum",
            },
        },
        required=["short_peer_id", "peer_id", "show_public_name", "state", "span", "adapters", "pings_to_me", "ttl"],
    )
    block = _obj(
        {
            "index": INT,
            "online": INT,
            "joining": INT,
            "offline": INT,
            "unreachable": INT,
            "expired": INT,
            "throughput": N_NUM,
        }
    )
    model_report = _obj(
        {
            "name": STR,
            "short_name": STR,
            "dht_prefix": STR,
            "repository": N_STR,
            "num_blocks": INT,
            "official": BOOL,
            "limited": BOOL,
            "state": {"type": "string", "enum": ["healthy", "broken"], "description": "health.petals.dev's state"},
            "server_rows": _arr(_ref("ServerRow")),
            "health": HEALTH,
            "min_online": INT,
            "blocks_covered": INT,
            "blocks": _arr(_ref("BlockStat")),
        }
    )
    bootstrap = _obj(
        {
            "address": STR,
            "peer_id": N_STR,
            "state": {"type": "string", "enum": ["online", "unreachable"]},
            "latency": N_NUM,
            "error": N_STR,
        }
    )
    invalid = _obj({"key": STR, "subkey": N_STR, "reason": STR, "detail": STR})
    crawl_summary = _obj(
        {
            "id": INT,
            "swarm": STR,
            "status": CRAWL_STATUS,
            "started_at": NUM,
            "finished_at": N_NUM,
            "duration": N_NUM,
            "peers_contacted": INT,
            "peers_failed": INT,
            "rpcs": INT,
            "keys": INT,
            "records": INT,
            "invalid_by_reason": COUNTS,
            "error": N_STR,
            "vantage": {"type": ["string", "null"], "description": "The vantage point of the process that crawled"},
        }
    )
    issue = _obj({"peer_id": STR, "err": STR})
    state = _obj(
        {
            "bootstrap_states": _arr({"type": "string", "enum": ["online", "unreachable"]}),
            "top_contributors": COUNTS,
            "model_reports": _arr(_ref("ModelReport")),
            "reachability_issues": _arr(_ref("ReachabilityIssue")),
            "last_updated": NUM,
            "update_period": N_NUM,
            "update_duration": NUM,
            "swarm": STR,
            "crawl_id": N_INT,
            "crawl": _obj(
                {
                    "id": N_INT,
                    "status": CRAWL_STATUS,
                    "started_at": NUM,
                    "finished_at": NUM,
                    "duration": NUM,
                    "dht_time": NUM,
                    "error": N_STR,
                    "peers_contacted": INT,
                    "peers_failed": INT,
                    "rpcs": INT,
                    "keys": INT,
                    "records": INT,
                    "invalid_by_reason": COUNTS,
                }
            ),
            "last_crawl": {"oneOf": [{"type": "null"}, _ref("CrawlSummary")]},
            "stale": BOOL,
            "as_of": N_NUM,
            "bootstrap_peers": _arr(_ref("BootstrapPeer")),
            "invalid_records": _arr(_ref("InvalidRecord")),
        }
    )
    swarm_summary = _obj(
        {
            "swarm": STR,
            "update_period": NUM,
            "stale": BOOL,
            "as_of": N_NUM,
            "crawl_id": N_INT,
            "last_updated": N_NUM,
            "last_crawl": {"oneOf": [{"type": "null"}, _ref("CrawlSummary")]},
            "bootstrap_peers": _arr(_ref("BootstrapPeer")),
            "top_contributors": COUNTS,
            "models": _arr(
                _obj(
                    {
                        "dht_prefix": STR,
                        "name": STR,
                        "repository": N_STR,
                        "official": BOOL,
                        "num_blocks": INT,
                        "state": {"type": "string", "enum": ["healthy", "broken"]},
                        "health": HEALTH,
                        "blocks_covered": INT,
                        "min_online": INT,
                        "servers_online": INT,
                        "servers_total": INT,
                        "throughput": N_NUM,
                    }
                )
            ),
        }
    )
    placement = {"oneOf": [{"type": "null"}, _obj({"state": SERVER_STATE, "start": INT, "end": INT})]}
    change = _obj({"dht_prefix": STR, "peer_id": STR, "before": placement, "after": placement})
    model_point = _obj(
        {
            "ts": NUM,
            "state": HEALTH,
            "blocks_covered": INT,
            "num_blocks": INT,
            "min_online": INT,
            "servers_online": INT,
            "throughput": N_NUM,
        }
    )
    server_point = _obj(
        {
            "ts": NUM,
            "crawl_id": N_INT,
            "dht_prefix": STR,
            "state": SERVER_STATE,
            "start": INT,
            "end": INT,
            "version": N_STR,
            "throughput": N_NUM,
        }
    )
    hint = _obj(
        {
            "problem": {"type": "string", "description": "Stable code, e.g. unreachable, no_server, outdated"},
            "detail": {"type": "string", "description": "What the monitor saw"},
            "hint": {"type": "string", "description": "What the operator can do"},
        }
    )
    place = _obj(
        {
            "scope": {"type": "string", "enum": ["public", "private", "unknown"]},
            "country": N_STR,
            "country_name": N_STR,
            "asn": {"type": ["string", "null"], "description": "Autonomous system (organisation name)"},
        }
    )
    places = _obj(
        {
            "servers": INT,
            "located": INT,
            "countries": _arr(_obj({"country": STR, "country_name": N_STR, "servers": INT})),
            "asns": _arr(_obj({"asn": STR, "servers": INT})),
        }
    )
    alert_event = _obj(
        {
            "id": INT,
            "swarm": STR,
            "kind": STR,
            "subject": STR,
            "status": {"type": "string", "enum": ["firing", "resolved"]},
            "severity": {"type": "string", "enum": ["critical", "warning"]},
            "ts": NUM,
            "message": STR,
            "crawl_id": N_INT,
            "fired_at": N_NUM,
        }
    )
    active_alert = _obj(
        {
            "swarm": STR,
            "kind": STR,
            "subject": STR,
            "severity": {"type": "string", "enum": ["critical", "warning"]},
            "since": NUM,
            "message": STR,
        }
    )
    version_count = _obj({"version": STR, "servers": INT, "outdated": N_BOOL})
    return {
        "Hint": hint,
        "Place": place,
        "Places": places,
        "AlertEvent": alert_event,
        "ActiveAlert": active_alert,
        "Alerts": _obj({"active": _arr(_ref("ActiveAlert")), "events": _arr(_ref("AlertEvent")), "next_before": N_INT}),
        "VersionCount": version_count,
        "Versions": _obj(
            {
                "swarm": STR,
                "min_version": N_STR,
                "crawl_id": N_INT,
                "current": _arr(_ref("VersionCount")),
                "since": NUM,
                "until": NUM,
                "step": N_NUM,
                "points": _arr(
                    _obj(
                        {
                            "ts": NUM,
                            "counts": {"type": "object", "additionalProperties": INT},
                            "total": INT,
                        }
                    )
                ),
            }
        ),
        "Error": _obj({"error": _obj({"status": INT, "message": STR})}),
        "ServerInfo": server_info,
        "Reachability": reachability,
        "ServerRow": server_row,
        "ReachableFrom": reachable_from,
        "Vantages": _obj(
            {
                "swarm": STR,
                "crawl_id": N_INT,
                "vantage": STR,
                "max_age": NUM,
                "vantages": _arr(_obj({"vantage": STR, "servers": INT, "reached": INT, "last_checked_at": NUM})),
                "split": INT,
                "servers": _arr(
                    _obj(
                        {
                            "peer_id": STR,
                            "split": BOOL,
                            "reachable": INT,
                            "of": INT,
                            "vantages": reachable_from["properties"]["vantages"],
                        }
                    )
                ),
            }
        ),
        "BlockStat": block,
        "ModelReport": model_report,
        "BootstrapPeer": bootstrap,
        "InvalidRecord": invalid,
        "CrawlSummary": crawl_summary,
        "ReachabilityIssue": issue,
        "State": state,
        "SwarmSummary": swarm_summary,
        "Swarms": _obj({"swarms": _arr(_ref("SwarmSummary"))}),
        "Model": _obj(
            {
                "swarm": STR,
                "crawl_id": N_INT,
                "last_updated": NUM,
                "as_of": N_NUM,
                "stale": BOOL,
                "model": _ref("ModelReport"),
                "server_table": _obj(
                    {"q": STR, "state": STR, "version": STR, "sort": STR, "order": STR, "matched": INT, "total": INT}
                ),
                "reachability_issues": _arr(_ref("ReachabilityIssue")),
                "invalid_records": _arr(_ref("InvalidRecord")),
                "hints": _arr(_ref("Hint")),
                "places": _ref("Places"),
            }
        ),
        "ModelPoint": model_point,
        "ModelHistory": _obj(
            {
                "swarm": STR,
                "dht_prefix": STR,
                "since": NUM,
                "until": NUM,
                "step": N_NUM,
                "points": _arr(_ref("ModelPoint")),
            }
        ),
        "Route": _route_schema(),
        "BlockPoint": _obj(
            {
                "ts": {**NUM, "description": "bucket start (a crawl's time when not bucketed)"},
                "min_online": INT,
                "max_online": INT,
                "mean_online": NUM,
                "crawls": INT,
                "dark_crawls": {**INT, "description": "crawls that saw no online server for the block"},
                "width": {
                    **N_NUM,
                    "description": "seconds it covers when wider than step (a daily rollup); null: step",
                },
            }
        ),
        "DarkPeriod": _obj(
            {
                "start": {**NUM, "description": "the first crawl in range that saw no online server"},
                "end": {**N_NUM, "description": "the first crawl that saw it served again (null: still dark)"},
                "last_dark": NUM,
                "duration": {**NUM, "description": "seconds from start to end (or to last_dark while still dark)"},
                "approximate": {
                    **BOOL,
                    "description": "from rollups: only a bucket's first and last dark crawl are kept, so the bounds "
                    "are an envelope and two spells in one bucket read as one",
                },
            }
        ),
        "BlockHistory": _obj(
            {
                "swarm": STR,
                "dht_prefix": STR,
                "since": NUM,
                "until": NUM,
                "requested_step": N_NUM,
                "step": {**N_NUM, "description": "the bucket size used (null: one point per crawl)"},
                "coarsened": {**BOOL, "description": "true when step is coarser than asked, to bound the points"},
                "num_blocks": INT,
                "dark_truncated": {**BOOL, "description": "some block lists only its newest dark periods"},
                "blocks": _arr(
                    _obj({"block": INT, "series": _arr(_ref("BlockPoint")), "dark": _arr(_ref("DarkPeriod"))})
                ),
            }
        ),
        "ServerPoint": server_point,
        "Server": _obj(
            {
                "peer_id": STR,
                "placements": _arr(
                    _obj(
                        {
                            "swarm": STR,
                            "dht_prefix": STR,
                            "crawl_id": N_INT,
                            "server_row": _ref("ServerRow"),
                            "version": N_STR,
                            "outdated": N_BOOL,
                            "place": _ref("Place"),
                            "hints": _arr(_ref("Hint")),
                        }
                    )
                ),
                "uptime": {
                    "type": "object",
                    "description": "window in seconds (86400, 604800, 2592000) -> share of crawls online",
                    "additionalProperties": N_NUM,
                },
                "since": NUM,
                "until": NUM,
                "history": _arr(_ref("ServerPoint")),
            }
        ),
        "Crawls": _obj({"crawls": _arr(_ref("CrawlSummary")), "next_before": N_INT}),
        "Crawl": _obj(
            {
                "crawl": _ref("CrawlSummary"),
                "models": _arr(
                    _obj(
                        {
                            "dht_prefix": STR,
                            "state": {"type": "string", "enum": ["healthy", "broken"]},
                            "health": HEALTH,
                            "blocks_covered": INT,
                            "num_blocks": INT,
                            "min_online": INT,
                            "servers": INT,
                        }
                    )
                ),
                "invalid_records": _arr(_ref("InvalidRecord")),
            }
        ),
        "ServerChange": change,
        "CrawlDiff": _obj(
            {
                "a": INT,
                "b": INT,
                "joined": _arr(_ref("ServerChange")),
                "left": _arr(_ref("ServerChange")),
                "moved": _arr(_ref("ServerChange")),
                "state_changed": _arr(_ref("ServerChange")),
                "model_state_changed": _arr(
                    _obj({"dht_prefix": STR, "before": {"type": ["string", "null"]}, "after": N_STR})
                ),
            }
        ),
        "ServerRowExport": _obj({c: {} for c in SERVER_ROW_COLUMNS}),
        "Reachable": _obj(
            {
                "success": BOOL,
                "message": N_STR,
                "your_ip": N_STR,
                "joining": BOOL,
                "latency": N_NUM,
                "checked_at": NUM,
                "cached": BOOL,
                "vantage": {"type": "string", "description": "The vantage point that probed ([vantage] name)"},
                "recorded": {
                    "oneOf": [{"type": "null"}, _ref("ReachableFrom")],
                    "description": "What every vantage point recorded of this server lately",
                },
            },
            required=["success", "message", "your_ip"],
        ),
        "Health": _obj(
            {
                "status": {"type": "string", "enum": ["ok"]},
                "time": NUM,
                "swarms": {
                    "type": "object",
                    "additionalProperties": _obj(
                        {
                            "last_crawl_id": N_INT,
                            "last_crawl_status": {"type": ["string", "null"]},
                            "last_success_at": N_NUM,
                            "stale": BOOL,
                        }
                    ),
                },
                "scheduler": {"type": "object"},
            }
        ),
    }


def _route_schema() -> dict[str, Any]:
    hop = _obj(
        {
            "peer_id": STR,
            "start": INT,
            "end": INT,
            "inference_rps": N_NUM,
            "network_seconds": {**NUM, "description": "delay into this hop: half the RTT (or assumed) + overhead"},
            "compute_seconds": {**NUM, "description": "(end - start) / inference_rps"},
            "seconds": NUM,
            "rtt": {"type": "string", "enum": ["announced", "assumed"]},
            "relay": {**BOOL, "description": "the server is reachable only through a libp2p relay"},
            "penalty_seconds": {**NUM, "description": "Petals' alloc_delay (in network_seconds): short of cache"},
        }
    )
    return _obj(
        {
            "swarm": STR,
            "dht_prefix": STR,
            "crawl_id": N_INT,
            "last_updated": NUM,
            "as_of": N_NUM,
            "stale": BOOL,
            "num_blocks": INT,
            "runnable": {
                **BOOL,
                "description": "usable servers (online, reachable; short of cache too) cover every block",
            },
            "chain": {**_arr(hop), "description": "contiguous from block 0 to num_blocks when runnable, else empty"},
            "steps_per_second": N_NUM,
            "seconds_per_step": N_NUM,
            "estimate": _obj(
                {
                    "method": STR,
                    "session_tokens": INT,
                    "client_delay_seconds": NUM,
                    "overhead_seconds": NUM,
                    "alloc_delay_seconds": NUM,
                    "max_delay_seconds": NUM,
                    "default_inference_rps": NUM,
                    "hops_with_announced_rtt": INT,
                    "hops_with_assumed_rtt": INT,
                    "hops_with_assumed_rps": INT,
                }
            ),
            "bottleneck": {"oneOf": [{"type": "null"}, {**hop, "properties": {**hop["properties"], "share": NUM}}]},
            "disjoint_chains": {**INT, "description": "server-disjoint chains (the model survives this - 1 failures)"},
            "failures_survived": INT,
            "missing_blocks": _arr(INT),
            "missing_ranges": {**_arr(_arr(INT)), "description": "missing_blocks as [start, end) runs"},
            "usable": _arr(STR),
            "skipped": _arr(
                _obj(
                    {
                        "peer_id": STR,
                        "reason": {
                            "type": "string",
                            "enum": list(SKIP_REASONS),
                        },
                        "detail": STR,
                    }
                )
            ),
            "penalized": {
                **_arr(
                    _obj(
                        {
                            "peer_id": STR,
                            "reason": {"type": "string", "enum": list(PENALTY_REASONS)},
                            "detail": STR,
                        }
                    )
                ),
                "description": "usable, but a client pays alloc_delay to enter them (short of cache for the session)",
            },
        }
    )


def _param(name: str, where: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema or STR,
    }


AT = _param("at", "query", "View as of a past crawl: a crawl id (< 10^9) or a Unix time in seconds")
SWARM = _param("swarm", "query", "Swarm name (default: the first swarm that has it)")
DHT_PREFIX = _param(
    "dht_prefix", "path", "The model's DHT prefix; it may contain '/' (e.g. mistralai/Mixtral-8x22B-Instruct-v0-1)"
)
PEER_ID = _param("peer_id", "path", "Base58 libp2p PeerID (Qm… or 12D3KooW…)")
CRAWL_ID = _param("crawl_id", "path", "Crawl id", INT)
MODEL_HISTORY = [
    DHT_PREFIX,
    SWARM,
    _param("since", "query", "Unix seconds (default: until - 1 day)", NUM),
    _param("until", "query", "Unix seconds (default: now)", NUM),
    _param("step", "query", "Bucket size in seconds (default: every crawl)", NUM),
]
TABLE_PARAMS = [
    _param("q", "query", "Free text in the peer id, shown contributor name or version (case-insensitive, ≤ 200)"),
    _param("state", "query", "Only servers in this state (unknown: 400)", {"type": "string", "enum": list(STATES)}),
    _param("version", "query", "Only servers announcing this version exactly; 'none' for no version"),
    _param(
        "sort", "query", "Column to sort by (default span; unknown: 400)", {"type": "string", "enum": list(SORT_KEYS)}
    ),
    _param("order", "query", "asc (default) or desc", {"type": "string", "enum": ["asc", "desc"]}),
]
EVENTS_DESCRIPTION = (
    "Server-Sent Events. Events: 'crawl' (data: the stored crawl's CrawlSummary, succeeded or failed), 'alert' "
    "(data: one AlertEvent without its id, firing or resolved), 'hello' (first event of a new stream: "
    "{last_event_id}) and 'resync' (a Last-Event-ID this process cannot resume from, from before a restart or "
    "older than the last 256 events: reload what you show). Every event has an id; reconnecting with "
    "Last-Event-ID replays the events missed. A ': keep-alive' comment comes after each quiet interval (default "
    "15 s). At most [web] events_max_clients streams at once (default 1000); beyond, 503 with Retry-After."
)


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Malformed parameter", 404: "Not found", 429: "Rate limited", 503: "Not available yet"}
    return {str(c): _json("Error", text[c]) for c in codes}


def _get(summary: str, params: list[dict[str, Any]], ok: dict[str, Any], *errors: int, **extra: Any) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": params, "responses": {"200": ok, **_errors(*errors)}, **extra}}


@functools.cache
def openapi_document() -> dict[str, Any]:
    paths = {
        "/api/v1/state": _get(
            "The swarm's state: a superset of health.petals.dev's /api/v1/state document",
            [SWARM, AT],
            _json("State", "State document of the last good crawl"),
            400,
            404,
            503,
        ),
        "/api/v1/swarms": _get(
            "Every swarm with its crawl status and models at a glance (the overview page's twin)",
            [AT],
            _json("Swarms", "Swarms"),
            400,
            404,
        ),
        "/api/v1/models/{dht_prefix}": _get(
            "One model: block coverage, servers, reachability issues, invalid records (the model page's twin). "
            "model.server_rows is the server table, filtered and sorted by q, state, version, sort and order "
            "as on the page; server_table says how (matched of total rows)",
            [DHT_PREFIX, SWARM, AT, *TABLE_PARAMS],
            _json("Model", "Model"),
            400,
            404,
        ),
        "/api/v1/models/{dht_prefix}/history": _get(
            "Coverage and redundancy of a model over time",
            MODEL_HISTORY,
            _json("ModelHistory", "Points"),
            400,
            404,
        ),
        "/api/v1/models/{dht_prefix}/route": _get(
            "What a Petals client would get now: the chain of servers, steps per second, the bottleneck, "
            "server-disjoint chains and the servers skipped with why",
            [DHT_PREFIX, SWARM, AT],
            _json("Route", "Route"),
            400,
            404,
        ),
        "/api/v1/models/{dht_prefix}/blocks/history": _get(
            "Online servers per block over time, and when each block was dark (from raw crawls and rollups; "
            "at most 20,000 points, coarsening the step when needed)",
            MODEL_HISTORY,
            _json("BlockHistory", "Per block: points and dark periods"),
            400,
            404,
        ),
        "/api/v1/servers/{peer_id}": _get(
            "One server: what it serves, uptime over 24 h / 7 d / 30 d, its history (the server page's twin)",
            [
                PEER_ID,
                AT,
                _param("since", "query", "History from (Unix seconds, default: until - 7 days)", NUM),
                _param("until", "query", "History until (Unix seconds, default: now)", NUM),
            ],
            _json("Server", "Server"),
            400,
            404,
        ),
        "/api/v1/crawls": _get(
            "The crawl log, newest first",
            [
                SWARM,
                _param("limit", "query", "At most this many (1-1000, default 100)", INT),
                _param("before", "query", "Only crawls with an id below this (pagination)", INT),
            ],
            _json("Crawls", "Crawls"),
            400,
            404,
        ),
        "/api/v1/crawls/{crawl_id}": _get(
            "One crawl: status, timings, peers, invalid records", [CRAWL_ID], _json("Crawl", "Crawl"), 400, 404
        ),
        "/api/v1/crawls/{a}/diff/{b}": _get(
            "What changed between two crawls: servers joined, left, moved, changed state",
            [_param("a", "path", "Older crawl id", INT), _param("b", "path", "Newer crawl id", INT)],
            _json("CrawlDiff", "Diff"),
            400,
            404,
        ),
        "/api/v1/crawls/{crawl_id}/servers.csv": _get(
            "Every server row of a crawl as CSV (one row per server and model)",
            [CRAWL_ID],
            {"description": "CSV with a header row", "content": {"text/csv": {"schema": STR}}},
            400,
            404,
        ),
        "/api/v1/crawls/{crawl_id}/servers.ndjson": _get(
            "Every server row of a crawl as newline-delimited JSON",
            [CRAWL_ID],
            {
                "description": "One ServerRowExport object per line",
                "content": {"application/x-ndjson": {"schema": _ref("ServerRowExport")}},
            },
            400,
            404,
        ),
        "/api/v1/is_reachable/{peer_id}": _get(
            "Can the monitor reach this peer right now? (health.petals.dev compatible; rate-limited per client)",
            [PEER_ID],
            _json("Reachable", "Probe result (success false when unreachable)"),
            400,
            429,
            503,
        ),
        "/api/v1/alerts": _get(
            "Alerts firing now and the log of alert events (fired / resolved), newest first",
            [
                SWARM,
                _param("limit", "query", "At most this many events (1-500, default 50)", INT),
                _param("before", "query", "Only events with an id below this (pagination)", INT),
            ],
            _json("Alerts", "Alerts"),
            400,
            404,
        ),
        "/api/v1/versions": _get(
            "Petals versions across servers: now, and servers per version over time (the versions page's twin)",
            [
                _param("swarm", "query", "Swarm name (default: the first swarm)"),
                _param("range", "query", "6h (every crawl), 24h, 7d or 30d (bucketed)"),
            ],
            _json("Versions", "Versions"),
            400,
            404,
        ),
        "/api/v1/vantages": _get(
            "Reachability per vantage point: who probes, and which servers are reachable from some only",
            [
                _param("swarm", "query", "Swarm name (default: the first swarm)"),
                AT,
            ],
            _json("Vantages", "Vantage points"),
            400,
            404,
        ),
        "/api/v1/events": _get(
            "Live events: a crawl was stored, an alert fired or resolved (Server-Sent Events)",
            [_param("Last-Event-ID", "header", "The last event id seen: the events after it are sent first")],
            {"description": EVENTS_DESCRIPTION, "content": {"text/event-stream": {"schema": STR}}},
            503,
        ),
        "/api/v1/openapi.json": _get(
            "This document", [], {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {}}}}
        ),
        "/healthz": _get("Liveness of the web process and crawl freshness", [], _json("Health", "Health")),
        "/metrics": _get(
            "Prometheus metrics (petals_ prefix)",
            [],
            {"description": "Prometheus text exposition format", "content": {"text/plain": {"schema": STR}}},
        ),
    }
    # The Reachable document carries success/message/your_ip on errors too (health.petals.dev clients read them).
    reach = paths["/api/v1/is_reachable/{peer_id}"]["get"]["responses"]
    for code in ("400", "429", "503"):
        reach[code] = _json("Reachable", reach[code]["description"])
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Petals swarm health monitor",
            "version": "1",
            "description": (
                "Read-only API of the monitor. Times are Unix seconds, PeerIDs base58, enums lowercase. "
                "/api/v1/state is a superset of health.petals.dev's document. Every HTML page has a JSON twin here."
            ),
        },
        "paths": paths,
        "components": {"schemas": _schemas()},
    }
