"""The README's run command, end to end: `python -m monitor demo` starts, serves every demo model, stops cleanly.

When Debian's chromium is installed (``make test`` installs it as root), a real headless browser also loads the
overview and a model page of the running demo and saves screenshots under ``test-output/``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cdp import measure_widths
from chromium import CHROMIUM, chromium
from deploy_files import exported_names, missing_metrics
from site_pages import every_page

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output"
START_DEADLINE = 90.0  # imports + swarm + first crawl, on a loaded 2-core machine
STOP_DEADLINE = 30.0
DEMO_MODELS = {"demo/TinyLlama-A", "demo/Wide-80", "demo/Falcon-B", "demo/Mystery-12"}


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as reply:  # 127.0.0.1 only
        return reply.read()


def _wait_for_url(proc: subprocess.Popen, log: Path) -> str:
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        found = re.search(r"Dashboard: (http://127\.0\.0\.1:\d+/)", log.read_text(errors="replace"))
        if found:
            return found.group(1)
        assert proc.poll() is None, f"demo exited early:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"no dashboard URL within {START_DEADLINE} s:\n{log.read_text()[-3000:]}")


def _wait_for_models(base: str, log: Path) -> dict:
    deadline = time.monotonic() + START_DEADLINE
    while time.monotonic() < deadline:
        try:
            doc = json.loads(_get(base + "api/v1/state"))
        except Exception:  # no crawl yet (404/503) or still starting
            doc = {}
        if {m["dht_prefix"] for m in doc.get("model_reports", [])} >= DEMO_MODELS:
            return doc
        time.sleep(0.5)
    raise AssertionError(f"the demo's models never appeared:\n{log.read_text()[-3000:]}")


def _as_a_background_job() -> None:
    """What ``python -m monitor demo &`` in a script gets from the shell: SIGINT ignored (so ``kill -INT`` must
    still stop it: the Ctrl-C test below sends exactly that)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    log = tmp / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "demo", "--port", "0", "--seed", "1", "--db", str(tmp / "demo.db")],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=_as_a_background_job,
        )
    try:
        base = _wait_for_url(proc, log)
        yield proc, base, _wait_for_models(base, log), log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_demo_serves_every_model_on_the_dashboard(demo):
    _proc, base, doc, _log = demo
    states = {m["dht_prefix"]: m for m in doc["model_reports"]}
    assert states["demo/Wide-80"]["state"] == "broken"  # its designed hole
    assert all(states[p]["server_rows"] for p in DEMO_MODELS)
    overview = _get(base).decode()
    for prefix in DEMO_MODELS:
        assert prefix in overview
    pages = {p: _get(f"{base}models/{p}?at={doc['crawl_id']}").decode() for p in DEMO_MODELS}  # doc's crawl
    assert all("<script>alert(1)</script>" not in page for page in [overview, *pages.values()])
    hostile = [  # the demo's server named <script>alert(1)</script>, wherever it is announced right now
        m["dht_prefix"]
        for m in doc["model_reports"]
        for r in m["server_rows"]
        if "<script>" in (r["span"]["server_info"].get("public_name") or "")
    ]
    for prefix in hostile:  # shown, as inert text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[prefix]


def test_demo_routes_every_model_the_broken_one_not_runnable(demo):
    """`make demo`'s route endpoint: Wide-80 (its designed hole) is not runnable, TinyLlama-A (healthy) has a chain
    from block 0 to 24 whose hops meet; every model answers."""
    _proc, base, doc, _log = demo
    routes = {p: json.loads(_get(f"{base}api/v1/models/{p}/route?at={doc['crawl_id']}")) for p in DEMO_MODELS}
    assert not routes["demo/Wide-80"]["runnable"] and [56, 64] in routes["demo/Wide-80"]["missing_ranges"]
    healthy = routes["demo/TinyLlama-A"]
    chain = healthy["chain"]
    assert healthy["runnable"] and chain[0]["start"] == 0 and chain[-1]["end"] == 24
    assert all(a["end"] == b["start"] for a, b in itertools.pairwise(chain))
    assert healthy["steps_per_second"] > 0 and healthy["disjoint_chains"] >= 1
    page = _get(f"{base}models/demo/Wide-80?at={doc['crawl_id']}").decode()
    assert "Not runnable." in page and "56–63" in page


def test_demo_answers_block_history_for_every_model(demo):
    _proc, base, doc, _log = demo
    for model in doc["model_reports"]:
        prefix = model["dht_prefix"]
        history = json.loads(_get(f"{base}api/v1/models/{prefix}/blocks/history"))
        assert history["num_blocks"] == model["num_blocks"], prefix
        assert [b["block"] for b in history["blocks"]] == list(range(model["num_blocks"]))
        assert all(b["series"] for b in history["blocks"]), prefix  # every block has at least one crawl
        if prefix == "demo/Wide-80":  # its designed hole: blocks without a server, dark at the last crawl
            holes = [b["index"] for b in model["blocks"] if b["online"] == 0]
            assert holes
            still_dark = {b["block"] for b in history["blocks"] if b["dark"] and b["dark"][-1]["end"] is None}
            assert set(holes) <= still_dark
    assert "Block history" in _get(f"{base}models/demo/Wide-80").decode()


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it as root)")
def test_a_real_browser_shows_the_running_demo(demo):
    _proc, base, _doc, _log = demo
    OUTPUT.mkdir(exist_ok=True)
    pages = [("", "demo/Wide-80"), ("models/demo/Wide-80", "Served blocks"), ("models/demo/TinyLlama-A", "Runnable.")]
    for page, must_show in pages:
        dom = chromium("--dump-dom", base + page, timeout=120)
        assert dom.returncode == 0, dom.stderr.decode()[-2000:]
        assert must_show in dom.stdout.decode(), page
        shot = OUTPUT / f"demo-{page.replace('/', '_') or 'overview'}.png"
        made = chromium(f"--screenshot={shot}", "--window-size=1400,1800", base + page, timeout=120)
        assert made.returncode == 0 and shot.stat().st_size > 10_000, made.stderr.decode()[-2000:]


def test_the_demo_exports_every_metric_deploy_uses(demo):
    """deploy/'s alerts and dashboard ask only for metrics the running demo's /metrics has (tests/deploy too)."""
    _proc, base, _doc, _log = demo
    assert missing_metrics(exported_names(_get(base + "metrics").decode())) == {"alerts": [], "dashboard": []}


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it as root)")
def test_every_demo_page_fits_a_phone_screen(demo, tmp_path):
    """At 400 px, no page of the running demo scrolls sideways (the screenshots' paths are printed)."""
    _proc, base, _doc, _log = demo
    paths = every_page(lambda p: json.loads(_get(base.rstrip("/") + p)))
    widths = asyncio.run(measure_widths(base, paths, 400, tmp_path))
    too_wide = {p: w for p, w in widths.items() if w[0] > 400}
    assert not too_wide, f"wider than 400 px (scrollWidth, what overflows): {too_wide}"


def test_ctrl_c_stops_everything_cleanly(demo):
    proc, base, _doc, log = demo
    proc.send_signal(signal.SIGINT)
    try:
        rc = proc.wait(STOP_DEADLINE)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"demo did not stop within {STOP_DEADLINE} s:\n{log.read_text()[-3000:]}") from None
    assert rc == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()
    with pytest.raises(OSError):
        _get(base)
