"""`python -m bench --quick` (what `make bench-quick` runs) finishes in bounded time and prints its tables."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from interop_fixtures import REPO

from bench.summary import summarize

pytestmark = pytest.mark.interop

QUICK_BOUND = 300  # seconds; it takes about two minutes on an idle 2-core machine, CI machines are busier


def test_quick_bench_prints_its_tables_and_writes_results(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=QUICK_BOUND,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("dht-1000", "dht-swarm", "crawl"):
        rows = [line.split() for line in proc.stdout.splitlines() if line.startswith(name)]
        sides = {row[1] for row in rows}
        assert {"ours", "hivemind"} <= sides, (name, proc.stdout[-2000:])
        doc = json.loads((tmp_path / f"{name}.json").read_text())
        assert doc["same_result"] is True, doc["problems"]
        assert doc["quick"] is True and doc["runs"] == 1
        for side in ("ours", "hivemind"):
            median = doc["median"][side]
            assert median["op_wall"] > 0 and median["peak_rss_kb"] > 10_000, (name, side, median)
        assert doc["machine"]["cores"] >= 1
        if name == "crawl":  # the next crawl in the same process, on both sides, found everything again
            for side in ("ours", "hivemind"):
                assert doc["next_crawl"][side]["wall"] > 0
                assert doc["next_crawl"][side]["complete"] == [doc["expected"]["records"]]
    assert "hivemind/ours" in proc.stdout
    wan = json.loads((tmp_path / "wan.json").read_text())  # the crawl through delaying relays, at one RTT
    assert wan["ok"] is True and wan["quick"] is True
    (result,) = wan["results"]
    assert result["rtt_ms"] > 0 and not result["bypasses"] and not result["problems"]
    # recall 1.0 on a swarm where a kad node's bucket overflows (> 40 peers): go-libp2p then appends the looked-up
    # peer after its 20 nearest, and a client keeping only 20 lost servers' addresses (their probes failed). The
    # "problems" above say each side's cold and warm crawl found every record and every online server reachable.
    assert wan["setup"]["servers"] >= 48 and wan["expected"]["probes"] > 40
    for side in ("ours", "hivemind"):  # the relays saw each crawler's traffic, and the clients counted their RPCs
        cold = result["median"][side]["cold"]
        assert cold["bytes_sent_by_swarm"] > 10_000 and cold["rpcs"] > 0 and cold["connections"] >= 1, (side, cold)
        assert cold["wall"] > 2 * result["rtt_ms"] / 1000, (side, cold)  # a crawl takes round trips
    # bench/LAST_RUN.md's generator reads what this run wrote: a change of the JSON shapes fails here, not at release
    text = summarize(tmp_path, commit="test")
    assert "quick mode" in text and "not in this run" not in text, text
    for row in (
        "| dht-1000 | op wall |",
        "| crawl | next crawl wall (warm) |",
        f"| wan {result['rtt_ms']:g} ms cold |",
        "| web-load, idle |",
        "| scaling, ",
    ):
        assert row in text, (row, text)
    # the real-Petals freshness figures (not in a quick run): a recorded sample beside this run's files
    shutil.copy(Path(__file__).with_name("freshness_recorded.json"), tmp_path / "freshness.json")
    text = summarize(tmp_path, commit="test")
    assert "| join | " in text and "| crash (SIGKILL) | " in text and "| dht-1000 | op wall |" in text, text
