"""Headless Chromium against the real app: pages render, our JS runs under the CSP, screenshots are made.

Skipped cleanly when /usr/bin/chromium is missing (``apt-get install -y chromium``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chromium import CHROMIUM, chromium
from web_harness import SWARM, build_store, serve

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed"),
]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    fx = build_store(tmp_path_factory.mktemp("browser") / "monitor.db")
    live, store = serve(fx.path)
    server = live.client.server
    yield f"http://127.0.0.1:{server.port}", fx
    live.close()
    store.close()


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


@pytest.mark.parametrize("size", ["1400,1800", "1366,900", "390,1200"])
def test_screenshots_of_overview_and_a_wide_model(base_url, tmp_path, size):
    url, fx = base_url
    wide = fx.snapshots[-1].models[1].model.dht_prefix  # 126 blocks
    for name, path in (("overview", "/"), ("model", f"/models/{wide}?swarm={SWARM}")):
        out = tmp_path / f"{name}.png"
        result = chromium(f"--screenshot={out}", f"--window-size={size}", url + path)
        assert out.exists(), result.stderr.decode(errors="replace")[-2000:]
        width, height = _png_size(out)
        assert (width, height) == tuple(map(int, size.split(",")))
        assert out.stat().st_size > 10_000  # not a blank page


def test_our_script_runs_under_the_csp(base_url):
    url, _fx = base_url
    # ?live=0: an open event stream stops virtual time (see tests/chromium.py); live.js is tested in test_browser_live
    result = chromium("--dump-dom", "--virtual-time-budget=3000", url + "/?live=0")
    dom = result.stdout.decode(errors="replace")
    assert "Petals" in dom
    assert 'class="ago muted"' in dom  # added by /static/js/monitor.js: it loaded and ran
    assert "Refused to" not in result.stderr.decode(errors="replace")  # no CSP violation reported
