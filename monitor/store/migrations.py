"""The store's schema, as numbered migrations applied in order and recorded in the ``migrations`` table.

Never edit a migration that has shipped: add the next number. :func:`apply_migrations` runs every pending one in a
single write transaction, re-reading the version under the write lock (SQLite's ``BEGIN IMMEDIATE``, PostgreSQL's
advisory lock), so two processes opening the same new database at once cannot both migrate it. Children of
``crawls`` cascade on delete (retention deletes crawls).

One list serves both backends. A migration written with :func:`_script` in SQLite's spelling (``INTEGER``,
``REAL``, ``TEXT``, ``INTEGER PRIMARY KEY``) runs on PostgreSQL as is: ``Dialect.ddl`` maps the types. Only a
statement that cannot be said in both needs a ``Migration`` whose ``apply`` asks ``dialect_of(conn)``.

Row ownership rule the whole store relies on: rows in the per-crawl child tables exist only for crawls whose
status is ``succeeded``; they are written in the same transaction that flips the status.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .dialect import dialect_of

# PostgreSQL: the advisory lock every migrating process takes (an arbitrary constant of ours)
MIGRATION_LOCK = 0x70E7A15


@dataclass(frozen=True, slots=True)
class Migration:
    number: int
    name: str
    apply: Callable[[Any], None]  # given a sqlite3.Connection or a monitor.store.pg.PgConnection


def _script(sql: str) -> Callable[[Any], None]:
    """A migration made of plain statements (executed one by one: ``executescript`` would COMMIT), in SQLite's
    spelling; on PostgreSQL each statement goes through ``Dialect.ddl``."""

    def run(conn: Any) -> None:
        dialect = dialect_of(conn)
        for statement in sql.split(";"):
            if statement.strip():
                conn.execute(dialect.ddl(statement))

    return run


_CRAWL_TABLES = """
CREATE TABLE crawls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reuse an id: web links name crawls
    swarm TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('started', 'succeeded', 'failed')),
    started_at REAL NOT NULL,
    finished_at REAL,
    dht_time REAL,
    peers_contacted INTEGER NOT NULL DEFAULT 0,
    peers_failed INTEGER NOT NULL DEFAULT 0,
    rpcs INTEGER NOT NULL DEFAULT 0,
    keys INTEGER NOT NULL DEFAULT 0,
    records INTEGER NOT NULL DEFAULT 0,
    invalid_by_reason TEXT NOT NULL DEFAULT '{}',
    error TEXT
);
CREATE INDEX crawls_swarm_time ON crawls (swarm, status, finished_at);
CREATE INDEX crawls_status ON crawls (status);

