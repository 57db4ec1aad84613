"""A failed crawl says why, on stderr, with or without ``--json``; the JSON of a failed crawl has its crawl id."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.rules.bootstrap_errors import endpoint, no_bootstrap_answered, short_reason
from monitor.snapshot import BootstrapPeer

REPO = Path(__file__).resolve().parents[2]
PEER_ID = "QmedTaZXmULqwspJXz44SsPZyTNKxhnnFvYRajfH7MGhCY"
REFUSED = (
    f"cannot dial {PEER_ID}: cannot connect to 127.0.0.1:9: [Errno 111] Error connecting to ('127.0.0.1', 9): "
    "Connection refused"
)


def _peer(address: str, error: str | None) -> BootstrapPeer:
    return BootstrapPeer(address, PEER_ID, "unreachable", None, error)


def test_the_reason_names_each_peer_and_what_went_wrong():
    peers = [
        _peer(f"/ip4/127.0.0.1/tcp/9/p2p/{PEER_ID}", REFUSED),
        _peer(f"/dns/boot.example.org/tcp/31337/p2p/{PEER_ID}", "timeout: no answer within 5 s"),
        _peer(f"/ip6/::1/tcp/4000/p2p/{PEER_ID}", "failed to negotiate protocol: protocols not supported: [x]"),
        _peer(f"/ip4/10.0.0.1/udp/1/quic/p2p/{PEER_ID}", "weird\x1b[31m failure"),
    ]
    assert no_bootstrap_answered(peers) == (
        "no bootstrap peer answered: 127.0.0.1:9 connection refused; boot.example.org:31337 timed out; "
        f"[::1]:4000 does not serve the hivemind DHT; /ip4/10.0.0.1/udp/1/quic/p2p/{PEER_ID} weird?[31m failure"
    )
    assert no_bootstrap_answered(peers * 2).endswith("; +4 more")
    assert no_bootstrap_answered([]) == "no bootstrap peer answered: none configured"
    assert short_reason(None) == "no answer" and len(short_reason("x" * 500)) == 100
    assert endpoint("/ip4/1.2.3.4/tcp/5") == "1.2.3.4:5"


def _closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("as_json", [False, True])
def test_crawl_once_prints_why_it_failed(tmp_path, as_json):
    port = _closed_port()
    args = [sys.executable, "-m", "monitor", "crawl", "--once", "--db", str(tmp_path / "m.db")]
    args += ["--initial-peer", f"/ip4/127.0.0.1/tcp/{port}/p2p/{PEER_ID}", "--log-level", "ERROR"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(args + (["--json"] if as_json else []), capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1, done.stderr
    reason = f"no bootstrap peer answered: 127.0.0.1:{port} connection refused"
    assert done.stderr == f"crawl 1 of custom failed: {reason}\n"
    if as_json:
        document = json.loads(done.stdout)
        assert document["crawl_id"] == document["crawl"]["id"] == 1
        assert document["crawl"]["status"] == "failed" and document["crawl"]["error"] == reason
    else:
        assert done.stdout == ""
