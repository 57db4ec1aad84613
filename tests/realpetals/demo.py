"""``make demo-petals``: a swarm of real Petals servers on 127.0.0.1 with our monitor's ``serve`` on it.

    python tests/realpetals/demo.py [--port 8080] [--dir DIR]

Builds the Petals venv on first use (a few minutes; cached), starts a bootstrap and three servers of a tiny local
Llama (blocks 0-2, 2-3 and 6-7 of 8: block 2 twice, 4-5 by nobody), then ``python -m monitor serve`` and prints the
dashboard URL. Ctrl-C or SIGTERM stops everything it started. Exit codes: 0 stopped by the user, 1 something failed
to start, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from petals_venv import build, cache_root
from swarm import PetalsSwarm, ServerSpec, free_port

REPO = Path(__file__).resolve().parents[2]
SERVERS = (
    ServerSpec("a", 0, 3, 1.0, "demo-a"),
    ServerSpec("b", 2, 4, 2.0, "demo-b"),
    ServerSpec("c", 6, 8, 3.0, "demo-c"),
)


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM both end the demo (SIGINT explicitly: a shell's background job starts with it ignored)."""

    def interrupt(_signum, _frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stopping the monitor and the Petals processes...", file=sys.stderr, flush=True)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


def _config(path: Path, swarm: PetalsSwarm, port: int) -> Path:
    path.write_text(
        f'db_path = "{path.parent / "monitor.db"}"\n'
        f'[web]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[[swarms]]\nname = "petals-demo"\ninitial_peers = ["{swarm.initial_peer}"]\ninterval_seconds = 10\n'
        f'[[swarms.models]]\ndht_prefix = "{swarm.dht_prefix}"\nnum_blocks = {swarm.num_blocks}\n'
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="dashboard port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--dir", type=Path, help="working directory (default: a temporary one)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0..65535, got {args.port}")
    _stop_on_signals()
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="petals-demo-"))
    port = args.port or free_port()
    try:
        python = build(log=lambda line: print(line, file=sys.stderr, flush=True))
        swarm = PetalsSwarm(python, workdir / "swarm", cache_root() / "tiny-llama-8", "tiny-llama-hf", SERVERS)
        with swarm:
            print(f"Petals swarm up: bootstrap {swarm.initial_peer}; logs in {swarm.workdir}", flush=True)
            return _run_monitor(_config(workdir / "monitor.toml", swarm, port), port)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 0
    except (RuntimeError, subprocess.CalledProcessError) as e:  # SwarmError, a deadline that passed
        print(f"error: {e}", file=sys.stderr)
        return 1


def _run_monitor(config: Path, port: int) -> int:
    """``python -m monitor serve`` until it exits (1) or we are interrupted; it is stopped before the swarm."""
    monitor = subprocess.Popen([sys.executable, "-m", "monitor", "serve", "--config", str(config)], cwd=REPO)
    try:
        print(f"Dashboard: http://127.0.0.1:{port}/  (Ctrl-C stops the monitor and every Petals process)", flush=True)
        monitor.wait()
        print(f"the monitor exited with {monitor.returncode}", file=sys.stderr)
        return 1
    finally:
        if monitor.poll() is None:
            monitor.terminate()  # serve stops cleanly on SIGTERM
            try:
                monitor.wait(timeout=20)
            except subprocess.TimeoutExpired:
                monitor.kill()
                monitor.wait()


if __name__ == "__main__":
    sys.exit(main())
