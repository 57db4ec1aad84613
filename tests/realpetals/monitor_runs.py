"""What the `petals` tests need beside the harness: the test swarm's layout, our monitor run against it
(``crawl --once`` as cron runs it, a long-running ``serve``), and readers for the documents they produce."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from swarm import PetalsSwarm, ServerSpec

from bench._load_procs import get_json, wait_for

REPO = Path(__file__).resolve().parents[2]
PREFIX = "tiny-llama-hf"
SPECS = (
    ServerSpec("a", 0, 3, 1.0, "petals-test-a"),
    ServerSpec("b", 2, 4, 2.0, "petals-test-b"),
    ServerSpec("c", 6, 8, 3.0, "petals-test-c"),
)
UPDATE_PERIOD = 15.0  # records live 30 s: long enough to see a crash as unreachable, short enough to see it go
SERVE_INTERVAL = 2.0


def monitor_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PETALS_MONITOR_")}
    env["PYTHONPATH"] = str(REPO)
    return env


def write_config(
    path: Path,
    swarm: PetalsSwarm,
    *,
    port: int = 0,
    models: bool = True,
    policy: str = "huggingface",
    interval: float = SERVE_INTERVAL,
):
    lines = [
        f'db_path = "{path.with_suffix(".db")}"',
        "[web]",
        'host = "127.0.0.1"',
        f"port = {port}",
        "[geo]",
        "enabled = false",
        "[[swarms]]",
        'name = "local"',
        f'initial_peers = ["{swarm.initial_peer}"]',
        f"interval_seconds = {interval}",
        f'custom_model_policy = "{policy}"',
        "crawl_timeout = 20",
    ]
    if models:
        lines += ["[[swarms.models]]", f'dht_prefix = "{swarm.dht_prefix}"', f"num_blocks = {swarm.num_blocks}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def crawl_once(config: Path, *, exit_code: int = 0) -> dict:
    """``python -m monitor crawl --once --json`` as cron would run it; the state document it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "crawl", "--once", "--json", "--config", str(config), "--log-level", "ERROR"],
        capture_output=True,
        text=True,
        timeout=120,
        env=monitor_env(),
        cwd=REPO,
    )
    assert done.returncode == exit_code, done.stderr[-2000:]
    return json.loads(done.stdout)


def probe_once(config: Path, vantage: str) -> str:
    """``python -m monitor probe --once --vantage NAME``: one round from a second vantage point; its log."""
    done = subprocess.run(
        [sys.executable, "-m", "monitor", "probe", "--once", "--config", str(config), "--vantage", vantage],
        capture_output=True,
        text=True,
        timeout=120,
        env=monitor_env(),
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr


class Serve:
    """A long-running ``python -m monitor serve`` (web + crawl worker), stopped by its pid at the end."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "monitor", "serve", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=monitor_env(),
                cwd=REPO,
            )

    def get(self, path: str, timeout: float = 10.0):
        return get_json(self.base + path, timeout=timeout)

    def state(self) -> dict | None:
        try:
            doc = self.get("/api/v1/state")
        except OSError:
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-3000:]
            return None
        return doc if doc.get("crawl_id") else None

    def next_crawl(self, after: float, timeout: float = 60.0) -> dict:
        """The state document of the first crawl that started at or after ``after`` (unix time)."""
        return wait_for(
            lambda: (doc := self.state()) is not None and doc["crawl"]["started_at"] >= after and doc,
            timeout=timeout,
            what="a serve crawl that started after the event",
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # serve's own clean stop
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# ---- reading the documents


def model_report(doc: dict, prefix: str = PREFIX) -> dict:
    (report,) = [m for m in doc["model_reports"] if m["dht_prefix"] == prefix]
    return report


def row_of(doc: dict, peer_id: str) -> dict | None:
    rows = [r for r in model_report(doc)["server_rows"] if r["peer_id"] == peer_id]
    return rows[0] if rows else None


def state_of(doc: dict, peer_id: str) -> str | None:
    """The server's row state in this crawl, or None when it is gone from the model."""
    row = row_of(doc, peer_id)
    return None if row is None else row["state"]


def until(observe, accept, timeout: float, what: str):
    """Observe (a crawl) again until ``accept(observation)``; returns every observation in order."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        seen.append(observe())
        if accept(seen[-1]):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s; saw {seen}")
        time.sleep(0.5)
