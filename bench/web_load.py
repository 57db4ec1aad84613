"""The monitor's web side under a bounded loopback load, idle and while crawls run: ``python -m bench.web_load``.

Three processes: a demo swarm (``bench._load_swarm``: 3 models of 80 blocks and ~200 servers, the designed
cast included), the monitor (``bench._load_server``: the real ``build_app``, crawling the swarm every
``INTERVAL`` s, i.e. back to back since a crawl takes longer) and the load generator (wrk, else
``bench._load_client``). For each of ``/api/v1/state``, the overview and a model page: requests/s, p50/p99 latency
and the server's event-loop lag (how late a 5 ms timer fired, measured inside the server process), first while
crawls run, then idle (the same store served by the web alone). Clients send ``Accept-Encoding: gzip`` as
browsers and Python's ``requests`` do; the idle phase also measures ``/api/v1/state`` without gzip and with
``If-None-Match`` (304s). ``--quick`` (< 30 s): no swarm; a 3x80x60 snapshot from the tests' factories is stored
every second by a writer in this process (what the server sees of a crawl is its commit), then idle.

Target (issue 6): >= 2000 req/s with p99 < 50 ms for ``/api/v1/state`` on the 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._load_procs import REPO, child, get_json, python, wait_for, write_config

INTERVAL = 3.0  # seconds between crawls (they take longer: they run back to back)
CONNECTIONS = 32
GZIP = {"Accept-Encoding": "gzip"}
FULL = {"scenario": {"seed": 1, "extra_models": 2, "blocks_per_extra_model": 80, "num_servers": 200}, "seconds": 10}
QUICK = {"seconds": 2}
TARGET_RPS, TARGET_P99_MS = 2000.0, 50.0
FIRST_CRAWL_TIMEOUT = 240.0


def endpoints(model: str) -> dict[str, str]:
    return {"state": "/api/v1/state", "overview": "/", "model page": f"/models/{model}"}


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> dict[str, Any]:
    """wrk's ``--latency`` report → rps, p50/p99/max in ms, requests, non-2xx/3xx and socket errors."""
    result: dict[str, Any] = {"non_2xx": 0, "socket_errors": 0}
    for line in output.splitlines():
        line = line.strip()
        if m := re.match(r"(50|99)(?:\.0+)?%\s+(\S+)", line):
            result[f"p{m.group(1)}_ms"] = _ms(m.group(2))
        elif line.startswith("Latency") and len(line.split()) >= 4:
            result["max_ms"] = _ms(line.split()[3])
        elif m := re.match(r"(\d+) requests in", line):
            result["requests"] = int(m.group(1))
        elif line.startswith("Requests/sec:"):
            result["rps"] = float(line.split()[1])
        elif line.startswith("Non-2xx or 3xx responses:"):
            result["non_2xx"] = int(line.split()[-1])
        elif line.startswith("Socket errors:"):  # connect, read, write, timeout (> --timeout: slow, not broken)
            counts = dict(re.findall(r"(connect|read|write|timeout) (\d+)", line))
            result["socket_errors"] = sum(int(counts.get(k, 0)) for k in ("connect", "read", "write"))
            result["timeouts"] = int(counts.get("timeout", 0))
    return result


def load(base: str, path: str, seconds: float, headers: dict[str, str], tmp: Path) -> dict[str, Any]:
    """One bounded load run: wrk with one thread (the other core is the server's), else our aiohttp client."""
    if shutil.which("wrk"):
        args = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "5s"]
        for name, value in headers.items():
            args += ["-H", f"{name}: {value}"]
        out = subprocess.run([*args, base + path], capture_output=True, text=True, timeout=seconds + 30, check=True)
        return {"tool": "wrk", **parse_wrk(out.stdout)}
    cfg = {"base": base, "paths": [path], "clients": CONNECTIONS, "duration": seconds, "headers": headers}
    out = subprocess.run(
        [python(), "-m", "bench._load_client", str(write_config(tmp, "client", cfg))],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
        cwd=REPO,
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    bad = sum(n for status, n in doc["statuses"].items() if not 200 <= int(status) < 400)
    return {"tool": "aiohttp", **doc, "non_2xx": bad, "socket_errors": sum(doc["errors"].values())}


def measure(base: str, rows: list[tuple[str, str, dict[str, str]]], phase: str, seconds: float, tmp: Path,
            say: Callable[[str], None]) -> list[dict[str, Any]]:  # fmt: skip
    """Each (label, path, headers) under load, with the server's loop lag and crawls over that run."""
    results = []
    for label, path, headers in rows:
        before = get_json(base + "/_bench/stats?reset=1")
        result = load(base, path, seconds, headers, tmp)
        after = get_json(base + "/_bench/stats?reset=1")
        crawls = after["crawls"].get("succeeded", 0) - before["crawls"].get("succeeded", 0)
        row = {"phase": phase, "endpoint": label, "path": path, **result}
        row.update(lag_max_ms=after["lag_max_ms"], lag_p99_ms=after["lag_p99_ms"], rss_mb=after["rss_kb"] / 1024)
        row["crawls_during"] = crawls
        say("   " + format_row(row))
        results.append(row)
    return results


def format_row(r: dict[str, Any]) -> str:
    return (
        f"{r['phase']:8} {r['endpoint']:22} {r.get('rps', 0):8.0f} req/s  p50 {r.get('p50_ms', 0):6.1f} ms  "
        f"p99 {r.get('p99_ms', 0):6.1f} ms  errors {r['non_2xx'] + r['socket_errors']:<4} "
        f"loop lag max {r['lag_max_ms']:6.1f} ms (p99 {r['lag_p99_ms']:5.1f})  crawls {r['crawls_during']}"
    )


def table(rows: list[dict[str, Any]]) -> str:
    head = ("phase", "endpoint", "req/s", "p50 ms", "p99 ms", "errors", "loop lag max ms", "lag p99 ms", "crawls")
    body = [
        (r["phase"], r["endpoint"], f"{r.get('rps', 0):.0f}", f"{r.get('p50_ms', 0):.1f}", f"{r.get('p99_ms', 0):.1f}",
         str(r["non_2xx"] + r["socket_errors"]), f"{r['lag_max_ms']:.1f}", f"{r['lag_p99_ms']:.1f}",
         str(r["crawls_during"]))
        for r in rows
    ]  # fmt: skip
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in [head, *body]]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _etag(base: str, path: str) -> str:
    import urllib.request

    with urllib.request.urlopen(base + path, timeout=10) as r:
        return r.headers["ETag"]


