"""Headless Chromium on the model page: with JavaScript, the server table's filter and column heads change the
table in place (static/js/table.js over the JSON twin), no page load, the address bar in step, Back restoring the
view; the rows are the server's own, the order the twin's. Without JavaScript: test_browser_live.py and
test_server_table.py."""

from __future__ import annotations

import asyncio

import pytest
from cdp import open_page
from chromium import CHROMIUM
from web_harness import SWARM

from monitor.web.server_table import TableQuery, apply

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed"),
]

GUARD = 60.0  # seconds: only against a hang
WATCH = "window.violations = []; addEventListener('securitypolicyviolation', e => violations.push(e.violatedDirective))"
STILL = "window.stillHere = true"  # set once loaded: a page load (table.js's fallback) would lose it
VISIBLE = (
    "Array.from(document.querySelectorAll('table.servers tbody tr[data-row]:not([hidden]) td:nth-child(2)'))"
    ".map(td => td.getAttribute('data-value'))"
)
HIDDEN = "document.querySelectorAll('table.servers tbody tr[data-row][hidden]').length"
ARM = "window.placed = new Promise(r => document.addEventListener('monitor:table', () => r(true), {once: true}))"


async def _placed(page) -> None:
    async with asyncio.timeout(GUARD):
        assert await page.evaluate("window.placed", await_promise=True) is True


def _peers(report, **query) -> list[str]:
    return [r.peer_id for r in apply(report.servers, TableQuery(**query))]


def test_filter_and_sort_change_the_table_in_place_and_the_address_follows(own_site, tmp_path):
    live, fx = own_site
    report = fx.snapshots[-1].models[0]
    path = f"/models/{report.model.dht_prefix}"
    base = f"http://127.0.0.1:{live.client.server.port}"
    online = _peers(report, state="online")
    needle = next(r.peer_id for r in report.servers if r.state == "online")
    assert 1 < len(online) < len(report.servers)

    async def main():
        async with open_page(1366, 900, mobile=False) as page:
            await page.call("Page.addScriptToEvaluateOnNewDocument", source=WATCH)
            await page.goto(f"{base}{path}?swarm={SWARM}")
            await page.evaluate(STILL)
            assert await page.evaluate(VISIBLE) == _peers(report)
            entries = await page.evaluate("history.length")

            await page.evaluate(  # choosing a state applies it (no Filter button needed)
                f"{ARM}; const s = document.querySelector('form.table-filter select[name=state]');"
                "s.value = 'online'; s.dispatchEvent(new Event('change', {bubbles: true}))"
            )
            await _placed(page)
            assert await page.evaluate(VISIBLE) == online
            assert await page.evaluate(HIDDEN) == len(report.servers) - len(online)
            assert await page.evaluate("location.search") == f"?swarm={SWARM}&state=online"
            assert await page.evaluate("history.length") == entries + 1
            count = "document.querySelector('.table-count')"
            assert await page.evaluate(f"{count}.hidden") is False
            assert await page.evaluate(f"{count}.textContent") == f"{len(online)} of {len(report.servers)} servers"

            await page.evaluate(f"{ARM}; document.querySelector('th a.sort-link[href*=\"sort=ttl\"]').click()")
            await _placed(page)
            assert await page.evaluate(VISIBLE) == _peers(report, state="online", sort="ttl")
            assert await page.evaluate("location.search") == f"?swarm={SWARM}&state=online&sort=ttl&order=asc"
            assert await page.evaluate("document.querySelector('th[aria-sort]').dataset.column") == "ttl"
            assert await page.evaluate("document.querySelector('th[aria-sort]').getAttribute('aria-sort')") == (
                "ascending"
            )
            # the heads lead where the server's would: this one to descending now, the filter kept
            assert await page.evaluate("document.querySelector('th[data-column=ttl] a').getAttribute('href')") == (
                f"{path}?swarm={SWARM}&state=online&sort=ttl&order=desc"
            )

            await page.evaluate(  # typing filters too, replacing the address rather than adding to the history
                f"{ARM}; const q = document.querySelector('form.table-filter input[name=q]');"
                f"q.value = {needle!r}; q.dispatchEvent(new Event('input', {{bubbles: true}}))"
            )
            await _placed(page)
            assert await page.evaluate(VISIBLE) == [needle]
            assert "q=" in await page.evaluate("location.search")
            assert await page.evaluate("history.length") == entries + 2

            await page.evaluate(f"{ARM}; history.back()")  # to the state filter alone, form included
            await _placed(page)
            assert await page.evaluate(VISIBLE) == online
            assert await page.evaluate("location.search") == f"?swarm={SWARM}&state=online"
            assert await page.evaluate("document.querySelector('form.table-filter input[name=q]').value") == ""
            assert await page.evaluate("document.querySelector('th[aria-sort]').dataset.column") == "span"

            assert await page.evaluate("window.stillHere") is True  # one document all along: no page load
            assert await page.evaluate("window.violations") == []
            await page.screenshot(tmp_path / "model-filtered-in-place.png")

    asyncio.run(main())


def test_a_page_loaded_filtered_widens_in_place_from_the_rows_it_drew_hidden(own_site):
    live, fx = own_site
    report = fx.snapshots[-1].models[0]
    url = f"http://127.0.0.1:{live.client.server.port}/models/{report.model.dht_prefix}?swarm={SWARM}&state=online"

    async def main():
        async with open_page(1366, 900, mobile=False) as page:
            await page.call("Page.addScriptToEvaluateOnNewDocument", source=WATCH)
            await page.goto(url + "&live=0")
            await page.evaluate(STILL)
            assert await page.evaluate(VISIBLE) == _peers(report, state="online")
            await page.evaluate(f"{ARM}; document.querySelector('form.table-filter a.table-clear').click()")
            await _placed(page)
            assert await page.evaluate(VISIBLE) == _peers(report)
            assert await page.evaluate(HIDDEN) == 0
            assert await page.evaluate("location.search") == f"?swarm={SWARM}&live=0"  # the off switch kept
            assert await page.evaluate("document.querySelector('.table-count').hidden") is True
            assert await page.evaluate("document.querySelector('a.table-clear').hidden") is True
            assert await page.evaluate("window.stillHere") is True

    asyncio.run(main())
