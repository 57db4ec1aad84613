"""Headless Chromium shows the block heatmap, and a dark block's gap is visible on screen (counted in the
screenshot's pixels, not only found in the DOM). The screenshot is saved in pytest's tmp path; its path is printed."""

from __future__ import annotations

import pytest
from chromium import CHROMIUM, chromium
from png_pixels import colour_counts
from test_block_heatmap import CRAWLS, EVERY, NOW, T, write
from web_harness import serve

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed"),
]

GAP = (0x24, 0x29, 0x2F)  # svg.lanes rect.gap in static/css/monitor.css
WIDTH, HEIGHT = 800, 2600  # the whole page: headless --screenshot draws a blank page for a URL with a #fragment


def test_the_heatmap_renders_and_a_dark_gap_is_visible(tmp_path):
    path = tmp_path / "m.db"
    prefix = write(path, [T + k * EVERY for k in range(CRAWLS)])
    live, store = serve(path, clock=lambda: NOW)
    try:
        url = f"http://127.0.0.1:{live.client.server.port}/models/{prefix}"
        dom = chromium("--dump-dom", url).stdout.decode(errors="replace")
        shot = tmp_path / "block-heatmap.png"
        made = chromium(f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", url)
    finally:
        live.close()
        store.close()
    print(f"block heatmap screenshot: {shot}")
    assert '<svg class="lanes"' in dom and 'class="gap"' in dom
    assert shot.exists(), made.stderr.decode(errors="replace")[-2000:]
    colours = colour_counts(shot)
    # block 3's gap is ~8/30 of the plot's width and a lane high (12 px); block 5's is smaller; a legend swatch
    # alone is 100 px
    assert colours[GAP] > 1000, colours.most_common(8)
