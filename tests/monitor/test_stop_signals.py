"""``serve`` stops cleanly on SIGINT and on SIGTERM alike, also when started with SIGINT ignored (a background
job of a script). The demo's Ctrl-C test (tests/monitor/test_demo_command.py) runs it that way too."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
START_DEADLINE, STOP_DEADLINE = 60.0, 30.0
PEER_ID = "QmedTaZXmULqwspJXz44SsPZyTNKxhnnFvYRajfH7MGhCY"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(
    ("signum", "inherited_sigint"),
    [(signal.SIGINT, signal.SIG_IGN), (signal.SIGTERM, signal.SIG_IGN), (signal.SIGTERM, signal.SIG_DFL)],
    ids=["INT-with-INT-ignored", "TERM-with-INT-ignored", "TERM"],
)
def test_serve_stops_on_either_signal(tmp_path, signum, inherited_sigint):
    log = tmp_path / "serve.log"
    args = [sys.executable, "-m", "monitor", "serve", "--port", "0", "--db", str(tmp_path / "m.db")]
    args += ["--initial-peer", f"/ip4/127.0.0.1/tcp/{_closed_port()}/p2p/{PEER_ID}"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PETALS_MONITOR_LOG_LEVEL": "INFO"},
            preexec_fn=_ignore_sigint if inherited_sigint is signal.SIG_IGN else None,
        )
    try:
        deadline = time.monotonic() + START_DEADLINE
        while not re.search(r"serving on http://127\.0\.0\.1:\d+/", log.read_text(errors="replace")):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"not serving within {START_DEADLINE} s:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
        proc.send_signal(signum)
        try:
            rc = proc.wait(STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{signum.name} did not stop serve within {STOP_DEADLINE} s") from None
        assert rc == 0, log.read_text()[-3000:]
        assert "Traceback" not in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
