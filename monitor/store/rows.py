"""Snapshot ⇄ rows (SQLite or PostgreSQL): what ``monitor.store.sqlite`` writes for one crawl and how it reads it back.

The mapping is lossless (a written snapshot reads back equal, with ``status="succeeded"`` and its ``crawl_id``):
list order is kept by each child table's ``id``, ``None`` stays NULL, floats (``inf`` pings included) survive JSON
and REAL columns exactly (until retention clears an old crawl's ping tables, ``retention.pings_days``).
Reachability is stored once per crawl and peer (the crawler probes each peer once);
``servers.probed`` remembers which rows carried it.

There is no cached JSON blob: the normalised rows are needed anyway for history queries, and rebuilding the
3 models x 80 blocks x 60 servers case from them takes a few milliseconds (see ``tests/monitor/test_store_perf.py``).
"""

from __future__ import annotations

import json
from typing import Any

from ..snapshot import (
    BlockStat,
    BootstrapPeer,
    CrawlStats,
    InvalidRecord,
    ModelInfo,
    ModelReport,
    Reachability,
    ServerInfo,
    ServerRow,
    Snapshot,
)
from .history import CrawlSummary

CRAWL_COLUMNS = (
    "id, swarm, status, started_at, finished_at, dht_time, peers_contacted, peers_failed, rpcs, keys, records, "
    "invalid_by_reason, error, vantage"
)


def to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _bool(value: int | None) -> bool | None:
    return None if value is None else bool(value)


def stats_columns(stats: CrawlStats) -> dict[str, Any]:
    return {**stats.counts(), "invalid_by_reason": to_json(stats.invalid_by_reason)}


def is_empty(snapshot: Snapshot) -> bool:
    """A crawl that found no server at all: kept in the log as failed, never shown over a good snapshot."""
    return not any(report.servers for report in snapshot.models)


# ---- write


def _server_row(crawl_id: int, model_id: int, ts: float, prefix: str, row: ServerRow) -> dict[str, Any]:
    info = row.info
    return {
        "crawl_id": crawl_id,
        "model_id": model_id,
        "ts": ts,
        "dht_prefix": prefix,
        "peer_id": row.peer_id,
        "state": row.state,
        "span_start": row.start,
        "span_end": row.end,
        "expiration": row.expiration,
        "ttl": row.ttl,
        "pings_to_me": to_json(row.pings_to_me),
        "show_public_name": int(row.show_public_name),
        "cache_tokens_left_per_block": row.cache_tokens_left_per_block,
        "probed": int(row.reachability is not None),
        "info_state": info.state,
        "throughput": info.throughput,
        "start_block": info.start_block,
        "end_block": info.end_block,
        "public_name": info.public_name,
        "version": info.version,
        "network_rps": info.network_rps,
        "forward_rps": info.forward_rps,
        "inference_rps": info.inference_rps,
        "adapters": to_json(list(info.adapters)),
        "torch_dtype": info.torch_dtype,
        "quant_type": info.quant_type,
        "using_relay": None if info.using_relay is None else int(info.using_relay),
        "cache_tokens_left": info.cache_tokens_left,
        "next_pings": None if info.next_pings is None else to_json(info.next_pings),
    }


def _reachability_row(crawl_id: int, r: Reachability) -> dict[str, Any]:
    return {
        "crawl_id": crawl_id,
        "peer_id": r.peer_id,
        "ok": int(r.ok),
        "checked_at": r.checked_at,
        "latency": r.latency,
        "error": r.error,
        "joining": int(r.joining),
        "version": r.version,
        "dht_client_mode": None if r.dht_client_mode is None else int(r.dht_client_mode),
        "cache_tokens_available": r.cache_tokens_available,
        "public_ip": r.public_ip,
        "private_only": int(r.private_only),
        "country": r.country,
        "country_name": r.country_name,
        "asn": r.asn,
    }


def _insert_sql(table: str, columns: list[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(f':{c}' for c in columns)})"


def insert_many(conn: Any, table: str, rows: list[dict[str, Any]]) -> None:
    """``executemany`` of rows that share their keys (sqlite-utils' ``insert_all``, used before, inspected every
    value: ~4x slower for the thousands of values of a big crawl, and SQLite only). ``table`` is ours."""
    if rows:
        conn.executemany(_insert_sql(table, list(rows[0])), rows)


def insert_row(conn: Any, table: str, row: dict[str, Any]) -> int:
    """Insert one row; returns its ``id`` (``RETURNING``: SQLite and PostgreSQL alike)."""
    return conn.execute(f"{_insert_sql(table, list(row))} RETURNING id", row).fetchone()[0]


def snapshot_probes(snapshot: Snapshot) -> list[Reachability]:
    """The crawl's probe results, one per server (a server in several models was probed once)."""
    probes: dict[str, Reachability] = {}
    for report in snapshot.models:
        for row in report.servers:
            if row.reachability is not None:
                probes.setdefault(row.reachability.peer_id, row.reachability)
    return list(probes.values())


