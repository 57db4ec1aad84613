"""Medians, ratios, the printed table and the JSON results of one benchmark."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from .measure import SideRun

METRICS = (
    ("op_wall", "op wall", "s"),
    ("op_cpu", "op CPU", "s"),
    ("peak_rss_kb", "peak RSS", "MB"),
    ("peak_pss_kb", "peak PSS", "MB"),
    ("process_wall", "proc wall", "s"),
    ("process_cpu", "proc CPU", "s"),
)


def medians(runs: list[SideRun]) -> dict[str, float]:
    return {key: statistics.median(getattr(r, key) for r in runs) for key, _, _ in METRICS}


def _cell(value: float, unit: str) -> str:
    if unit == "MB":
        return f"{value / 1024:.0f} MB"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def ratio(theirs: float, ours: float, sign: str = "×") -> str:
    """hivemind / ours as printed everywhere in the benchmarks ("-" when ours is nothing to divide by)."""
    if not ours or ours <= 0:
        return "-"
    return f"{theirs / ours:.1f}{sign}"


def table(name: str, ours: dict[str, float], theirs: dict[str, float], agree: bool, runs: int) -> str:
    """A fixed-width table: one row per side and a row of hivemind/ours ratios (higher = ours better)."""
    head = ["benchmark", "side"] + [label for _, label, _ in METRICS] + ["same result"]
    rows = [
        [name, "ours"] + [_cell(ours[k], u) for k, _, u in METRICS] + ["yes" if agree else "NO"],
        [name, "hivemind"] + [_cell(theirs[k], u) for k, _, u in METRICS] + [""],
        ["", "hivemind/ours"] + [ratio(theirs[k], ours[k]) for k, _, _ in METRICS] + [f"median of {runs}"],
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except (OSError, ValueError):
        pass
    versions = {}
    for dist in ("hivemind", "libp2p", "trio", "torch"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "load_average": os.getloadavg(),
    }


def write_json(out_dir: Path, name: str, doc: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    doc = {"benchmark": name, "written_at": time.time(), "machine": machine(), **doc}
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return path
