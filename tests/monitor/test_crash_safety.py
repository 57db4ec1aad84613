"""Real crashes: a subprocess writes crawls in a loop and is SIGKILLed at random moments, many times.

On SQLite and on PostgreSQL. After every kill the database must be intact (SQLite: ``integrity_check``), every
succeeded crawl must read back exactly as written, no row may belong to a crawl that is not succeeded, the read
API must show only whole snapshots, and the next writer must open cleanly, failing the crawl the kill interrupted
(``"interrupted"``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from monitor.store.sqlite import INTERRUPTED, Store, StoreWriter

HERE = Path(__file__).resolve().parents[1]  # tests/, where crash_writer.py is
sys.path.insert(0, str(HERE))
from crash_writer import N_MODELS, SWARM, expected_snapshot  # noqa: E402

KILLS = 24
SEED = 20240611
TOTAL_SECONDS = 150.0  # bound on the whole test
READY_SECONDS = 20.0

expected_snapshot_cached = functools.lru_cache(maxsize=None)(expected_snapshot)

CHILD_TABLES = ("bootstrap_peers", "models", "servers", "blocks", "reachability", "invalid_records", "top_contributors")


class Child:
    """The writer subprocess, with its stdout read by a thread so we can wait for a line without sleeping."""

    def __init__(self, db: Path | str, seed: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "crash_writer.py"), str(db), str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=HERE.parent,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.strip())
            if line.startswith("ready"):
                self.ready.set()
        self.ready.set()  # EOF: let the waiter look at what happened

    def kill(self) -> str:
        """SIGKILL; returns the last marker printed (where the kill landed)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        self.proc.stderr.close()
        return self.lines[-1] if self.lines else ""


def check_file(path: Path | str) -> dict[str, int]:
    """Every invariant a reader relies on. Returns counts by status."""
    store = Store(path, create=False)
    try:
        with store._read() as conn:
            if store.path is not None:  # SQLite (PostgreSQL checks its foreign keys on every write)
                assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
                assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
            statuses = dict(conn.execute("SELECT status, count(*) FROM crawls GROUP BY status").fetchall())
            succeeded = [r[0] for r in conn.execute("SELECT id FROM crawls WHERE status = 'succeeded' ORDER BY id")]
            for table in CHILD_TABLES:
                orphans = conn.execute(
                    f"SELECT count(*) FROM {table} WHERE crawl_id NOT IN "
                    "(SELECT id FROM crawls WHERE status = 'succeeded')"
                ).fetchone()[0]
                assert orphans == 0, f"{table} has rows of a crawl that is not succeeded"
            rolled_crawls, rolled_models = conn.execute(
                "SELECT (SELECT coalesce(sum(n_crawls), 0) FROM crawl_rollups), "
                "(SELECT coalesce(sum(n), 0) FROM model_rollups)"
            ).fetchone()
            assert rolled_models == N_MODELS * rolled_crawls, "a roll-up was half applied"
        for crawl_id in succeeded:
            expected = dataclasses.replace(expected_snapshot_cached(crawl_id), crawl_id=crawl_id)
            assert store.snapshot(crawl_id) == expected, f"crawl {crawl_id} did not read back whole"
        latest = store.latest_snapshot(SWARM)
        if succeeded:
            assert latest is not None and latest.crawl_id == max(succeeded)
        for summary in store.crawls(SWARM, limit=10_000):
            assert summary.status in ("started", "succeeded", "failed")
            if summary.status != "succeeded":
                assert store.snapshot(summary.id) is None
        return statuses
    finally:
        store.close()


@pytest.mark.timeout(TOTAL_SECONDS + 60)
def test_sigkill_at_random_moments_never_leaves_a_partial_crawl(db_location):
    path = db_location
    Store(path).close()
    rng = random.Random(SEED)
    deadline = time.monotonic() + TOTAL_SECONDS
    landed: dict[str, int] = {}
    interrupted_total = 0
    kills = 0
    while kills < KILLS and time.monotonic() < deadline:
        child = Child(path, rng.randrange(1 << 30))
        assert child.ready.wait(READY_SECONDS), "the writer did not start"
        assert child.proc.poll() is None, child.proc.stderr.read()
        time.sleep(rng.uniform(0.0, 0.5))  # the random moment of the crash (not synchronisation)
        where = child.kill()
        kills += 1
        landed[where] = landed.get(where, 0) + 1

        check_file(path)
        with Store(path, create=False) as store:
            in_flight = [c.id for c in store.crawls(SWARM, limit=10_000) if c.status == "started"]
        assert len(in_flight) <= 1, "only the crawl in flight may be left started"
        with StoreWriter(path) as writer:  # the next open is clean
            assert writer.interrupted == len(in_flight)
            interrupted_total += writer.interrupted
        assert "started" not in check_file(path)
        with Store(path, create=False) as store:
            for crawl_id in in_flight:
                assert (store.crawl(crawl_id).status, store.crawl(crawl_id).error) == ("failed", INTERRUPTED)

    print(f"\n{kills} kills; last marker before each kill: {dict(sorted(landed.items()))}")
    print(f"interrupted crawls marked failed on reopen: {interrupted_total}")
    assert kills >= 20, "the time bound was hit before enough kills"
    in_write = sum(n for where, n in landed.items() if where.endswith("-begin"))
    assert in_write >= 3, f"too few kills landed inside a write to prove anything: {landed}"
    assert interrupted_total >= 3, "kills mid-crawl should have left crawls to mark interrupted"
    with Store(path, create=False) as store:
        assert store.latest_snapshot(SWARM) is not None
    assert not os.path.exists(f"{path}-journal")
