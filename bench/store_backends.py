"""SQLite vs PostgreSQL, and replicas on one PostgreSQL: ``python -m bench.store_backends [--quick] [--pg URL]``.

1. Crawl write time: a 3 models x 80 blocks x 60 servers snapshot (the tests' factories) written by
   ``StoreWriter.write_snapshot`` (one transaction), alternating the backends, median of ``writes``.
2. ``/api/v1/state`` req/s, one web process (``bench._load_server``, web only) over each backend's store.
3. Aggregate ``/api/v1/state`` req/s of 2 and 4 web replicas on the same PostgreSQL database, loaded at once
   (one load generator per replica; on the 2-core machine they all share the same two cores, so this shows the
   cost of sharing, not a scale-out a bigger machine would see).
4. Failover: two ``monitor demo`` replicas on one database; SIGKILL the crawling one; seconds until the other logs
   that it took over (crawl interval 2 s), ``failovers`` times.

PostgreSQL: ``--pg URL`` (a database the run may fill and leave filled), else a throwaway cluster started like the
tests' (``tests/pg_cluster.py``: Debian's PostgreSQL, 127.0.0.1 only) and removed at the end. Everything listens on
127.0.0.1; every load run and wait is bounded. Figures are noisy on a shared machine: the load average is printed
with them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._load_procs import REPO, child, interrupt, write_config
from .web_load import GZIP, load

FULL = {"writes": 7, "seconds": 8, "failovers": 3}
QUICK = {"writes": 3, "seconds": 2, "failovers": 1}
DEMO_PERIOD = 3.0  # the demo's announce period; its crawl interval is 2/3 of it
WAIT = 120.0


def _tests_on_path() -> None:
    if str(REPO / "tests") not in sys.path:
        sys.path[:0] = [str(REPO / "tests")]


def _snapshot(k: int) -> Any:
    _tests_on_path()
    from factories import T0, make_snapshot

    return make_snapshot(t=T0 + 60 * k, step=k, num_blocks=80, servers_per_model=60, hostile=False)


def write_times(dbs: dict[str, str], writes: int) -> dict[str, float]:
    """Median seconds per ``write_snapshot`` of the 3x80x60 case, per backend (the backends alternate)."""
    from monitor.store.sqlite import StoreWriter

    writers = {name: StoreWriter(db) for name, db in dbs.items()}
    times: dict[str, list[float]] = {name: [] for name in dbs}
    try:
        for k in range(writes):
            snap = _snapshot(k)
            for name, writer in writers.items():
                start = time.perf_counter()
                writer.write_snapshot(snap)
                times[name].append(time.perf_counter() - start)
    finally:
        for writer in writers.values():
            writer.close()
    return {name: statistics.median(ts) for name, ts in times.items()}


def _web(db: str, tmp: Path, name: str) -> Any:
    return child("bench._load_server", write_config(tmp, name, {"db": db}), "READY", timeout=120,
                 log=tmp / f"{name}.log")  # fmt: skip


def state_rps(bases: list[str], seconds: float, tmp: Path) -> list[dict[str, Any]]:
    """``/api/v1/state`` loaded on every base at once; one result per base."""
    results: list[Any] = [None] * len(bases)

    def one(i: int) -> None:
        results[i] = load(bases[i], "/api/v1/state", seconds, GZIP, tmp)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 90)
    return results


def replicas_rps(url: str, n: int, seconds: float, tmp: Path) -> dict[str, Any]:
    import contextlib

    with contextlib.ExitStack() as stack:
        bases = [stack.enter_context(_web(url, tmp, f"replica{n}-{i}"))[1] for i in range(n)]
        rows = state_rps(bases, seconds, tmp)
    return {"replicas": n, "rps": sum(r["rps"] for r in rows), "per_replica": [round(r["rps"]) for r in rows],
            "errors": sum(r["non_2xx"] + r["socket_errors"] for r in rows)}  # fmt: skip


class _Demo:
    """A ``monitor demo`` replica whose stderr lines are collected by a thread."""

    def __init__(self, url: str, seed: int, log: Path) -> None:
        args = ["--db", url, "--port", "0", "--period", str(DEMO_PERIOD), "--seed", str(seed)]
        self.proc = subprocess.Popen([sys.executable, "-m", "monitor", "demo", *args], cwd=REPO, text=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
        self.lines: list[tuple[float, str]] = []
        self.changed = threading.Condition()
        self._log = log
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with open(self._log, "a") as log:
            for line in self.proc.stderr:
                log.write(line)
                with self.changed:
                    self.lines.append((time.monotonic(), line))
                    self.changed.notify_all()

    def wait_for(self, text: str, after: float = 0.0) -> float:
        def hit() -> float | None:
            return next((t for t, line in self.lines if t >= after and text in line), None)

        with self.changed:
            if not self.changed.wait_for(lambda: hit() is not None or self.proc.poll() is not None, WAIT):
                raise RuntimeError(f"no {text!r} within {WAIT} s (see {self._log})")
            found = hit()
        if found is None:
            raise RuntimeError(f"replica exited before {text!r} (see {self._log})")
        return found

    def stop(self) -> None:
        interrupt(self.proc)


def failover_seconds(url: str, tmp: Path) -> float:
    a = _Demo(url, 1, tmp / "failover-a.log")
    b = None
    try:
        a.wait_for(" of demo: succeeded")
        b = _Demo(url, 2, tmp / "failover-b.log")
        b.wait_for("is crawled by another replica")
        killed = time.monotonic()
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(timeout=10)
        return b.wait_for("taking over the crawls of swarm demo", after=killed) - killed
    finally:
        a.stop()
        if b is not None:
            b.stop()


def run(quick: bool, pg: str | None, say: Callable[[str], None]) -> dict[str, Any]:
    sizes = QUICK if quick else FULL
    cluster = None
    if pg is None:
        _tests_on_path()
        from pg_cluster import start_cluster

        cluster = start_cluster()
    try:
        new_db = (lambda: cluster.new_database()) if cluster else (lambda: pg)
        with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp_name:
            tmp = Path(tmp_name)
            dbs = {"sqlite": str(tmp / "monitor.db"), "postgresql": new_db()}
            say(f"load average before: {os.getloadavg()}")
            writes = write_times(dbs, sizes["writes"])
            say(f"crawl write (3x80x60, median of {sizes['writes']}): "
                + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in writes.items()))  # fmt: skip
            single = {}
            for name, db in dbs.items():
                with _web(db, tmp, f"web-{name}") as (_proc, base):
                    single[name] = state_rps([base], sizes["seconds"], tmp)[0]
                say(f"/api/v1/state, one web process on {name}: {single[name]['rps']:.0f} req/s "
                    f"(p99 {single[name].get('p99_ms', 0):.1f} ms)")  # fmt: skip
            replicas = []
            for n in (2, 4):
                replicas.append(replicas_rps(dbs["postgresql"], n, sizes["seconds"], tmp))
                say(f"/api/v1/state, {n} replicas on one PostgreSQL: {replicas[-1]['rps']:.0f} req/s aggregate "
                    f"{replicas[-1]['per_replica']}")  # fmt: skip
            failovers = []
            for _ in range(sizes["failovers"]):
                failovers.append(failover_seconds(new_db(), tmp))
                say(f"failover after SIGKILL: {failovers[-1]:.2f} s (crawl interval {DEMO_PERIOD * 2 / 3:.1f} s)")
            say(f"load average after: {os.getloadavg()}")
            return {"write_seconds": writes, "state": {k: v["rps"] for k, v in single.items()},
                    "replicas": replicas, "failover_seconds": failovers, "loadavg_after": os.getloadavg()}  # fmt: skip
    finally:
        if cluster is not None:
            cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store_backends", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pg", metavar="URL", help="a PostgreSQL database to use (default: a throwaway cluster)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    _tests_on_path()
    from pg_cluster import Unavailable

    try:
        result = run(args.quick, args.pg, lambda line: print(line, flush=True))
    except Unavailable as e:  # no PostgreSQL (or psycopg) here, and no --pg
        print(f"store-backends skipped: {e}", flush=True)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "store-backends.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
