"""monitor.store.migrations: numbered, in order, atomic, and an older file migrates with its data intact."""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest
from factories import T0, make_snapshot

from monitor.store.migrations import (
    LATEST_VERSION,
    MIGRATIONS,
    Migration,
    SchemaTooNew,
    apply_migrations,
    schema_version,
)
from monitor.store.rows import write_snapshot_rows
from monitor.store.sqlite import Store, StoreWriter


def connect(path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def test_numbers_are_consecutive_from_one():
    assert [m.number for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert LATEST_VERSION == len(MIGRATIONS) >= 2


def test_fresh_file_gets_every_migration_in_order(tmp_path):
    conn = connect(tmp_path / "a.db")
    assert schema_version(conn) == 0
    assert apply_migrations(conn, now=T0) == [m.number for m in MIGRATIONS]
    rows = conn.execute("SELECT id, name, applied_at FROM migrations ORDER BY rowid").fetchall()
    assert rows == [(m.number, m.name, T0) for m in MIGRATIONS]
    assert apply_migrations(conn) == []  # idempotent
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"crawls", "models", "servers", "blocks", "reachability", "model_rollups", "peer_rollups"} <= tables


def test_custom_migrations_apply_in_number_order_and_atomically(tmp_path):
    conn = connect(tmp_path / "b.db")
    order: list[int] = []

    def step(n, fail=False):
        def run(c):
            order.append(n)
            c.execute(f"CREATE TABLE t{n} (x)")
            if fail:
                raise RuntimeError("migration broke")

        return Migration(n, f"step {n}", run)

    assert apply_migrations(conn, migrations=(step(1), step(2))) == [1, 2]
    assert order == [1, 2]
    with pytest.raises(RuntimeError):
        apply_migrations(conn, migrations=(step(1), step(2), step(3), step(4, fail=True)))
    assert schema_version(conn) == 2  # 3 and 4 ran in one transaction, rolled back together
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 't3'").fetchone()
    assert not conn.in_transaction


V3_REACHABILITY_COLUMNS = ("public_ip", "private_only", "country", "country_name", "asn")


def test_an_older_file_migrates_and_keeps_its_snapshot(tmp_path, monkeypatch):
    from monitor.store import rows as store_rows

    current = store_rows._reachability_row

    def v1_reachability_row(crawl_id, r):  # the row as a version-1 monitor wrote it
        row = current(crawl_id, r)
        return {k: v for k, v in row.items() if k not in V3_REACHABILITY_COLUMNS}

    monkeypatch.setattr(store_rows, "_reachability_row", v1_reachability_row)
    path = tmp_path / "old.db"
    conn = connect(path)
    assert apply_migrations(conn, upto=1) == [1]
    snap = make_snapshot(t=T0)
    conn.execute("BEGIN IMMEDIATE")
    crawl_id = conn.execute("INSERT INTO crawls (swarm, status, started_at) VALUES ('test', 'started', ?)", (T0,))
    crawl_id = crawl_id.lastrowid
    write_snapshot_rows(conn, crawl_id, snap)
    conn.execute(
        "UPDATE crawls SET status = 'succeeded', started_at = ?, finished_at = ?, dht_time = ?, peers_contacted = ?, "
        "peers_failed = ?, rpcs = ?, keys = ?, records = ?, invalid_by_reason = ? WHERE id = ?",
        (
            snap.started_at,
            snap.finished_at,
            snap.dht_time,
            snap.stats.peers_contacted,
            snap.stats.peers_failed,
            snap.stats.rpcs,
            snap.stats.keys,
            snap.stats.records,
            '{"msgpack":1,"schema":1,"state":1,"throughput":1,"span":1}',
            crawl_id,
        ),
    )
    conn.execute("COMMIT")
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'model_rollups'").fetchone()
    conn.close()

    store = Store(path)
    with store._read() as rc:
        assert schema_version(rc) == LATEST_VERSION
    assert store.latest_snapshot("test") == dataclasses.replace(snap, crawl_id=crawl_id)
    probed = [r.reachability for m in snap.models for r in m.servers if r.reachability is not None]
    assert probed and all(r.public_ip is None and not r.private_only for r in probed)  # migration 3's defaults
    with StoreWriter(path) as writer:  # the new tables work on the migrated file
        report = writer.apply_retention(T0 + 30 * 86400)
        assert report.crawls_deleted == 0  # the only good crawl is kept
        assert writer.record_alert_events([]) == []
    assert store.active_alerts() == []
    store.close()


def test_a_file_from_a_newer_monitor_is_refused(tmp_path):
    path = tmp_path / "new.db"
    Store(path).close()
    conn = connect(path)
    conn.execute(
        "INSERT INTO migrations (id, name, applied_at) VALUES (?, 'from the future', 0)", (LATEST_VERSION + 1,)
    )
    conn.close()
    with pytest.raises(SchemaTooNew):
        Store(path)