def _crawling_phase(
    tmp: Path, db: str, model: str, seconds: float, say: Callable[[str], None], worker: str, swarm_nice: int
) -> tuple[list, dict]:
    """The full app crawling a demo swarm back to back, under load. Returns (rows, crawl figures)."""
    scenario = FULL["scenario"]
    rows_for = [(label, path, GZIP) for label, path in endpoints(model).items()]
    t0 = time.perf_counter()
    swarm_cfg = write_config(tmp, "swarm", {"scenario": scenario, "nice": swarm_nice})
    with child("bench._load_swarm", swarm_cfg, "PEERS", timeout=300, log=tmp / "swarm.log") as (_s, peers):
        server_cfg = write_config(
            tmp,
            "server",
            {"db": db, "peers": json.loads(peers), "scenario": scenario, "interval": INTERVAL, "crawl_worker": worker},
        )
        with child("bench._load_server", server_cfg, "READY", timeout=120, log=tmp / "server.log") as (_p, base):
            say(f"   swarm and monitor up in {time.perf_counter() - t0:.0f} s; waiting for the first crawl")
            wait_for(
                lambda: get_json(base + "/_bench/stats")["crawls"].get("succeeded"),
                timeout=FIRST_CRAWL_TIMEOUT,
                what="the first crawl",
            )
            recent = get_json(base + "/api/v1/crawls?limit=10")["crawls"]  # the newest may be running already
            first = next(c for c in recent if c["status"] == "succeeded")
            say(f"   first crawl: {first['records']} records, {first['duration']:.1f} s")
            get_json(base + "/_bench/stats?reset=1")
            time.sleep(seconds)  # crawls alone: how long do they keep the event loop from running?
            alone = get_json(base + "/_bench/stats?reset=1")
            say(f"   crawls without HTTP load: event-loop lag max {alone['lag_max_ms']:.1f} ms, "
                f"p99 {alone['lag_p99_ms']:.1f} ms")  # fmt: skip
            rows = measure(base, rows_for, "crawling", seconds, tmp, say)
            crawls = get_json(base + "/api/v1/crawls?limit=100")["crawls"]
    durations = sorted(c["duration"] for c in crawls if c["status"] == "succeeded" and c["duration"] is not None)
    return rows, {
        "scenario": scenario,
        "crawl_interval": INTERVAL,
        "crawl_worker": worker,
        "swarm_nice": swarm_nice,
        "count": len(durations),
        "median_duration": durations[len(durations) // 2] if durations else None,
        "records": first["records"],
        "loop_lag_without_http_load": {k: alone[k] for k in ("lag_max_ms", "lag_p99_ms", "lag_p50_ms")},
    }


def _factory_store(db: str) -> str:
    """Quick mode: a store of 3 models x 80 blocks x 60 servers from the tests' factories; returns a model."""
    sys.path[:0] = [str(REPO / "tests")]
    from factories import T0, make_snapshot

    from monitor.store.sqlite import StoreWriter

    with StoreWriter(db) as writer:
        snap = make_snapshot(t=T0, num_blocks=80, servers_per_model=60, hostile=False)
        writer.write_snapshot(snap)
    return snap.models[0].model.dht_prefix


def _writing_phase(tmp: Path, db: str, model: str, seconds: float, say: Callable[[str], None]) -> list:
    """Quick mode's stand-in for crawls: a new 3x80x60 crawl stored every second by another process's writer."""
    import threading

    sys.path[:0] = [str(REPO / "tests")]
    from factories import T0, make_snapshot

    from monitor.store.sqlite import StoreWriter

    stop = threading.Event()

    def write() -> None:
        with StoreWriter(db) as writer:
            for k in range(1, 1000):
                if stop.wait(1.0):
                    return
                writer.write_snapshot(make_snapshot(t=T0 + 60 * k, step=k, num_blocks=80, servers_per_model=60))

    rows_for = [(label, path, GZIP) for label, path in endpoints(model).items()]
    with child("bench._load_server", write_config(tmp, "web", {"db": db}), "READY", timeout=120,
               log=tmp / "server.log") as (_p, base):  # fmt: skip
        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        try:
            return measure(base, rows_for, "writing", seconds, tmp, say)
        finally:
            stop.set()
            thread.join(30)


def run(quick: bool, say: Callable[[str], None], worker: str = "process", swarm_nice: int = 0) -> dict[str, Any]:
    """Full: crawling (the real app and a demo swarm), then idle. Quick: crawls written by a thread, then idle."""
    seconds = QUICK["seconds"] if quick else FULL["seconds"]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp_name:
        tmp = Path(tmp_name)
        db = str(tmp / "monitor.db")
        if quick:
            model = _factory_store(db)
            results += _writing_phase(tmp, db, model, seconds, say)
            crawling: dict[str, Any] = {"stand_in": "a 3x80x60 snapshot written every second"}
        else:
            model = "demo/Wide-80"
            rows, crawling = _crawling_phase(tmp, db, model, seconds, say, worker, swarm_nice)
            results += rows
        rows_for = [(label, path, GZIP) for label, path in endpoints(model).items()]
        with child("bench._load_server", write_config(tmp, "idle", {"db": db}), "READY", timeout=120,
                   log=tmp / "server.log") as (_p, base):  # fmt: skip
            for _label, path, _headers in rows_for:  # render once, as the busy phase did
                _etag(base, path)
            etag = _etag(base, "/api/v1/state")
            extra = [
                ("state (no gzip)", "/api/v1/state", {}),
                ("state (304)", "/api/v1/state", {"If-None-Match": etag}),
            ]
            results += measure(base, rows_for + extra, "idle", seconds, tmp, say)
    busy = "writing" if quick else "crawling"
    state_idle = next(r for r in results if r["phase"] == "idle" and r["endpoint"] == "state")
    state_busy = next(r for r in results if r["phase"] == busy and r["endpoint"] == "state")

    def met(row: dict[str, Any]) -> bool:
        return row.get("rps", 0) >= TARGET_RPS and row.get("p99_ms", 1e9) < TARGET_P99_MS

    # A "crawling" row during which no crawl finished measured an idle server: the target is not met by it.
    crawls_busy = sum(r.get("crawls_during", 0) for r in results if r["phase"] == busy)

    return {
        "description": "monitor web under a bounded loopback load, idle and while crawls run (or are written)",
        "setup": {"connections": CONNECTIONS, "seconds_per_run": seconds, "request_headers": GZIP, "model": model},
        "crawls": crawling,
        "rows": results,
        "target": {"rps": TARGET_RPS, "p99_ms": TARGET_P99_MS},
        "target_met_idle": met(state_idle),
        "target_met_busy": met(state_busy) and (quick or crawls_busy > 0),
        "crawls_during_busy_rows": crawls_busy,
        "errors": sum(r["non_2xx"] + r["socket_errors"] for r in results),
        "max_loop_lag_ms_busy": max(r["lag_max_ms"] for r in results if r["phase"] == busy),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.web_load", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="crawls stood in by a writer thread, 2 s per run")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="directory for JSON results")
    parser.add_argument(
        "--crawl-worker", choices=("process", "thread"), default="process", help="the monitor's crawl_worker setting"
    )
    parser.add_argument(
        "--swarm-nice",
        type=int,
        default=0,
        help="niceness of the local demo swarm, which stands in for other machines (0: competes with the monitor)",
    )
    args = parser.parse_args(argv)
    from .report import write_json

    doc = run(args.quick, lambda text: print(text, flush=True), args.crawl_worker, args.swarm_nice)
    doc["quick"] = args.quick
    path = write_json(args.out, "web-load", doc)
    print(table(doc["rows"]))
    print(f"target >= {TARGET_RPS:.0f} req/s, p99 < {TARGET_P99_MS:.0f} ms on /api/v1/state: "
          f"idle {'met' if doc['target_met_idle'] else 'NOT met'}, "
          f"busy {'met' if doc['target_met_busy'] else 'NOT met'}; results: {path}")  # fmt: skip
    if not args.quick and not doc["crawls_during_busy_rows"]:
        print("NO crawl finished during the crawling rows: see the monitor's log (the busy rows measured nothing)")
        return 1
    return 1 if doc["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