CREATE TABLE bootstrap_peers (
    id INTEGER PRIMARY KEY,
    crawl_id INTEGER NOT NULL REFERENCES crawls (id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    peer_id TEXT,
    state TEXT NOT NULL,
    latency REAL,
    error TEXT
);
CREATE INDEX bootstrap_peers_crawl ON bootstrap_peers (crawl_id);

CREATE TABLE models (
    id INTEGER PRIMARY KEY,
    crawl_id INTEGER NOT NULL REFERENCES crawls (id) ON DELETE CASCADE,
    ts REAL NOT NULL,
    dht_prefix TEXT NOT NULL,
    name TEXT,
    repository TEXT,
    num_blocks INTEGER NOT NULL,
    official INTEGER NOT NULL,
    state TEXT NOT NULL,
    blocks_covered INTEGER NOT NULL,
    min_online INTEGER NOT NULL,
    servers_online INTEGER NOT NULL,
    throughput REAL NOT NULL
);
CREATE INDEX models_crawl ON models (crawl_id);
CREATE INDEX models_prefix_time ON models (dht_prefix, ts);

CREATE TABLE servers (
    id INTEGER PRIMARY KEY,
    crawl_id INTEGER NOT NULL REFERENCES crawls (id) ON DELETE CASCADE,
    model_id INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    ts REAL NOT NULL,
    dht_prefix TEXT NOT NULL,
    peer_id TEXT NOT NULL,
    state TEXT NOT NULL,
    span_start INTEGER NOT NULL,
    span_end INTEGER NOT NULL,
    expiration REAL NOT NULL,
    ttl REAL NOT NULL,
    pings_to_me TEXT NOT NULL DEFAULT '{}',
    show_public_name INTEGER NOT NULL DEFAULT 0,
    cache_tokens_left_per_block INTEGER,
    probed INTEGER NOT NULL DEFAULT 0,
    info_state INTEGER NOT NULL,
    throughput REAL NOT NULL,
    start_block INTEGER,
    end_block INTEGER,
    public_name TEXT,
    version TEXT,
    network_rps REAL,
    forward_rps REAL,
    inference_rps REAL,
    adapters TEXT NOT NULL DEFAULT '[]',
    torch_dtype TEXT,
    quant_type TEXT,
    using_relay INTEGER,
    cache_tokens_left INTEGER,
    next_pings TEXT
);
CREATE INDEX servers_model ON servers (model_id);
CREATE INDEX servers_crawl ON servers (crawl_id);
CREATE INDEX servers_peer_time ON servers (peer_id, ts);

CREATE TABLE blocks (
    id INTEGER PRIMARY KEY,
    crawl_id INTEGER NOT NULL REFERENCES crawls (id) ON DELETE CASCADE,
    model_id INTEGER NOT NULL REFERENCES models (id) ON DELETE CASCADE,
    block INTEGER NOT NULL,
    online INTEGER NOT NULL,
    joining INTEGER NOT NULL,
    offline INTEGER NOT NULL,
    unreachable INTEGER NOT NULL,
    expired INTEGER NOT NULL,
    throughput REAL NOT NULL
);
CREATE INDEX blocks_model ON blocks (model_id);
CREATE INDEX blocks_crawl ON blocks (crawl_id);

CREATE TABLE reachability (
    id INTEGER PRIMARY KEY,
    crawl_id INTEGER NOT NULL REFERENCES crawls (id) ON DELETE CASCADE,
    peer_id TEXT NOT NULL,
    ok INTEGER NOT NULL,
    checked_at REAL NOT NULL,
    latency REAL,
    error TEXT,
    joining INTEGER NOT NULL,
    version TEXT,
    dht_client_mode INTEGER,
    cache_tokens_available INTEGER,
    UNIQUE (crawl_id, peer_id)
);

CREATE TABLE invalid_records (
    id INTEGER PRIMARY KEY,
    crawl_id INTEGER NOT NULL REFERENCES crawls (id) ON DELETE CASCADE,
    record_key TEXT NOT NULL,
    subkey TEXT,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX invalid_records_crawl ON invalid_records (crawl_id);

CREATE TABLE top_contributors (
    id INTEGER PRIMARY KEY,
    crawl_id INTEGER NOT NULL REFERENCES crawls (id) ON DELETE CASCADE,
    public_name TEXT NOT NULL,
    blocks INTEGER NOT NULL
);
CREATE INDEX top_contributors_crawl ON top_contributors (crawl_id)
"""

# Rollups: mergeable aggregates (counts, sums, mins, "last seen" by last_ts), so a bucket can be filled in several
# retention passes and hourly rows can be folded into daily ones without losing exactness.
_ROLLUP_TABLES = """
CREATE TABLE crawl_rollups (
    tier TEXT NOT NULL CHECK (tier IN ('hourly', 'daily')),
    swarm TEXT NOT NULL,
    bucket_ts REAL NOT NULL,
    n_crawls INTEGER NOT NULL,
    first_ts REAL NOT NULL,
    last_ts REAL NOT NULL,
    PRIMARY KEY (tier, swarm, bucket_ts)
);

CREATE TABLE model_rollups (
    tier TEXT NOT NULL CHECK (tier IN ('hourly', 'daily')),
    swarm TEXT NOT NULL,
    dht_prefix TEXT NOT NULL,
    bucket_ts REAL NOT NULL,
    n INTEGER NOT NULL,
    n_healthy INTEGER NOT NULL,
    n_degraded INTEGER NOT NULL,
    n_broken INTEGER NOT NULL,
    num_blocks INTEGER NOT NULL,
    min_blocks_covered INTEGER NOT NULL,
    min_min_online INTEGER NOT NULL,
    sum_servers_online INTEGER NOT NULL,
    sum_throughput REAL NOT NULL,
    last_ts REAL NOT NULL,
    PRIMARY KEY (tier, swarm, dht_prefix, bucket_ts)
);
CREATE INDEX model_rollups_prefix_time ON model_rollups (dht_prefix, bucket_ts);

CREATE TABLE server_rollups (
    tier TEXT NOT NULL CHECK (tier IN ('hourly', 'daily')),
    swarm TEXT NOT NULL,
    peer_id TEXT NOT NULL,
    dht_prefix TEXT NOT NULL,
    bucket_ts REAL NOT NULL,
    n_seen INTEGER NOT NULL,
    n_online INTEGER NOT NULL,
    last_ts REAL NOT NULL,
    state TEXT NOT NULL,
    span_start INTEGER NOT NULL,
    span_end INTEGER NOT NULL,
    version TEXT,
    throughput REAL NOT NULL,
    PRIMARY KEY (tier, peer_id, dht_prefix, swarm, bucket_ts)
);

CREATE TABLE peer_rollups (
    tier TEXT NOT NULL CHECK (tier IN ('hourly', 'daily')),
    swarm TEXT NOT NULL,
    peer_id TEXT NOT NULL,
    bucket_ts REAL NOT NULL,
    n_seen INTEGER NOT NULL,
    n_online INTEGER NOT NULL,
    first_ts REAL NOT NULL,
    last_ts REAL NOT NULL,
    PRIMARY KEY (tier, peer_id, swarm, bucket_ts)
)
"""

# Alerts: an append-only log of condition changes (``monitor.alerts.rules``); what is firing now is each condition's
# latest event. Not tied to crawls (retention may delete a crawl an event names). Reachability learns where a
# server is (``monitor.geo``).
_ALERTS_AND_PLACES = """
CREATE TABLE alert_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    swarm TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
    severity TEXT NOT NULL,
    message TEXT NOT NULL,
    crawl_id INTEGER,
    fired_at REAL
);
CREATE INDEX alert_events_condition ON alert_events (swarm, kind, subject, id);
CREATE INDEX alert_events_ts ON alert_events (ts);

ALTER TABLE reachability ADD COLUMN public_ip TEXT;
ALTER TABLE reachability ADD COLUMN private_only INTEGER NOT NULL DEFAULT 0;
ALTER TABLE reachability ADD COLUMN country TEXT;
ALTER TABLE reachability ADD COLUMN country_name TEXT;
ALTER TABLE reachability ADD COLUMN asn TEXT
"""

# Block history (``monitor.store.block_history``): per block, online servers over time once raw crawls are rolled
# up. Mergeable like the other rollups; the dark columns keep when a block had no online server, so "when did block
# N go dark" survives retention: the first and last dark crawl of the bucket, and the first lit crawl after that.
_BLOCK_ROLLUPS = """
CREATE TABLE block_rollups (
    tier TEXT NOT NULL CHECK (tier IN ('hourly', 'daily')),
    swarm TEXT NOT NULL,
    dht_prefix TEXT NOT NULL,
    block INTEGER NOT NULL,
    bucket_ts REAL NOT NULL,
    n INTEGER NOT NULL,
    n_dark INTEGER NOT NULL,
    min_online INTEGER NOT NULL,
    max_online INTEGER NOT NULL,
    sum_online INTEGER NOT NULL,
    first_ts REAL NOT NULL,
    last_ts REAL NOT NULL,
    last_online INTEGER NOT NULL,
    first_dark_ts REAL,
    last_dark_ts REAL,
    lit_after_ts REAL,
    PRIMARY KEY (tier, swarm, dht_prefix, block, bucket_ts)
);
CREATE INDEX block_rollups_prefix_time ON block_rollups (dht_prefix, bucket_ts);
-- retention's passes select by tier and age ("tier = 'hourly' AND bucket_ts < cutoff"), across every model
CREATE INDEX block_rollups_tier_time ON block_rollups (tier, bucket_ts)
"""

# Vantage points (``monitor.store.vantages``): which vantage led each crawl, and probes from every vantage, per crawl
# whose servers they probed (retention deletes them with it; a repeated round on one crawl replaces its rows).
_VANTAGES = """
ALTER TABLE crawls ADD COLUMN vantage TEXT;

CREATE TABLE vantage_probes (
    id INTEGER PRIMARY KEY,
    crawl_id INTEGER NOT NULL REFERENCES crawls (id) ON DELETE CASCADE,
    vantage TEXT NOT NULL,
    peer_id TEXT NOT NULL,
    ok INTEGER NOT NULL,
    checked_at REAL NOT NULL,
    joining INTEGER NOT NULL,
    latency REAL,
    error TEXT,
    UNIQUE (crawl_id, vantage, peer_id)
);
-- is_reachable: one server's newest results
CREATE INDEX vantage_probes_peer_time ON vantage_probes (peer_id, checked_at)
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "crawl tables", _script(_CRAWL_TABLES)),
    Migration(2, "rollup tables for retention", _script(_ROLLUP_TABLES)),
    Migration(3, "alert events; server addresses and places", _script(_ALERTS_AND_PLACES)),
    Migration(4, "block rollups: block history across retention", _script(_BLOCK_ROLLUPS)),
    Migration(5, "vantage points: reachability from several places", _script(_VANTAGES)),
)
LATEST_VERSION = MIGRATIONS[-1].number


