"""The crawl benchmark on a WAN: ``python -m bench.wan [--quick] [--rtt MS ...] [--runs N] [--plot PNG]``.

The seeded Petals-style swarm of the ``crawl`` benchmark (hivemind DHT nodes, stand-in servers), with every node
behind a delaying relay on 127.0.0.1 (:mod:`bench.wan_relay`) and announcing only the relay's address, so every
connection either crawler opens pays the round trip. For each RTT (the relays are re-shaped between RTTs; the
swarm stays up), ours and hivemind's side crawl alternately, each twice in one process (cold, then warm:
connections kept). Per crawl: wall time, CPU, peak RSS, RPCs (the clients' own counters), and, counted at the
relays for connections the crawler's own process tree opened, connections and bytes each way; the run fails
(exit 1) if a side found other than what was stored, or if any crawler socket reached a node without its relay.
``effective rounds`` is (wall at this RTT - wall at RTT 0) / RTT: the sequential round trips on the crawl's
critical path. Results: tables on stdout, ``wan.json`` in ``--out``, and the plot of crawl time vs RTT.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import scenarios
from .measure import REPO, SideFailed, SideRun, python, run_side
from .report import machine, ratio

FULL_RTTS_MS = (0, 50, 150)
QUICK_RTTS_MS = (50,)
# The quick swarm has few blocks but 48 servers: go-libp2p's kad answers FIND_NODE with its k = 20 nearest peers
# from its routing table and then appends the target if the table does not hold it, which happens once a bucket
# overflows (> 20 peers sharing a prefix length: ~40 peers). A client that keeps only 20 peers of a reply then
# loses servers' addresses and their probes fail: measured, 24 servers did not show it, 48 do (4 of 44 lost).
QUICK_SIZES = dataclasses.replace(scenarios.QUICK, crawl_servers=48)
SIDE_TIMEOUT = 600.0
RELAY_TIMEOUT = 60.0
SIDES = (("ours", "bench.side_ours"), ("hivemind", "bench.side_hivemind"))


class Relays:
    """The relay process (:mod:`bench.wan_relay`), driven by JSON lines."""

    def __init__(self, log: Path) -> None:
        self._log = open(log, "wb")  # noqa: SIM115 - closed in close()
        self._proc = subprocess.Popen([python(), "-m", "bench.wan_relay"], cwd=REPO, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._log, start_new_session=True)  # fmt: skip

    def ask(self, **msg: Any) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write((json.dumps(msg) + "\n").encode())
        self._proc.stdin.flush()
        line = scenarios._read_line(self._proc, RELAY_TIMEOUT)
        if not line:
            raise RuntimeError(f"the WAN relay process did not answer {msg.get('cmd')!r}")
        return json.loads(line)

    def close(self) -> None:
        scenarios._stop(self._proc)
        self._log.close()


@contextlib.contextmanager
def wan_swarm(harness: Any, sizes: scenarios.Sizes, log_dir: Path) -> Iterator[tuple[Relays, scenarios.Scenario]]:
    """The crawl swarm, every node behind its own relay."""
    relays = Relays(log_dir / "relay.log")
    try:
        pairs = relays.ask(cmd="add", count=2 + sizes.crawl_storers + sizes.crawl_servers)["pairs"]
        initial: list[str] = []
        for name, (relay_port, node_port) in zip(("wan-boot0", "wan-boot1"), pairs, strict=False):
            node = harness.start_node(
                name,
                initial_peers=initial[:1],
                host_maddrs=[f"/ip4/127.0.0.1/tcp/{node_port}"],
                p2p_options={"announce_maddrs": [f"/ip4/127.0.0.1/tcp/{relay_port}"]},
            )
            initial.append(f"/ip4/127.0.0.1/tcp/{relay_port}/p2p/{node.peer_id}")
        spec = {**scenarios.crawl_spec(sizes, initial), "ports": pairs[2:]}
        with scenarios.petals_swarm(spec, log_dir) as seeded:
            yield relays, scenarios.crawl_scenario(spec, seeded)
    finally:
        relays.close()


def _crawl_figures(run: SideRun, usage: dict[str, Any], which: str) -> dict[str, Any]:
    """One crawl's row: time, CPU, RPCs, and what the relays saw of it."""
    digest = run.digest
    if which == "cold":
        wall, cpu, counts = run.op_wall, run.op_cpu, digest
    else:
        wall, cpu, counts = digest["next_crawl"]["wall"], digest["next_crawl"]["cpu"], digest["next_crawl"]
    rpcs, probes = counts.get("rpcs", 0), counts.get("probe_rpcs", 0)
    # ours counts its kad FIND_NODEs (address look-ups) in rpcs; hivemind's p2pd sends its own, uncounted
    kad = {"kad_rpcs": counts["kad_rpcs"]} if "kad_rpcs" in counts else {}
    seen = usage.get(which, {})
    # setup: creating the client before its first crawl (hivemind: the DHT process, p2pd, its bootstrap), apart
    # from the crawl's time on both sides, as for a long-running monitor; "cold + setup" is a fresh process's
    setup = run.setup_wall if which == "cold" else 0.0
    return {"wall": wall, "cpu": cpu, "setup": setup, "wall_with_setup": wall + setup, "rpcs": rpcs,
            "dht_rpcs": rpcs - probes - kad.get("kad_rpcs", 0), **kad, "peak_rss_kb": run.peak_rss_kb,
            **seen}  # fmt: skip


