"""Every page fits a 400 px phone screen: long peer ids, multiaddrs and error texts wrap instead of widening it.

Headless Chromium (tests/cdp.py) loads each page (tests/site_pages.py) at a 400 px mobile viewport and checks
``document.documentElement.scrollWidth <= 400``; each page's screenshot is saved in the test's tmp path and its
path printed (``pytest -s`` shows them). The demo's pages get the same check in tests/monitor/test_demo_command.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
from cdp import measure_widths
from chromium import CHROMIUM
from site_pages import every_page
from web_harness import served, snapshots

from monitor.store.sqlite import StoreWriter

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it as root)"),
]
PHONE = 400


def _long_texts(snaps):
    """What real swarms show and the factories do not: a dial error naming the full peer id and multiaddr (in
    the reachability table, the server page and its fix-it hint), a long bootstrap error, and located servers
    (the world map)."""
    for snap in snaps:
        for report in snap.models:
            for i, row in enumerate(report.servers):
                if row.reachability is None:
                    continue
                reach = dataclasses.replace(row.reachability, country="DE", country_name="Germany")
                if not reach.ok and not reach.joining:
                    reach = dataclasses.replace(
                        reach,
                        error=f"no address known for {row.peer_id} (asked 3 peers); failed to dial "
                        f"/ip6/2001:db8:85a3::8a2e:370:7334/tcp/31337/p2p/{row.peer_id}: connection refused",
                    )
                report.servers[i] = dataclasses.replace(row, reachability=reach)
        snap.bootstrap = [
            dataclasses.replace(p, error=f"failed to dial {p.address}/p2p-circuit/p2p/{p.peer_id}: timed out")
            for p in snap.bootstrap
        ]
    return snaps


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    path = tmp_path_factory.mktemp("phone") / "monitor.db"
    with StoreWriter(path) as writer:
        for snap in _long_texts(snapshots()):
            writer.write_snapshot(snap)
    with served(path) as live:
        yield live


def test_every_page_fits_a_phone_screen(site, tmp_path):
    paths = every_page(lambda p: json.loads(site.get(p).body))
    assert any(p.startswith("/servers/") for p in paths) and any(p.startswith("/models/") for p in paths)
    base = f"http://127.0.0.1:{site.client.server.port}"
    widths = asyncio.run(measure_widths(base, paths, PHONE, tmp_path))
    too_wide = {p: w for p, w in widths.items() if w[0] > PHONE}
    assert not too_wide, f"wider than {PHONE} px (scrollWidth, what overflows): {too_wide}"
    assert all((tmp_path / name).stat().st_size > 5_000 for name in (p.name for p in tmp_path.glob("*.png")))
