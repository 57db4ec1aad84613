"""The model page's block heatmap and the server page's timeline (one drawing, ``monitor.web.lanes``): dark gaps
with start, end and duration, the range switch without JavaScript, "too little data" in words, and one clock."""

from __future__ import annotations

import html
import itertools
import re
from datetime import datetime

import pytest
from factories import make_block_snapshot
from web_harness import served

from monitor.store.history import BlockHistory, BlockPoint, DarkPeriod
from monitor.store.sqlite import StoreWriter
from monitor.web import charts, lanes
from monitor.web.templating import fmt_utc

T = 1_700_000_000.0
EVERY = 600.0
CRAWLS = 30  # five hours
DARK = {
    3: {T + k * EVERY for k in range(10, 18)},  # dark for eight crawls, served again at crawl 18
    5: {T + k * EVERY for k in range(25, CRAWLS)},  # still dark at the last crawl
}
NOW = T + (CRAWLS - 1) * EVERY + 30


def write(path, times) -> str:
    with StoreWriter(path) as writer:
        for t in times:
            snap = make_block_snapshot(t, DARK)
            writer.write_snapshot(snap)
    return snap.models[0].model.dht_prefix


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    path = tmp_path_factory.mktemp("heatmap") / "m.db"
    prefix = write(path, [T + k * EVERY for k in range(CRAWLS)])
    with served(path, clock=lambda: NOW) as live:
        yield live, prefix


def gaps(page: str) -> list[str]:
    return [html.unescape(t) for t in re.findall(r'<rect class="gap"[^>]*><title>([^<]*)</title>', page)]


def test_a_dark_block_is_a_gap_with_its_start_end_and_duration(site):
    live, prefix = site
    page = live.get(f"/models/{prefix}").text
    assert '<svg class="lanes"' in page and page.count("<g>") >= 8  # a lane per block
    start, end = fmt_utc(T + 10 * EVERY, "%Y-%m-%d %H:%M"), fmt_utc(T + 18 * EVERY, "%Y-%m-%d %H:%M")
    since = fmt_utc(T + 25 * EVERY, "%Y-%m-%d %H:%M")
    assert gaps(page) == [
        f"block 3 dark from {start} to {end} (1h 20m)",
        f"block 5 dark since {since}, still dark at the last crawl (40m 00s so far)",
    ]
    listed = page[page.index("Dark periods (2)") :]  # the text twin, newest first
    assert listed.index(">5<") < listed.index(">3<") and "still dark" in listed


def test_a_truncated_dark_list_says_so(tmp_path, monkeypatch):
    from monitor.store import block_history

    monkeypatch.setattr(block_history, "MAX_DARK", 1)  # list one period per block: block 3 has two
    path = tmp_path / "m.db"
    with StoreWriter(path) as writer:
        for k in range(10):
            snap = make_block_snapshot(T + k * EVERY, {3: {T + 2 * EVERY, T + 6 * EVERY}})
            writer.write_snapshot(snap)
    with served(path, clock=lambda: T + 9 * EVERY + 30) as live:
        page = live.get(f"/models/{snap.models[0].model.dht_prefix}").text
    assert "only their newest dark periods are kept" in page and "Dark periods (1, newest)" in page


def test_the_range_switch_is_links_that_work_without_javascript(site):
    live, prefix = site
    page = live.get(f"/models/{prefix}").text
    assert f'href="/models/{prefix}?heatmap=7d#block-history"' in page
    week = live.get(f"/models/{prefix}?heatmap=7d&range=6h").text
    assert re.search(r'heatmap=7d&amp;range=6h#block-history" aria-current="true">7d<', week)
    assert len(gaps(week)) == 2
    bad = live.get(f"/models/{prefix}?heatmap=1y")
    assert bad.status == 400 and "invalid heatmap" in bad.text


def test_too_little_data_is_said_in_words(tmp_path):
    prefix = write(tmp_path / "one.db", [T + 25 * EVERY])
    with served(tmp_path / "one.db", clock=lambda: T + 25 * EVERY + 30) as live:
        page = live.get(f"/models/{prefix}").text
    assert "Too little data for a block heatmap yet (1 point" in page
    assert '<svg class="lanes"' not in page
    assert "Dark periods (1)" in page  # the one crawl still says block 5 was dark


