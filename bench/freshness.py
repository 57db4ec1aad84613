"""Freshness on real Petals servers: how long a join, a graceful leave and a crash take to show, on our ``serve``
and on the official monitor's logic, watching the same swarm in the same run.

    python -m bench.freshness [--quick] [--runs N] [--interval S] [--update-period S] [--out DIR]
    python -m bench --only freshness

A real Petals 2.2.0.post1 swarm on 127.0.0.1 (``tests/realpetals``: its venv, built on first use by
``make petals-venv``; a bootstrap and server ``a`` serving every block of a tiny local Llama), and two dashboards
crawling it every ``--interval`` seconds with a 5 s probe timeout:

- ours: ``python -m monitor serve``, read through ``/api/v1/state`` every 0.25 s;
- the official logic: health.petals.dev's update loop as ``bench/side_hivemind.py`` reimplements it (``watch``
  mode: hivemind's client, every server found probed, each probe result reused for 300 s), in its own process,
  which prints each crawl's states as it finishes.

Each run, server ``j`` (blocks 4-7) joins (held JOINING by a load gate until both dashboards have shown it
joining, as loading real blocks takes minutes), leaves with SIGINT (Petals announces OFFLINE), joins again, and is
SIGKILLed. Each event waits a random 0..interval first, so runs hit the crawls at different phases. Measured: the
time from the event (the server's "Started" log line for a join, the signal for a leave or a crash) to the first
document that shows it (online; anything but online), on the orchestrator's clock. Target: within one crawl
interval plus the probe timeout. Exit codes: 0 ours met the target for every event, 1 it did not, or something
failed to start (one line on stderr), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .measure import REPO
from .report import write_json

PROBE_TIMEOUT = 5.0  # both sides (ours: [swarms.reachability] timeout's default; health.petals.dev: connect_timeout)
POLL = 0.25  # how often our dashboard is read
ONLINE = "online"
MAX_ERRORS = 100  # kept per side (a dashboard that keeps failing is one repeated line)


@dataclass(frozen=True, slots=True)
class Seen:
    """One dashboard document: when the orchestrator saw it, and each server's state in it (absent = gone)."""

    at: float
    states: dict[str, str]
    expirations: dict[str, float] = field(default_factory=dict)  # ours only: each server's record expiration
    errors: dict[str, str] = field(default_factory=dict)  # failed probes' errors, by peer id


def shown_after(seen: Sequence[Seen], since: float, peer: str, accept: Callable[[str | None], bool]) -> float | None:
    """Seconds from ``since`` to the first document seen at or after it whose state of ``peer`` ``accept``s."""
    for doc in seen:
        if doc.at >= since and accept(doc.states.get(peer)):
            return doc.at - since
    return None


def reannounced_share(seen: Sequence[Seen]) -> tuple[int, int]:
    """(servers whose records were re-announced between two consecutive crawls, servers seen in both), summed over
    every pair: the share of what a crawl reads that is new since the crawl before (a server rewrites all its
    block keys when it re-announces, so this is also the share of its keys that changed)."""
    changed = both = 0
    for before, after in itertools.pairwise(seen):
        for peer, expiration in after.expirations.items():
            if peer in before.expirations:
                both += 1
                changed += abs(expiration - before.expirations[peer]) > 1.0
    return changed, both


def is_online(state: str | None) -> bool:
    return state == ONLINE


def not_online(state: str | None) -> bool:
    return state != ONLINE


def is_joining(state: str | None) -> bool:
    return state == "joining"


@dataclass
class Dashboard:
    """The documents one side has shown so far, appended by its reader thread."""

    name: str
    _seen: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    errors: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(text[:300])

    def add(self, doc: Seen) -> None:
        with self._lock:
            self._seen.append(doc)

    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)


def read_ours(serve: Any, board: Dashboard, stop: threading.Event, prefix: str) -> None:
    """Each new crawl's state document from our ``/api/v1/state``."""
    last = None
    while not stop.wait(POLL):
        try:
            doc = serve.state()
        except (OSError, AssertionError, ValueError) as e:
            board.error(f"{type(e).__name__}: {e}")
            continue
        if doc is None or doc["crawl_id"] == last:
            continue
        last = doc["crawl_id"]
        rows = [r for m in doc["model_reports"] if m["dht_prefix"] == prefix for r in m["server_rows"]]
        expirations = {r["peer_id"]: r["expiration"] for r in rows if r.get("expiration") is not None}
        errors = {r["peer_id"]: r["reachability"]["error"] for r in rows if (r.get("reachability") or {}).get("error")}
        board.add(Seen(time.time(), {r["peer_id"]: r["state"] for r in rows}, expirations, errors))