class SchemaTooNew(RuntimeError):
    """The file was migrated by a newer monitor: refuse rather than misread it."""


def _ensure_table(conn: Any) -> None:
    table = "migrations (id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    conn.execute(dialect_of(conn).ddl(f"CREATE TABLE IF NOT EXISTS {table}"))


def schema_version(conn: Any) -> int:
    """The highest applied migration number (0 for a new database)."""
    exists = conn.execute(dialect_of(conn).table_exists_sql(), ("migrations",)).fetchone()
    if not exists:
        return 0
    return conn.execute("SELECT coalesce(max(id), 0) FROM migrations").fetchone()[0]


def apply_migrations(
    conn: Any,
    *,
    upto: int | None = None,
    migrations: tuple[Migration, ...] = MIGRATIONS,
    now: float | None = None,
) -> list[int]:
    """Apply pending migrations (up to ``upto``) atomically; returns the numbers applied.

    ``conn`` must be in autocommit mode (``isolation_level=None``) with no open transaction.
    """
    target = migrations[-1].number if upto is None else upto
    dialect = dialect_of(conn)
    conn.execute(dialect.begin_write)
    try:
        if dialect.name == "postgresql":
            conn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
        _ensure_table(conn)
        current = schema_version(conn)
        if current > migrations[-1].number:
            raise SchemaTooNew(f"database schema is version {current}, this code knows up to {migrations[-1].number}")
        applied = []
        for migration in migrations:
            if current < migration.number <= target:
                migration.apply(conn)
                conn.execute(
                    "INSERT INTO migrations (id, name, applied_at) VALUES (?, ?, ?)",
                    (migration.number, migration.name, time.time() if now is None else now),
                )
                applied.append(migration.number)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return applied