def write_snapshot_rows(conn: Any, crawl_id: int, snapshot: Snapshot) -> None:
    """Insert every child row of ``snapshot`` for ``crawl_id``. The caller owns the transaction."""
    ts = snapshot.finished_at
    insert_many(
        conn,
        "bootstrap_peers",
        [
            {
                "crawl_id": crawl_id,
                "address": p.address,
                "peer_id": p.peer_id,
                "state": p.state,
                "latency": p.latency,
                "error": p.error,
            }
            for p in snapshot.bootstrap
        ],
    )
    servers: list[dict[str, Any]] = []
    blocks: list[dict[str, Any]] = []
    for report in snapshot.models:
        model = report.model
        online = [s for s in report.servers if s.state == "online"]
        model_id = insert_row(
            conn,
            "models",
            {
                "crawl_id": crawl_id,
                "ts": ts,
                "dht_prefix": model.dht_prefix,
                "name": model.name,
                "repository": model.repository,
                "num_blocks": model.num_blocks,
                "official": int(model.official),
                "state": report.state,
                "blocks_covered": report.blocks_covered,
                "min_online": report.min_online,
                "servers_online": len(online),
                "throughput": sum(s.info.throughput for s in online),
            },
        )
        servers.extend(_server_row(crawl_id, model_id, ts, model.dht_prefix, row) for row in report.servers)
        blocks.extend(
            {
                "crawl_id": crawl_id,
                "model_id": model_id,
                "block": b.index,
                "online": b.online,
                "joining": b.joining,
                "offline": b.offline,
                "unreachable": b.unreachable,
                "expired": b.expired,
                "throughput": b.throughput,
            }
            for b in report.blocks
        )
    insert_many(conn, "servers", servers)
    insert_many(conn, "blocks", blocks)
    insert_many(conn, "reachability", [_reachability_row(crawl_id, r) for r in snapshot_probes(snapshot)])
    insert_many(
        conn,
        "invalid_records",
        [
            {"crawl_id": crawl_id, "record_key": r.key, "subkey": r.subkey, "reason": r.reason, "detail": r.detail}
            for r in snapshot.invalid
        ],
    )
    insert_many(
        conn,
        "top_contributors",
        [{"crawl_id": crawl_id, "public_name": name, "blocks": n} for name, n in snapshot.top_contributors],
    )


# ---- read


def summary_from_row(row: tuple) -> CrawlSummary:
    """A :class:`CrawlSummary` from a ``SELECT {CRAWL_COLUMNS} FROM crawls`` row."""
    (
        id_,
        swarm,
        status,
        started_at,
        finished_at,
        _dht,
        contacted,
        failed,
        rpcs,
        keys,
        records,
        by_reason,
        err,
        vantage,
    ) = row
    return CrawlSummary(
        id=id_,
        swarm=swarm,
        status=status,
        started_at=started_at,
        finished_at=finished_at,
        peers_contacted=contacted,
        peers_failed=failed,
        rpcs=rpcs,
        keys=keys,
        records=records,
        invalid_by_reason=json.loads(by_reason),
        error=err,
        vantage=vantage,
    )


SERVER_SELECT = (
    "SELECT model_id, peer_id, state, span_start, span_end, expiration, ttl, pings_to_me, show_public_name, "
    "cache_tokens_left_per_block, probed, info_state, throughput, start_block, end_block, public_name, version, "
    "network_rps, forward_rps, inference_rps, adapters, torch_dtype, quant_type, using_relay, cache_tokens_left, "
    "next_pings FROM servers"
)


def server_from_row(row: tuple, probes: dict[str, Reachability]) -> ServerRow:
    """A :class:`ServerRow` from a ``SERVER_SELECT`` row (``model_id`` first, ignored here)."""
    (
        _model_id,
        peer_id,
        state,
        start,
        end,
        expiration,
        ttl,
        pings_to_me,
        show_public_name,
        tokens_per_block,
        probed,
        info_state,
        throughput,
        start_block,
        end_block,
        public_name,
        version,
        network_rps,
        forward_rps,
        inference_rps,
        adapters,
        torch_dtype,
        quant_type,
        using_relay,
        cache_tokens_left,
        next_pings,
    ) = row
    info = ServerInfo(
        state=info_state,
        throughput=throughput,
        start_block=start_block,
        end_block=end_block,
        public_name=public_name,
        version=version,
        network_rps=network_rps,
        forward_rps=forward_rps,
        inference_rps=inference_rps,
        adapters=tuple(json.loads(adapters)),
        torch_dtype=torch_dtype,
        quant_type=quant_type,
        using_relay=_bool(using_relay),
        cache_tokens_left=cache_tokens_left,
        next_pings=None if next_pings is None else json.loads(next_pings),
    )
    return ServerRow(
        peer_id=peer_id,
        state=state,
        start=start,
        end=end,
        info=info,
        expiration=expiration,
        ttl=ttl,
        pings_to_me=json.loads(pings_to_me),
        reachability=probes.get(peer_id) if probed else None,
        show_public_name=bool(show_public_name),
        cache_tokens_left_per_block=tokens_per_block,
    )