def read_official(proc: subprocess.Popen, board: Dashboard) -> None:
    """Each crawl's states, as the official loop prints them when the crawl finishes."""
    for line in proc.stdout:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if "error" in doc:
            board.error(doc["error"])
        else:
            board.add(Seen(time.time(), doc["states"], errors=doc.get("probe_errors", {})))


def wait_shown(
    boards: Sequence[Dashboard], since: float, peer: str, accept: Callable[[str | None], bool], timeout: float
) -> dict[str, float | None]:
    """Each board's delay to show ``peer`` as ``accept`` says (None: not within ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        delays = {b.name: shown_after(b.seen(), since, peer, accept) for b in boards}
        if all(d is not None for d in delays.values()) or time.monotonic() > deadline:
            return delays
        time.sleep(POLL)


def summary(delays: Sequence[float | None]) -> dict[str, Any]:
    shown = [d for d in delays if d is not None]
    return {
        "runs": list(delays),
        "median": statistics.median(shown) if shown else None,
        "max": max(shown) if shown else None,
        "missed": len(delays) - len(shown),
    }


def _cell(s: dict[str, Any]) -> str:
    if s["median"] is None:
        return "never shown"
    runs = ", ".join("—" if d is None else f"{d:.1f}" for d in s["runs"])
    return f"{s['median']:.1f} s ({runs})" + (f", {s['missed']} not shown" if s["missed"] else "")


def table(results: dict[str, dict[str, dict[str, Any]]], target: float) -> str:
    lines = ["| event | ours (`serve`) | official logic | target (interval + probe timeout) |", "|---|---|---|---|"]
    for event, sides in results.items():
        lines.append(f"| {event} | {_cell(sides['ours'])} | {_cell(sides['official'])} | {target:.0f} s |")
    return "\n".join(lines)


def within_target(doc: dict[str, Any]) -> bool:
    """Whether ours showed every event of every run within the target (and there were events)."""
    events = doc["results"].values()
    return bool(events) and all(s["ours"]["missed"] == 0 and s["ours"]["max"] <= doc["target"] for s in events)


def _official(workdir: Path, initial_peer: str, prefix: str, num_blocks: int, interval: float, log: Any):
    config = workdir / "official.json"
    config.write_text(json.dumps({
        "mode": "watch",
        "initial_peers": [initial_peer],
        "models": [{"dht_prefix": prefix, "num_blocks": num_blocks}],
        "interval": interval,
        "probe_timeout": PROBE_TIMEOUT,
        "cache_ttl": 300.0,
        "max_seconds": 3 * 3600.0,
    }))  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "bench.side_hivemind", str(config)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )


def run(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    from monitor_runs import PREFIX, Serve, write_config
    from petals_venv import build, cache_root
    from swarm import PetalsSwarm, ServerSpec, free_port

    rng = random.Random(args.seed)
    base = ServerSpec("a", 0, 8, 1.0, "fresh-a")
    joiner = ServerSpec("j", 4, 8, 2.0, "fresh-j")
    python = build(log=say)
    workdir = Path(tempfile.mkdtemp(prefix="bench-freshness-"))
    swarm = PetalsSwarm(
        python, workdir / "swarm", cache_root() / "tiny-llama-8", PREFIX, [base], update_period=args.update_period
    )
    events: dict[str, dict[str, list[float | None]]] = {}
    record_ttl = swarm.expiration
    gone_timeout = record_ttl + 2 * args.interval + 60  # the official logic waits for the record to expire
    join_timeout = 300.0 + 2 * args.interval + 60  # ... or for a cached failed probe to expire
    stop = threading.Event()
    with swarm:
        say(f"   swarm up: bootstrap + server a (update period {args.update_period:.0f} s, records live "
            f"{record_ttl:.0f} s); logs in {workdir}")  # fmt: skip
        port = free_port()
        serve = Serve(write_config(workdir / "serve.toml", swarm, port=port, interval=args.interval), port,
                      workdir / "serve.log")  # fmt: skip
        official_log = open(workdir / "official.log", "wb")  # noqa: SIM115 (closed once the process ended)
        official = _official(workdir, swarm.initial_peer, PREFIX, swarm.num_blocks, args.interval, official_log)
        ours_board, official_board = Dashboard("ours"), Dashboard("official")
        boards = (ours_board, official_board)
        readers = [
            threading.Thread(target=read_ours, args=(serve, ours_board, stop, PREFIX), daemon=True),
            threading.Thread(target=read_official, args=(official, official_board), daemon=True),
        ]
        for reader in readers:
            reader.start()
        try:
            a = swarm.server("a").peer_id
            ready = wait_shown(boards, 0.0, a, is_online, 120 + 2 * args.interval)
            if None in ready.values():
                raise RuntimeError(f"the dashboards did not show server a online: {ready}")

            def event(name: str, peer: str, since: float, accept: Callable[[str | None], bool], timeout: float):
                delays = wait_shown(boards, since, peer, accept, timeout)
                for side, delay in delays.items():
                    events.setdefault(name, {}).setdefault(side, []).append(delay)
                say(f"   {name}: " + ", ".join(f"{s} {'—' if d is None else f'{d:.1f} s'}" for s, d in delays.items()))

            for i in range(args.runs):
                gate = workdir / f"load-gate-{i}"
                peer = swarm.start_server(joiner, load_gate=gate).peer_id
                joining = wait_shown(boards, time.time(), peer, is_joining, 120 + 2 * args.interval)
                say("   joining shown: " + ", ".join(f"{s} {'no' if d is None else 'yes'}" for s, d in joining.items()))
                gate.touch()
                swarm.wait_started(joiner.name)
                event("join", peer, time.time(), is_online, join_timeout)
                time.sleep(rng.uniform(0, args.interval))
                swarm.stop(joiner.name)
                event("leave (SIGINT)", peer, swarm.server(joiner.name).stopped_at, not_online, gone_timeout)
                time.sleep(rng.uniform(0, args.interval))
                swarm.start_server(joiner)
                swarm.wait_started(joiner.name)
                event("join again (after a leave)", peer, time.time(), is_online, join_timeout)
                time.sleep(rng.uniform(0, args.interval))
                swarm.stop(joiner.name, kill=True)
                event("crash (SIGKILL)", peer, swarm.server(joiner.name).stopped_at, not_online, gone_timeout)
        finally:
            stop.set()
            if official.poll() is None:
                official.stdin.close()  # the official loop ends at EOF
                try:
                    official.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    official.kill()
                    official.wait(timeout=10)
            official_log.close()
            serve.stop()
    for board in boards:  # every document each side showed, for a second look
        with open(workdir / f"seen-{board.name}.jsonl", "w") as out:
            for doc in board.seen():
                out.write(json.dumps({"at": doc.at, "states": doc.states, "errors": doc.errors}) + "\n")
    return {
        "interval": args.interval,
        "probe_timeout": PROBE_TIMEOUT,
        "update_period": args.update_period,
        "record_ttl": record_ttl,
        "target": args.interval + PROBE_TIMEOUT,
        "results": {name: {side: summary(d) for side, d in sides.items()} for name, sides in events.items()},
        "crawls_seen": {b.name: len(b.seen()) for b in boards},
        "reannounced_between_crawls": dict(
            zip(("changed", "seen_in_both"), reannounced_share(ours_board.seen()), strict=True)
        ),
        "errors": {b.name: b.errors for b in boards},
        "workdir": str(workdir),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.freshness", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run at a 10 s interval")
    parser.add_argument("--runs", type=int, default=None, help="join/leave/join/crash cycles (default 3; 1 quick)")
    parser.add_argument("--interval", type=float, default=None, help="crawl interval of both sides (default 15 s)")
    parser.add_argument("--update-period", type=float, default=60.0, help="Petals' --update_period (its default)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random wait before each event")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="directory for JSON results")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    args.interval = args.interval if args.interval is not None else (10.0 if args.quick else 15.0)
    if args.runs < 1 or args.interval <= 0 or args.update_period <= 0:
        print("error: --runs, --interval and --update-period must be positive", file=sys.stderr)
        return 2
    for path in (REPO / "tests", REPO / "tests" / "realpetals"):  # the real-Petals harness
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))

    def say(text: str) -> None:
        print(text, flush=True)

    signal.signal(signal.SIGTERM, _terminate)  # so the swarm, serve and the official loop are stopped
    load_before = _load()
    try:
        doc = run(args, say)
    except (RuntimeError, subprocess.SubprocessError, OSError) as e:  # SwarmError, a venv that would not build
        print(f"error: freshness: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1
    doc.update(quick=args.quick, runs=args.runs, seed=args.seed, load_before=load_before, load_after=_load())
    path = write_json(args.out, "freshness", doc)
    say(table(doc["results"], doc["target"]))
    ours_ok = within_target(doc)
    say(f"   ours within the target for every event: {'yes' if ours_ok else 'NO'}; results: {path}")
    return 0 if ours_ok else 1


def _terminate(_signum: int, _frame: Any) -> None:
    raise SystemExit(143)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


if __name__ == "__main__":
    sys.exit(main())
