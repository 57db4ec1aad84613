"""The hot read and the file's growth, measured and printed (``pytest -s``); times are reported, not asserted."""

from __future__ import annotations

import dataclasses
import statistics
import time

from factories import T0, make_snapshot

from monitor.store.sqlite import Store, StoreWriter


def file_bytes(writer: StoreWriter) -> int:
    writer.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = writer.conn.execute("PRAGMA page_size").fetchone()[0]
    pages = writer.conn.execute("PRAGMA page_count").fetchone()[0]
    free = writer.conn.execute("PRAGMA freelist_count").fetchone()[0]
    return (pages - free) * page_size


def test_latest_snapshot_of_3_models_80_blocks_60_servers(tmp_path):
    path = tmp_path / "perf.db"
    big = make_snapshot(num_blocks=80, servers_per_model=60)
    assert [(len(r.blocks), len(r.servers)) for r in big.models] == [(80, 60)] * 3
    store = Store(path)
    with StoreWriter(path) as writer:
        started = time.perf_counter()
        crawl_id = writer.write_snapshot(big).id
        write_ms = (time.perf_counter() - started) * 1000
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        snap = store.latest_snapshot("test")
        timings.append((time.perf_counter() - started) * 1000)
    assert snap == dataclasses.replace(big, crawl_id=crawl_id)
    print(
        f"\nlatest_snapshot 3x80x60: median {statistics.median(timings):.1f} ms, first {timings[0]:.1f} ms, "
        f"max {max(timings):.1f} ms; finish_crawl {write_ms:.1f} ms"
    )
    store.close()


def test_bytes_per_crawl(tmp_path):
    """Growth of the file per crawl (the figures quoted in monitor.store.sqlite's docstring)."""
    sizes = {}
    for label, kwargs in (
        ("default (3 models x 12 servers)", {}),
        ("3x80x60", {"num_blocks": 80, "servers_per_model": 60}),
    ):
        path = tmp_path / f"{len(sizes)}.db"
        Store(path).close()
        with StoreWriter(path) as writer:
            writer.write_snapshot(make_snapshot(t=T0, seed=0, **kwargs))
            base = file_bytes(writer)
            n = 10
            for k in range(1, n + 1):
                writer.write_snapshot(make_snapshot(t=T0 + 60 * k, seed=0, step=k, **kwargs))
            sizes[label] = (file_bytes(writer) - base) / n
    for label, size in sizes.items():
        print(f"\nbytes per crawl, {label}: {size / 1024:.1f} KiB")
    assert 0 < sizes["default (3 models x 12 servers)"] < sizes["3x80x60"] < 1024 * 1024