def read_probes(conn: Any, crawl_id: int) -> dict[str, Reachability]:
    return {
        peer_id: Reachability(
            peer_id=peer_id,
            ok=bool(ok),
            checked_at=checked_at,
            latency=latency,
            error=error,
            joining=bool(joining),
            version=version,
            dht_client_mode=_bool(client_mode),
            cache_tokens_available=tokens,
            public_ip=public_ip,
            private_only=bool(private_only),
            country=country,
            country_name=country_name,
            asn=asn,
        )
        for (
            peer_id,
            ok,
            checked_at,
            latency,
            error,
            joining,
            version,
            client_mode,
            tokens,
            public_ip,
            private_only,
            country,
            country_name,
            asn,
        ) in conn.execute(
            "SELECT peer_id, ok, checked_at, latency, error, joining, version, dht_client_mode, "
            "cache_tokens_available, public_ip, private_only, country, country_name, asn "
            "FROM reachability WHERE crawl_id = ? ORDER BY id",
            (crawl_id,),
        )
    }


def read_snapshot(conn: Any, crawl_id: int) -> Snapshot | None:
    """The snapshot of a *succeeded* crawl, rebuilt from its rows; ``None`` for any other crawl.

    Call inside a read transaction so the rows come from one consistent state of the file.
    """
    crawl = conn.execute(
        f"SELECT {CRAWL_COLUMNS} FROM crawls WHERE id = ? AND status = 'succeeded'", (crawl_id,)
    ).fetchone()
    if crawl is None:
        return None
    summary = summary_from_row(crawl)
    probes = read_probes(conn, crawl_id)
    servers: dict[int, list[ServerRow]] = {}
    for row in conn.execute(f"{SERVER_SELECT} WHERE crawl_id = ? ORDER BY id", (crawl_id,)):
        servers.setdefault(row[0], []).append(server_from_row(row, probes))
    blocks: dict[int, list[BlockStat]] = {}
    for model_id, *values in conn.execute(
        "SELECT model_id, block, online, joining, offline, unreachable, expired, throughput FROM blocks "
        "WHERE crawl_id = ? ORDER BY id",
        (crawl_id,),
    ):
        blocks.setdefault(model_id, []).append(BlockStat(*values))
    models = [
        ModelReport(
            model=ModelInfo(
                dht_prefix=prefix, num_blocks=num_blocks, repository=repository, name=name, official=bool(official)
            ),
            state=state,
            servers=servers.get(model_id, []),
            blocks=blocks.get(model_id, []),
        )
        for model_id, prefix, name, repository, num_blocks, official, state in conn.execute(
            "SELECT id, dht_prefix, name, repository, num_blocks, official, state FROM models "
            "WHERE crawl_id = ? ORDER BY id",
            (crawl_id,),
        )
    ]
    bootstrap = [
        BootstrapPeer(*row)
        for row in conn.execute(
            "SELECT address, peer_id, state, latency, error FROM bootstrap_peers WHERE crawl_id = ? ORDER BY id",
            (crawl_id,),
        )
    ]
    invalid = [
        InvalidRecord(*row)
        for row in conn.execute(
            "SELECT record_key, subkey, reason, detail FROM invalid_records WHERE crawl_id = ? ORDER BY id",
            (crawl_id,),
        )
    ]
    top = [
        (name, n)
        for name, n in conn.execute(
            "SELECT public_name, blocks FROM top_contributors WHERE crawl_id = ? ORDER BY id", (crawl_id,)
        )
    ]
    return Snapshot(
        swarm=summary.swarm,
        status="succeeded",
        started_at=summary.started_at,
        finished_at=summary.finished_at if summary.finished_at is not None else summary.started_at,
        dht_time=crawl[5],
        bootstrap=bootstrap,
        models=models,
        invalid=invalid,
        stats=CrawlStats(
            peers_contacted=summary.peers_contacted,
            peers_failed=summary.peers_failed,
            rpcs=summary.rpcs,
            keys=summary.keys,
            records=summary.records,
            invalid_by_reason=dict(summary.invalid_by_reason),
        ),
        top_contributors=top,
        error=summary.error,
        crawl_id=crawl_id,
    )


def newest_first(
    conn: Any, table: str, columns: str, *, swarm: str | None, limit: int, before_id: int | None
) -> list[Any]:
    """A log table's rows, newest (highest id) first: all swarms or one, paged with ``before_id`` (the last id
    of the previous page). ``table`` and ``columns`` are ours, never a request's."""
    where, args = ["true"], []
    if swarm is not None:
        where.append("swarm = ?")
        args.append(swarm)
    if before_id is not None:
        where.append("id < ?")
        args.append(before_id)
    return conn.execute(
        f"SELECT {columns} FROM {table} WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?", (*args, limit)
    ).fetchall()
