"""``python -m bench [--quick] [--only NAME] [--out DIR] [--runs N] [--stack lean|libp2p]``: ours vs hivemind's.

Benchmarks: ``dht-1000``, ``dht-swarm``, ``crawl`` (see bench/README.md); ``wan`` (the crawl through delaying relays,
``bench/wan.py``), ``web-load`` and ``scaling`` (the monitor alone: ``bench/web_load.py``, ``bench/scaling.py``) and
``freshness`` (real Petals servers, ``bench/freshness.py``; not in ``--quick`` unless named) are also runnable as
modules. Each side runs in its own
subprocess, alternating ours / hivemind's, against the same local swarm of real hivemind nodes on 127.0.0.1; the
median of ``--runs`` runs (3 by default, 1 with ``--quick``, which also uses smaller swarms) is printed as a table and
written as JSON to ``--out`` (default bench/results/). ``--stack libp2p`` makes our side dial with py-libp2p's Noise
+ yamux instead of our lean stack (``dht.net.lean``), so what the lean stack saves can be re-measured with one
command whenever py-libp2p changes; its results are written as ``NAME-libp2p.json``. Exit code 1 if a side failed or
the two sides did not find the same thing, except when hivemind's side found less and its own FINDs say why (they
timed out under load and it banned the nodes: :func:`reference_shortfall`); that is printed and recorded, not failed.
``store-backends`` (``bench/store_backends.py``: SQLite vs PostgreSQL, replicas, failover) runs only when
named with ``--only``: it needs PostgreSQL and a few minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import scenarios
from .measure import REPO, SideFailed, SideRun, run_side
from .report import medians, table, write_json
from .summary import REAL_PETALS, summarize

NAMES = ("dht-1000", "dht-swarm", "crawl", "wan", "web-load", "scaling", "freshness")
OPT_IN = ("store-backends",)  # run only when named with --only (it needs PostgreSQL and a few minutes)
# Benchmarks of the monitor alone (no hivemind side, no harness): modules with main(argv) -> exit code.
STACKS = ("lean", "libp2p")
OWN_MODULES = {
    "wan": "bench.wan",
    "web-load": "bench.web_load",
    "scaling": "bench.scaling",
    "store-backends": "bench.store_backends",
    "freshness": "bench.freshness",
}
# REAL_PETALS (bench.summary): benchmarks on real Petals servers, left out of --quick unless named in --only.
SIDE_TIMEOUT = 420.0


def _check(digest: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Where a side's digest differs from what was stored."""
    return [f"{key}: expected {want!r}, got {digest.get(key)!r}" for key, want in expected.items()
            if digest.get(key) != want]  # fmt: skip


# What a side's digest counts of what it found: a reference side short on these, with its own FINDs failed, lost them
FOUND_COUNTS = ("records", "models", "keys_found", "entries")


def reference_shortfall(digest: dict[str, Any], expected: dict[str, Any]) -> str | None:
    """Why hivemind's side found less than was stored, when its own FINDs say why; None when they do not (then the
    difference is a mismatch and the run fails).

    Under CPU load hivemind's client loses records on its own: a FIND that takes longer than its ``wait_timeout``
    (3 s) is cancelled, the node is banned for 5 s (doubling at each failure), and get_many skips every FIND to a
    banned node, so the keys it would have asked there finish with what the other nodes gave, or nothing. The side
    counts both (``find_failures``, see bench/side_hivemind.py); the swarm held every record (our side, asking the
    same nodes in the same run, must still find them all). Excused only as far as those FINDs reach: every count
    lower, never higher, no model that was not stored, and no more lost than the keys of the failed and skipped
    FINDs could have carried."""
    wrong = [k for k, want in expected.items() if digest.get(k) != want]
    lost = digest.get("find_failures") or {}
    keys_lost = lost.get("keys_failed", 0) + lost.get("keys_skipped", 0)
    if not wrong or not set(wrong) <= set(FOUND_COUNTS) or keys_lost <= 0:
        return None
    for k in wrong:
        if not _fewer(digest.get(k), expected[k], keys_lost * _most_per_key(k, expected)):
            return None
    found = ", ".join(f"{k} {digest.get(k)} of {expected[k]}" for k in wrong if isinstance(expected[k], int))
    failed = ", ".join(f"{n} {kind}" for kind, n in sorted(lost.get("failed", {}).items())) or "none"
    return (f"hivemind's own FINDs failed ({failed}, {lost.get('keys_failed', 0)} keys; slowest "
            f"{lost.get('slowest_failed', 0):g} s, its wait_timeout is 3 s) and {lost.get('skipped_banned', 0)} FINDs "
            f"({lost.get('keys_skipped', 0)} keys) were skipped on nodes it had banned for that: found "
            f"{found or 'less'}")  # fmt: skip


