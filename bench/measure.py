"""Run one benchmark side in its own subprocess and measure it from outside as well as from inside.

From inside (the side reports it): operation wall time, the tree's CPU over the operation, Σ VmHWM of the tree.
From outside (here): wall time of the whole process (interpreter start, imports, setup, teardown), its CPU
(``wait4`` rusage: the process and every descendant it reaped) and the peak of the tree's summed PSS, sampled
every ``SAMPLE_EVERY`` seconds (PSS splits pages shared between processes, e.g. after hivemind's fork).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .proctree import descendants, parent_map, pss_kb

REPO = Path(__file__).resolve().parent.parent
SAMPLE_EVERY = 0.05


def python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


class SideFailed(RuntimeError):
    """A side exited non-zero, printed no result, or ran past its deadline."""


@dataclass
class SideRun:
    side: str
    op_wall: float
    op_cpu: float
    setup_wall: float
    peak_rss_kb: int  # Σ VmHWM over the side's processes (reported by the side at the end of its operation)
    peak_pss_kb: int  # peak of Σ PSS over the side's processes (sampled from outside)
    process_wall: float
    process_cpu: float
    digest: dict[str, Any]
    rss_by_process: dict[str, int] = field(default_factory=dict)
    processes_seen: int = 0
    pid: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def run_side(
    side: str,
    module: str,
    config: dict[str, Any],
    *,
    timeout: float,
    log_dir: Path,
    on_start: Callable[[int], None] | None = None,
) -> SideRun:
    """``python -m <module> <config.json>``; returns its measurements or raises :class:`SideFailed`.

    ``on_start(pid)`` runs once the side's process exists (the WAN relays watch its process tree)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, dir=log_dir) as f:
        json.dump(config, f)
        config_path = f.name
    log_path = log_dir / f"{side}-{config['mode']}-{int(time.time() * 1000)}.log"
    with open(log_path, "wb") as log, open(Path(config_path).with_suffix(".out"), "w+b") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [python(), "-m", module, config_path],
            cwd=REPO,
            stdout=out,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: p2pd grandchildren are ours to clean up
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)},
        )
        peak_pss, seen = 0, set()
        status, usage = None, None
        deadline = t0 + timeout
        try:
            if on_start is not None:  # inside the try: a failing hook must not leave the side's group running
                on_start(proc.pid)
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid == proc.pid:
                    break
                pids = descendants(proc.pid, parent_map())
                seen.update(pids)
                peak_pss = max(peak_pss, sum(pss_kb(p) for p in pids))
                if time.perf_counter() > deadline:
                    raise SideFailed(f"{side} ran past {timeout:.0f} s; log: {log_path}")
                time.sleep(SAMPLE_EVERY)
            process_wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # anything the side left behind (a stray p2pd)
            if proc.returncode is None:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(proc.pid, 0)
        out.seek(0)
        lines = [ln for ln in out.read().decode(errors="replace").splitlines() if ln.startswith("{")]
    os.unlink(config_path)
    os.unlink(Path(config_path).with_suffix(".out"))
    if proc.returncode != 0 or not lines:
        tail = log_path.read_bytes()[-1500:].decode(errors="replace")
        raise SideFailed(f"{side} exited {proc.returncode}; log {log_path}:\n{tail}")
    report = json.loads(lines[-1])
    return SideRun(
        side=side,
        op_wall=report["op_wall"],
        op_cpu=report["op_cpu"],
        setup_wall=report["setup_wall"],
        peak_rss_kb=int(report["peak_rss_kb"]),
        peak_pss_kb=peak_pss,
        process_wall=process_wall,
        process_cpu=usage.ru_utime + usage.ru_stime,
        digest=report["digest"],
        rss_by_process=report.get("rss_by_process", {}),
        processes_seen=len(seen),
        pid=proc.pid,
    )