def new_result(rtt_ms: float) -> dict[str, Any]:
    rows = {side: {"cold": [], "warm": []} for side, _ in SIDES}
    return {"rtt_ms": rtt_ms, "runs": rows, "median": {}, "problems": [], "bypasses": []}


def run_once(
    relays: Relays, scenario: scenarios.Scenario, result: dict[str, Any], i: int, log_dir: Path, shape: dict
) -> None:
    """Run ``i`` of both sides at ``result``'s RTT; their rows, mismatches and bypasses go into ``result``.
    ``shape``: the relays' jitter (s) and bandwidth cap (bytes/s per direction, 0 = none)."""
    rtt_ms = result["rtt_ms"]
    relays.ask(cmd="shape", rtt=rtt_ms / 1000, **shape)
    rows = result["runs"]
    order = SIDES if i % 2 == 0 else SIDES[::-1]  # who goes first alternates: neither always meets the warmer swarm
    for side, module in order:
        config = scenario.ours if side == "ours" else scenario.theirs
        try:
            run = run_side(side, module, config, timeout=SIDE_TIMEOUT, log_dir=log_dir,
                           on_start=lambda pid: relays.ask(cmd="watch", pid=pid))  # fmt: skip
        except SideFailed as e:
            print(f"  rtt {rtt_ms:g} ms run {i + 1} {side}: failed, retrying once ({str(e).splitlines()[0]})")
            run = run_side(side, module, config, timeout=SIDE_TIMEOUT, log_dir=log_dir,
                           on_start=lambda pid: relays.ask(cmd="watch", pid=pid))  # fmt: skip
        usage = relays.ask(cmd="usage", pid=run.pid, windows=run.digest.get("windows", {}))
        result["bypasses"] += [f"{side} run {i + 1}: {b}" for b in usage.get("bypasses", [])]
        for key, want in scenario.expected.items():
            if run.digest.get(key) != want:
                result["problems"].append(f"{side} run {i + 1}: {key}: expected {want!r}, got {run.digest.get(key)!r}")
        if run.digest.get("probe_errors"):  # every server of this swarm answers: say why some probes failed
            result["problems"].append(f"{side} run {i + 1}: cold crawl's failed probes: {run.digest['probe_errors']}")
        warm = run.digest.get("next_crawl", {})
        if warm.get("records") != scenario.expected["records"] or warm.get("probes_ok") != scenario.expected["probes"]:
            result["problems"].append(f"{side} run {i + 1}: warm crawl found {warm}")
        for which in ("cold", "warm"):
            rows[side][which].append(_crawl_figures(run, usage, which))
        cold, warm = rows[side]["cold"][-1], rows[side]["warm"][-1]
        print(f"  rtt {rtt_ms:g} ms run {i + 1} {side:8}: cold {cold['wall']:.2f} s "
              f"({cold['cpu']:.2f} s CPU, {cold.get('rpcs')} RPCs, {cold.get('connections')} conns, "
              f"{cold.get('bytes_sent_by_swarm', 0) / 1e6:.2f} MB in), warm {warm['wall']:.2f} s "
              f"({warm.get('rpcs')} RPCs, {warm.get('connections')} conns)", flush=True)  # fmt: skip
    result["median"] = {side: {which: _median_row(rows[side][which]) for which in ("cold", "warm")}
                        for side, _ in SIDES}  # fmt: skip