def _most_per_key(count: str, expected: dict[str, Any]) -> int:
    """How much of ``count`` one key can hold: a block key holds a record per server of its model."""
    if count == "records" and isinstance(expected.get("models"), dict):
        return max((m.get("servers", 0) for m in expected["models"].values()), default=1) or 1
    if count == "entries" and expected.get("keys_found"):
        return -(-int(expected["entries"]) // int(expected["keys_found"]))
    return 1


def _fewer(got: Any, want: Any, most_lost: int) -> bool:
    """``got`` is ``want`` with at most ``most_lost`` missing (per model, field by field, for the models table)."""
    if isinstance(want, dict):
        return isinstance(got, dict) and set(got) <= set(want) and all(
            isinstance(g, dict) and set(g) <= set(want[m]) and all(_fewer(g[f], want[m][f], most_lost) for f in g)
            for m, g in got.items()
        )  # fmt: skip
    return isinstance(got, int) and isinstance(want, int) and want - most_lost <= got <= want


@contextlib.contextmanager
def _scenario(name: str, harness: Any, sizes: scenarios.Sizes, log_dir: Path) -> Iterator[scenarios.Scenario]:
    if name == "dht-1000":
        yield scenarios.dht_one_node(harness, sizes)
    elif name == "dht-swarm":
        yield scenarios.dht_swarm(harness, sizes)
    else:
        spec = scenarios.crawl_spec(sizes, scenarios.start_bootstrap_peers(harness))
        with scenarios.petals_swarm(spec, log_dir) as seeded:
            yield scenarios.crawl_scenario(spec, seeded)


def run_benchmark(
    scenario: scenarios.Scenario, runs: int, log_dir: Path, say: Callable[[str], None], stack: str = "lean"
) -> dict:
    ours_runs: list[SideRun] = []
    theirs_runs: list[SideRun] = []
    problems: list[str] = []
    shortfalls: list[str] = []  # the reference side's own losses (reference_shortfall): said, not a failure
    retries: list[str] = []
    for i in range(runs):
        for side, module, config, bucket in (
            ("ours", "bench.side_ours", {**scenario.ours, "stack": stack}, ours_runs),
            ("hivemind", "bench.side_hivemind", scenario.theirs, theirs_runs),
        ):
            try:
                result = run_side(side, module, config, timeout=SIDE_TIMEOUT, log_dir=log_dir)
            except SideFailed as e:  # once: hivemind's DHT process sometimes dies on its own pipe
                say(f"  run {i + 1}/{runs} {side:8}: failed, retrying once ({str(e).splitlines()[0]})")
                retries.append(f"{side} run {i + 1}: {str(e)[:2000]}")
                result = run_side(side, module, config, timeout=SIDE_TIMEOUT, log_dir=log_dir)
            bucket.append(result)
            diff = _check(result.digest, scenario.expected)
            why = reference_shortfall(result.digest, scenario.expected) if side == "hivemind" else None
            if why:
                shortfalls.append(f"{side} run {i + 1}: {why}")
            else:
                problems += [f"{side} run {i + 1}: {d}" for d in diff]
            verdict = f"  SHORT (hivemind's own timeouts, not a mismatch): {why}" if why else f"  MISMATCH {diff}"
            say(f"  run {i + 1}/{runs} {side:8}: op {result.op_wall:.3f} s, cpu {result.op_cpu:.3f} s, "
                f"rss {result.peak_rss_kb / 1024:.0f} MB" + (verdict if diff else ""))  # fmt: skip
    ours, theirs = medians(ours_runs), medians(theirs_runs)
    next_crawl = _next_crawl(ours_runs, theirs_runs)
    return {
        "next_crawl": next_crawl,
        "description": scenario.description,
        "setup": scenario.setup,
        "expected": scenario.expected,
        "runs": runs,
        "median": {"ours": ours, "hivemind": theirs},
        "ratio_hivemind_over_ours": {k: (theirs[k] / ours[k] if ours[k] else None) for k in ours},
        "same_result": not problems,
        "problems": problems,
        "reference_shortfalls": shortfalls,
        "retries": retries,
        "all_runs": {"ours": [r.to_json() for r in ours_runs], "hivemind": [r.to_json() for r in theirs_runs]},
    }


def _next_crawl(ours_runs: list[SideRun], theirs_runs: list[SideRun]) -> dict[str, Any] | None:
    """Medians of the repeated crawl (same process, connections kept), when the sides measured one."""
    out: dict[str, Any] = {}
    for side, side_runs in (("ours", ours_runs), ("hivemind", theirs_runs)):
        nexts = [r.digest["next_crawl"] for r in side_runs if "next_crawl" in r.digest]
        if not nexts:
            return None
        out[side] = {k: statistics.median(n[k] for n in nexts) for k in ("wall", "cpu")}
        out[side]["complete"] = [n["records"] for n in nexts]
    out["ratio_hivemind_over_ours"] = {k: out["hivemind"][k] / out["ours"][k] for k in ("wall", "cpu")}
    return out


def selected(only: list[str] | None, *, quick: bool) -> list[str]:
    """The benchmarks to run, in order: those named, or all of them (without REAL_PETALS in a quick run)."""
    if only:
        return [n for n in NAMES + OPT_IN if n in only]
    return [n for n in NAMES if not (quick and n in REAL_PETALS)]


def _terminate(_signum: int, _frame: Any) -> None:
    raise SystemExit(143)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small swarms, one run each (CI smoke run)")
    parser.add_argument("--only", choices=NAMES + OPT_IN, action="append", help="run only this benchmark (repeatable)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="directory for JSON results")
    parser.add_argument("--runs", type=int, default=None, help="runs per side (default 3; 1 with --quick)")
    parser.add_argument(
        "--stack",
        choices=STACKS,
        default="lean",
        help="our side's connection stack: lean (our Noise + yamux, what the monitor uses) or libp2p (py-libp2p's); "
        "side-by-side benchmarks only",
    )
    parser.add_argument(
        "--summary",
        type=Path,
        default=None,
        help="after a full run (no --quick, no --only), write its headline figures here as Markdown "
        "(make bench: bench/LAST_RUN.md, which the README cites)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    if runs < 1:
        print("error: --runs must be >= 1", file=sys.stderr)
        return 2
    sizes = scenarios.QUICK if args.quick else scenarios.FULL
    names = selected(args.only, quick=args.quick)

    def say(text: str) -> None:
        print(text, flush=True)

    signal.signal(signal.SIGTERM, _terminate)  # so the harness and the stand-in servers are torn down
    sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the harness client lives in tests/ (with its helpers)
    from tests.interop_fixtures import running_harness  # the hivemind node harness (a subprocess)

    failed = False
    started = time.perf_counter()
    tables = []
    for name in [n for n in names if n in OWN_MODULES]:
        say(f"== {name}")
        failed |= (
            importlib.import_module(OWN_MODULES[name]).main(["--out", str(args.out)] + ["--quick"] * args.quick) != 0
        )
    names = [n for n in names if n not in OWN_MODULES]
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
        running_harness() if names else contextlib.nullcontext() as harness,
    ):
        log_dir = Path(tmp)
        for name in names:
            say(f"== {name}: setting up")
            t0 = time.perf_counter()
            try:
                with _scenario(name, harness, sizes, log_dir) as scenario:
                    say(f"   {scenario.description} (setup {time.perf_counter() - t0:.1f} s)")
                    doc = run_benchmark(scenario, runs, log_dir, say, args.stack)
            except (SideFailed, RuntimeError) as e:
                failed = True
                say(f"!! {name} failed: {e}")
                continue
            doc["quick"] = args.quick
            doc["stack"] = args.stack
            label = name if args.stack == "lean" else f"{name}-{args.stack}"
            path = write_json(args.out, label, doc)
            text = table(label, doc["median"]["ours"], doc["median"]["hivemind"], doc["same_result"], runs)
            tables.append(text)
            say(text)
            nxt = doc.get("next_crawl")
            if nxt:
                say(f"   next crawl (same process, connections kept, probes redone): ours {nxt['ours']['wall']:.3f} s "
                    f"wall / {nxt['ours']['cpu']:.3f} s CPU, hivemind {nxt['hivemind']['wall']:.3f} s / "
                    f"{nxt['hivemind']['cpu']:.3f} s: {nxt['ratio_hivemind_over_ours']['wall']:.1f}x wall")  # fmt: skip
            for problem in doc["problems"][:10]:
                say(f"   mismatch: {problem}")
            for shortfall in doc["reference_shortfalls"][:10]:
                say(f"   hivemind short, by its own timeouts (not counted as a mismatch): {shortfall}")
            say(f"   results: {path}")
            failed |= not doc["same_result"]
    say("")
    say("\n\n".join(tables))
    say(f"total {time.perf_counter() - started:.1f} s")
    if args.summary and (args.quick or args.only or args.stack != "lean"):
        say(f"summary not written to {args.summary}: it is for full runs of every benchmark on the lean stack")
    elif args.summary:
        args.summary.write_text(summarize(args.out))
        say(f"summary: {args.summary}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
