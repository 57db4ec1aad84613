"""The overview's world map (monitor.web.world_map): the vendored SVG, the shading, and the page that shows it."""

from __future__ import annotations

import dataclasses
import re

import pytest
from web_harness import served, snapshots

from monitor.geo import Breakdown, swarm_breakdown
from monitor.store.sqlite import StoreWriter
from monitor.web.templating import asset_dirs
from monitor.web.world_map import BUCKETS, MAP_FILE, load_shapes, shade, world_map

STATIC = asset_dirs()[1]
PLACES = (("US", "United States"), ("DE", "Germany"), ("US", "United States"), ("BR", "Brazil"), ("TV", "Tuvalu"))


def _located(snaps):
    """Every probed server of the factory crawls gets a country (factories leave them unknown, as the demo is)."""
    for snap in snaps:
        for report in snap.models:
            for i, row in enumerate(report.servers):
                if row.reachability is not None:
                    code, name = PLACES[int(row.peer_id.encode().hex(), 16) % len(PLACES)]
                    reach = dataclasses.replace(row.reachability, country=code, country_name=name, asn="AS1 <b>x</b>")
                    report.servers[i] = dataclasses.replace(row, reachability=reach)
    return snaps


def test_the_vendored_map_is_small_licensed_and_keyed_by_iso_code():
    path = STATIC / MAP_FILE
    assert path.stat().st_size < 300_000
    license_text = (path.parent / "LICENSE.md").read_text()
    assert "Natural Earth" in license_text and "public domain" in license_text and "ISC" in license_text
    shape = load_shapes(STATIC)
    assert len(shape.paths) > 150
    assert {"US", "DE", "BR", "JP", "CN", "IN", "AU", "XK"} <= set(shape.paths)
    assert "AQ" not in shape.paths  # cropped at 60° S
    assert all(re.fullmatch(r"[A-Z]{2}", code) for code in shape.paths)
    assert all(d.startswith("M") and d.endswith("z") for d in shape.paths.values())
    assert "http" not in path.read_text().replace("http://www.w3.org/2000/svg", "")  # nothing fetched


@pytest.mark.parametrize(
    ("servers", "css"), [(1, "m1"), (2, "m2"), (4, "m2"), (5, "m3"), (10, "m4"), (24, "m4"), (25, "m5")]
)
def test_shades_follow_the_legend(servers, css):
    assert shade(servers) == css
    assert len(BUCKETS) == 5


def test_places_without_a_shape_are_listed_but_not_drawn():
    breakdown = Breakdown(
        countries=[("US", "United States", 7), ("private/loopback", None, 3), ("TV", "Tuvalu", 1)],
        asns=[],
        located=8,
        total=11,
    )
    m = world_map(breakdown, load_shapes(STATIC))
    assert [(c.code, c.css) for c in m.countries] == [("US", "m3"), ("private/loopback", ""), ("TV", "")]
    assert [c.code for c in m.on_map] == ["US"]  # Tuvalu is too small for the 1:110m shapes
    assert [label for _css, label in m.legend] == ["1", "2–4", "5–9", "10–24", "25+"]


def test_swarm_breakdown_counts_a_server_of_several_models_once():
    snap = _located(snapshots())[-1]
    rows = {row.peer_id for report in snap.models for row in report.servers}
    assert swarm_breakdown(snap.models).total == len(rows)


@pytest.fixture(scope="module")
def located(tmp_path_factory):
    """The factory crawls with countries in a store of their own: (its path, the crawls)."""
    path = tmp_path_factory.mktemp("map") / "monitor.db"
    snaps = _located(snapshots())
    with StoreWriter(path) as writer:
        for snap in snaps:
            writer.write_snapshot(snap)
    return path, snaps


@pytest.fixture(scope="module")
def overview(located):
    with served(located[0]) as live:
        reply = live.get("/")
    assert reply.status == 200
    return reply.text


def test_the_overview_shades_the_countries_with_servers(located, overview):
    breakdown = swarm_breakdown(located[1][-1].models)
    counts = {code: n for code, _name, n in breakdown.countries}
    shape = load_shapes(STATIC)
    assert '<img src="/static/map/world.svg"' in overview
    for code, name in (("US", "United States"), ("DE", "Germany"), ("BR", "Brazil")):
        if code in counts:
            n = counts[code]
            drawn = f'<path class="{shade(n)}" d="{shape.paths[code]}"><title>{name}: {n} server'
            assert drawn in overview, code
    drawn = re.findall(r'<path class="(m\d)"', overview)
    assert len(drawn) == len({c for c in counts if c in shape.paths})  # only countries with servers
    assert "Tuvalu" in overview.split('class="plain compact map-table"')[1]  # in the table, not on the map
    assert f"{breakdown.located} of {breakdown.total} located" in overview


def test_the_overview_says_when_nothing_is_located(live):
    page = live.get("/").text
    assert "nothing is on the map" in page
    assert "/static/map/world.svg" not in page


def test_the_coverage_bar_has_a_colour_key(live):
    page = live.get("/").text
    key = page.split('class="cov-key"')[1].split("</p>")[0]
    for css, text in (("r0", "0 online servers"), ("r1", "1"), ("r2", "2"), ("r3", "3 or more")):
        assert f'class="b {css} key-swatch"' in key and text in key


def test_the_map_file_is_served_as_svg(live):
    reply = live.get("/static/map/world.svg")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("image/svg+xml")
