"""The overview's world map: countries shaded by how many servers are there, from the offline GeoIP breakdown.

The base map is a static file (``static/map/world.svg``, Natural Earth via world-atlas; see its LICENSE.md) that the
browser caches; the page draws on top of it only the countries that have servers, as an inline SVG with the same
view box, each path copied from that file. No tiles, no CDN, no script, nothing fetched at run time; the table
beside it says the same in text.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..geo import Breakdown

MAP_FILE = Path("map") / "world.svg"
SVG_NS = "{http://www.w3.org/2000/svg}"
# (fewest servers, legend label), darkest first; a country's class is m1 (lightest) to m5
BUCKETS: tuple[tuple[int, str], ...] = ((25, "25+"), (10, "10–24"), (5, "5–9"), (2, "2–4"), (1, "1"))


@dataclass(frozen=True, slots=True)
class Shape:
    view_box: str
    paths: Mapping[str, str]  # ISO 3166 alpha-2 -> SVG path data


@dataclass(frozen=True, slots=True)
class Country:
    code: str  # alpha-2, or a label such as "private/loopback"
    name: str | None
    servers: int
    css: str  # m1..m5 shade, "" when not on the map
    path: str | None  # None: not on the map (a label, or a territory too small for the 1:110m shapes)


@dataclass(frozen=True, slots=True)
class WorldMap:
    view_box: str
    countries: list[Country]  # every place, most servers first (the text table)
    legend: list[tuple[str, str]]  # (css, label), lightest first
    located: int
    total: int

    @property
    def on_map(self) -> list[Country]:
        return [c for c in self.countries if c.path is not None]


@functools.cache
def load_shapes(static_dir: Path) -> Shape:
    """The country paths of our vendored map, read once per process (a trusted file of ours, ~80 KB)."""
    root = ET.parse(static_dir / MAP_FILE).getroot()
    paths = {p.get("id", ""): p.get("d", "") for p in root.iter(f"{SVG_NS}path")}
    return Shape(view_box=root.get("viewBox", "0 0 1000 500"), paths=paths)


def shade(servers: int) -> str:
    for i, (fewest, _label) in enumerate(BUCKETS):
        if servers >= fewest:
            return f"m{len(BUCKETS) - i}"
    return ""


def world_map(breakdown: Breakdown, shape: Shape) -> WorldMap:
    countries = []
    for code, name, servers in breakdown.countries:
        path = shape.paths.get(code)
        countries.append(Country(code, name, servers, shade(servers) if path else "", path))
    return WorldMap(
        view_box=shape.view_box,
        countries=countries,
        legend=[(f"m{len(BUCKETS) - i}", label) for i, (_fewest, label) in enumerate(BUCKETS)][::-1],
        located=breakdown.located,
        total=breakdown.total,
    )
