"""Child processes for the load and scaling benchmarks: start, wait for a ready line, stop, all with deadlines."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STOP_TIMEOUT = 15.0


def python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def write_config(directory: Path, name: str, cfg: dict[str, Any]) -> Path:
    path = Path(tempfile.mkstemp(prefix=name + "-", suffix=".json", dir=directory)[1])
    path.write_text(json.dumps(cfg))
    return path


def _read_marker(proc: subprocess.Popen, marker: str, timeout: float) -> str:
    """The rest of the first stdout line starting with ``marker``; raises if the process dies or time runs out."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"no {marker!r} line within {timeout:.0f} s")
            if not sel.select(min(left, 0.5)):
                if proc.poll() is not None:
                    raise RuntimeError(f"exited {proc.returncode} before printing {marker!r}")
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"exited {proc.wait(5)} before printing {marker!r}")
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith(marker):
                    return text[len(marker) :].strip()


def interrupt(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Ctrl-C, as an operator stops ``serve`` (it finishes or fails its crawl and closes the store), then SIGKILL
    if it has not exited within ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def stop(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> int | None:
    """SIGTERM, then SIGKILL to its process group if it lingers. Returns its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever it left behind (its own session: ours to clean up)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    return proc.returncode


@contextlib.contextmanager
def child(module: str, config: Path, marker: str, *, timeout: float, log: Path) -> Iterator[tuple[Any, str]]:
    """``python -m module config`` with stderr to ``log``; yields (process, what followed ``marker``)."""
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [python(), "-m", module, str(config)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)},
        )
    try:
        try:
            rest = _read_marker(proc, marker, timeout)
        except RuntimeError as e:
            tail = log.read_bytes()[-2000:].decode(errors="replace")
            raise RuntimeError(f"{module}: {e}; log {log}:\n{tail}") from None
        yield proc, rest
    finally:
        stop(proc)


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def wait_for(predicate, *, timeout: float, every: float = 0.5, what: str = "condition") -> Any:
    """Poll ``predicate()`` until it returns something truthy (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
