"""``python -m bench.summary [RESULTS_DIR] [--out FILE]``: the headline figures of one bench run, as Markdown.

``make bench`` writes it to ``bench/LAST_RUN.md``, which is committed so that the README's performance paragraph can
cite figures a reader can trace to one run (its commit, machine and load), not a collage of runs. Only what the
JSON files hold is used: a benchmark that did not run (or failed before writing) is listed as missing, never
guessed (but a quick run, which leaves out the real-Petals ``freshness`` benchmark, is not said to miss it). The
full method and earlier rounds are in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .freshness import table as freshness_table
from .freshness import within_target
from .measure import REPO
from .report import ratio

SIDE_BY_SIDE = ("dht-1000", "dht-swarm", "crawl")
# Benchmarks on real Petals servers (minutes of wall time, GBs of RAM): `python -m bench --quick` leaves them out.
REAL_PETALS = ("freshness",)
ALL = (*SIDE_BY_SIDE, "wan", "web-load", "scaling", *REAL_PETALS)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _mb(kb: float | None) -> str:
    return "-" if kb is None else f"{kb / 1024:.0f} MB"


def _side_by_side(name: str, doc: dict[str, Any]) -> list[str]:
    ours, theirs = doc["median"]["ours"], doc["median"]["hivemind"]
    rows = [
        f"| {name} | op wall | {_s(ours['op_wall'])} | {_s(theirs['op_wall'])} | "
        f"{ratio(theirs['op_wall'], ours['op_wall'])} |",
        f"| {name} | op CPU (process tree) | {_s(ours['op_cpu'])} | {_s(theirs['op_cpu'])} | "
        f"{ratio(theirs['op_cpu'], ours['op_cpu'])} |",
        f"| {name} | peak PSS | {_mb(ours['peak_pss_kb'])} | {_mb(theirs['peak_pss_kb'])} | "
        f"{ratio(theirs['peak_pss_kb'], ours['peak_pss_kb'])} |",
    ]
    nxt = doc.get("next_crawl")
    if nxt:
        rows.append(f"| {name} | next crawl wall (warm) | {_s(nxt['ours']['wall'])} | {_s(nxt['hivemind']['wall'])} | "
                    f"{ratio(nxt['hivemind']['wall'], nxt['ours']['wall'])} |")  # fmt: skip
    for problem in doc.get("problems", [])[:3]:  # e.g. one side missed records under load: say which, as recorded
        rows.append(f"| {name} | **not the same result**: {problem} | | | |")
    for shortfall in doc.get("reference_shortfalls", [])[:3]:  # hivemind's client lost them, not the swarm
        rows.append(f"| {name} | hivemind short by its own FIND timeouts (not a mismatch): {shortfall} | | | |")
    return rows


def _wan(doc: dict[str, Any]) -> list[str]:
    rows = []
    for r in doc["results"]:
        ours, theirs = r["median"]["ours"], r["median"]["hivemind"]
        for phase in ("cold", "warm"):
            o, t = ours[phase], theirs[phase]
            rows.append(
                f"| wan {r['rtt_ms']:g} ms {phase} | wall · RPCs · MB sent by the swarm | "
                f"{_s(o['wall'])} · {o['rpcs']} · {o['bytes_sent_by_swarm'] / 1e6:.1f} | "
                f"{_s(t['wall'])} · {t['rpcs']} · {t['bytes_sent_by_swarm'] / 1e6:.1f} | "
                f"{ratio(t['wall'], o['wall'])} · {ratio(t['rpcs'], o['rpcs'])} · "
                f"{ratio(t['bytes_sent_by_swarm'], o['bytes_sent_by_swarm'])} |"
            )
    if not doc.get("ok", False):
        rows.append("| wan | **a mismatch or a relay bypass: see wan.json** | | | |")
    return rows


def _web_load(doc: dict[str, Any]) -> list[str]:
    return [f"| web-load, {r['phase']} | `{r['path']}` ({r['endpoint']}): req/s · p99 | "
            f"{r['rps']:.0f} · {r['p99_ms']:.0f} ms |" for r in doc["rows"]]  # fmt: skip


def _scaling(doc: dict[str, Any]) -> list[str]:
    return [f"| scaling, {r['servers']} servers, {r['blocks']} blocks | crawl + judge + store · peak RSS | "
            f"{_s(r['total_s'])} · {_mb(r['peak_rss_kb'])} |" for r in doc["rows"]]  # fmt: skip


def _freshness(doc: dict[str, Any]) -> list[str]:
    """bench/freshness.py's events on real Petals servers: ours (`serve`) beside the official monitor's logic."""
    return [
        f"Freshness on real Petals servers ({doc['runs']} runs; both sides crawl every {doc['interval']:g} s; the "
        "official logic is health.petals.dev's update loop as bench/side_hivemind.py reimplements it): seconds from "
        "each event to the first document that shows it, median (each run). Ours within the target for every "
        f"event: {'yes' if within_target(doc) else '**no**'}.",
        "",
        freshness_table(doc["results"], doc["target"]),
    ]


def _commit() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def summarize(results: Path, commit: str | None = None) -> str:
    """The Markdown summary of the JSON files in ``results`` (pure but for reading them)."""
    docs: dict[str, dict[str, Any]] = {}
    for name in ALL:
        path = results / f"{name}.json"
        if path.is_file():
            docs[name] = json.loads(path.read_text())
    rows: list[str] = []
    for name in SIDE_BY_SIDE:
        if name in docs:
            rows += _side_by_side(name, docs[name])
    if "wan" in docs:
        rows += _wan(docs["wan"])
    alone = [*(_web_load(docs["web-load"]) if "web-load" in docs else []),
             *(_scaling(docs["scaling"]) if "scaling" in docs else [])]  # fmt: skip
    any_doc = next(iter(docs.values()), {})
    m = any_doc.get("machine", {})
    loads = ", ".join(f"{n} {docs[n]['machine']['load_average'][0]:.1f}" for n in ALL
                      if n in docs and "machine" in docs[n])  # fmt: skip
    when = max((d.get("written_at", 0) for d in docs.values()), default=0)
    quick = any(d.get("quick") for d in docs.values())
    missing = [n for n in ALL if n not in docs and not (quick and n in REAL_PETALS)]  # quick runs leave those out
    lines = [
        "# The last full `make bench` run",
        "",
        "Written by `python -m bench.summary` from one run's JSON files (`make bench` does it at the end). "
        "Ratios are hivemind / ours, measured side by side in the same run (higher = ours better); the method, "
        "earlier rounds and the WAN harness are in [README.md](README.md).",
        "",
        f"- commit: {commit or _commit()}; finished {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(when))}"
        + (" — **quick mode (small swarms, one run)**" if quick else ""),
        f"- machine: {m.get('cores', '?')} cores ({m.get('cpu', '?')}), {m.get('memory_gb', '?')} GB, Python "
        f"{m.get('python', '?')}, " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()),
        f"- load average (1 min) when each benchmark wrote its results: {loads or '-'}",
    ]
    if missing:
        lines.append(f"- not in this run: {', '.join(missing)}")
    lines += ["", "| benchmark | figure | ours | hivemind | hivemind / ours |", "|---|---|---|---|---|", *rows]
    if alone:
        lines += ["", "The monitor alone (no hivemind side):", "", "| benchmark | figure | ours |", "|---|---|---|",
                  *alone]  # fmt: skip
    if "freshness" in docs:
        lines += ["", *_freshness(docs["freshness"])]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.summary", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="?", default=REPO / "bench" / "results")
    parser.add_argument("--out", type=Path, default=None, help="write here instead of stdout")
    parser.add_argument("--commit", default=None, help="the commit measured (default: the checkout's HEAD now)")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        print(f"error: {args.results} is not a directory of bench results", file=sys.stderr)
        return 2
    try:
        text = summarize(args.results, commit=args.commit)
    except (ValueError, KeyError, TypeError) as e:  # a results file of another shape: say which, stop
        print(f"error: cannot summarize {args.results}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