@pytest.mark.parametrize("page", ["model", "server"])
def test_a_charts_now_is_the_headers_now(tmp_path, page):
    """A clock that moves on every read: the chart's right edge and the footer's "Rendered" come from one read."""
    path = tmp_path / "clock.db"
    prefix = write(path, [T + k * EVERY for k in range(CRAWLS)])
    ticks = itertools.count()
    with served(path, clock=lambda: NOW + 7 * next(ticks)) as live:
        if page == "model":
            text = live.get(f"/models/{prefix}").text
        else:
            peer = re.search(r'href="/servers/([^"?]+)"', live.get(f"/models/{prefix}").text).group(1)
            text = live.get(f"/servers/{peer}").text
    edge = re.search(r'<time class="t1" datetime="([^"]+)"', text).group(1)
    rendered = re.search(r"Rendered ([0-9: -]+) UTC", text).group(1)
    assert datetime.fromisoformat(edge.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S") == rendered


def test_the_server_timeline_is_the_same_drawing(site):
    live, prefix = site
    peer = re.search(r'href="/servers/([^"?]+)"', live.get(f"/models/{prefix}").text).group(1)
    page = live.get(f"/servers/{peer}").text
    assert '<svg class="lanes"' in page and f'<span title="{prefix}">{prefix}</span>' in page
    assert re.search(rf"<title>{re.escape(prefix)}: online \d+:\d+</title>", page)


def test_bands_hold_one_bucket_and_touching_alike_bands_are_one():
    series = [(0.0, "r2", "two"), (10.0, "r2", "two"), (20.0, "r0", "none"), (60.0, "r2", "two")]
    bands = charts.state_bands(series, t0=0.0, t1=100.0, hold=10.0)
    assert [(b.x, b.width, b.css) for b in bands] == [(0.0, 200.0, "r2"), (200.0, 100.0, "r0"), (600.0, 100.0, "r2")]
    assert len(charts.state_bands(series, t0=0.0, t1=100.0)) == 3  # without hold each lasts until the next


def test_one_point_is_too_little_for_a_chart():
    one = lanes.lanes([("0", [(5.0, "r3", "x")], [])], t0=0.0, t1=10.0, label="l")
    two = lanes.lanes([("0", [(5.0, "r3", "x")], []), ("1", [(6.0, "r3", "x")], [])], t0=0.0, t1=10.0, label="l")
    assert one.too_little and not two.too_little and two.height == 2 * lanes.LANE


def test_buckets_finer_than_the_crawl_interval_leave_no_stripes():
    points = [BlockPoint(t, 2, 2, 2.0, 1, 0) for t in (0.0, 900.0, 1800.0)]  # a crawl every 15 min, 10 min buckets
    history = BlockHistory(0.0, 2700.0, 600.0, False, 1, [points], [[]])
    (striped,) = lanes.block_heatmap(history, t0=0.0, t1=2700.0).lanes
    (solid,) = lanes.block_heatmap(history, t0=0.0, t1=2700.0, interval=900.0).lanes
    assert len(striped.bands) == 3 and [(b.x, b.width) for b in solid.bands] == [(0.0, 1000.0)]


def test_per_crawl_points_hold_two_intervals_so_downtime_is_a_hole():
    """A young history is read per crawl (step None): a monitor stopped for hours must not paint them."""
    times = (0.0, 600.0, 1200.0, 9000.0, 9600.0)  # crawls every 10 min, then the monitor was down ~2 h
    history = BlockHistory(0.0, 10000.0, None, False, 1, [[BlockPoint(t, 2, 2, 2.0, 1, 0) for t in times]], [[]])
    (lane,) = lanes.block_heatmap(history, t0=0.0, t1=10000.0, interval=600.0).lanes
    assert [(b.x, b.width) for b in lane.bands] == [(0.0, 240.0), (900.0, 100.0)]  # 1200 + 2 x 600, then a hole


def test_a_daily_rollup_in_a_4h_view_is_drawn_a_day_wide():
    """30 d view: 4 h buckets, but retention keeps old days as one daily row: no 20 h "no data" after each."""
    day, step = 86400.0, 14400.0
    points = [BlockPoint(d * day, 2, 2, 2.0, 1440, 0, width=day) for d in range(3)]
    points.append(BlockPoint(3 * day, 2, 2, 2.0, 24, 0))  # raw or hourly: one 4 h bucket
    history = BlockHistory(0.0, 4 * day, step, False, 1, [points], [[]])
    (lane,) = lanes.block_heatmap(history, t0=0.0, t1=4 * day, interval=60.0).lanes
    assert [(b.x, b.width) for b in lane.bands] == [(0.0, 791.7)]  # three days and one 4 h bucket, no hole


def test_dark_periods_from_rollups_are_drawn_apart_and_cells_say_dark_crawls_of_n():
    points = [BlockPoint(0.0, 0, 2, 1.0, 60, 12), BlockPoint(3600.0, 2, 2, 2.0, 60, 0)]
    exact, rolled = DarkPeriod(0, 100.0, 900.0, 800.0), DarkPeriod(0, 1000.0, 2000.0, 1900.0, approximate=True)
    history = BlockHistory(0.0, 7200.0, 3600.0, False, 1, [points], [[exact, rolled]])
    (lane,) = lanes.block_heatmap(history, t0=0.0, t1=7200.0).lanes
    assert [g.css for g in lane.gaps] == ["gap", "gap approx"]
    assert "approximate" in lane.gaps[1].title and "approximate" not in lane.gaps[0].title
    assert "dark at 12 of 60 crawls" in lane.bands[0].title


def test_a_block_dark_only_at_the_last_crawl_is_still_drawn():
    history = BlockHistory(0.0, 1000.0, None, False, 1, [[BlockPoint(t, 1, 1, 1.0, 1, 0) for t in (0.0, 500.0)]], [[]])
    history.dark[0].append(DarkPeriod(0, 1000.0, None, 1000.0))
    (lane,) = lanes.block_heatmap(history, t0=0.0, t1=1000.0).lanes
    assert [(g.x, g.width) for g in lane.gaps] == [(998.0, 2.0)] and "still dark" in lane.gaps[0].title
