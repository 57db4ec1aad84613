"""Helper for tests/monitor/test_crash_safety.py: write crawls into a store in a loop until killed.

Usage: ``python tests/crash_writer.py DB SEED`` (DB: an SQLite path or a PostgreSQL URL). Prints ``ready`` once
the writer is open, then one marker line before and after each write (``finish-begin``/``finish-end``, ...), so
the test can tell where a SIGKILL landed.
The snapshot of crawl N is ``expected_snapshot(N)``: the test rebuilds it to check what survived, field by field.
Bounded: stops by itself after ``MAX_CRAWLS`` crawls or ``MAX_SECONDS``.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from factories import T0, make_snapshot  # noqa: E402

from monitor.snapshot import CrawlStats, Snapshot  # noqa: E402
from monitor.store.dialect import dialect_of  # noqa: E402
from monitor.store.sqlite import StoreWriter  # noqa: E402

SWARM = "crash"
MAX_CRAWLS = 500
MAX_SECONDS = 30.0
N_MODELS = 3
# the last crawl id ever handed out (retention may have deleted that crawl)
LAST_CRAWL_ID = {
    "sqlite": "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'crawls'",
    "postgresql": "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM crawls_id_seq",
}
RAW_DAYS = 10 * 60 / 86400  # ~10 crawls stay raw; older ones are rolled up while the test kills us


def crawl_time(crawl_id: int) -> float:
    return T0 + 60.0 * crawl_id


def expected_snapshot(crawl_id: int) -> Snapshot:
    return make_snapshot(
        SWARM, crawl_time(crawl_id), seed=crawl_id % 5, step=crawl_id, n_models=N_MODELS, num_blocks=40,
        servers_per_model=30,
    )  # fmt: skip


def mark(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main(db: str, seed: int) -> None:
    rng = random.Random(seed)
    writer = StoreWriter(db)
    mark(f"ready interrupted={writer.interrupted}")
    deadline = time.monotonic() + MAX_SECONDS
    last_id = writer.conn.execute(LAST_CRAWL_ID[dialect_of(writer.conn).name]).fetchone()[0]
    for _ in range(MAX_CRAWLS):
        if time.monotonic() > deadline:
            break
        mark("begin")
        crawl_id = last_id = writer.begin_crawl(SWARM, crawl_time(last_id + 1) - 5.0)
        roll = rng.random()
        if roll < 0.1:
            mark("fail-begin")
            writer.fail_crawl(
                crawl_id, "no peer answered", CrawlStats(peers_failed=3), finished_at=crawl_time(crawl_id)
            )
            mark("fail-end")
            continue
        snapshot = expected_snapshot(crawl_id)
        mark("finish-begin")
        writer.finish_crawl(crawl_id, snapshot)
        mark("finish-end")
        if roll > 0.8:
            mark("retention-begin")
            writer.apply_retention(crawl_time(crawl_id), raw_days=RAW_DAYS, hourly_days=2 * RAW_DAYS)
            mark("retention-end")
    writer.close()
    mark("done")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
