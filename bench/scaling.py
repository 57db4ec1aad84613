"""How a crawl grows with the swarm: ``python -m bench.scaling [--quick] [--out DIR] [--plot PATH]``.

For each size, a demo swarm (``monitor.demo``, 3 DHT nodes on 127.0.0.1, in ``bench._load_swarm``) with
``servers`` simulated servers and one synthetic model of ``blocks`` blocks beside the designed cast (4 small
models, 148 blocks), then one crawl in a fresh process (``bench._load_crawl``): crawl wall time (bootstrap,
lookup of every block key, discovery pass), judging it (the Petals rules), storing it, and the crawl process's
peak RSS. Reachability probes are off: they are bounded by their own timeout and most simulated servers have
no host, so they would measure the timeout, not the crawler.

Two series: servers 100 → 10 000 at 80 blocks, blocks 80 → 1 000 at 1 000 servers. ``--quick``: the smallest
size only. Prints a table, writes JSON to ``--out`` and a PNG plot (matplotlib, the ``bench`` extra) to
``--plot`` (default bench/scaling.png; skipped without matplotlib or with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._load_procs import REPO, child, python, write_config

SERVERS_SERIES = [(100, 80), (300, 80), (1000, 80), (3000, 80), (10_000, 80)]
BLOCKS_SERIES = [(1000, 250), (1000, 500), (1000, 1000)]  # (1000, 80) is in the servers series
QUICK_SIZES = [(100, 80)]
CRAWL_TIMEOUT = 900.0


def update_period(servers: int, blocks: int, quick: bool) -> float:
    """The demo's announce period: short for small swarms (less waiting), longer for large ones, whose
    announcements would otherwise keep the swarm's single process (3 DHT nodes + announcer) saturated and its
    nodes slow to answer. Real Petals servers announce every 120 s."""
    if quick:
        return 4.0
    return max(15.0, servers / 80, blocks / 20)


def scenario(servers: int, blocks: int, quick: bool) -> dict[str, Any]:
    return {
        "seed": 1,
        "extra_models": 1,
        "blocks_per_extra_model": blocks,
        "num_servers": servers,
        "update_period": update_period(servers, blocks, quick),
    }


def crawl_once(servers: int, blocks: int, quick: bool, tmp: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """A fresh swarm of this size, every server announced once, then one crawl in its own process."""
    scen = scenario(servers, blocks, quick)
    t0 = time.perf_counter()
    cfg = write_config(tmp, "swarm", {"scenario": scen, "full_period": True})  # every server announced once
    with child("bench._load_swarm", cfg, "PEERS", timeout=600, log=tmp / "swarm.log") as (_proc, peers):
        up = time.perf_counter() - t0
        db = tmp / f"crawl-{servers}-{blocks}.db"
        crawl_cfg = write_config(tmp, "crawl", {"peers": json.loads(peers), "scenario": scen, "db": str(db),
                                                "crawl_timeout": CRAWL_TIMEOUT})  # fmt: skip
        out = subprocess.run(
            [python(), "-m", "bench._load_crawl", str(crawl_cfg)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=CRAWL_TIMEOUT + 120,
        )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"crawl of {servers} servers x {blocks} blocks failed: {out.stderr[-2000:]}")
    result = {"servers": servers, "extra_blocks": blocks, "swarm_start_s": up, **json.loads(lines[-1][7:])}
    say("   " + format_row(result))
    return result


def format_row(r: dict[str, Any]) -> str:
    return (
        f"{r['servers']:>6} servers {r['blocks']:>5} blocks: {r['records']:>7} records, crawl {r['crawl_s']:6.2f} s, "
        f"judge {r['judge_s']:5.2f} s, store {r['store_s']:5.2f} s, peak RSS {r['peak_rss_kb'] / 1024:5.0f} MB, "
        f"{r['rpcs']} RPCs, {r['servers_found']} servers found ({r['status']})"
    )


def table(rows: list[dict[str, Any]]) -> str:
    head = ("servers", "blocks", "keys", "records", "crawl s", "judge s", "store s", "total s", "CPU s",
            "µs CPU/record", "peak RSS MB", "RPCs", "found")  # fmt: skip
    body = [
        (str(r["servers"]), str(r["blocks"]), str(r["keys"]), str(r["records"]), f"{r['crawl_s']:.2f}",
         f"{r['judge_s']:.2f}", f"{r['store_s']:.2f}", f"{r['total_s']:.2f}", f"{r['cpu_s']:.2f}",
         f"{r['cpu_s'] / max(r['records'], 1) * 1e6:.0f}", f"{r['peak_rss_kb'] / 1024:.0f}", str(r["rpcs"]),
         str(r["servers_found"]))
        for r in rows
    ]  # fmt: skip
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = ["| " + " | ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in [head, *body]]
    lines.insert(1, "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    """Crawl phases and peak RSS against servers (at 80 blocks) and blocks (at 1 000 servers), log-log."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ok = [r for r in rows if r["status"] == "succeeded"]  # a failed crawl found nothing: no point to plot
    series = {
        "servers (80-block model)": ("servers", [r for r in ok if r["extra_blocks"] == 80]),
        "blocks of the synthetic model (1 000 servers)": ("extra_blocks", [r for r in ok if r["servers"] == 1000]),
    }
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for col, (label, (x_key, data)) in enumerate(series.items()):
        if not data:  # e.g. --size ran only the other series: an empty log axis cannot be drawn
            axes[0][col].axis("off")
            axes[1][col].axis("off")
            continue
        data = sorted(data, key=lambda r: r[x_key])
        xs = [r[x_key] for r in data]
        ax = axes[0][col]
        phases = (("total_s", "total wall"), ("cpu_s", "crawler CPU"), ("crawl_s", "crawl wall (DHT)"),
                  ("judge_s", "judge"), ("store_s", "store"))  # fmt: skip
        for key, name in phases:
            ax.plot(xs, [r[key] for r in data], marker="o", label=name)
        if len(xs) > 1 and data[0]["total_s"] > 0:  # a linear reference through the first point
            ax.plot(xs, [data[0]["total_s"] * x / xs[0] for x in xs], linestyle=":", color="grey", label="linear")
        ax.set(xscale="log", yscale="log", xlabel=label, ylabel="seconds", title=f"crawl time vs {x_key}")
        ax.legend(fontsize=8)
        ax = axes[1][col]
        ax.plot(xs, [r["peak_rss_kb"] / 1024 for r in data], marker="o", color="tab:red")
        ax.set(xscale="log", xlabel=label, ylabel="MB", title="crawl process peak RSS")
    fig.suptitle("petals-monitor crawl of a local demo swarm (3 DHT nodes, 127.0.0.1)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def run(quick: bool, say: Callable[[str], None], sizes: list[tuple[int, int]] | None = None) -> dict[str, Any]:
    sizes = sizes or (QUICK_SIZES if quick else SERVERS_SERIES + BLOCKS_SERIES)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        for servers, blocks in sizes:
            rows.append(crawl_once(servers, blocks, quick, Path(tmp), say))
    return {
        "description": "one crawl of a local demo swarm per size: wall time by phase and peak RSS of the crawler",
        "setup": {"dht_nodes": 3, "reachability_probes": False, "update_period": "max(15 s, servers/80, blocks/20)"},
        "rows": rows,
        "all_succeeded": all(r["status"] == "succeeded" for r in rows),
    }


def _size(text: str) -> tuple[int, int]:
    servers, _, blocks = text.partition("x")
    try:
        return int(servers), int(blocks)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SERVERSxBLOCKS, e.g. 10000x80, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smallest size only (< 30 s)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="directory for JSON results")
    parser.add_argument("--plot", type=Path, default=REPO / "bench" / "scaling.png", help="PNG to write")
    parser.add_argument(
        "--size", type=_size, action="append", metavar="SxB", help="only this size (repeatable), e.g. 10000x80"
    )
    args = parser.parse_args(argv)
    from .report import write_json

    doc = run(args.quick, lambda text: print(text, flush=True), args.size)
    doc["quick"] = args.quick
    path = write_json(args.out, "scaling", doc)
    print(table(doc["rows"]))
    if not args.quick:
        print(f"plot: {args.plot}" if plot(doc["rows"], args.plot) else "plot skipped: pip install '.[bench]'")
    print(f"results: {path}")
    return 0 if doc["all_succeeded"] else 1


if __name__ == "__main__":
    sys.exit(main())