def _median_row(rows: list[dict[str, Any]]) -> dict[str, float]:
    keys = [k for k in rows[0] if all(isinstance(r.get(k), int | float) for r in rows)]
    return {k: statistics.median(r[k] for r in rows) for k in keys}


def add_rounds(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Effective sequential round trips of each crawl: its extra wall time over RTT 0, divided by the RTT; and
    over all RTTs, the least-squares slope of wall time against RTT (less sensitive to one noisy point)."""
    base = next((r for r in results if r["rtt_ms"] == 0), None)
    for r in results:
        for side, by_kind in r["median"].items():
            for which, row in by_kind.items():
                if base is not None and r["rtt_ms"] > 0:
                    row["rounds"] = (row["wall"] - base["median"][side][which]["wall"]) / (r["rtt_ms"] / 1000)
    slopes: dict[str, dict[str, float]] = {}
    if len(results) >= 2:
        xs = [r["rtt_ms"] / 1000 for r in results]
        mean_x = statistics.fmean(xs)
        for side, _ in SIDES:
            for which in ("cold", "warm"):
                ys = [r["median"][side][which]["wall"] for r in results]
                mean_y = statistics.fmean(ys)
                slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
                    (x - mean_x) ** 2 for x in xs
                )
                slopes.setdefault(side, {})[which] = slope
    return slopes


# (column, key in a crawl's row, scale, format)
COLUMNS = (
    ("wall s", "wall", 1, "{:.2f}"),
    ("+ setup s", "wall_with_setup", 1, "{:.2f}"),
    ("CPU s", "cpu", 1, "{:.2f}"),
    ("rounds", "rounds", 1, "{:.1f}"),
    ("RPCs", "rpcs", 1, "{:.0f}"),
    ("DHT RPCs", "dht_rpcs", 1, "{:.0f}"),
    ("kad RPCs", "kad_rpcs", 1, "{:.0f}"),
    ("conns", "connections", 1, "{:.0f}"),
    ("MB from swarm", "bytes_sent_by_swarm", 1e-6, "{:.2f}"),
    ("MB to swarm", "bytes_sent_by_crawler", 1e-6, "{:.2f}"),
    ("peak RSS MB", "peak_rss_kb", 1 / 1024, "{:.0f}"),
)


def table(result: dict[str, Any]) -> str:
    head = ["RTT", "side", "crawl", *(c[0] for c in COLUMNS)]
    rows = [head]
    for which in ("cold", "warm"):
        for side, _ in SIDES:
            m = result["median"][side][which]
            cells = [fmt.format(m[key] * scale) if key in m else "-" for _, key, scale, fmt in COLUMNS]
            rows.append([f"{result['rtt_ms']:g} ms", side, which, *cells])
        o, h = result["median"]["ours"][which], result["median"]["hivemind"][which]
        ratios = [
            ratio(h.get(key, 0), o.get(key, 0), sign="x") if key not in ("peak_rss_kb", "kad_rpcs") else ""
            for _, key, _, _ in COLUMNS
        ]
        rows.append(["", "hivemind/ours", which, *ratios])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Crawl wall time vs RTT, both clients, cold and warm (needs matplotlib: the ``bench`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    rtts = [r["rtt_ms"] for r in results]
    for side, _ in SIDES:
        for which, style in (("cold", "-o"), ("warm", "--s")):
            ax.plot(rtts, [r["median"][side][which]["wall"] for r in results], style, label=f"{side}, {which}")
    ax.set_xlabel("round-trip time to every swarm node (ms)")
    ax.set_ylabel("crawl wall time (s), median")
    ax.set_title("Crawl of 3 x 80 blocks x 60 servers through delaying relays")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.wan", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small swarm, one RTT (50 ms), one run")
    parser.add_argument("--rtt", type=float, action="append", help="round trip in ms (repeatable)")
    parser.add_argument("--runs", type=int, default=None, help="runs per side per RTT (default 3; 1 with --quick)")
    parser.add_argument("--jitter", type=float, default=0.0, help="extra delay per chunk, uniform in 0..MS")
    parser.add_argument("--bandwidth", type=float, default=0.0, help="cap per direction of a connection, Mbit/s")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="directory for wan.json")
    parser.add_argument("--keep-logs", action="store_true", help="keep the side, swarm and relay logs (printed)")
    parser.add_argument("--plot", type=Path, default=None, help="the plot (PNG; default OUT/wan.png)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    rtts = args.rtt or list(QUICK_RTTS_MS if args.quick else FULL_RTTS_MS)
    if runs < 1 or any(r < 0 or r > 2000 for r in rtts) or not 0 <= args.jitter <= 1000 or args.bandwidth < 0:
        print("error: --runs must be >= 1, every --rtt and --jitter within 0..2000 / 0..1000 ms, --bandwidth >= 0",
              file=sys.stderr)  # fmt: skip
        return 2
    shape = {"jitter": args.jitter / 1000, "bandwidth": args.bandwidth * 1e6 / 8}
    sizes = QUICK_SIZES if args.quick else scenarios.FULL
    sys.path[:0] = [str(REPO), str(REPO / "tests")]
    from tests.interop_fixtures import running_harness

    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    logs = tempfile.mkdtemp(prefix="bench-wan-")
    with running_harness() as harness:
        log_dir = Path(logs)
        print(f"== wan: setting up the swarm behind relays (logs: {log_dir})", flush=True)
        try:
            with wan_swarm(harness, sizes, log_dir) as (relays, scenario):
                print(f"   {scenario.description} (setup {time.perf_counter() - started:.1f} s)", flush=True)
                results = [new_result(rtt) for rtt in sorted(rtts)]
                for i in range(runs):  # RTTs interleaved: a change of the machine's load hits them all alike
                    for result in results:
                        run_once(relays, scenario, result, i, log_dir, shape)
        except (SideFailed, RuntimeError) as e:
            print(f"!! wan failed: {e}")
            return 1
        finally:
            if not args.keep_logs:
                shutil.rmtree(logs, ignore_errors=True)
    slopes = add_rounds(results)
    failed = False
    for r in results:
        print(table(r))
        for p in r["problems"][:10]:
            print(f"   mismatch: {p}")
        for b in r["bypasses"][:10]:
            print(f"   BYPASS (a crawler socket reached a node without its relay): {b}")
        failed |= bool(r["problems"] or r["bypasses"])
    for side, by_kind in slopes.items():
        print(f"   {side}: round trips on the critical path (slope of wall time vs RTT): "
              + ", ".join(f"{which} {v:.1f}" for which, v in by_kind.items()))  # fmt: skip
    doc = {"rounds_slope": slopes, "shape": shape, "quick": args.quick, "runs": runs, "results": results,
           "machine": machine(), "setup": scenario.setup, "expected": scenario.expected, "ok": not failed}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "wan.json").write_text(json.dumps(doc, indent=1))
    print(f"   results: {args.out / 'wan.json'}")
    plot_path = args.plot or args.out / "wan.png"
    try:
        plot(results, plot_path)
        print(f"   plot: {plot_path}")
    except ImportError:
        print("   no plot: matplotlib is missing (pip install '.[bench]')")
    print(f"total {time.perf_counter() - started:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
