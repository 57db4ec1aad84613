"""Build ``world.svg`` (one ``<path id="XX">`` per country, ISO 3166 alpha-2 ids) from Natural Earth's 1:110m
countries as the npm package ``world-atlas`` ships them (TopoJSON, ids are ISO numeric codes) and the ISO code
table of the npm package ``i18n-iso-countries`` (``codes.json``). See ``static/map/LICENSE.md`` for both.

Run once by hand, never at run time:  ``python tools/make_world_svg.py countries-110m.json codes.json`` writes
``static/map/world.svg`` (inputs from ``npm pack world-atlas@2.0.2 i18n-iso-countries@7.14.0``). Projection: Equal
Earth (Šavrič, Patterson and Jenny, 2018), cropped at 60° S (no servers in Antarctica); coordinates rounded to 0.1
of a 1000-wide view box.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

WIDTH = 1000.0
SOUTH = -60.0
# Polygons the 110m data carries without an ISO code, and the country ISO 3166 counts them in.
UNCODED = {"Kosovo": "XK", "N. Cyprus": "CY", "Somaliland": "SO"}
A1, A2, A3, A4 = 1.340264, -0.081106, 0.000893, 0.003796
M = math.sqrt(3) / 2


def equal_earth(lon: float, lat: float) -> tuple[float, float]:
    theta = math.asin(M * math.sin(math.radians(lat)))
    t2 = theta * theta
    t6 = t2 * t2 * t2
    x = math.radians(lon) * math.cos(theta) / (M * (A1 + 3 * A2 * t2 + t6 * (7 * A3 + 9 * A4 * t2)))
    y = theta * (A1 + A2 * t2 + t6 * (A3 + A4 * t2))
    return x, y


X_MAX, Y_TOP = equal_earth(180, 0)[0], equal_earth(0, 90)[1]
SCALE = WIDTH / (2 * X_MAX)
HEIGHT = round((Y_TOP - equal_earth(0, SOUTH)[1]) * SCALE, 1)


def project(lon: float, lat: float) -> tuple[int, int]:
    """Tenths of a view-box unit (integers, so relative moves add up exactly)."""
    x, y = equal_earth(max(-180.0, min(180.0, lon)), max(lat, SOUTH))
    return round((x + X_MAX) * SCALE * 10), round((Y_TOP - y) * SCALE * 10)


def decode_arcs(topology: dict) -> list[list[tuple[float, float]]]:
    (sx, sy), (tx, ty) = topology["transform"]["scale"], topology["transform"]["translate"]
    arcs = []
    for arc in topology["arcs"]:
        x = y = 0
        points = []
        for dx, dy in arc:
            x, y = x + dx, y + dy
            points.append((x * sx + tx, y * sy + ty))
        arcs.append(points)
    return arcs


def ring_points(ring: list[int], arcs: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    points: list[tuple[float, float]] = []
    for index in ring:
        arc = arcs[index] if index >= 0 else arcs[~index][::-1]
        points.extend(arc[1:] if points else arc)
    return unwrap(points)


def unwrap(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Rings that cross the antimeridian (Russia, Fiji) jump by ~360° of longitude: make them continuous, on the
    side where most of the ring lies; the view box then cuts the part beyond 180°."""
    out: list[tuple[float, float]] = []
    shift = 0.0
    for lon, lat in points:
        if out:
            step = lon + shift - out[-1][0]
            shift -= 360 * round(step / 360)
        out.append((lon + shift, lat))
    mean = sum(lon for lon, _ in out) / max(len(out), 1)
    back = 360 * round(mean / 360)
    return [(lon - back, lat) for lon, lat in out]


def _num(tenths: int) -> str:
    """Shortest SVG spelling: 0.5 -> .5, -0.5 -> -.5."""
    text = f"{tenths / 10:g}"
    return text.replace("0.", ".", 1) if text.startswith(("0.", "-0.")) else text


def _pair(x: int, y: int) -> str:
    sy = _num(y)
    return _num(x) + (sy if sy.startswith("-") else " " + sy)


def ring_path(points: list[tuple[float, float]]) -> str:
    projected: list[tuple[int, int]] = []
    for lon, lat in points:
        p = project(lon, lat)
        if not projected or p != projected[-1]:
            projected.append(p)
    if len(projected) < 3:
        return ""
    x0, y0 = projected[0]
    out = ["M" + _pair(x0, y0), "l"]
    for (xa, ya), (xb, yb) in itertools.pairwise(projected):
        step = _pair(xb - xa, yb - ya)
        out.append(step if step.startswith("-") or out[-1] == "l" else " " + step)
    return "".join(out) + "z"


def polygons(geometry: dict) -> list[list[list[int]]]:
    if geometry["type"] == "Polygon":
        return [geometry["arcs"]]
    if geometry["type"] == "MultiPolygon":
        return geometry["arcs"]
    return []


def build(topology: dict, codes: list[list[str]]) -> str:
    alpha2 = {numeric: a2 for a2, _a3, numeric, *_ in codes}
    arcs = decode_arcs(topology)
    paths: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for geometry in topology["objects"]["countries"]["geometries"]:
        name = geometry.get("properties", {}).get("name", "")
        code = alpha2.get(geometry.get("id", "")) or UNCODED.get(name)
        if code is None or code == "AQ":
            continue
        names.setdefault(code, name)
        for polygon in polygons(geometry):
            paths.setdefault(code, []).extend(filter(None, (ring_path(ring_points(r, arcs)) for r in polygon)))
    body = "\n".join(
        f'<path id="{code}" d="{"".join(d)}"><title>{names[code]}</title></path>' for code, d in sorted(paths.items())
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH:g} {HEIGHT:g}" '
        f'width="{WIDTH:g}" height="{HEIGHT:g}">\n'
        "<!-- Natural Earth 1:110m countries (public domain) via world-atlas 2.0.2 (ISC); see LICENSE.md -->\n"
        '<g fill="#e3e8ee" stroke="#ffffff" stroke-width="0.5" stroke-linejoin="round">\n'
        f"{body}\n</g>\n</svg>\n"
    )


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: make_world_svg.py countries-110m.json codes.json", file=sys.stderr)
        return 2
    topology = json.loads(Path(argv[1]).read_text())
    codes = json.loads(Path(argv[2]).read_text())
    out = Path(__file__).resolve().parents[1] / "static" / "map" / "world.svg"
    out.write_text(build(topology, codes))
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
